"""The widgets and the GUI job path under whichever PyQt this Python has.

Krita 6 embeds PyQt6; Krita 5 PyQt5 (covered inside real Krita by
test_in_krita.py). Run with PyQt6 on the path, this is the Krita-6-readiness
check of the Qt code: the compat module's choice, fully qualified enums,
dialog exec, signals across threads. Skips where no PyQt is importable (the
test extras bring PyQt6; CI fails rather than skips without it).
"""

from __future__ import annotations

import importlib
import os
import time
from types import ModuleType

import pytest

from tests.support.hosts import require_host

from .form_check import form_problems
from .test_core import feathered_selection, new_document


def _qt_available() -> bool:
    for name in ("PyQt6.QtWidgets", "PyQt5.QtWidgets"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return True
    return False


@pytest.fixture(scope="module")
def qt(plugin: ModuleType) -> ModuleType:
    # PyQt6 comes with the test extras; CI must run this Krita 6 check.
    require_host(_qt_available(), "no PyQt in this Python (pip install -e '.[test]' brings PyQt6)")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    module = importlib.import_module(plugin.__name__ + ".qt")
    if module.QtWidgets.QApplication.instance() is None:
        module._app = module.QtWidgets.QApplication([])  # kept alive for the module
    return module


@pytest.fixture(scope="module")
def ui(plugin: ModuleType, qt: ModuleType) -> ModuleType:
    return importlib.import_module(plugin.__name__ + ".ui")


def test_the_form_round_trips_its_values(plugin, qt, ui):
    form = ui.SettingsForm()
    values = plugin.Settings.from_values(
        {
            "prompt": "moss", "negative_prompt": "blur", "strength": 0.35, "steps": 12, "guidance": 5.5,
            "seed": 2**62, "model": "fake-xl", "grow": 3.0, "feather": 7.5, "padding": 32,
            "server": "ws://127.0.0.1:9", "token": "s3cret",
        }
    )  # fmt: skip
    form.set_values(values)
    assert form.values() == values
    seed = form.fields["seed"]
    assert seed.edit.isEnabled()  # a fixed seed is editable
    seed.random.setChecked(True)
    assert not seed.edit.isEnabled() and form.values().job.seed is None


def test_the_form_offers_exactly_the_declared_settings(plugin, qt, ui):
    assert form_problems(plugin, ui.SettingsForm()) == []


def test_the_dialogs_build(plugin, qt, ui):
    p = plugin.protocol
    dialog = ui.InpaintDialog()
    assert dialog.form is not None
    progress = ui.ProgressDialog(None, "moss")
    progress.show_progress(p.Progress("j", p.Stage.SAMPLING, 3, 20))
    assert progress.label.text() == "Sampling: step 3 of 20" and progress.bar.value() == 150
    progress.show_preview(p.Preview("j", 3, p.Image(4, 4, p.PixelFormat.RGBA8, bytes(range(64)))))
    assert not progress.preview.pixmap().isNull()
    cancelled = []
    progress.cancel_requested.connect(lambda: cancelled.append(True))
    progress.cancel_button.click()
    assert cancelled == [True] and progress.label.text() == "Cancelling..."


def wait(qt: ModuleType, condition, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not condition():
        qt.QtCore.QCoreApplication.processEvents(qt.QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.005)
    return condition()


def test_the_models_are_fetched_off_the_gui_thread(plugin, qt, ui, daemon):
    form = ui.SettingsForm()
    form.fields["server"].set_value(daemon.url)
    form.refresh_models()
    combo = form.model.combo
    assert wait(qt, lambda: combo.count() == 3)
    assert [combo.itemData(i) for i in range(3)] == ["", "fake", "fake-xl"]
    assert "fake" in combo.itemText(0)  # "Daemon's default (fake)"


def test_a_job_through_the_controller(plugin, qt, ui, krita, daemon):
    doc, layer = new_document(krita, 96, 96)
    feathered_selection(doc, 20, 20, 40, 40)
    errors: list[str] = []
    controller = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
    seen: list[object] = []
    controller.progressed.connect(seen.append)
    finished: list[object] = []
    controller.finished.connect(finished.append)
    job_settings = plugin.Settings.from_values(
        {"prompt": "moss", "steps": 3, "server": daemon.url, "token": "s3cret"}
    )
    assert controller.start(doc, layer, job_settings)
    assert wait(qt, lambda: bool(finished))
    assert errors == [] and finished[0] is not None and finished[0].name() == "moss \u00b7 4242"
    assert daemon.tokens[-1] == "s3cret"
    assert len(seen) == 3 and len(doc.undo_steps) == 1
    # Done, it holds none of Krita's objects (which Krita must free before its own at exit).
    assert controller.job is None and controller.worker.job is None


def test_failures_reach_the_painter_once_and_cancel_stays_quiet(plugin, qt, ui, krita, daemon, dead_server):
    doc, layer = new_document(krita, 64, 64)
    errors: list[str] = []
    for server, prompt in ((dead_server, "x"), (daemon.url, "slow: cancel me")):
        controller = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
        finished: list[object] = []
        controller.finished.connect(finished.append)
        controller.start(doc, layer, plugin.Settings.from_values({"prompt": prompt, "server": server}))
        if prompt.startswith("slow:"):
            controller.cancel()
        assert wait(qt, lambda finished=finished: bool(finished))
        assert finished == [None]
    assert len(errors) == 1 and "differential-inpaint serve" in errors[0]
    assert len(doc.topLevelNodes()) == 1


def test_the_dialog_and_the_docker_share_one_live_store(plugin, qt, ui):
    dialog_form, docker_form = ui.SettingsForm(), ui.SettingsForm(fold_advanced=True)
    dialog_form.fields["prompt"].set_value("a moss wall")
    dialog_form.fields["prompt"].edited.emit()
    dialog_form.fields["strength"].set_value(0.4)  # a spin box: its own signal fires
    assert docker_form.values().job.prompt == "a moss wall"
    assert docker_form.values().job.strength == pytest.approx(0.4)
    docker_form.fields["steps"].set_value(9)
    assert dialog_form.values().job.steps == 9
    settings = importlib.import_module(plugin.__name__ + ".settings")
    assert settings.load().job.steps == 9  # and kritarc has it
    ui.SettingsStore.instance().seed_used.emit(1234)
    for form in (dialog_form, docker_form):
        assert form.fields["seed"].edit.text() == "1234" and "1234" in form.status.text()


def test_the_folded_form_shows_the_basic_settings_and_folds_the_rest(plugin, qt, ui):
    form = ui.SettingsForm(fold_advanced=True)
    form.show()
    shown = [q for q in plugin.client.SETTINGS_PARAMS if "krita" in q.hosts]
    basic = [q.name for q in shown if not q.advanced and q.name not in ui.CONDITIONING_ROWS]
    # The fan is advanced; the map's picker, invert and depth are not; LoRAs are conditioning.
    assert basic == ["prompt", "strength", "model", "invert_mask", "depth", "count", "mask_layer"]
    assert all(form.fields[name].widget.isVisible() for name in basic)
    folded = [q.name for q in shown if q.advanced or q.name in ui.CONDITIONING_ROWS]
    assert not any(form.fields[name].widget.isVisible() for name in folded)
    form.advanced_toggle.setChecked(True)
    form.conditioning_toggle.setChecked(True)
    # The text encoders and VAE show only for a model kept alone (test_the_parts_...).
    assert all(
        form.fields[q.name].widget.isVisible() for q in shown if q.name not in ("text_encoders", "vae")
    )
    strength = form.fields["strength"]
    strength.set_value(0.35)
    assert strength.label.text() == "35 %" and form.values().job.strength == pytest.approx(0.35)


def test_ctrl_enter_in_the_prompt_runs_and_tab_moves_on(plugin, qt, ui):
    form = ui.SettingsForm(fold_advanced=True)
    runs: list[bool] = []
    form.submitted.connect(lambda: runs.append(True))
    edit = form.fields["prompt"].edit
    key, mods = qt.QtCore.Qt.Key, qt.QtCore.Qt.KeyboardModifier
    QKeyEvent, QEvent = qt.QtGui.QKeyEvent, qt.QtCore.QEvent
    edit.setPlainText("moss")
    edit.keyPressEvent(QKeyEvent(QEvent.Type.KeyPress, key.Key_Return, mods.NoModifier))
    assert edit.toPlainText() == "moss" and runs == []  # Enter alone adds no newline
    edit.keyPressEvent(QKeyEvent(QEvent.Type.KeyPress, key.Key_Return, mods.ControlModifier))
    assert runs == [True]
    assert edit.tabChangesFocus()


def test_the_model_picker_shows_families_and_warns_about_test_models(plugin, qt, ui):
    form = ui.SettingsForm()
    model = form.model
    model.set_models([("sd15-real", "sd15"), ("builtin:tiny-sd15", "sd15")], "sd15-real", keep=None)
    assert [model.combo.itemText(i) for i in range(3)] == [
        "Daemon's default (sd15-real)",
        "sd15-real \u2014 SD 1.5",
        "builtin:tiny-sd15 \u2014 SD 1.5",
    ]
    assert model.warning.isHidden()
    model.combo.setCurrentIndex(2)
    assert not model.warning.isHidden() and "noise" in model.warning.text()
    model.set_models([("builtin:tiny-sd15", "sd15")], "builtin:tiny-sd15", keep=None)
    assert not model.warning.isHidden()  # the daemon's default is a test model too


def test_the_fan_is_typed_as_a_list_and_bad_text_says_why(plugin, qt, ui):
    form = ui.SettingsForm(fold_advanced=True)
    fan = form.fields["fan"]
    assert isinstance(fan, ui.ListField) and fan.edit.text() == "" and form.values().job.fan == ()
    form.set_values(plugin.Settings.from_values({"fan": (0.3, 0.55)}))
    assert fan.edit.text() == "30%, 55%"
    fan.edit.setText("0.4, 80%")
    assert form.values().job.fan == pytest.approx((0.4, 0.8)) and fan.error.isHidden()
    fan.edit.setText("40%, lots")
    assert not fan.error.isHidden() and "'lots' is not a number" in fan.error.text()
    assert form.values().job.fan == pytest.approx((0.4, 0.8))  # the last text that parsed
    assert "'lots' is not a number" in form.problem()
    fan.edit.setText("0%, 150%")
    assert "above 0% and at most 100%, not 0%, 150%" in fan.error.text()
    fan.edit.setText("")
    assert fan.error.isHidden() and form.problem() == "" and form.values().job.fan == ()


def test_variations_are_a_spin_box_from_one_to_eight(plugin, qt, ui):
    form = ui.SettingsForm(fold_advanced=True)
    count = form.fields["count"]
    assert (count.box.minimum(), count.box.maximum()) == (1, 8) and count.value() == 1
    count.box.setValue(9)
    assert count.value() == 8


def test_run_from_the_form_refuses_bad_lists_and_count_with_fan(plugin, qt, ui, krita):
    doc, _layer = new_document(krita, 32, 32)
    form = ui.SettingsForm(fold_advanced=True)
    errors: list[str] = []
    form.fields["fan"].edit.setText("abc")
    assert ui.run_from_form(form, doc, None, report_error=lambda _p, m: errors.append(m)) is None
    assert len(errors) == 1 and "'abc' is not a number" in errors[0]
    form.fields["fan"].edit.setText("40%, 80%")
    form.fields["count"].box.setValue(3)
    controller = ui.run_from_form(form, doc, None, report_error=lambda _p, m: errors.append(m))
    assert controller is not None and controller.job is None
    assert "cannot be used together" in errors[-1]
    form.set_values(plugin.Settings())


def _batch_through_the_controller(plugin, qt, ui, krita, daemon, **values):
    doc, layer = new_document(krita, 96, 96)
    feathered_selection(doc, 20, 20, 40, 40)
    controller = ui.JobController(None, report_error=lambda _parent, message: pytest.fail(message))
    finished: list[object] = []
    controller.finished.connect(finished.append)
    chosen = plugin.Settings.from_values({"prompt": "moss", "steps": 2, "server": daemon.url, **values})
    assert controller.start(doc, layer, chosen)
    assert wait(qt, lambda: bool(finished))
    return doc, layer, finished[0]


def test_the_history_previews_applies_and_discards_with_few_undo_steps(plugin, qt, ui, krita, daemon):
    history = importlib.import_module(plugin.__name__ + ".history")
    panel_module = importlib.import_module(plugin.__name__ + ".history_panel")
    history.HISTORY.clear()
    doc, layer, group = _batch_through_the_controller(plugin, qt, ui, krita, daemon, count=3, seed=40)
    key = history.document_key(doc)
    [record] = history.HISTORY.of(key)
    assert [e.name for e in record.entries] == ["moss \u00b7 40", "moss \u00b7 41", "moss \u00b7 42"]
    assert history.find_node(doc, record.source) is layer and record.inserted == group.uniqueId()
    panel = panel_module.HistoryPanel()
    panel.refresh(key)
    top = panel.tree.topLevelItem(0)
    assert top.childCount() == 3 and "3 variations" in top.text(0) and "fake" in top.text(0)
    assert not top.child(0).icon(0).isNull()
    steps = len(doc.undo_steps)

    panel.tree.setCurrentItem(top.child(1))  # a click: the preview, above the job's group
    names = [n.name() for n in doc.topLevelNodes()]
    assert names == ["Background", "moss \u00b7 3 variations", history.PREVIEW_NAME]
    preview = doc.topLevelNodes()[-1]
    assert preview.locked() and doc.activeNode() is layer
    assert len(doc.undo_steps) == steps + 1
    top = panel.tree.topLevelItem(0)
    assert "on the canvas" in top.child(1).text(0)
    panel.tree.setCurrentItem(top.child(2))  # another result: the same layer, new pixels
    assert doc.topLevelNodes()[-1] is preview and len(doc.undo_steps) == steps + 1
    panel.apply_selected()  # the preview becomes the kept layer: still that one step
    assert preview.name() == "moss \u00b7 42" and not preview.locked()
    assert len(doc.undo_steps) == steps + 1 and history.HISTORY.preview is None

    panel.tree.setCurrentItem(panel.tree.topLevelItem(0).child(0))
    assert doc.topLevelNodes()[-1].name() == history.PREVIEW_NAME
    panel.discard_selected()  # forgotten, and off the canvas
    assert [n.name() for n in doc.topLevelNodes()][-1] == "moss \u00b7 42"
    assert [e.seed for e in history.HISTORY.of(key)[0].entries] == [41, 42]

    panel.refresh(key)
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0).child(0))
    panel.use_seed()
    assert ui.SettingsStore.instance().settings.job.seed == 41
    panel.apply_selected()  # the previewed result
    assert doc.topLevelNodes()[-1].name() == "moss \u00b7 41"

    doc.setActiveNode(doc.topLevelNodes()[-1])  # a result layer active: Run again still finds the painting
    assert history.HISTORY.source_of(record) == (doc, layer)
    layer.remove()
    with pytest.raises(plugin.InpaintError, match="'Background' this job was made from is no longer"):
        history.HISTORY.source_of(record)
    krita.docs.remove(doc)  # closed: forgotten
    history.HISTORY.prune({history.document_key(d) for d in krita.docs})
    assert history.HISTORY.of(key) == []


