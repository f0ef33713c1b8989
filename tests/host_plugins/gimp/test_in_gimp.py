"""The plug-in inside real GIMP 3.0 (Debian trixie chroot), against a stand-in
daemon whose answers are known to the byte: what GIMP sends (region, mask,
precision) and what lands in the new layer are checked exactly.

All scenarios run in one gimp-console start (a start costs seconds).
"""

from __future__ import annotations

import hashlib
import socket
from array import array
from collections.abc import Iterator
from enum import Enum
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.client import SETTINGS_PARAMS
from tests.support.fake_daemon import (
    FAIL_MESSAGE,
    WRONG_TOKEN,
    FakeDaemon,
    expected_result,
    fake_daemon,
    gray_image,
    map_bytes,
)
from tests.support.hosts import require_host

from . import gimp_host

pytestmark = [pytest.mark.gimp, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scenarios(url: str, dead_url: str) -> list[dict[str, Any]]:
    def args(prompt: str, **more: Any) -> dict[str, Any]:
        return {"prompt": prompt, "server-url": url, "steps": 3, **more}

    rect = {"shape": "rect", "rect": [60, 50, 80, 60]}
    small = {
        "image": [300, 200],
        "precision": "u8",
        "layer": {"x": 0, "y": 0, "width": 300, "height": 200, "alpha": False},
    }
    return [
        {
            "name": "feathered",
            "image": [1200, 900],
            "precision": "u8",
            "layer": {"x": 100, "y": 50, "width": 1000, "height": 800, "alpha": True},
            "layer_above": True,
            "selection": {"shape": "ellipse", "rect": [400, 300, 160, 120], "feather": 24},
            "args": args(
                "a red barn",
                **{
                    "negative-prompt": "blurry",
                    "strength": 0.8,
                    "guidance": 5.5,
                    "seed": 42,
                    "grow": 2.0,
                    "feather": 3.0,
                },
            ),
        },
        {
            "name": "deep16",
            "image": [640, 480],
            "precision": "u16",
            "layer": {"x": 0, "y": 0, "width": 640, "height": 480, "alpha": False},
            "selection": {"shape": "ellipse", "rect": [200, 150, 100, 80], "feather": 10},
            "args": args("sixteen bits"),
        },
        {
            "name": "float32",
            "image": [320, 240],
            "precision": "float",
            "layer": {"x": -10, "y": 20, "width": 300, "height": 200, "alpha": True},
            "selection": {"shape": "ellipse", "rect": [50, 60, 80, 70], "feather": 8},
            "args": args("thirty-two bit float"),
        },
        {
            "name": "half",
            "image": [200, 160],
            "precision": "half",
            "layer": {"x": 0, "y": 0, "width": 200, "height": 160, "alpha": True},
            "selection": rect,
            "args": args("half floats"),
        },
        {
            "name": "no-selection",
            "image": [300, 200],
            "precision": "u8",
            "layer": {"x": 30, "y": 20, "width": 240, "height": 160, "alpha": True},
            "selection": None,
            "args": args("everything   repainted\nat once"),
        },
        {
            "name": "dialog-ok",
            **small,
            "selection": rect,
            "args": args("set before the dialog"),
            "probe": {"answer": "ok", "typed-prompt": "typed in the dialog"},
        },
        {
            "name": "dialog-cancel",
            **small,
            "selection": rect,
            "args": args("cancelled"),
            "probe": {"answer": "cancel", "typed-prompt": "never sent"},
        },
        {
            "name": "daemon-down",
            **small,
            "selection": rect,
            "args": {"prompt": "nobody home", "server-url": dead_url},
        },
        # The last run went to an address where nothing answers: the model is free text.
        {
            "name": "dialog-model-text",
            **small,
            "selection": rect,
            "args": {"prompt": "typed model", "server-url": dead_url, "model": "my-model"},
            "probe": {"answer": "cancel", "typed-prompt": "never sent either"},
        },
        {"name": "job-error", **small, "selection": rect, "args": args("fail: on purpose")},
        {"name": "connection-lost", **small, "selection": rect, "args": args("drop: mid-job")},
        {
            "name": "selection-misses-layer",
            "image": [400, 300],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 100, "height": 100, "alpha": True},
            "selection": {"shape": "rect", "rect": [200, 150, 50, 40]},
            "args": args("not on the layer"),
        },
        # A layer inside a group, moved to negative offsets; the selection runs off the
        # layer's right and bottom edges and off the image's.
        {
            "name": "in-group",
            "image": [400, 300],
            "precision": "u8",
            "group": True,
            "layer": {"x": -30, "y": -20, "width": 300, "height": 250, "alpha": True},
            "selection": {"shape": "ellipse", "rect": [220, 180, 200, 160], "feather": 10},
            "args": args("inside a group"),
        },
        {
            "name": "tiny-non-ascii",
            **small,
            "selection": {"shape": "rect", "rect": [150, 100, 3, 2]},
            "args": args("Zürich 東京 🌸 straße"),
        },
        {"name": "token", **small, "selection": rect, "args": args("with a token", token=" s3cret ")},
        {"name": "wrong-token", **small, "selection": rect, "args": args("refused", token=WRONG_TOKEN)},
        {"name": "killed-mid-job", **small, "selection": rect, "args": args("kill: cancelled")},
        # Several results: one group above the source.
        {"name": "variations", **small, "selection": rect, "args": args("three of them", count=3, seed=10)},
        {"name": "fan", **small, "selection": rect, "args": args("a fan", fan="40%, 0.85")},
        # Repeat (Ctrl+F) and Re-Show Last run on the selected layers: the painting, not the result.
        {
            "name": "repeat",
            **small,
            "selection": rect,
            "args": args("first pass", seed=5),
            "then": {"select": "selected", "args": {"prompt": "repeated", "seed": 6}},
        },
        # A painter clicked a result (a layer of a group, or the group) and ran again.
        {
            "name": "run-on-a-result",
            **small,
            "selection": rect,
            "args": args("made twice", count=2, seed=1),
            "then": {"select": 1, "args": {"prompt": "on the result layer", "count": 1}},
        },
        {
            "name": "run-on-a-result-group",
            **small,
            "selection": rect,
            "args": args("fanned", fan="0.5, 1"),
            "then": {"select": 0, "args": {"prompt": "on the result group", "fan": ""}},
        },
        # Bad values: GIMP refuses an int out of range itself; the plug-in refuses the rest.
        *(
            {"name": f"count-{n}", **small, "selection": rect, "args": args(f"count {n}", count=n)}
            for n in (0, 9)
        ),
        *(
            {"name": f"fan-{name}", **small, "selection": rect, "args": args(f"fan {name}", fan=text)}
            for name, text in (
                ("zero", "0, 0.5"),
                ("too-strong", "1.5"),
                ("words", "strong, weak"),
                ("nine", ", ".join(["0.5"] * 9)),
            )
        ),
        {
            "name": "count-and-fan",
            **small,
            "selection": rect,
            "args": args("both at once", count=2, fan="0.5"),
        },
        # The dialog after a run at the stand-in daemon: the model is a choice from its list.
        {
            "name": "dialog-model-choice",
            **small,
            "selection": None,
            "args": args("choose a model", model="fake"),
            "probe": {"answer": "ok", "typed-prompt": "with the xl model", "picked-model": "fake-xl"},
        },
        {
            "name": "layer-removed-mid-job",
            **small,
            "selection": rect,
            "mid_job": "remove-layer",
            "args": args("the source went away"),
        },
        {
            "name": "image-closed-mid-job",
            **small,
            "selection": rect,
            "mid_job": "delete-image",
            "args": args("the image went away"),
        },
        *map_scenarios(args, small, rect),
    ]


