"""Screenshot of the GIMP plug-in's dialog, as a painter sees it after a run.

    .venv/bin/python -m tests.host_plugins.gimp.screenshot_dialog [OUT.png]

Installs the plug-in into the trixie chroot's GIMP 3 (tests/support/trixie_chroot.py),
runs it once against the stand-in daemon (so the dialog lists that daemon's models),
then opens its real dialog, a painted "Strength" channel picked as the map, under Xvfb
on a 1366x768 screen through the test-only probe
plug-in (dialog_probe/), which saves the dialog's window as a PNG, then again with each
fold open in turn (OUT with `-conditioning` and `-advanced` before `.png`: a "Lines"
layer as the control layer, a "Photo" layer as the reference, a LoRA), and cancels it; then
once more with a FLUX.1 transformer kept alone chosen, advanced open (`-flux-advanced`).
Default OUT: host_plugins/gimp/screenshots/dialog.png (linked from the plug-in's README).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.support import trixie_chroot as chroot
from tests.support.fake_daemon import fake_daemon

from . import gimp_host

REPO = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO / "host_plugins/gimp/screenshots/dialog.png"
SCREEN = "1366x768x24"
INSIDE = Path("/root/di-screenshots")  # in the chroot


def scenarios(url: str) -> list[dict[str, object]]:
    image = {
        "image": [1200, 800],
        "precision": "u8",
        "layer": {"x": 0, "y": 0, "width": 1200, "height": 800, "alpha": False},
        "selection": {"shape": "ellipse", "rect": [400, 250, 300, 220], "feather": 24},
    }
    args = {"prompt": "a red barn in a snowy field", "server-url": url, "steps": 20}
    return [
        # A first run remembers the daemon's address, whose models the dialog then lists.
        {"name": "first-run", **image, "args": args},
        {
            "name": "dialog",
            **image,
            # A painted "Strength" channel picked as the map, far things changing most; line
            # art steering the job through a ControlNet, a photo as the reference, a LoRA.
            "maps": [
                {"key": "strength", "kind": "channel", "name": "Strength", "gradient": True},
                {"key": "lines", "kind": "layer", "name": "Lines", "rect": [380, 230, 340, 260]},
                {"key": "photo", "kind": "layer", "name": "Photo", "rect": [0, 0, 300, 200]},
            ],
            "args": {
                **args,
                "negative-prompt": "blurry",
                "count": 3,
                "model": "fake",
                "mask-drawable": "@strength",
                "mask-black": 0.2,
                "mask-gamma": 1.4,
                "control-drawable": "@lines",
                "control-kind": "lineart",
                "control-model": "fake-canny",
                "control-strength": 0.8,
                "control-end": 0.7,
                "reference-drawable": "@photo",
                "loras": "fake-lora:0.8",
            },
            "probe": {"answer": "cancel", "screenshot": str(INSIDE / "dialog.png")},
        },
        # A FLUX.1 transformer kept alone: its family, and its text encoders and VAE to choose.
        {
            "name": "dialog-flux",
            **image,
            "args": {**args, "model": "flux1-dev-Q8_0.gguf", "steps": 28},
            "probe": {"answer": "cancel", "screenshot": str(INSIDE / "dialog-flux.png")},
        },
    ]


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    ready, why = gimp_host.chroot_ready()
    if not ready:
        print(f"cannot run GIMP here: {why}", file=sys.stderr)
        return 1
    gimp_host.install_plugin()
    shots = chroot.root() / INSIDE.relative_to("/")
    shots.mkdir(parents=True, exist_ok=True)
    with fake_daemon(split_flux=True) as daemon:
        run = gimp_host.GimpRun(scenarios(daemon.url), screen=SCREEN).run()
    verdict = run.verdict("dialog")
    if not (shots / "dialog.png").is_file():
        print(f"no screenshot was written; GIMP said:\n{run.output}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shots / "dialog.png", out)
    screen = SCREEN.rsplit("x", 1)[0]
    print(f"{out}: the dialog is {'x'.join(map(str, verdict['dialog']['size']))} on a {screen} screen")
    for fold in ("conditioning", "advanced"):
        path = out.with_name(f"{out.stem}-{fold}.png")
        shutil.copyfile(shots / f"dialog-{fold}.png", path)
        size = verdict["dialog"][f"{fold}_size"]
        print(f"{path}: {fold} open, the dialog is {size[0]}x{size[1]} on a {screen} screen")
    flux = run.verdict("dialog-flux")["dialog"]["advanced_size"]
    path = out.with_name(f"{out.stem}-flux-advanced.png")
    shutil.copyfile(shots / "dialog-flux-advanced.png", path)
    print(f"{path}: a FLUX.1 transformer kept alone, advanced open, the dialog is {flux[0]}x{flux[1]}")
    shutil.rmtree(shots, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