def test_a_batch_cancelled_part_way_keeps_what_was_done(plugin, qt, ui, krita, daemon):
    doc, layer = new_document(krita, 96, 96)
    feathered_selection(doc, 20, 20, 40, 40)
    errors: list[str] = []
    controller = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
    arrived: list[object] = []
    finished: list[object] = []
    controller.resulted.connect(arrived.append)
    controller.finished.connect(finished.append)
    chosen = plugin.Settings.from_values(
        {"prompt": "slow: batch", "count": 4, "seed": 9, "server": daemon.url, "steps": 3}
    )
    assert controller.start(doc, layer, chosen)
    assert wait(qt, lambda: bool(arrived))
    controller.cancel()
    assert wait(qt, lambda: bool(finished))
    group = finished[0]
    assert group.type() == "grouplayer" and [n.name() for n in group.childNodes()] == ["slow: batch \u00b7 9"]
    assert errors == [] and "1 of its 4 results" in controller.error.message
    assert controller.job is None and controller.worker.job is None


def test_the_form_offers_only_the_settings_the_models_family_takes(plugin, qt, ui):
    ui.SettingsStore.instance().set_family("")
    form = ui.SettingsForm(fold_advanced=True)
    form.set_values(plugin.Settings())
    model, guidance, negative = form.model, form.fields["guidance"], form.fields["negative_prompt"]
    models = [("real-xl", "sdxl"), ("dev", "flux"), ("fast", "flux-schnell"), ("big", "sd3")]
    model.set_models(models, "real-xl", keep=None)
    form._follow_family()
    assert form.family == "sdxl" and negative.widget.isEnabled() and guidance.widget.isEnabled()
    assert model.note.text() == "Family: SDXL"
    model.combo.setCurrentIndex(model.combo.findData("fast"))
    assert form.family == "flux-schnell"
    for name in ("negative_prompt", "guidance"):
        assert not form.fields[name].widget.isEnabled() and not form.labels[name].isEnabled()
        assert "FLUX schnell models do not take" in form.fields[name].widget.toolTip()
    assert form.fields["prompt"].widget.isEnabled() and form.fields["steps"].widget.isEnabled()
    assert model.note.text() == "Family: FLUX schnell; it takes no negative prompt or guidance"
    model.combo.setCurrentIndex(model.combo.findData("dev"))
    assert guidance.widget.isEnabled() and not negative.widget.isEnabled()
    assert guidance.value() == 3.5  # FLUX dev's distilled guidance, the painter not having changed it
    assert ui.SettingsStore.instance().settings.job.guidance == 3.5  # and what a run sends
    assert guidance.widget.toolTip() == guidance.param.help
    model.combo.setCurrentIndex(model.combo.findData("big"))
    assert guidance.value() == 7.0 and negative.widget.isEnabled()
    guidance.set_value(5.0)  # the painter's own value stays whatever the family
    model.combo.setCurrentIndex(model.combo.findData("dev"))
    assert guidance.value() == 5.0
    model.combo.setCurrentIndex(0)  # the daemon's default: its family
    assert form.family == "sdxl" and negative.widget.isEnabled()


