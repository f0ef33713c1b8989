"""Conditioning in real GIMP 3.0 (Debian trixie chroot): control layers, a reference
layer and LoRAs through the procedures' slot arguments (control-drawable, control-2-…,
reference-…, loras).

Against the stand-in daemon the bytes are checked: each control image is its drawable
over the job's region, placed by image coordinates; the reference is its layer whole.
Against the real daemon (builtin:tiny-sd15 with builtin:tiny-controlnet-sd15 and
builtin:tiny-lora-sd15) a job runs end to end and keeps the map's zeros bit for bit,
and the control layer, the LoRA and a reference layer each change the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.client import connection
from tests.support.daemon import running_daemon
from tests.support.fake_daemon import FakeDaemon, fake_daemon
from tests.support.hosts import require_host

from . import gimp_host
from .test_in_gimp import check_declared, check_failure, check_success, expected_map, region_of

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

LINES = [150, 95, 120, 90]  # the control layer, at other offsets than the painting, partly in the region
PHOTO = [20, 30, 64, 48]  # the reference layer, outside the region: it travels whole
SMALL = {
    "image": [400, 300],
    "precision": "u8",
    "layer": {"x": 10, "y": 5, "width": 380, "height": 290, "alpha": False},
    "selection": {"shape": "rect", "rect": [200, 120, 60, 50]},
}
SCREEN = "1366x768x24"  # a small laptop's: the dialog must fit it with either fold open
CONTROLNET, LORA = "builtin:tiny-controlnet-sd15", "builtin:tiny-lora-sd15"
IP_ADAPTER = "builtin:tiny-ip-adapter-sd15"


def fake_scenarios(url: str) -> list[dict[str, Any]]:
    def args(prompt: str, **more: Any) -> dict[str, Any]:
        return {"prompt": prompt, "server-url": url, "steps": 3, **more}

    lines = {"key": "lines", "kind": "layer", "name": "Lines", "rect": LINES}
    return [
        {
            "name": "controls-reference-loras",
            **SMALL,
            "maps": [lines, {"key": "photo", "kind": "layer", "name": "Photo", "rect": PHOTO}],
            "args": args(
                "conditioned",
                **{
                    "control-drawable": "@lines",
                    "control-kind": "Lineart",
                    "control-model": "fake-canny",
                    "control-strength": 0.7,
                    "control-start": 0.1,
                    "control-end": 0.6,
                    "control-preprocess": True,
                    "control-2-drawable": "@lines",  # the same layer, the slot's defaults
                    "reference-drawable": "@photo",
                    "reference-weight": 0.4,
                    "reference-model": "fake-ip-adapter",
                    "loras": "fake-lora:0.8, other:-0.5",
                },
            ),
        },
        {
            "name": "control-channel",
            **SMALL,
            "maps": [{"key": "strength", "kind": "channel", "name": "Strength"}],
            "args": args("a channel as the control", **{"control-2-drawable": "@strength"}),
        },
        # Picked in the dialog, as the chooser's popup sets it: the fold's title follows.
        {
            "name": "dialog-control-pick",
            **SMALL,
            "maps": [lines],
            "args": args("not typed", loras="fake-lora", **{"control-model": "fake-canny"}),
            "probe": {
                "answer": "ok",
                "typed-prompt": "control picked in the dialog",
                "picked-control": "@lines",
                "screenshot": "/tmp/di-conditioning-test.png",  # each fold opened in turn, measured
            },
        },
        # Nothing is sent and the image stays as it was.
        {
            "name": "control-of-another-image",
            **SMALL,
            "maps": [{"key": "elsewhere", "kind": "other-image", "name": "Elsewhere"}],
            "args": args("a control from elsewhere", **{"control-drawable": "@elsewhere"}),
        },
        {
            "name": "control-start-after-end",
            **SMALL,
            "maps": [lines],
            "args": args(
                "backwards", **{"control-drawable": "@lines", "control-start": 0.7, "control-end": 0.5}
            ),
        },
        {
            "name": "lora-without-a-name",
            **SMALL,
            "args": args("bad lora", loras=":0.8"),
        },
    ]


@pytest.fixture(scope="module")
def fake_run() -> Iterator[tuple[gimp_host.GimpRun, FakeDaemon]]:
    require_host(*gimp_host.chroot_ready())
    gimp_host.install_plugin()
    with fake_daemon(invert_colours=True) as daemon:
        run = gimp_host.GimpRun(fake_scenarios(daemon.url), screen=SCREEN).run()
        print(f"\nGIMP ran {len(run.scenarios)} conditioning scenarios in {run.seconds:.1f} s")
        yield run, daemon


def test_the_slots_are_arguments_derived_from_the_protocol(
    fake_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """Two control slots and a reference slot, in both procedures: each a drawable (none:
    off) and the protocol's parameters of a control or reference image under its prefix."""
    info = fake_run[0].verdict("procedure")
    assert fake_run[0].verdict("map-procedure")["arguments"] == info["arguments"]
    for prefix, declared in (
        ("control", p.CONTROL_PARAMS),
        ("control-2", p.CONTROL_PARAMS),
        ("reference", p.REFERENCE_PARAMS),
    ):
        assert info["kinds"][f"{prefix}-drawable"] == "GimpParamDrawable", prefix
        check_declared(info, declared, prefix)
    assert info["defaults"]["control-kind"] == "canny" and info["defaults"]["loras"] == ""
    assert info["blurbs"]["loras"].startswith("LoRAs the daemon lists, each with a weight: name:0.8")