STRENGTH = {"key": "strength", "kind": "channel", "name": "Strength"}
OTHER_LAYER = [300, 250, 120, 90]  # the map layer "Other" of "map-other-layer", image coordinates


def map_scenarios(args: Any, small: dict[str, Any], rect: dict[str, Any]) -> list[dict[str, Any]]:
    """A channel, the layer mask or another layer as the map (mask-drawable), the blend map,
    the context choices, the strength-map procedure and bad map settings."""
    return [
        {
            "name": "map-channel",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "args": args("a channel as the map", **{"mask-drawable": "@strength"}),
        },
        # Picked in the dialog, as GIMP's chooser popup sets it.
        {
            "name": "dialog-map-pick",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "args": args("not typed"),
            "probe": {"answer": "ok", "typed-prompt": "picked in the dialog", "picked-map": "@strength"},
        },
        {
            "name": "dialog-map-clear",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "args": args("not typed either", **{"mask-drawable": "@strength"}),
            "probe": {"answer": "ok", "typed-prompt": "cleared in the dialog", "clear-map": True},
        },
        {
            "name": "map-layer-mask",
            "image": [300, 200],
            "precision": "u8",
            "layer": {"x": 20, "y": 10, "width": 240, "height": 160, "alpha": True},
            "selection": None,
            "maps": [{"key": "mask", "kind": "mask"}],
            "args": args("the layer mask as the map", **{"mask-drawable": "@mask"}),
        },
        {
            "name": "map-mask-being-edited",
            "image": [300, 200],
            "precision": "u8",
            "layer": {"x": 20, "y": 10, "width": 240, "height": 160, "alpha": True},
            "selection": None,
            "maps": [{"key": "mask", "kind": "mask"}],
            "run_on": "mask",
            "args": args("the mask being edited"),
        },
        {
            "name": "map-other-layer",
            "image": [800, 600],
            "precision": "u8",
            "layer": {"x": 10, "y": 5, "width": 780, "height": 590, "alpha": False},
            "selection": None,
            "maps": [{"key": "other", "kind": "layer", "name": "Other", "rect": OTHER_LAYER}],
            "args": args("another layer as the map", **{"mask-drawable": "@other"}),
        },
        {
            "name": "map-deep16",
            "image": [320, 240],
            "precision": "u16",
            "layer": {"x": 0, "y": 0, "width": 320, "height": 240, "alpha": False},
            "selection": {"shape": "rect", "rect": [50, 40, 100, 80]},
            "maps": [STRENGTH],
            "args": args("a sixteen-bit channel", **{"mask-drawable": "@strength"}),
        },
        {
            "name": "map-not-limited",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "args": args("the map alone", **{"mask-drawable": "@strength", "limit-to-selection": False}),
        },
        {
            "name": "blend",
            **small,
            "selection": rect,
            "maps": [{"key": "blend", "kind": "channel", "name": "Blend"}],
            "args": args("a blend map", **{"blend-drawable": "@blend"}),
        },
        {
            "name": "levels-and-depth",
            **small,
            "selection": rect,
            "args": args(
                "levels and depth",
                **{
                    "invert-mask": True,
                    "mask-black": 0.1,
                    "mask-white": 0.9,
                    "mask-gamma": 2.0,
                    "depth": "far",
                    "depth-combine": "max",
                    "depth-model": "tiny",
                },
            ),
        },
        *(
            {
                "name": f"context-{name}",
                **small,
                "selection": rect,
                "maps": [
                    {"key": "other", "kind": "layer", "name": "Other", "rect": [40, 30, 150, 120]},
                    STRENGTH,
                ],
                "args": args(f"context {name}", context=context),
            }
            for name, context in (
                ("image", "image"),
                ("mask", "mask"),
                ("rect", "10,20,200,150"),
                ("layer", "layer:Other"),
                ("channel", "layer:Strength"),
                ("words", "somewhere"),
                ("missing", "layer:Gone"),
            )
        ),
        {
            "name": "strength-map",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "procedure": "python-fu-differential-inpaint-strength-map",
            "args": args("only the map", **{"mask-drawable": "@strength", "mask-gamma": 1.5}),
        },
        {
            "name": "dialog-strength-map",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "procedure": "python-fu-differential-inpaint-strength-map",
            "args": args("not typed for the map", **{"mask-drawable": "@strength"}),
            "probe": {"answer": "ok", "typed-prompt": "the map from its dialog"},
        },
        {
            "name": "dialog-map-button",
            **small,
            "selection": rect,
            "maps": [STRENGTH],
            "args": args("not typed for the button", **{"mask-drawable": "@strength", "mask-gamma": 2.5}),
            "probe": {"answer": "cancel", "typed-prompt": "map tried", "click": "Show strength map"},
        },
        # Bad map settings: nothing is sent, the image stays as it was.
        {
            "name": "map-of-another-image",
            **small,
            "selection": rect,
            "maps": [{"key": "elsewhere", "kind": "other-image", "name": "Elsewhere"}],
            "args": args("a map from elsewhere", **{"mask-drawable": "@elsewhere"}),
        },
        {
            "name": "gamma-0",
            **small,
            "selection": rect,
            "args": args("gamma zero", **{"mask-gamma": 0.0}),
        },
        {
            "name": "black-above-white",
            **small,
            "selection": rect,
            "args": args("black above white", **{"mask-black": 0.6, "mask-white": 0.4}),
        },
        {
            "name": "depth-sideways",
            **small,
            "selection": rect,
            "args": args("sideways", depth="sideways"),
        },
    ]