def test_the_family_is_followed_when_the_daemons_list_arrives(plugin, qt, ui):
    store = ui.SettingsStore.instance()
    store.set_family("")
    form = ui.SettingsForm()
    form.set_values(plugin.Settings.from_values({"model": "dev", "guidance": 7.0}))
    assert form.family == "" and form.fields["negative_prompt"].widget.isEnabled()  # not known yet
    form._models_loaded([("dev", "flux"), ("other", "sd15")], "other")
    assert form.family == "flux" and not form.fields["negative_prompt"].widget.isEnabled()
    assert form.values().job.guidance == 3.5
    other = ui.SettingsForm()  # another form (the docker) shows the store's values as they are
    assert other.values().job.guidance == 3.5 and other.values().job.model == "dev"


def test_a_value_chosen_for_a_family_is_not_taken_for_its_default_by_a_new_form(plugin, qt, ui):
    store = ui.SettingsStore.instance()
    store.set_family("")
    form = ui.SettingsForm()
    form.set_values(plugin.Settings())
    form._models_loaded([("dev", "flux"), ("other", "sd15")], "other")
    form.model.combo.setCurrentIndex(form.model.combo.findData("dev"))
    assert form.values().job.guidance == 3.5 and store.family == "flux"
    form.fields["guidance"].set_value(7.0)  # the painter wants 7 with FLUX dev
    assert store.settings.job.guidance == 7.0
    again = ui.SettingsForm()  # the dialog opened later: no family known until its list comes
    assert again.family == "" and again.values().job.guidance == 7.0
    again._models_loaded([("dev", "flux"), ("other", "sd15")], "other")
    assert again.family == "flux" and again.values().job.guidance == 7.0 == store.settings.job.guidance


