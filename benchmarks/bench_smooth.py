"""How smoothly the change follows the mask: the paper's step rule against `smooth`.

A 0 -> 1 horizontal ramp mask over a 64x512 region, the built-in tiny SD1.5 model
(random weights, offline), Euler, N = 4, 8 and 20 steps, 8 seeds. The figure is per
latent column: the mean absolute difference between the final latents and the
image's latents z0 (pixels are no use: the tiny model's random VAE dominates them).

Under the step rule the curve is a staircase: N flat bands, and nothing changes
below 1/N. Printed for both rules: the rank correlation between mask value and
change inside each band between two thresholds (goal with smooth at N = 4: >= 0.8
in every band), the smallest change above mask 0.05 (goal: > 0), and the curves.
`--picture FILE` also draws the curves as a PNG.

    .venv/bin/python benchmarks/bench_smooth.py [--picture smooth.png]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampler import import_engine  # noqa: E402 - after the path

HEIGHT, WIDTH = 64, 512
BAR = " ▁▂▃▄▅▆▇█"


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank (columns that did not change tie at 0)."""
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        out[tied] = out[tied].mean()
    return out


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; 0 when either side is constant (a flat band)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def change_curve(sampler: Any, scheduler: Any, steps: int, seeds: int, smooth: bool) -> tuple[Any, Any]:
    """(mask value per latent column, mean |final - z0| per latent column over rows and seeds)."""
    import torch.nn.functional as F

    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    ramp = (
        torch.linspace(0.0, 1.0, WIDTH, dtype=torch.float64).view(1, 1, 1, WIDTH).expand(1, 1, HEIGHT, WIDTH)
    )
    factor = sampler.vae_scale_factor
    column_mask = F.interpolate(ramp, size=(HEIGHT // factor, WIDTH // factor), mode="bilinear")[0, 0, 0]
    total = torch.zeros(WIDTH // factor, dtype=torch.float64)
    for seed in range(seeds):
        seen: dict[str, torch.Tensor] = {}
        final = sampler(
            image,
            ramp,
            prompt="a stone wall",
            num_inference_steps=steps,
            guidance_scale=1.0,
            scheduler=scheduler,
            generator=torch.Generator("cpu").manual_seed(seed),
            callback=lambda state, seen=seen: seen.setdefault("z0", state.original_latents),
            smooth=smooth,
            output_type="latent",
        )
        total += (final - seen["z0"]).abs().double().mean(dim=(0, 1, 2)).cpu()
    return column_mask.numpy(), (total / seeds).numpy()


def band_correlations(mask: np.ndarray, change: np.ndarray, steps: int) -> list[float]:
    """The rank correlation inside each band [j/N, (j+1)/N) that holds at least 3 columns."""
    out = []
    for j in range(steps):
        inside = (mask >= j / steps) & (mask < (j + 1) / steps)
        if inside.sum() >= 3:
            out.append(rank_correlation(mask[inside], change[inside]))
    return out


def sparkline(values: np.ndarray) -> str:
    top = float(values.max()) or 1.0
    return "".join(BAR[min(len(BAR) - 1, int(round(v / top * (len(BAR) - 1))))] for v in values)


def draw(path: Path, curves: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]]) -> None:
    """Change against mask value, one panel per step count, the step rule in gray, smooth in red."""
    from PIL import Image, ImageDraw

    step_counts = sorted({steps for steps, _ in curves})
    panel, margin = 300, 30
    picture = Image.new("RGB", (len(step_counts) * (panel + margin) + margin, panel + 2 * margin), "white")
    pen = ImageDraw.Draw(picture)
    top = max(float(change.max()) for _mask, change in curves.values()) or 1.0
    for k, steps in enumerate(step_counts):
        left = margin + k * (panel + margin)
        pen.rectangle((left, margin, left + panel, margin + panel), outline="black")
        pen.text((left + 4, margin + 4), f"N = {steps}", fill="black")
        for smooth, colour in ((False, (150, 150, 150)), (True, (200, 30, 30))):
            mask, change = curves[(steps, smooth)]
            points = [
                (left + m * panel, margin + panel - c / top * panel)
                for m, c in zip(mask, change, strict=True)
            ]
            pen.line(points, fill=colour, width=2)
    pen.text(
        (margin, panel + margin + 8),
        "x: mask value 0..1   y: mean |latents - z0|   gray: step rule   red: smooth",
        fill="black",
    )
    picture.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--picture", type=Path, default=None, help="also draw the curves in this PNG")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engine_module = import_engine()
    from differential_inpaint.backend.engine.cli_run import quiet_libraries
    from differential_inpaint.backend.engine.schedulers import make_scheduler

    quiet_libraries()
    engine = engine_module.Engine(device="cpu", scan_default_locations=False)
    sampler = engine.models.load(engine.models.resolve("builtin:tiny-sd15")).sampler
    curves = {}
    print(
        f"0->1 ramp, {HEIGHT}x{WIDTH}, builtin:tiny-sd15, euler, {args.seeds} seeds; "
        "change = mean |latents - z0|"
    )
    for steps in args.steps:
        for smooth in (False, True):
            scheduler = make_scheduler("euler", sampler.pipe.scheduler.config)
            mask, change = change_curve(sampler, scheduler, steps, args.seeds, smooth)
            curves[(steps, smooth)] = (mask, change)
            rule = "smooth   " if smooth else "step rule"
            bands = band_correlations(mask, change, steps)
            above = change[mask > 0.05]
            print(f"N={steps:2d} {rule} |{sparkline(change)}|")
            print(
                f"      rank correlation inside each band: {' '.join(f'{r:+.2f}' for r in bands)}"
                f"  (lowest {min(bands):+.2f})"
            )
            print(
                f"      smallest change above mask 0.05: {above.min():.4f}"
                f"  ({int((above <= 0).sum())} of {len(above)} columns unchanged)"
            )
    if args.picture is not None:
        draw(args.picture, curves)
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
