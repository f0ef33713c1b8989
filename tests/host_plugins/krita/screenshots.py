"""Screenshots of the Krita docker in a real Krita window, for the plugin's README.

    .venv/bin/python -m tests.host_plugins.krita.screenshots [OUT_DIR]

(default OUT_DIR: host_plugins/krita/screenshots). Needs `kritarunner` and `Xvfb`
(apt-get install krita xvfb). For each screen size it starts an X server of that
size, Krita in it with the plugin installed as it ships, and the stand-in daemon
(tests/support/fake_daemon.py, colours inverted so that a result shows), and saves
the whole screen: before a run, after a run of three variations, with the
History open and one result previewed, after Show strength map with a painted
"Strength" layer as the map, folded and with the map's settings unfolded, and after a
run with the Conditioning fold open (a LoRA, a hidden "Lines" layer as the control
layer, line art through a ControlNet, an image prompt), and with a FLUX.1 transformer kept
alone chosen (its family, and the text encoders and VAE to choose under Advanced); plus the
docker alone at each stage; and the menu's dialog.

The part after "inside Krita" runs in Krita's own Python (standard library only).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from typing import Any

SIZES = [(1366, 768), (1920, 1080)]
STAGES = ["before", "after", "history", "map", "map-settings", "conditioning", "flux"]


def main(argv: list[str]) -> int:
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from differential_inpaint.host_plugins.install import krita as krita_installer
    from tests.host_plugins.krita.test_in_krita import one_krita_at_a_time
    from tests.support.fake_daemon import fake_daemon

    root = Path(__file__).resolve().parents[3]
    out = Path(argv[0]) if argv else root / "host_plugins" / "krita" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    missing = [tool for tool in ("kritarunner", "xvfb-run") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)} (apt-get install krita xvfb)", file=sys.stderr)
        return 2
    problems = []
    with tempfile.TemporaryDirectory() as tmp, fake_daemon(invert_colours=True, split_flux=True) as daemon:
        base = Path(tmp)
        pykrita = base / "resources" / "pykrita"
        krita_installer.install(pykrita)
        for width, height in SIZES:
            work = base / f"{width}x{height}"
            config_home = work / "config"
            config_home.mkdir(parents=True)
            (config_home / "kritadisplayrc").write_text("[General]\nOpenGLRenderer=none\n", encoding="utf-8")
            verdict = work / "verdict.json"
            config = {"out": str(out), "size": [width, height], "server": daemon.url, "verdict": str(verdict)}
            (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
            env = {
                **os.environ,
                "QT_QPA_PLATFORM": "xcb",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(pykrita)]),
                "XDG_CONFIG_HOME": str(config_home),
                "XDG_RUNTIME_DIR": str(work),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            argv_krita = ["kritarunner", "-s", "screenshots", "-f", "inside", str(work / "config.json")]
            with one_krita_at_a_time():
                proc = subprocess.run(
                    ["xvfb-run", "-a", "-s", f"-screen 0 {width}x{height}x24", *argv_krita],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    timeout=600,
                )
            result = json.loads(verdict.read_text(encoding="utf-8")) if verdict.is_file() else {}
            if result.get("error") or not result.get("saved"):
                problems.append(f"{width}x{height}: {result.get('error') or proc.stdout[-3000:]}")
            for path in result.get("saved", []):
                print(path)  # and "window WxH": the size the shots show
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


# --- inside Krita ---------------------------------------------------------------------


def inside(args: list[str]) -> None:
    with open(args[0], encoding="utf-8") as f:
        config = json.load(f)
    verdict: dict[str, Any] = {"saved": []}
    try:
        _shoot(config, verdict["saved"])
    except Exception:
        verdict["error"] = traceback.format_exc()
    with open(config["verdict"], "w", encoding="utf-8") as f:
        json.dump(verdict, f)
    sys.stdout.flush()
    os._exit(0)  # Krita's teardown of a window opened this way may crash; the shots are saved


def _pump(seconds: float) -> None:
    from differential_inpaint.qt import QtCore

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.01)


def _picture(w: int, h: int) -> bytes:
    """A landscape-ish picture in B,G,R,A: sky, hills, a sun."""
    out = bytearray(w * h * 4)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 4
            hill = h * 0.62 + 40 * math.sin(x / 90)
            if (x - w * 0.7) ** 2 + (y - h * 0.28) ** 2 < (h * 0.09) ** 2:
                r, g, b = 250, 210, 90
            elif y > hill:
                r, g, b = 60 + y % 40, 120 + (x // 8) % 30, 50
            else:
                r, g, b = 120 + y * 80 // h, 170 + y * 60 // h, 235
            out[i : i + 4] = bytes((b, g, r, 255))
    return bytes(out)


def _strength(w: int, h: int) -> bytes:
    """A painter's strength layer in B,G,R,A: white over the sky fading to black at the hills
    (change the sky fully, the land not at all), painted on the left two thirds only."""
    out = bytearray(w * h * 4)
    for y in range(h):
        g = max(0, min(255, round(255 * (1 - y / (h * 0.6)) * 1.4)))
        row = bytes((g, g, g, 255)) * (w * 2 // 3) + bytes(4) * (w - w * 2 // 3)
        out[y * w * 4 : (y + 1) * w * 4] = row
    return bytes(out)


def _lines(w: int, h: int) -> bytes:
    """Line art in B,G,R,A: dark strokes (a few arches and a ground line) on transparency."""
    out = bytearray(w * h * 4)
    ink = bytes((30, 30, 30, 255))
    for x in range(w):
        for cx in (w // 6, w // 2, 5 * w // 6):
            dx = x - cx
            if abs(dx) < w // 7:
                y = round(h * 0.75 - math.sqrt(max(0, (w // 7) ** 2 - dx * dx)) * 1.2)
                for t in range(3):
                    if 0 <= y + t < h:
                        out[((y + t) * w + x) * 4 : ((y + t) * w + x) * 4 + 4] = ink
        for y in range(h - 8, h - 5):
            out[(y * w + x) * 4 : (y * w + x) * 4 + 4] = ink
    return bytes(out)


def _shoot(config: dict[str, Any], saved: list[str]) -> None:
    from krita import Krita, Selection

    import differential_inpaint  # noqa: F401 - registers the extension and the docker
    from differential_inpaint import ui
    from differential_inpaint.docker import DifferentialInpaintDocker
    from differential_inpaint.qt import QtCore, QtWidgets

    width, height = config["size"]
    krita = Krita.instance()
    QtWidgets.QApplication.clipboard().setText("differential-inpaint")
    window = krita.openWindow()
    qwindow = window.qwindow()
    qwindow.show()
    _pump(0.5)
    # No window manager to maximize it (and Krita's own geometry came out taller
    # than a 768 px screen): the screen's size, fixed.
    qwindow.setGeometry(0, 0, width, height)
    qwindow.setFixedSize(width, height)
    _pump(0.5)
    doc = krita.createDocument(960, 640, "Landscape", "RGBA", "U8", "", 72.0)
    layer = doc.createNode("Painting", "paintlayer")
    doc.rootNode().addChildNode(layer, None)
    layer.setPixelData(_picture(960, 640), 0, 0, 960, 640)
    strength = doc.createNode("Strength", "paintlayer")
    doc.rootNode().addChildNode(strength, layer)
    strength.setPixelData(_strength(960, 640), 0, 0, 960, 640)
    strength.setVisible(False)  # a map is painted, then hidden
    lines = doc.createNode("Lines", "paintlayer")
    doc.rootNode().addChildNode(lines, strength)
    lines.setPixelData(_lines(420, 240), 0, 0, 420, 240)
    lines.move(140, 270)  # drawn elsewhere than the painting's origin: read by image coordinates
    lines.setVisible(False)  # a control layer is usually hidden
    doc.refreshProjection()
    doc.waitForDone()
    window.addView(doc)
    _pump(0.5)  # the Layers docker makes the top layer active once events run: the painting after
    doc.setActiveNode(layer)
    selection = Selection()
    selection.select(180, 300, 320, 200, 255)
    selection.feather(24)
    doc.setSelection(selection)
    doc.waitForDone()
    ui.show_error = lambda _parent, message: saved.append(f"error: {message}")
    docker = next(d for d in krita.dockers() if isinstance(d, DifferentialInpaintDocker))
    # A painter's arrangement: the docker and Layers on the right (Krita's default
    # workspace stacks six more dockers there, each a few rows high).
    layers = None
    for dock in qwindow.findChildren(QtWidgets.QDockWidget):
        if dock.objectName() == "KisLayerBox":
            layers = dock
        elif dock is not docker and dock.isVisible() and dock.x() > width // 2:
            dock.hide()
    docker.show()
    docker.raise_()
    if layers is not None:
        qwindow.resizeDocks([docker, layers], [height * 2 // 3, height // 4], QtCore.Qt.Orientation.Vertical)
    _pump(0.5)
    values = docker.form.values().values()
    values.update(
        prompt="a mossy stone wall, overgrown", count=3, seed=1234, steps=4, server=config["server"]
    )
    docker.form.set_values(ui.Settings.from_values(values))
    docker.form.refresh_models()
    docker.daemon.refresh()
    _pump(1.5)
    docker.update_run_button()

    def shot(stage: str) -> None:
        doc.waitForDone()
        _pump(1.5)
        for name, pixmap in (
            (f"krita-{stage}-{width}x{height}.png", qwindow.grab()),
            (f"docker-{stage}-{width}x{height}.png", docker.grab()),
        ):
            path = os.path.join(config["out"], name)
            if not pixmap.save(path, "PNG"):
                raise RuntimeError(f"could not save {path}")
            saved.append(path)

    saved.append(f"window {qwindow.width()}x{qwindow.height()}")
    shot("before")
    docker.run_button.click()
    end = time.monotonic() + 60
    while docker.controller is not None and time.monotonic() < end:
        _pump(0.1)
    docker.history_toggle.setChecked(False)
    shot("after")
    docker.history_toggle.setChecked(True)
    docker.update_history()
    _pump(0.3)
    top = docker.history.tree.topLevelItem(0)
    if top is not None and top.childCount() > 1:
        docker.history.tree.setCurrentItem(top.child(1))
    scroll = docker.widget()
    scroll.ensureWidgetVisible(docker.history.tree)
    shot("history")
    # The painted strength layer as the map: its strength map, nothing selected.
    docker.history_toggle.setChecked(False)
    krita.action("deselect").trigger()
    doc.waitForDone()
    values = docker.form.values().values()
    values.update(mask_layer="Strength", count=1, mask_gamma=1.5)
    docker.form.set_values(ui.Settings.from_values(values))
    doc.setActiveNode(layer)
    _pump(0.3)
    docker.show_map()
    end = time.monotonic() + 60
    while docker.controller is not None and time.monotonic() < end:
        _pump(0.1)
    docker.update_run_button()
    scroll.ensureWidgetVisible(docker.form.fields["prompt"].widget)
    shot("map")
    docker.form.advanced_toggle.setChecked(True)
    _pump(0.3)
    scroll.ensureWidgetVisible(docker.map_button)  # the map's settings sit right above it
    shot("map-settings")
    # Conditioning: a LoRA and the "Lines" layer as a line-art control layer, then a run.
    docker.form.advanced_toggle.setChecked(False)
    values = docker.form.values().values()
    values.update(mask_layer="", mask_gamma=1.0, prompt="a stone aqueduct, arches")
    docker.form.set_values(ui.Settings.from_values(values))
    for node in doc.rootNode().childNodes():
        if node.name() == "Strength map":
            node.setVisible(False)  # the painting shows again, and then the result
    doc.setSelection(selection)
    doc.waitForDone()
    form = docker.form
    form.conditioning_toggle.setChecked(True)
    loras = form.fields["loras"]
    loras.rows.add_button.click()
    lora = loras.rows.rows[-1]
    lora.combo.setCurrentIndex(max(lora.combo.findData("fake-lora"), 0))
    lora.weight.setValue(0.8)
    form.conditioning.controls.add_button.click()
    form.refresh_layers()
    row = form.conditioning.rows()[-1]
    row.layer.combo.setCurrentIndex(max(row.layer.combo.findData("Lines"), 0))
    row.fields["kind"].combo.setCurrentText("lineart")
    model = row.fields["model"].combo
    model.setCurrentIndex(max(model.findData("fake-canny"), 0))
    row.fields["strength"].box.setValue(0.8)
    row.fields["end"].box.setValue(60)
    reference = form.conditioning.reference
    reference.layer.combo.setCurrentIndex(max(reference.layer.combo.findData("Painting"), 0))
    doc.setActiveNode(layer)
    _pump(0.3)
    docker.run()
    end = time.monotonic() + 60
    while docker.controller is not None and time.monotonic() < end:
        _pump(0.1)
    docker.update_run_button()
    scroll.ensureWidgetVisible(form.conditioning.reference)
    scroll.ensureWidgetVisible(form.conditioning_toggle)
    shot("conditioning")
    # A FLUX.1 transformer kept alone: its family, only the settings it takes, and under
    # Advanced the text encoders and VAE to choose (two T5 files fit it).
    form.conditioning_toggle.setChecked(False)
    form.model.combo.setCurrentIndex(max(form.model.combo.findData("flux1-dev-Q8_0.gguf"), 0))
    form.advanced_toggle.setChecked(True)
    _pump(0.5)
    scroll.ensureWidgetVisible(form.fields["vae"].widget)
    scroll.ensureWidgetVisible(form.fields["text_encoders"].widget)
    shot("flux")
    form.model.combo.setCurrentIndex(0)
    form.advanced_toggle.setChecked(False)
    # Tools > Scripts > Differential Inpaint's dialog: every setting, scrolling.
    dialog = ui.InpaintDialog(qwindow)
    dialog.show()
    _pump(1.0)
    path = os.path.join(config["out"], f"dialog-{width}x{height}.png")
    if not dialog.grab().save(path, "PNG"):
        raise RuntimeError(f"could not save {path}")
    saved.append(path)
    dialog.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
