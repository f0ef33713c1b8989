"""End to end: real GIMP 3 (chroot) → the plug-in → a real `differential-inpaint
serve` on the host running builtin:tiny-sd15 → a new layer back in GIMP.

GIMP in the chroot shares the host's network namespace, so it reaches the
daemon on 127.0.0.1. The fake-daemon tests (test_in_gimp.py) check bytes;
these check that the real pieces fit: offsets, sizes, alpha = composite mask.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.daemon import running_daemon
from tests.support.hosts import require_host

from . import gimp_host

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

MAP_PROCEDURE = "python-fu-differential-inpaint-strength-map"
# The FLUX built-ins picked in the dialog: (model, the family's name, what the family takes
# no more of than SD, the guidance shown after the pick).
FLUX_PICKS = {
    "flux": ("builtin:tiny-flux", "FLUX dev", "negative prompt", 3.5),
    "flux-schnell": ("builtin:tiny-flux-schnell", "FLUX schnell", "negative prompt or guidance", 7.0),
    "flux-fill": ("builtin:tiny-flux-fill", "FLUX Fill", "negative prompt", 30.0),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scenarios(url: str, dead_url: str) -> list[dict[str, Any]]:
    # Small regions and few steps: the tiny model runs on CPU here.
    def args(prompt: str, **more: Any) -> dict[str, Any]:
        return {"prompt": prompt, "server-url": url, "steps": 3, "seed": 7, **more}

    listed = [
        {
            "name": "feathered",
            "image": [900, 700],
            "precision": "u8",
            "layer": {"x": 60, "y": 40, "width": 800, "height": 600, "alpha": True},
            "layer_above": True,
            "selection": {"shape": "ellipse", "rect": [300, 250, 120, 90], "feather": 20},
            "args": args("a small red house"),
        },
        {
            "name": "deep16",
            "image": [320, 240],
            "precision": "u16",
            "layer": {"x": 0, "y": 0, "width": 320, "height": 240, "alpha": False},
            "selection": {"shape": "ellipse", "rect": [100, 80, 90, 70], "feather": 10},
            "args": args("sixteen bit sky"),
        },
        {
            "name": "no-selection",
            "image": [200, 160],
            "precision": "u8",
            "layer": {"x": 20, "y": 10, "width": 160, "height": 128, "alpha": True},
            "selection": None,
            "args": args("everything"),
        },
        # builtin:tiny-flux (FLUX dev), named as a script would, then picked in the dialog
        # (the daemon the last run used answers, so its models are a choice there).
        {
            "name": "flux",
            "image": [160, 128],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 160, "height": 128, "alpha": False},
            "selection": {"shape": "ellipse", "rect": [40, 30, 64, 48], "feather": 8},
            "args": args("a flux meadow", model="builtin:tiny-flux", guidance=3.5, steps=2),
        },
        *(
            {
                "name": f"{family}-dialog",
                "image": [160, 128],
                "precision": "u8",
                "layer": {"x": 0, "y": 0, "width": 160, "height": 128, "alpha": False},
                "selection": {"shape": "ellipse", "rect": [40, 30, 64, 48], "feather": 8},
                "args": args("", model="", guidance=7.0, steps=2),
                "probe": {"answer": "ok", "typed-prompt": f"picked {family}", "picked-model": pick[0]},
            }
            for family, pick in FLUX_PICKS.items()
        ),
        # The dialog opened on FLUX Fill (last used, or a script's) with guidance at SD's default.
        {
            "name": "fill-opened-dialog",
            "image": [96, 96],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 96, "height": 96, "alpha": False},
            "selection": None,
            "args": args("never sent", model="builtin:tiny-flux-fill", guidance=7.0, steps=2),
            "probe": {"answer": "cancel"},
        },
        # A channel as the map (its left half 0), then the depth estimate: each first as the
        # strength map, then the job with the same arguments.
        {
            "name": "map-channel",
            "image": [128, 112],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 128, "height": 112, "alpha": False},
            "selection": None,
            "maps": [
                {"key": "strength", "kind": "channel", "name": "Strength", "zero_left": 64, "gradient": True}
            ],
            "procedure": MAP_PROCEDURE,
            "args": args("fog", steps=2, **{"mask-drawable": "@strength"}),
            "then": {"select": "selected", "args": {}, "kept_where_zero": True},
        },
        {
            "name": "depth-far",
            "image": [96, 96],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 96, "height": 96, "alpha": False},
            "selection": None,
            "procedure": MAP_PROCEDURE,
            "args": args("far hills", steps=2, depth="far", **{"mask-black": 0.5}),
            "then": {"select": "selected", "args": {}, "kept_where_zero": True},
        },
        {
            "name": "daemon-down",
            "image": [200, 160],
            "precision": "u8",
            "layer": {"x": 0, "y": 0, "width": 200, "height": 160, "alpha": False},
            "selection": {"shape": "rect", "rect": [40, 40, 60, 50]},
            "args": {"prompt": "nobody home", "server-url": dead_url},
        },
    ]
    # Every result is checked for the selection's zeros, kept bit for bit (`check_success`).
    return [{**scenario, "kept": True} for scenario in listed]


@pytest.fixture(scope="module")
def gimp_run() -> Iterator[gimp_host.GimpRun]:
    require_host(*gimp_host.chroot_ready())
    gimp_host.install_plugin()
    models = tuple(model for model, *_ in FLUX_PICKS.values())
    with running_daemon("--depth-model", "builtin:tiny-depth", models=models) as daemon:
        run = gimp_host.GimpRun(scenarios(daemon.url, f"ws://127.0.0.1:{free_port()}")).run()
        print(f"\nGIMP + daemon ran {len(run.scenarios)} scenarios in {run.seconds:.1f} s")
        statuses = [run.verdicts.get(s["name"], {}).get("status") for s in run.scenarios]
        if statuses[:-1] != ["success"] * (len(statuses) - 1):  # the last one fails on purpose
            print(f"--- daemon output ---\n{daemon.output}")
        yield run


def check_success(run: gimp_host.GimpRun, name: str, region: tuple[int, int, int, int]) -> dict:
    verdict = run.verdict(name)
    assert verdict["status"] == "success", verdict["message"]
    new = verdict["new_layer"]
    assert (new["x"], new["y"], new["width"], new["height"]) == region
    assert new["index"] == new["source_index"] - 1
    assert len(verdict["layers_after"]) == len(verdict["layers_before"]) + 1
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]
    alpha = new["alpha"]
    assert alpha["outside_nonzero"] == 0  # alpha is the composite mask: 0 where unselected
    assert alpha["inside_max"] > 0.5
    assert alpha["full_zero"] == 0  # fully selected pixels all came back
    kept = new["kept"]  # where the selection is 0: the painting's own pixels, bit for bit
    assert kept["zeros_changed"] == 0 and kept["zeros_alpha"] == 0, kept
    return verdict


def test_feathered_selection(gimp_run: gimp_host.GimpRun) -> None:
    spec = next(s for s in gimp_run.scenarios if s["name"] == "feathered")
    region = gimp_host.expected_region(gimp_run.verdict("feathered"), spec["layer"])
    assert (region.width, region.height) == (512, 512)  # context around it, not the whole layer
    verdict = check_success(gimp_run, "feathered", (region.x, region.y, 512, 512))
    new = verdict["new_layer"]
    assert new["name"] == "a small red house \u00b7 7"  # prompt · seed
    assert new["alpha"]["outside"] > 0
    assert [layer["name"] for layer in verdict["layers_after"]] == ["above", new["name"], "source"]


def test_16_bit_image(gimp_run: gimp_host.GimpRun) -> None:
    verdict = check_success(gimp_run, "deep16", (0, 0, 320, 240))
    assert verdict["precision_read"] == "u16-non-linear"


def test_no_selection(gimp_run: gimp_host.GimpRun) -> None:
    verdict = check_success(gimp_run, "no-selection", (20, 10, 160, 128))
    assert verdict["new_layer"]["alpha"]["outside"] == 0


def test_daemon_not_running(gimp_run: gimp_host.GimpRun) -> None:
    verdict = gimp_run.verdict("daemon-down")
    assert verdict["status"] == "execution-error"
    assert "differential-inpaint serve" in verdict["message"]
    assert verdict["new_layer"] is None
    assert verdict["layers_after"] == verdict["layers_before"]
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]


def test_a_flux_model_runs(gimp_run: gimp_host.GimpRun) -> None:
    verdict = check_success(gimp_run, "flux", (0, 0, 160, 128))
    assert verdict["new_layer"]["name"] == "a flux meadow \u00b7 7"


@pytest.mark.parametrize("family", FLUX_PICKS)
def test_the_dialog_offers_only_what_the_models_family_takes(
    gimp_run: gimp_host.GimpRun, family: str
) -> None:
    """Picking a FLUX built-in in the dialog: its family's name shows in the choice and
    under it, the settings it does not take go insensitive with a tooltip saying why
    (schnell: the negative prompt and guidance; dev and Fill: the negative prompt), guidance
    left at the SD default follows dev's 3.5 and Fill's 30; the job then runs on that model
    and where the selection is 0 the painting stays as it was."""
    model, label, left_out, guidance = FLUX_PICKS[family]
    verdict = check_success(gimp_run, f"{family}-dialog", (0, 0, 160, 128))
    dialog = verdict["dialog"]
    assert dialog["has_model_choice"], dialog
    texts = {text for combo in dialog["combos"] for row in combo for text in row}
    assert f"{model} \u2014 {label} (test model: paints noise)" in texts, dialog["combos"]

    def ours(insensitive: list[str]) -> list[str]:  # not GIMP's own ("Load settings" with none saved)
        return [text for text in insensitive if "models do not take" in text]

    assert ours(dialog["insensitive"]) == [] and dialog["guidance"] == 7.0  # the default model: sd15
    assert "Model family: SD 1.5" in dialog["labels"], dialog["labels"]
    picked = dialog["after_pick"]
    assert f"Model family: {label}; it takes no {left_out}" in picked["labels"], picked["labels"]
    why = f"{label} models do not take this setting (the daemon ignores it)"
    assert ours(picked["insensitive"]) == [why] * len(left_out.split(" or ")), picked["insensitive"]
    assert picked["guidance"] == guidance
    assert verdict["new_layer"]["name"] == f"picked {family} \u00b7 7"
    assert verdict["new_layer"]["kept"]["zeros"] > 1000


def test_a_dialog_opened_on_a_flux_model_shows_its_familys_guidance(gimp_run: gimp_host.GimpRun) -> None:
    """Guidance left at the general default follows the chosen model's family as the dialog
    opens, not only when the model is changed in it: 30 for FLUX Fill."""
    verdict = gimp_run.verdict("fill-opened-dialog")
    assert verdict["status"] == "cancel", verdict
    dialog = verdict["dialog"]
    assert dialog["guidance"] == 30.0, dialog
    assert "Model family: FLUX Fill; it takes no negative prompt" in dialog["labels"], dialog["labels"]
    assert verdict["layers_after"] == verdict["layers_before"]


def check_kept(verdict: dict[str, Any], size: tuple[int, int]) -> dict[str, int]:
    """The strength map, then the job on the same arguments: where the daemon's effective map
    is 0 the result holds the painting's bytes exactly, transparent; elsewhere it changed."""
    assert verdict["status"] == "success", verdict["message"]
    assert verdict["then_status"] == "success", verdict["then_message"]
    shown = verdict["new_items"]
    assert [item["name"] for item in shown] == ["Strength map"]
    assert (shown[0]["width"], shown[0]["height"]) == size
    result = verdict["then_new_items"]
    assert len(result) == 1 and (result[0]["x"], result[0]["y"]) == (shown[0]["x"], shown[0]["y"])
    kept = verdict["kept"]
    assert kept["zeros"] > 100 and kept["nonzero"] > 100, kept
    assert kept["zeros_changed"] == 0 and kept["zeros_alpha"] == 0, kept
    assert kept["nonzero_changed"] > kept["nonzero"] // 2, kept
    assert verdict["drawable_sha_after"] == verdict["drawable_sha_before"]
    return kept


def test_a_channel_as_the_map_keeps_its_zeros_bit_for_bit(gimp_run: gimp_host.GimpRun) -> None:
    kept = check_kept(gimp_run.verdict("map-channel"), (128, 112))
    assert kept["zeros"] >= 64 * 112  # the channel's black left half, at least


def test_depth_far_runs_end_to_end(gimp_run: gimp_host.GimpRun) -> None:
    """builtin:tiny-depth estimates the region's depth; far things change (black point 0.5
    keeps the near half): the map and the job both run, and the map's zeros are kept."""
    verdict = gimp_run.verdict("depth-far")
    check_kept(verdict, (96, 96))
    assert verdict["then_new_items"][0]["name"] == "far hills \u00b7 7"