def test_the_map_pickers_list_the_images_layers_and_masks_and_keep_a_missing_name(plugin, qt, ui, krita):
    doc, layer = new_document(krita, 64, 64)
    group = doc.add_layer("Group", "grouplayer")
    doc.add_layer("Strength", parent=group)
    doc.add_layer("Edge", "transparencymask", parent=layer)
    form = ui.SettingsForm(fold_advanced=True)
    picker = form.fields["mask_layer"]
    items = [(picker.combo.itemText(i), picker.combo.itemData(i)) for i in range(picker.combo.count())]
    assert items == [
        ("Selection", ""),
        ("Group", "Group"),
        ("    Strength", "Strength"),
        ("Background", "Background"),
        ("    Edge (transparency mask)", "Edge"),
    ]
    picker.combo.setCurrentIndex(2)
    assert form.values().host.mask_layer == "Strength"
    assert ui.SettingsStore.instance().settings.host.mask_layer == "Strength"  # kept as chosen
    context = form.fields["context"]
    texts = [context.combo.itemText(i) for i in range(context.combo.count())]
    assert texts[:3] == ["Auto", "Whole image", "Selection bounds"] and "    Bounds of Strength" in texts
    # Another image: its layers are offered, the chosen name stays chosen, marked.
    other, _ = new_document(krita, 32, 32)
    form.refresh_layers()
    assert picker.combo.currentText() == "Strength (not in this image)"
    assert form.values().host.mask_layer == "Strength"
    form.fields["context"].set_value("1,2,30,40")
    assert context.combo.currentText() == "Rectangle 1,2,30,40" and form.values().host.context == "1,2,30,40"
    form.set_values(plugin.Settings())