@pytest.fixture(scope="module")
def gimp_run() -> Iterator[tuple[gimp_host.GimpRun, FakeDaemon]]:
    require_host(*gimp_host.chroot_ready())
    gimp_host.install_plugin()
    with fake_daemon(invert_colours=True) as daemon:  # so no copy of the source can pass
        run = gimp_host.GimpRun(scenarios(daemon.url, f"ws://127.0.0.1:{free_port()}")).run()
        print(f"\nGIMP ran {len(run.scenarios)} scenarios in {run.seconds:.1f} s")
        yield run, daemon


def check_success(
    run: gimp_host.GimpRun,
    daemon: FakeDaemon,
    name: str,
    wire: p.PixelFormat,
    prompt: str | None = None,
    *,
    map_rect: list[int] | None = None,
) -> tuple[dict[str, Any], p.Submit]:
    """A job that succeeded: region, bytes sent, the new layer. `map_rect`: where the
    drawable picked as the map lies ([x, y, w, h], image coordinates); the selection then
    travels beside the map (when it limits it) and the new layer's alpha is the map's."""
    spec = next(s for s in run.scenarios if s["name"] == name)
    verdict = run.verdict(name)
    assert verdict["status"] == "success", verdict["message"]
    submit = daemon.submit_by_prompt[prompt or spec["args"]["prompt"]]
    new = verdict["new_layer"]
    assert new is not None, verdict
    limited = spec["args"].get("limit-to-selection", True)

    # Where: the region around the selection (or the map), at the region's offset in the image.
    settings = {"limit_to_selection": limited}
    region = gimp_host.expected_region(verdict, spec["layer"], map_rect=map_rect, settings=settings)
    assert (new["x"], new["y"], new["width"], new["height"]) == (
        region.x,
        region.y,
        region.width,
        region.height,
    )
    assert (submit.x, submit.y, submit.image.width, submit.image.height) == (
        region.x,
        region.y,
        region.width,
        region.height,
    )
    # What was sent: the drawable's own bytes in the image's precision, and the selection.
    assert submit.image.format == wire
    assert submit.image.color == p.ColorEncoding.SRGB
    assert sha(submit.image.data) == new["source_region_sha"]
    selection = submit.mask if map_rect is None else submit.selection
    if map_rect is None or (limited and verdict["selection_bounds"] is not None):
        assert selection is not None and sha(selection.data) == new["mask_sha"]
    else:
        assert selection is None
    # What landed: exactly the daemon's result, alpha included (never re-multiplied by the mask).
    alpha = map_bytes(submit.blend_mask or submit.mask)
    assert new["sha"] == sha(expected_result(submit.image, alpha, invert_colours=True))
    assert new["has_alpha"]
    if map_rect is None and submit.blend_mask is None:  # the alpha is the selection
        assert new["alpha"]["outside_nonzero"] == 0
        assert new["alpha"]["inside"] > 0 and new["alpha"]["inside_max"] > 0
        assert new["alpha"]["full_zero"] == 0
    # A new layer just above the drawable; the original untouched.
    assert new["index"] == new["source_index"] - 1
    assert len(verdict["layers_after"]) == len(verdict["layers_before"]) + 1
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]
    return verdict, submit


def check_failure(run: gimp_host.GimpRun, name: str) -> str:
    verdict = run.verdict(name)
    assert verdict["status"] == "execution-error", verdict
    assert verdict["new_layer"] is None
    assert verdict["layers_after"] == verdict["layers_before"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]
    return verdict["message"]


def gimp_arguments() -> list[str]:
    """The arguments after run-mode, image and drawables, in order: the settings GIMP shows,
    the drawable maps just before invert-mask; then the conditioning slots, each a drawable
    and the protocol's parameters of a control or reference image under its prefix."""
    names = [q.gimp_argument for q in p.shown_on("gimp", SETTINGS_PARAMS)]
    at = names.index("invert-mask")
    slots = [
        f"{prefix}-{name}"
        for prefix, declared in (
            ("control", p.CONTROL_PARAMS),
            ("control-2", p.CONTROL_PARAMS),
            ("reference", p.REFERENCE_PARAMS),
        )
        for name in ("drawable", *(q.option for q in declared))
    ]
    return [*names[:at], "mask-drawable", "blend-drawable", *names[at:], *slots]


