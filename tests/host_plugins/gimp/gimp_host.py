"""Drive real GIMP 3 in the trixie chroot from pytest: install the plug-in with
the real installer, run scenarios through gimp-console, read back verdicts."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from differential_inpaint import protocol as p
from differential_inpaint.client import Settings, flow
from differential_inpaint.host_plugins.install.gimp import install
from tests.support import trixie_chroot as chroot

HERE = Path(__file__).parent
GIMP_TIMEOUT = 300.0  # one gimp-console run, all scenarios together


def chroot_ready() -> tuple[bool, str]:
    """Whether real-GIMP tests can run here, and why not."""
    return chroot.ready("gimp")


PROBE = "di-dialog-probe"


def install_plugin() -> Path:
    """Install the plug-in into the chroot's GIMP profile with the real installer,
    plus the test-only dialog probe beside it (see dialog_probe/)."""
    plug_ins = chroot.root() / "root/.config/GIMP/3.0/plug-ins"
    folder = install(plug_ins)
    probe = plug_ins / PROBE / f"{PROBE}.py"
    probe.parent.mkdir(exist_ok=True)
    shutil.copyfile(HERE / "dialog_probe" / f"{PROBE}.py", probe)
    probe.chmod(0o755)
    return folder


class GimpRun:
    """One gimp-console run over a list of scenarios (see in_gimp.py for the spec)."""

    def __init__(self, scenarios: list[dict[str, Any]], screen: str = "") -> None:
        self.scenarios = scenarios
        self.screen = screen  # Xvfb's screen, e.g. "1366x768x24" (xvfb-run's default: 640x480x8)
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.seconds = 0.0
        self.output = ""

    def run(self) -> GimpRun:
        inside = Path("/root/di-tests") / uuid.uuid4().hex
        work = chroot.root() / inside.relative_to("/")
        work.mkdir(parents=True)
        try:
            shutil.copyfile(HERE / "in_gimp.py", work / "in_gimp.py")
            spec = {"out": str(inside / "verdict.json"), "scenarios": self.scenarios}
            (work / "spec.json").write_text(json.dumps(spec))
            code = f'SPEC = "{inside}/spec.json"; exec(open("{inside}/in_gimp.py").read())'
            started = time.monotonic()
            # xvfb-run: GIMP needs no display, but the plug-in's dialog (probe scenarios) does.
            done = chroot.run(
                [
                    "xvfb-run",
                    "-a",
                    *(["-s", f"-screen 0 {self.screen}"] if self.screen else []),
                    "gimp-console-3.0",
                    "-i",
                    "--batch-interpreter=python-fu-eval",
                    "-b",
                    code,
                    "--quit",
                ],
                timeout=GIMP_TIMEOUT,
            )
            self.seconds = time.monotonic() - started
            self.output = done.stdout
            verdict = work / "verdict.json"
            if verdict.is_file():
                self.verdicts = json.loads(verdict.read_text())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self

    def verdict(self, name: str) -> dict[str, Any]:
        """One scenario's verdict; fails with GIMP's output when it has none or crashed."""
        verdict = self.verdicts.get(name)
        assert verdict is not None, f"GIMP wrote no verdict for '{name}'; its output:\n{self.output}"
        assert "crashed" not in verdict, f"scenario '{name}' raised in GIMP:\n{verdict['crashed']}"
        return verdict


def expected_region(
    verdict: dict[str, Any],
    layer: dict[str, Any],
    *,
    map_rect: list[int] | None = None,
    settings: dict[str, Any] | None = None,
) -> p.Rect:
    """Where the new layer must be, in image coordinates, by the shared region maths:
    around the selection, or around a map drawable at `map_rect` ([x, y, w, h] in image
    coordinates) limited by the selection; `settings` by name (limit_to_selection, context)."""
    bounds = verdict["selection_bounds"]
    dx, dy = layer["x"], layer["y"]
    selection = None
    if bounds is not None:
        x1, y1, x2, y2 = bounds
        selection = p.Rect.from_edges(x1 - dx, y1 - dy, x2 - dx, y2 - dy)
    drawable = p.Rect(0, 0, layer["width"], layer["height"])
    source = None if map_rect is None else p.Rect(map_rect[0] - dx, map_rect[1] - dy, *map_rect[2:])
    host = SimpleNamespace(
        canvas=lambda: drawable,
        layer_extent=lambda: drawable,
        selection=lambda: selection,
        origin=lambda: (dx, dy),
        map_bounds=lambda rect: rect,
    )
    chosen = Settings.from_values(settings or {})
    region, _, _ = flow.plan_region(host, chosen, flow.Maps(mask=source))
    return p.Rect(region.x + dx, region.y + dy, region.width, region.height)