def test_enum_settings_are_combos_and_round_trip(plugin, qt, ui):
    form = ui.SettingsForm()
    depth = form.fields["depth"]
    assert [depth.combo.itemText(i) for i in range(depth.combo.count())] == ["Off", "Near", "Far"]
    values = plugin.Settings.from_values(
        {"depth": "far", "depth_combine": "min", "invert_mask": True, "mask_black": 0.25, "mask_gamma": 2.5}
    )
    form.set_values(values)
    assert form.values() == values
    form.set_values(plugin.Settings())


def test_the_strength_map_through_the_controller_adds_one_layer_and_no_history(plugin, qt, ui, krita, daemon):
    doc, layer = new_document(krita, 96, 96)
    feathered_selection(doc, 20, 20, 40, 40)
    finished: list[object] = []
    errors: list[str] = []
    seeds: list[object] = []
    ui.SettingsStore.instance().seed_used.connect(seeds.append)
    chosen = plugin.Settings.from_values({"prompt": "moss", "server": daemon.url})
    controller = ui.start_job(
        doc,
        layer,
        chosen,
        None,
        report_error=lambda _p, m: errors.append(m),
        request=plugin.protocol.StrengthMapRequest,
    )
    controller.finished.connect(finished.append)
    assert wait(qt, lambda: bool(finished))
    assert errors == [] and finished[0].name() == "Strength map" and len(doc.undo_steps) == 1
    assert type(daemon.submits[-1]).__name__ == "StrengthMapRequest"
    assert seeds == []  # a map has no seed to reuse
    history = importlib.import_module(plugin.__name__ + ".history")
    assert history.HISTORY.of(history.document_key(doc)) == []
    ui.SettingsStore.instance().seed_used.disconnect(seeds.append)