def layer_over(submit: Any, rect: list[int]) -> bytes:
    """A layer at `rect` filled with the test pattern, over the submit's region: its own
    RGBA bytes where it lies, transparent elsewhere."""
    return expected_map(submit, rect, p.PixelFormat.RGBA8)


def test_control_layers_a_reference_and_loras_travel(fake_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """Each control image is its layer over the job's region (the layer at other offsets:
    its pixels placed by image coordinates, transparent where it has none) with the slot's
    parameters; the reference is its layer whole; the LoRAs as typed."""
    run, daemon = fake_run
    _, submit = check_success(run, daemon, "controls-reference-loras", p.PixelFormat.RGBA8)
    region = p.Rect(*region_of(submit))
    assert region.width * region.height < 400 * 300  # the job's region, not the image
    assert len(submit.controls) == 2
    first, second = submit.controls
    assert (first.image.width, first.image.height) == (region.width, region.height)
    assert first.image.format is p.PixelFormat.RGBA8 and first.image.color is p.ColorEncoding.SRGB
    assert first.image.data == layer_over(submit, LINES)
    assert bytes(4) in first.image.data and first.image.data.count(0) < len(first.image.data)  # both
    assert first.params == p.ControlParams("lineart", "fake-canny", 0.7, 0.1, 0.6, True)
    assert second.image.data == first.image.data and second.params == p.ControlParams()
    (reference,) = submit.ip_adapters
    assert (reference.image.width, reference.image.height) == (PHOTO[2], PHOTO[3])
    whole = SimpleNamespace(x=PHOTO[0], y=PHOTO[1], image=reference.image)  # the region: the layer
    assert reference.image.data == layer_over(whole, PHOTO)
    assert reference.params == p.ReferenceParams(0.4, "fake-ip-adapter")
    assert submit.params.loras == (p.Lora("fake-lora", 0.8), p.Lora("other", -0.5))


def test_a_channel_as_a_control_travels_as_opaque_gray(
    fake_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    run, daemon = fake_run
    _, submit = check_success(run, daemon, "control-channel", p.PixelFormat.RGBA8)
    (control,) = submit.controls
    data = control.image.data
    gray = expected_map(submit, [0, 0, 400, 300], p.MaskFormat.GRAY8)
    assert data[0::4] == data[1::4] == data[2::4] and set(data[3::4]) == {255}
    assert max(abs(a - b) for a, b in zip(data[0::4], gray, strict=True)) <= 1  # the gray as seen
    assert submit.params.loras == () and submit.ip_adapters == ()  # only what was given travels


def test_a_control_layer_picked_in_the_dialog(fake_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """The control layer chooser (Browse… in the Conditioning fold) names what is picked,
    the fold's title counts it; the job then sends it."""
    run, daemon = fake_run
    dialog = run.verdict("dialog-control-pick")["dialog"]
    assert "Conditioning: 1 LoRA" in dialog["labels"], dialog["labels"]
    assert {"Control layer", "Control layer 2", "Reference layer", "None: not used"} <= set(dialog["labels"])
    # The daemon's ControlNets and IP-Adapters as lists (empty: automatic), its LoRAs named.
    texts = {text for combo in dialog["combos"] for row in combo for text in row}
    assert {"fake-canny \u2014 sd15", "fake-ip-adapter \u2014 sd15"} <= texts, dialog["combos"]
    assert "Automatic" in texts
    assert "The daemon's LoRAs: fake-lora (sd15), fake-lora-xl (sdxl)" in dialog["labels"]
    picked = dialog["after_control_pick"]["labels"]
    assert "Lines (layer)" in picked and "Conditioning: 1 control layer, 1 LoRA" in picked, picked
    # Opening one fold closes the other (Conditioning, then Advanced), so either fits 768 pixels.
    assert dialog["conditioning_open"] == [True, False] and dialog["advanced_open"] == [False, True]
    for fold in ("conditioning", "advanced"):
        width, height = dialog[f"{fold}_size"]
        assert width <= 1366 and height <= 768 - 48, (fold, width, height)  # a title bar and a panel
    _, submit = check_success(
        run, daemon, "dialog-control-pick", p.PixelFormat.RGBA8, "control picked in the dialog"
    )
    (control,) = submit.controls
    assert control.image.data == layer_over(submit, LINES)
    assert control.params == p.ControlParams(model="fake-canny")  # kept through the dialog's list
    assert submit.params.loras == (p.Lora("fake-lora", 1.0),)


def test_a_control_layer_of_another_image_is_refused(fake_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(fake_run[0], "control-of-another-image")
    assert message.startswith("The control layer 'Elsewhere' belongs to another image"), message
    assert "a control from elsewhere" not in fake_run[1].submit_by_prompt


def test_a_control_that_ends_before_it_starts_is_refused(
    fake_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    message = check_failure(fake_run[0], "control-start-after-end")
    assert message == "Cannot start: control layer: Start (0.7) must be below End (0.5).", message
    assert "backwards" not in fake_run[1].submit_by_prompt


def test_a_lora_without_a_name_is_refused(
    fake_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    message = check_failure(fake_run[0], "lora-without-a-name")
    assert "LoRAs needs a name" in message, message
    assert "bad lora" not in fake_run[1].submit_by_prompt


# --- the real daemon ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run() -> Iterator[gimp_host.GimpRun]:
    require_host(*gimp_host.chroot_ready())
    with running_daemon() as daemon:
        welcome = connection.server_info(daemon.url, timeout=10.0)
        # The test daemon offers the built-in models: a missing one is a failure, not a skip.
        listed = [m.name for m in (*welcome.controlnets, *welcome.loras, *welcome.ip_adapters)]
        assert {CONTROLNET, LORA, IP_ADAPTER} <= set(listed), listed
        gimp_host.install_plugin()
        image = {
            "image": [128, 112],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 128, "height": 112, "alpha": False},
            "selection": None,
            "maps": [
                {"key": "strength", "kind": "channel", "name": "Strength", "zero_left": 64, "gradient": True},
                {"key": "lines", "kind": "layer", "name": "Lines", "rect": [25, 30, 90, 70]},
            ],
        }
        plain = {
            "prompt": "ink drawing",
            "server-url": daemon.url,
            "steps": 2,
            "seed": 11,
            "model": "builtin:tiny-sd15",
            "mask-drawable": "@strength",
        }
        control = {
            "control-drawable": "@lines",
            "control-kind": "canny",
            "control-model": CONTROLNET,
            "control-end": 0.8,
        }
        lora = {"loras": f"{LORA}:0.8"}
        scenarios = [
            # The strength map, then the job with a control layer and a LoRA on the same
            # arguments: where the map is 0 (the channel's left half) the painting's bytes.
            {
                "name": "real-conditioning",
                **image,
                "procedure": "python-fu-differential-inpaint-strength-map",
                "args": {**plain, **control, **lora},
                "then": {"select": "selected", "args": {}, "kept_where_zero": True},
            },
            # The same job without either, with each alone: each changes the result.
            {"name": "real-plain", **image, "args": plain},
            {"name": "real-control", **image, "args": {**plain, **control}},
            {"name": "real-lora", **image, "args": {**plain, **lora}},
        ]
        reference = {"reference-drawable": "@lines", "reference-model": IP_ADAPTER, "reference-weight": 1.0}
        scenarios.append({"name": "real-reference", **image, "args": {**plain, **reference}})  # whole layer
        run = gimp_host.GimpRun(scenarios).run()
        print(f"\nGIMP + daemon ran the conditioning job in {run.seconds:.1f} s")
        if run.verdicts.get("real-conditioning", {}).get("then_status") != "success":
            print(f"--- daemon output ---\n{daemon.output}")
        yield run


def test_a_control_layer_and_a_lora_run_on_the_real_daemon(real_run: gimp_host.GimpRun) -> None:
    verdict = real_run.verdict("real-conditioning")
    assert verdict["status"] == "success", verdict["message"]
    assert verdict["then_status"] == "success", verdict["then_message"]
    assert [item["name"] for item in verdict["new_items"]] == ["Strength map"]
    (result,) = verdict["then_new_items"]
    assert result["name"] == "ink drawing \u00b7 11"
    kept = verdict["kept"]
    assert kept["zeros"] >= 64 * 112 and kept["nonzero"] > 100, kept
    assert kept["zeros_changed"] == 0 and kept["zeros_alpha"] == 0, kept  # the painting's bytes
    assert kept["nonzero_changed"] > kept["nonzero"] // 2, kept
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]


def test_on_the_real_daemon_the_control_layer_and_the_lora_each_change_the_result(
    real_run: gimp_host.GimpRun,
) -> None:
    """Same painting, map, seed and model: the result without conditioning differs from
    the one with the control layer alone and from the one with the LoRA alone."""
    results = {}
    for name in ("real-plain", "real-control", "real-lora"):
        verdict = real_run.verdict(name)
        assert verdict["status"] == "success", (name, verdict["message"])
        results[name] = verdict["new_layer"]["sha"]
    assert results["real-control"] != results["real-plain"]
    assert results["real-lora"] != results["real-plain"]


def test_on_the_real_daemon_a_reference_layer_changes_the_result(real_run: gimp_host.GimpRun) -> None:
    verdict = real_run.verdict("real-reference")
    assert verdict["status"] == "success", verdict["message"]
    assert verdict["new_layer"]["sha"] != real_run.verdict("real-plain")["new_layer"]["sha"]