def test_procedure_registration(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    info = gimp_run[0].verdict("procedure")
    assert info["registered"], gimp_run[0].output
    assert info["menu_label"] == "Differential Inpaint…"
    assert info["menu_paths"] == ["<Image>/Filters/Generic"]
    assert info["image_types"] == "RGB*"
    # The strength map beside it, with the very same arguments.
    shown = gimp_run[0].verdict("map-procedure")
    assert shown["registered"], gimp_run[0].output
    assert shown["menu_label"] == "Differential Inpaint: Show Strength Map…"
    assert shown["menu_paths"] == ["<Image>/Filters/Generic"]
    assert shown["arguments"] == info["arguments"] and shown["defaults"] == info["defaults"]
    # The maps are drawables (none: the selection); depth and its combination are choices.
    assert info["kinds"]["mask-drawable"] == info["kinds"]["blend-drawable"] == "GimpParamDrawable"
    assert info["choices"] == {"depth": ["none", "near", "far"], "depth-combine": ["multiply", "min", "max"]}
    assert (info["defaults"]["depth"], info["defaults"]["depth-combine"]) == ("none", "multiply")
    # (The sensitivity mask does not travel through the PDB, so it cannot be read back here.)
    # The names scripts already use stay (more may come: the spec walk below checks them all).
    public = "prompt negative-prompt strength steps guidance seed model grow feather server-url token"
    assert info["arguments"][:3] == ["run-mode", "image", "drawables"]
    assert set(public.split()) <= set(info["arguments"])
    defaults = info["defaults"]
    assert (defaults["seed"], defaults["steps"], defaults["strength"]) == (-1, 20, 1.0)
    assert defaults["server-url"] == "ws://127.0.0.1:7865"


def test_the_procedure_offers_exactly_the_declared_settings(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """Every setting GIMP shows, walked from the spec: name, default, bounds, help."""
    info = gimp_run[0].verdict("procedure")
    assert info["arguments"][3:] == gimp_arguments()
    check_declared(info, p.shown_on("gimp", SETTINGS_PARAMS))


def check_declared(info: dict[str, Any], declared: tuple[p.Param, ...], prefix: str = "") -> None:
    """Each declared parameter's argument (under `prefix`, a conditioning slot's) as GIMP
    registered it (`info`: in_gimp.procedure_info): help, default, bounds."""
    for q in declared:
        name = f"{prefix}-{q.option}" if prefix else q.gimp_argument
        assert info["blurbs"][name].startswith(q.help), name
        if isinstance(q.default, Enum):  # a choice of the values, by name
            assert info["defaults"][name] == q.default.value and info["choices"][name], name
            continue
        if q.kind is str:
            assert info["defaults"][name] == (q.default or ""), name
            continue
        if q.kind is bool:
            assert info["defaults"][name] == q.default, name
            continue
        if q.kind is tuple:  # a list as text: "30%, 50%"
            assert info["defaults"][name] == q.format_text(q.default), name
            continue
        lo, hi = q.bounds()
        if q.optional:  # -1 stands for "none"
            assert info["defaults"][name] == -1 and info["ranges"][name] == [-1, min(hi, 2**31 - 1)], name
        elif q.kind is int:
            assert info["defaults"][name] == q.default and info["ranges"][name] == [lo, hi], name
        else:
            low, high = info["ranges"][name]
            assert info["defaults"][name] == pytest.approx(q.default), name
            assert low == pytest.approx(lo + 0.01 * q.lo_open) and high == pytest.approx(
                hi - 0.01 * q.hi_open
            )


def test_feathered_selection(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "feathered", p.PixelFormat.RGBA8)
    assert verdict["selection_levels"] > 100  # really a gradient, not a hard edge
    assert len(set(submit.mask.data)) > 100
    new = verdict["new_layer"]
    assert new["name"] == "a red barn \u00b7 42"  # prompt · seed: how to make it again
    assert new["alpha"]["outside"] > 0  # the region holds context outside the selection
    # Only the region around the selection travels, not the 1000x800 layer.
    assert submit.image.width * submit.image.height < 1000 * 800 / 2
    # The layer that was above the drawable stays above the new one.
    assert [layer["name"] for layer in verdict["layers_after"]] == ["above", "a red barn \u00b7 42", "source"]
    # The painting stays selected: Repeat (Ctrl+F) works on it again, not on the result.
    assert verdict["selected_after"] == ["source"]
    params = submit.params
    assert (params.negative_prompt, params.strength, params.steps, params.guidance, params.seed) == (
        "blurry",
        0.8,
        3,
        5.5,
        42,
    )
    assert (params.grow, params.feather, params.model) == (2.0, 3.0, None)
    assert params.output_format == p.PixelFormat.RGBA8


def test_16_bit_image_keeps_its_precision(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "deep16", p.PixelFormat.RGBA16)
    assert verdict["precision_read"] == "u16-non-linear"
    assert submit.params.output_format == p.PixelFormat.RGBA16
    # Detail below 8 bits really travelled (an 8-bit round trip would make all low bytes k*257).
    words = memoryview(submit.image.data).cast("H")
    assert any(w % 257 for w in words[0::4])


def test_float_image_with_negative_offset(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "float32", p.PixelFormat.RGBAF32)
    assert submit.params.output_format == p.PixelFormat.RGBAF32


def test_half_float_image(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    check_success(run, daemon, "half", p.PixelFormat.RGBAF16)


def test_no_selection_repaints_the_whole_layer(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "no-selection", p.PixelFormat.RGBA8)
    new = verdict["new_layer"]
    assert (new["x"], new["y"], new["width"], new["height"]) == (30, 20, 240, 160)
    assert submit.mask.data == b"\xff" * (240 * 160)
    assert new["name"] == "everything repainted at once \u00b7 4242"


def test_interactive_dialog_ok(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """INTERACTIVE: the real GimpUi.ProcedureDialog opens, what is typed there is sent."""
    run, daemon = gimp_run
    dialog = run.verdict("dialog-ok")["dialog"]
    assert dialog["dialogs"] == 1 and dialog["title"] == "Differential Inpaint"
    shown = p.shown_on("gimp", SETTINGS_PARAMS)
    # The same labels as Krita's form, from the spec.
    assert [q.label for q in shown][:3] == ["Prompt", "Negative prompt", "Strength"]
    # The text encoders and VAE show only for a model kept alone (client.flow.part_choices).
    offered = [q for q in shown if q.name not in ("text_encoders", "vae")]
    for label in [f"{q.label} ({q.unit})" if q.unit else q.label for q in offered] + ["Cancel"]:
        assert label in dialog["labels"], dialog["labels"]
    # A selection: the dialog says what a run does, and so does its OK button.
    assert "Inpaint selection" in dialog["labels"]
    assert any(text.startswith("Inpaint selection. The selection is repainted") for text in dialog["labels"])
    assert dialog["hidden_entries"] == sum(q.secret for q in shown) == 1  # the token shows as dots
    # Where the daemon stands, above the settings: the stand-in daemon answers the handshake.
    assert any(text.startswith("Daemon: Ready at ") for text in dialog["labels"]), dialog["labels"]
    assert {"Start daemon", "Stop daemon"} <= set(dialog["labels"])  # and it can be started or stopped
    assert "set before the dialog" not in daemon.submit_by_prompt
    verdict, _ = check_success(run, daemon, "dialog-ok", p.PixelFormat.RGBA8, prompt="typed in the dialog")
    assert verdict["new_layer"]["name"] == "typed in the dialog \u00b7 4242"


def test_interactive_dialog_cancel(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    verdict = gimp_run[0].verdict("dialog-cancel")
    assert verdict["status"] == "cancel" and verdict["dialog"]["dialogs"] == 1
    assert verdict["layers_after"] == verdict["layers_before"]
    assert "never sent" not in gimp_run[1].submit_by_prompt
    assert "cancelled" not in gimp_run[1].submit_by_prompt


def test_daemon_not_running(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "daemon-down")
    assert "The Differential Inpaint daemon is not running at" in message
    assert "Error" not in message  # no Python class names
    assert "differential-inpaint serve" in message  # says what to do


def test_job_error_shows_the_daemons_message(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    assert FAIL_MESSAGE in check_failure(gimp_run[0], "job-error")


def test_connection_lost(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "connection-lost")
    assert "connection to the daemon" in message and "lost" in message


def test_selection_that_misses_the_layer(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "selection-misses-layer")
    assert "does not touch the layer" in message
    assert "selection-misses-layer" not in gimp_run[1].submit_by_prompt  # nothing was sent


def test_layer_in_a_group_at_negative_offsets(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "in-group", p.PixelFormat.RGBA8)
    new = verdict["new_layer"]
    assert new["parent"] == "group"  # beside the source, inside its group
    assert [(item["name"], item["parent"]) for item in verdict["layers_after"]] == [
        ("group", None),
        ("sibling", "group"),
        ("inside a group \u00b7 4242", "group"),
        ("source", "group"),
    ]
    # The region stays on the layer (which ends at x=270, y=230) though the selection
    # runs past it and past the image.
    assert new["x"] + new["width"] <= 270 and new["y"] + new["height"] <= 230
    assert new["x"] >= -30 and new["y"] >= -20


def test_tiny_selection_and_a_non_ascii_prompt(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "tiny-non-ascii", p.PixelFormat.RGBA8)
    assert verdict["new_layer"]["name"] == "Zürich 東京 🌸 straße \u00b7 4242"
    assert submit.params.prompt == "Zürich 東京 🌸 straße"
    assert submit.mask.data.count(255) == 3 * 2  # the 6 selected pixels, in a region with context
    assert submit.image.width >= 64 and submit.image.height >= 64


def test_the_token_reaches_the_daemon(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    check_success(run, daemon, "token", p.PixelFormat.RGBA8)
    assert daemon.token_by_prompt["with a token"] == "s3cret"
    assert daemon.token_by_prompt["a red barn"] is None  # no token unless one is given


def test_a_wrong_token_says_what_to_enter(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "wrong-token")
    assert "refused" in message and "token" in message


def test_gimps_cancel_kills_the_plugin_and_the_job_ends(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """GIMP's Cancel on a plug-in's progress SIGKILLs the plug-in (libgimp tells the
    plug-in nothing): the daemon sees the connection go, the image stays as it was."""
    run, daemon = gimp_run
    verdict = run.verdict("killed-mid-job")
    assert daemon.endings.get("kill: cancelled") == "client gone", daemon.endings
    assert verdict["status"] != "success", verdict
    assert verdict["new_layer"] is None
    assert verdict["layers_after"] == verdict["layers_before"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]


def test_the_source_layer_removed_mid_job(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    verdict = gimp_run[0].verdict("layer-removed-mid-job")
    assert verdict["status"] == "success", verdict["message"]
    assert not verdict["source_valid"]
    assert verdict["new_layer"]["name"] == "the source went away \u00b7 4242"
    assert [item["name"] for item in verdict["layers_after"]] == ["the source went away \u00b7 4242"]


def test_the_image_closed_mid_job(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    verdict = gimp_run[0].verdict("image-closed-mid-job")
    assert not verdict["image_valid"]
    assert verdict["status"] == "execution-error"
    assert "image was closed" in verdict["message"]


def check_group(
    run: gimp_host.GimpRun, daemon: FakeDaemon, name: str, group: str, children: list[str]
) -> dict[str, Any]:
    """A job of several results: one group just above the source holding a layer per
    result, in order, only the first visible, each the daemon's result exactly."""
    verdict = run.verdict(name)
    assert verdict["status"] == "success", verdict["message"]
    new = verdict["new_items"]
    assert [(item["name"], item["group"], item["parent"]) for item in new] == [
        (group, True, None),
        *((child, False, group) for child in children),
    ]
    assert [item["visible"] for item in new] == [True, True] + [False] * (len(children) - 1)
    assert all(item["marked"] for item in new)  # each names its source layer
    names = [item["name"] for item in verdict["layers_after"]]
    assert names == [group, *children, "source"]  # above the source, nothing else added
    assert verdict["selected_after"] == ["source"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]
    submit = daemon.submit_by_prompt[next(s for s in run.scenarios if s["name"] == name)["args"]["prompt"]]
    region = (submit.x, submit.y, submit.image.width, submit.image.height)
    assert all((c["x"], c["y"], c["width"], c["height"]) == region for c in new[1:])
    return verdict


def test_variations_land_in_one_group(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    check_group(
        run,
        daemon,
        "variations",
        "three of them \u00b7 3 variations",
        [f"three of them \u00b7 {seed}" for seed in (10, 11, 12)],
    )
    params = daemon.submit_by_prompt["three of them"].params
    assert (params.count, params.seed, params.fan) == (3, 10, ())


def test_a_strength_fan_lands_in_one_group(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    check_group(run, daemon, "fan", "a fan \u00b7 strength fan", ["a fan \u00b7 40%", "a fan \u00b7 85%"])
    params = daemon.submit_by_prompt["a fan"].params
    assert (params.fan, params.count) == ((0.4, 0.85), 1)  # typed as "40%, 0.85"


def test_repeat_after_a_run_works_on_the_painting(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """After a run the source stays selected, so Ctrl+F / Re-Show Last (which run on the
    selected layers) repaint the painting again, never the result."""
    run, daemon = gimp_run
    verdict = run.verdict("repeat")
    assert verdict["selected_after"] == ["source"]
    assert verdict["then_on"] == ["source"] and verdict["then_status"] == "success", verdict
    first, again = daemon.submit_by_prompt["first pass"], daemon.submit_by_prompt["repeated"]
    assert again.image.data == first.image.data  # the painting's pixels both times
    names = [item["name"] for item in verdict["then_layers_after"]]
    assert names == ["first pass \u00b7 5", "repeated \u00b7 6", "source"]
    assert verdict["then_selected_after"] == ["source"]


@pytest.mark.parametrize(
    ("name", "first", "second", "names"),
    [
        (
            "run-on-a-result",
            "made twice",
            "on the result layer",
            [
                "made twice \u00b7 2 variations",
                "made twice \u00b7 1",
                "made twice \u00b7 2",
                "on the result layer \u00b7 1",  # the first run's seed: only count was changed
                "source",
            ],
        ),
        (
            "run-on-a-result-group",
            "fanned",
            "on the result group",
            [
                "fanned \u00b7 strength fan",
                "fanned \u00b7 50%",
                "fanned \u00b7 100%",
                "on the result group \u00b7 4242",
                "source",
            ],
        ),
    ],
)
def test_a_run_on_a_result_works_on_its_source(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon], name: str, first: str, second: str, names: list[str]
) -> None:
    """A result layer or group selected: the job reads the painting it came from and its
    result goes above that painting, not into the group."""
    run, daemon = gimp_run
    verdict = run.verdict(name)
    assert verdict["then_status"] == "success", verdict["then_message"]
    assert daemon.submit_by_prompt[second].image.data == daemon.submit_by_prompt[first].image.data
    assert [item["name"] for item in verdict["then_layers_after"]] == names
    assert verdict["then_new_items"][0]["parent"] is None
    assert verdict["then_selected_after"] == ["source"]


@pytest.mark.parametrize("count", [0, 9])
def test_gimp_refuses_a_count_out_of_range(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon], count: int
) -> None:
    """The argument's range is the spec's (1..8): GIMP itself refuses another value with a
    warning, so it can never reach the plug-in (the dialog's spin box stops there too)."""
    run, daemon = gimp_run
    verdict = run.verdict(f"count-{count}")
    assert verdict["refused"] == ["count"]
    assert f"value \"{count}\" of type 'gint' is invalid or out of range for property 'count'" in run.output
    assert f"count {count}" not in daemon.submit_by_prompt
    assert verdict["layers_after"] == verdict["layers_before"]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("fan-zero", "each Strength fan value must be above 0% and at most 100%, not 0%"),
        ("fan-too-strong", "each Strength fan value must be above 0% and at most 100%, not 150%"),
        ("fan-words", "Strength fan must be numbers separated by commas, such as 30%, 50%, 70%"),
        ("fan-nine", "Strength fan takes at most 8 values, not 9"),
        ("count-and-fan", "Variations and Strength fan cannot be used together"),
    ],
)
def test_bad_fan_values_are_refused_before_anything_is_sent(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon], name: str, words: str
) -> None:
    run, daemon = gimp_run
    message = check_failure(run, name)
    assert message.startswith("Cannot start: ") and words in message, message
    assert "Error" not in message
    prompt = next(s for s in run.scenarios if s["name"] == name)["args"]["prompt"]
    assert prompt not in daemon.submit_by_prompt


def test_the_model_is_a_choice_when_the_daemon_answers(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """The dialog lists the daemon's models (with their family) when the daemon the last
    run used answers; what is picked there is sent. Nothing selected: the dialog and its
    OK button say the whole layer is repainted."""
    run, daemon = gimp_run
    verdict = run.verdict("dialog-model-choice")
    dialog = verdict["dialog"]
    assert dialog["has_model_choice"], dialog
    models = ["Daemon's default (fake)", "fake \u2014 SD 1.5", "fake-xl \u2014 SDXL"]
    texts = {text for combo in dialog["combos"] for row in combo for text in row}
    assert set(models) <= texts, dialog["combos"]
    assert "Repaint whole layer" in dialog["labels"]
    assert any(text.startswith("Repaint whole layer. Nothing is selected") for text in dialog["labels"])
    assert verdict["status"] == "success", verdict["message"]
    assert daemon.submit_by_prompt["with the xl model"].params.model == "fake-xl"


def test_the_model_is_free_text_when_no_daemon_answers(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    dialog = gimp_run[0].verdict("dialog-model-text")["dialog"]
    assert not dialog["has_model_choice"]
    texts = {text for combo in dialog["combos"] for row in combo for text in row}
    assert not any("Daemon's default" in text for text in texts)
    assert "Model" in dialog["labels"]


# --- maps ---------------------------------------------------------------------------


def pattern8(ix: int, iy: int) -> int:
    """A map's 8-bit value at image pixel (ix, iy), as in_gimp.fill_map writes it."""
    return 128 + (ix * 3 + iy * 7) % 128


def pattern16(ix: int, iy: int) -> int:
    return 40000 + (ix * 521 + iy * 37) % 25000


def expected_map(submit: p.Submit, drawable: list[int], fmt: p.MaskFormat | p.PixelFormat) -> bytes:
    """What a map drawable at `drawable` ([x, y, w, h], image coordinates) filled with the
    test pattern gives over the submit's region: its own bytes where it lies, 0 elsewhere."""
    x0, y0, w, h = drawable
    inside = [
        (ix, iy, x0 <= ix < x0 + w and y0 <= iy < y0 + h)
        for iy in range(submit.y, submit.y + submit.image.height)
        for ix in range(submit.x, submit.x + submit.image.width)
    ]
    if fmt is p.MaskFormat.GRAY8:
        return bytes(pattern8(ix, iy) if on else 0 for ix, iy, on in inside)
    if fmt is p.MaskFormat.GRAY16:
        return array("H", (pattern16(ix, iy) if on else 0 for ix, iy, on in inside)).tobytes()
    assert fmt is p.PixelFormat.RGBA8  # a layer: gray from the pattern, its own alpha
    return b"".join(
        bytes([pattern8(ix, iy)] * 3 + [(ix + iy) % 128 + 128]) if on else bytes(4) for ix, iy, on in inside
    )


def image_rect(spec: dict[str, Any]) -> list[int]:
    return [0, 0, *spec["image"]]


def region_of(submit: p.Submit) -> tuple[int, int, int, int]:
    return submit.x, submit.y, submit.image.width, submit.image.height


def test_a_channel_as_the_map_travels_as_stored_with_the_selection_beside_it(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """A channel of an 8-bit image is the map as the gray the painter sees (stored so); the
    selection limits it and travels beside it."""
    run, daemon = gimp_run
    spec = next(s for s in run.scenarios if s["name"] == "map-channel")
    _, submit = check_success(run, daemon, "map-channel", p.PixelFormat.RGBA8, map_rect=image_rect(spec))
    assert submit.mask.format is p.MaskFormat.GRAY8
    assert submit.mask.data == expected_map(submit, image_rect(spec), p.MaskFormat.GRAY8)
    assert submit.selection is not None and submit.selection.format is p.MaskFormat.GRAY8
    assert submit.blend_mask is None


def test_a_channel_picked_in_the_dialog_is_the_map(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """The Map layer chooser (Browse...) names what is picked beside it; the job then sends
    that channel with the selection beside it."""
    run, daemon = gimp_run
    spec = next(s for s in run.scenarios if s["name"] == "dialog-map-pick")
    dialog = run.verdict("dialog-map-pick")["dialog"]
    assert {"Map layer", "None: the selection", "Blend layer", "None: made from the map"} <= set(
        dialog["labels"]
    ), dialog["labels"]
    assert "Inpaint selection" in dialog["labels"]  # the OK button, before the pick
    picked = dialog["after_map_pick"]["labels"]
    assert "Strength (channel)" in picked and "Inpaint by map" in picked, picked  # and after
    assert (
        "Inpaint by map. The map 'Strength' decides: white changes fully, gray partly, black not "
        "at all, within the selection" in picked
    )
    _, submit = check_success(
        run, daemon, "dialog-map-pick", p.PixelFormat.RGBA8, "picked in the dialog", map_rect=image_rect(spec)
    )
    assert submit.mask.data == expected_map(submit, image_rect(spec), p.MaskFormat.GRAY8)


def test_clear_in_the_dialog_goes_back_to_the_selection(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """A map kept from the last run is named beside its chooser; Clear (the chooser's popup
    cannot pick "none") goes back to the selection, which the job then sends."""
    run, daemon = gimp_run
    dialog = run.verdict("dialog-map-clear")["dialog"]
    assert "Strength (channel)" in dialog["labels"], dialog["labels"]
    assert "None: the selection" in dialog["after_map_clear"]["labels"]
    _, submit = check_success(run, daemon, "dialog-map-clear", p.PixelFormat.RGBA8, "cleared in the dialog")
    assert submit.selection is None and submit.mask.format is p.MaskFormat.GRAY8


def test_the_layer_mask_as_the_map(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """The drawable's own layer mask (at its layer's offsets); nothing selected: the region is
    the layer, no selection travels."""
    run, daemon = gimp_run
    layer = [20, 10, 240, 160]
    verdict, submit = check_success(run, daemon, "map-layer-mask", p.PixelFormat.RGBA8, map_rect=layer)
    assert region_of(submit) == tuple(layer)
    assert submit.mask.data == expected_map(submit, layer, p.MaskFormat.GRAY8)
    assert submit.selection is None


def test_a_run_on_the_layer_mask_being_edited_takes_it_as_the_map(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    """The painter clicked the layer mask's thumbnail (the mask is the active drawable) and
    ran the filter: the job works on its layer, the mask is the map."""
    run, daemon = gimp_run
    layer = [20, 10, 240, 160]
    verdict, submit = check_success(run, daemon, "map-mask-being-edited", p.PixelFormat.RGBA8, map_rect=layer)
    assert submit.mask.data == expected_map(submit, layer, p.MaskFormat.GRAY8)
    assert verdict["new_layer"]["name"] == "the mask being edited \u00b7 4242"


def test_another_layer_at_other_offsets_as_the_map(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """A layer elsewhere in the image: its own pixels (the daemon takes luminance times alpha),
    placed by image coordinates, 0 where it has none; the region is around it."""
    run, daemon = gimp_run
    verdict, submit = check_success(run, daemon, "map-other-layer", p.PixelFormat.RGBA8, map_rect=OTHER_LAYER)
    assert submit.mask.format is p.PixelFormat.RGBA8 and submit.mask.color is p.ColorEncoding.SRGB
    assert submit.mask.data == expected_map(submit, OTHER_LAYER, p.PixelFormat.RGBA8)
    x, y, w, h = OTHER_LAYER
    assert p.Rect(*region_of(submit)).contains(p.Rect(x, y, w, h))
    assert submit.image.width == 512  # the context around the map, not the 780x590 layer
    assert [item["name"] for item in verdict["layers_after"]] == [
        "Other",
        "another layer as the map \u00b7 4242",
        "source",
    ]


def test_a_16_bit_image_sends_a_gray16_map(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    spec = next(s for s in run.scenarios if s["name"] == "map-deep16")
    _, submit = check_success(run, daemon, "map-deep16", p.PixelFormat.RGBA16, map_rect=image_rect(spec))
    assert submit.mask.format is p.MaskFormat.GRAY16
    # GIMP keeps a 16-bit image's channels linear: the gray as seen comes back within 1 of 65535.
    sent = array("H", submit.mask.data)
    expected = array("H", expected_map(submit, image_rect(spec), p.MaskFormat.GRAY16))
    assert len(sent) == len(expected) and max(abs(a - b) for a, b in zip(sent, expected, strict=True)) <= 1
    assert sum(v % 257 != 0 for v in sent) > len(sent) // 2  # more than 8 bits of it travelled


def test_limit_to_selection_off_sends_the_map_alone(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    spec = next(s for s in run.scenarios if s["name"] == "map-not-limited")
    _, submit = check_success(run, daemon, "map-not-limited", p.PixelFormat.RGBA8, map_rect=image_rect(spec))
    assert submit.selection is None
    assert region_of(submit) == (0, 0, 300, 200)  # around the channel: the whole layer


def test_a_blend_map_is_sent_beside_the_selection(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """The selection stays the change map; the blend channel travels as blend_mask and the
    fake daemon makes it the new layer's alpha."""
    run, daemon = gimp_run
    spec = next(s for s in run.scenarios if s["name"] == "blend")
    _, submit = check_success(run, daemon, "blend", p.PixelFormat.RGBA8)
    assert submit.blend_mask is not None and submit.selection is None
    assert submit.blend_mask.data == expected_map(submit, image_rect(spec), p.MaskFormat.GRAY8)


def test_levels_and_depth_arguments_reach_the_daemon(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    run, daemon = gimp_run
    check_success(run, daemon, "levels-and-depth", p.PixelFormat.RGBA8)
    params = daemon.submit_by_prompt["levels and depth"].params
    assert (params.invert_mask, params.mask_black, params.mask_white, params.mask_gamma) == (
        True,
        0.1,
        0.9,
        2.0,
    )
    assert (params.depth, params.depth_combine, params.depth_model) == (p.Depth.FAR, p.Combine.MAX, "tiny")
    defaults = daemon.submit_by_prompt["a red barn"].params
    assert (defaults.depth, defaults.depth_combine, defaults.invert_mask) == (
        p.Depth.NONE,
        p.Combine.MULTIPLY,
        False,
    )


@pytest.mark.parametrize(
    ("name", "region"),
    [
        ("image", (0, 0, 300, 200)),
        ("mask", (60, 48, 80, 64)),  # the selection's bounds (60, 50, 80, 60), sides widened to 8s
        ("rect", (10, 20, 200, 150)),
        ("layer", (40, 30, 150, 120)),  # the bounds of the layer "Other"
        ("channel", (0, 0, 300, 200)),  # a channel is the image's size
    ],
)
def test_context_choices(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon], name: str, region: tuple[int, int, int, int]
) -> None:
    run, daemon = gimp_run
    verdict = run.verdict(f"context-{name}")
    assert verdict["status"] == "success", verdict["message"]
    submit = daemon.submit_by_prompt[f"context {name}"]
    assert region_of(submit) == region
    new = verdict["new_layer"]
    assert (new["x"], new["y"], new["width"], new["height"]) == region
    assert sha(submit.mask.data) == new["mask_sha"]  # the selection over that region


def test_a_context_that_is_not_one_of_the_words(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "context-words")
    assert "Context 'somewhere' is not one of auto, image, mask, X,Y,W,H" in message
    assert "context words" not in gimp_run[1].submit_by_prompt


def test_a_context_layer_that_is_not_there(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "context-missing")
    assert "There is no layer, layer mask or channel called 'Gone'" in message, message
    assert "context missing" not in gimp_run[1].submit_by_prompt


def test_the_strength_map_procedure_adds_one_layer(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """python-fu-differential-inpaint-strength-map asks for the map only (no sampling) and
    adds the daemon's answer as the one layer "Strength map" just above the source."""
    run, daemon = gimp_run
    verdict = run.verdict("strength-map")
    assert verdict["status"] == "success", verdict["message"]
    submit = daemon.submit_by_prompt["only the map"]
    assert isinstance(submit, p.StrengthMapRequest)
    assert submit.params.mask_gamma == 1.5 and submit.selection is not None
    assert [item["name"] for item in verdict["new_items"]] == ["Strength map"]
    assert [item["name"] for item in verdict["layers_after"]] == ["Strength map", "source"]
    new = verdict["new_layer"]
    assert (new["x"], new["y"], new["width"], new["height"]) == region_of(submit)
    assert new["sha"] == sha(gray_image(submit.image, map_bytes(submit.mask)).data)
    assert new["index"] == new["source_index"] - 1
    assert verdict["selected_after"] == ["source"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]


def test_the_strength_map_dialog(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """Interactive, the strength-map procedure's dialog says what it does (its OK button:
    Show strength map), then adds the map layer only."""
    run, daemon = gimp_run
    verdict = run.verdict("dialog-strength-map")
    dialog = verdict["dialog"]
    assert dialog["title"] == "Differential Inpaint: Strength Map"
    assert "Show strength map" in dialog["labels"] and "Strength (channel)" in dialog["labels"]
    assert any(text.startswith("Show strength map. The map a run would use") for text in dialog["labels"])
    assert verdict["status"] == "success", verdict["message"]
    assert isinstance(daemon.submit_by_prompt["the map from its dialog"], p.StrengthMapRequest)
    assert [item["name"] for item in verdict["new_items"]] == ["Strength map"]


def test_show_strength_map_in_the_dialog(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    """The main dialog's Show strength map: the map as the settings stand is added at once
    and the dialog stays open; Cancel then paints nothing, the map layer stays."""
    run, daemon = gimp_run
    verdict = run.verdict("dialog-map-button")
    clicked = verdict["dialog"]["after_click"]
    assert "Strength map: added as the layer 'Strength map' above 'source'." in clicked["labels"], clicked
    assert clicked["layers"] == ["Strength map", "source"]
    submit = daemon.submit_by_prompt["map tried"]  # typed before the click
    assert isinstance(submit, p.StrengthMapRequest) and submit.params.mask_gamma == 2.5
    assert verdict["status"] == "cancel"  # so only the map was asked for: nothing painted
    assert [item["name"] for item in verdict["new_items"]] == ["Strength map"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]


def test_a_map_of_another_image_is_refused(gimp_run: tuple[gimp_host.GimpRun, FakeDaemon]) -> None:
    message = check_failure(gimp_run[0], "map-of-another-image")
    assert "'Elsewhere' belongs to another image" in message, message
    assert "a map from elsewhere" not in gimp_run[1].submit_by_prompt


@pytest.mark.parametrize(("name", "argument"), [("gamma-0", "mask-gamma"), ("depth-sideways", "depth")])
def test_gimp_refuses_a_map_value_out_of_range(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon], name: str, argument: str
) -> None:
    """Gamma's range starts above 0 and depth takes none, near or far: GIMP itself refuses
    another value with a warning (the dialog's widgets stop there too); nothing runs."""
    run, daemon = gimp_run
    verdict = run.verdict(name)
    assert verdict["refused"] == [argument]
    assert f"for property '{argument}'" in run.output
    assert verdict["layers_after"] == verdict["layers_before"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]


def test_a_black_point_above_the_white_point_is_refused(
    gimp_run: tuple[gimp_host.GimpRun, FakeDaemon],
) -> None:
    message = check_failure(gimp_run[0], "black-above-white")
    assert message == "Cannot start: Map black point must be below Map white point.", message
    assert "black above white" not in gimp_run[1].submit_by_prompt