def test_the_dialog_fits_a_768_px_screen(plugin, qt, ui):
    """All settings unfolded are taller than a laptop screen: the dialog scrolls instead."""
    dialog = ui.InpaintDialog()
    assert dialog.form.sizeHint().height() > 700  # why it scrolls
    assert 400 <= dialog.sizeHint().height() <= 700, dialog.sizeHint()
    assert dialog.form.fields["context"].widget.isVisibleTo(dialog)


def test_the_parts_of_a_model_kept_alone_are_offered_only_where_there_is_a_choice(plugin, qt, ui):
    p = plugin.protocol
    flow = ("flux", "flux-fill", "flux-schnell", "sd3")
    listing = p.Models(
        [p.ModelInfo("lone", "flux", ("vae", "t5")), p.ModelInfo("whole", "flux"), p.ModelInfo("sd", "sd15")],
        "whole",
        text_encoders=[p.PartInfo("t5a", "t5", flow), p.PartInfo("t5b", "t5", flow)],
        vaes=[p.PartInfo("ae", "vae", flow)],
    )
    form = ui.SettingsForm(fold_advanced=True)
    form.show()
    form.advanced_toggle.setChecked(True)
    form._models_loaded([(m.name, m.family) for m in listing.models], "whole", {}, listing)
    vae, text_encoders = form.fields["vae"], form.fields["text_encoders"]

    def choose(model: str) -> None:  # as the painter does: the combo
        form.model.combo.setCurrentIndex(form.model.combo.findData(model))

    assert not vae.widget.isVisible() and not text_encoders.widget.isVisible()  # the default holds them
    choose("lone")
    assert vae.widget.isVisible() and text_encoders.widget.isVisible()
    assert [vae.combo.itemText(i) for i in range(vae.combo.count())] == ["Automatic", "ae"]
    assert "T5-XXL: t5a, t5b" in text_encoders.widget.toolTip()
    assert text_encoders.edit.placeholderText() == "Automatic (e.g. t5a)"  # names, not numbers
    text_encoders.edit.setText("t5b")
    assert form.values().job.text_encoders == ("t5b",) and not text_encoders.problem()
    text_encoders.edit.setText("")
    vae.combo.setCurrentIndex(1)
    assert form.values().job.vae == "ae"
    choose("sd")
    assert vae.widget.isVisible() and not text_encoders.widget.isVisible()  # chosen: shown, to clear
    vae.combo.setCurrentIndex(0)
    choose("whole")
    assert not vae.widget.isVisible() and form.values().job.vae is None
    form.model.combo.setCurrentIndex(0)  # the daemon's default again, for the forms of later tests


def test_conditioning_is_folded_and_offers_the_daemons_add_ons_for_the_models_family(plugin, qt, ui, krita):
    p = plugin.protocol
    doc, _layer = new_document(krita, 64, 64)
    doc.add_layer("Lines")
    form = ui.SettingsForm(fold_advanced=True)
    form.show()
    assert form.conditioning.isHidden() and form.conditioning_toggle.text() == "Conditioning"
    form.conditioning_toggle.setChecked(True)
    addons = {
        "loras": [("ink", "sd15"), ("ink-xl", "sdxl")],
        "controlnets": [("canny15", "sd15-inpaint"), ("cannyxl", "sdxl")],
        "ip_adapters": [("ip15", "sd15")],
    }
    form._models_loaded([("a", "sd15"), ("b", "sdxl")], "a", addons)
    loras = form.fields["loras"]
    loras.rows.add_button.click()
    combo = loras.rows.rows[0].combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["(pick a LoRA)", "ink"]  # sd15 only
    combo.setCurrentIndex(1)
    loras.rows.rows[0].weight.setValue(-0.5)
    assert form.values().job.loras == (p.Lora("ink", -0.5),)
    assert ui.SettingsStore.instance().settings.job.loras == (p.Lora("ink", -0.5),)
    form.conditioning.controls.add_button.click()
    row = form.conditioning.rows()[0]
    layers = [row.layer.combo.itemData(i) for i in range(row.layer.combo.count())]
    assert layers[0] == "" and "Lines" in layers
    models = row.fields["model"].combo
    assert [models.itemText(i) for i in range(models.count())] == [
        "Automatic",
        "canny15",
    ]  # the inpaint variant fits
    assert "Pick a layer for control layer 1" in form.problem()
    row.layer.combo.setCurrentIndex(row.layer.combo.findData("Lines"))
    row.fields["kind"].combo.setCurrentText("Lineart")
    row.fields["end"].box.setValue(60)
    row.fields["preprocess"].check.setChecked(True)
    reference = form.conditioning.reference
    reference.layer.combo.setCurrentIndex(reference.layer.combo.findData("Lines"))
    reference.fields["weight"].box.setValue(0.4)
    chosen = ui.SettingsStore.instance().conditioning
    assert form.problem() == ""
    assert form.conditioning_toggle.text() == "Conditioning (3)"  # on even while folded: said
    assert chosen.controls == (
        ui.ControlLayer("Lines", p.ControlParams("lineart", None, 1.0, 0.0, 0.6, True)),
    )
    assert chosen.references == (ui.ReferenceLayer("Lines", p.ReferenceParams(0.4, None)),)
    # kept in kritarc, and shown by another form (the dialog's)
    settings = importlib.import_module(plugin.__name__ + ".settings")
    assert settings.load_conditioning() == chosen
    other = ui.SettingsForm()
    assert other.conditioning.value() == chosen and other.values().job.loras == (p.Lora("ink", -0.5),)
    # an SDXL model: the lists follow its family
    form.model.combo.setCurrentIndex(form.model.combo.findData("b"))  # as a painter picks it
    assert [models.itemText(i) for i in range(models.count())] == ["Automatic", "cannyxl"]
    form.conditioning.controls.remove(row)
    form.fields["loras"].set_value(())
    form.conditioning.reference.layer.set_value("")
    form.conditioning.reference.changed.emit()
    assert ui.SettingsStore.instance().conditioning == ui.Conditioning()
    form.set_values(plugin.Settings())


def test_a_run_from_the_form_sends_its_control_layer(plugin, qt, ui, krita, daemon):
    p = plugin.protocol
    doc, layer = new_document(krita, 96, 96)
    lines = doc.add_layer("Lines")
    lines.paint(bytes((i * 7) % 256 for i in range(40 * 30 * 4)), 0, 0, 40, 30)
    lines.move(30, 20)
    feathered_selection(doc, 20, 20, 40, 40)
    form = ui.SettingsForm(fold_advanced=True)
    form.set_values(plugin.Settings.from_values({"prompt": "inked", "steps": 2, "server": daemon.url}))
    store = ui.SettingsStore.instance()
    store.update_conditioning(
        ui.Conditioning((ui.ControlLayer("Lines", p.ControlParams("canny", strength=0.7)),))
    )
    assert [r.layer.value() for r in form.conditioning.rows()] == ["Lines"]
    finished: list[object] = []
    controller = ui.run_from_form(form, doc, None, report_error=lambda _p, m: pytest.fail(m))
    controller.finished.connect(finished.append)
    assert wait(qt, lambda: bool(finished))
    submit = daemon.submit_by_prompt["inked"]
    region = p.Rect(submit.x, submit.y, submit.image.width, submit.image.height)
    (control,) = submit.controls
    assert control.params.strength == pytest.approx(0.7)
    assert control.image.data == lines.pixelData(region.x, region.y, region.width, region.height)
    # a name no layer has: said, nothing sent
    store.update_conditioning(ui.Conditioning((ui.ControlLayer("Gone"),)))
    errors: list[str] = []
    controller = ui.run_from_form(form, doc, None, report_error=lambda _p, m: errors.append(m))
    assert controller is not None and controller.job is None and "'Gone'" in errors[0]
    store.update_conditioning(ui.Conditioning())
    form.set_values(plugin.Settings())
