"""Seams: the colour error a model's drift leaves in the partly changed zone, with and
without `color_match` (and `keep_threshold`).

A synthetic painting (a sky gradient, a sun, hills) and a feathered elliptic selection;
the model is a stand-in that gives what it repaints a warm, dull cast in proportion
to each pixel's strength (tests/support/colour_cast.py), so the error it leaves is known
and the tiny random models' noise is out of the way. The figure is the mean Oklab
distance to the original over the partly changed zone (0 < e < 1), by band of e.
`--picture FILE` writes original | plain | colour match side by side.

    .venv/bin/python benchmarks/bench_seams.py [--picture seams.png]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support.colour_cast
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampler import import_engine  # noqa: E402 - after the path

HEIGHT, WIDTH = 192, 288


def painting() -> np.ndarray:
    """An opaque float32 RGBA picture with gradients, edges and flat areas."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    sky = np.stack([0.35 + 0.3 * y / HEIGHT, 0.55 + 0.25 * y / HEIGHT, np.full_like(y, 0.9)], axis=-1)
    sun = ((x - 210) ** 2 + (y - 50) ** 2) < 28**2
    sky[sun] = [1.0, 0.85, 0.4]
    hills = y > 120 + 25 * np.sin(x / 40.0)
    sky[hills] = np.stack([0.2 + 0.1 * np.sin(x / 9.0), 0.5 + 0.1 * np.cos(y / 7.0), 0.2 + 0 * x], axis=-1)[
        hills
    ]
    return np.concatenate([sky, np.ones_like(y)[..., None]], axis=-1).astype(np.float32)


def feathered_ellipse() -> np.ndarray:
    """uint8 mask: 255 inside an ellipse, falling to 0 over a wide soft edge."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    distance = np.sqrt(((x - WIDTH / 2) / 80) ** 2 + ((y - HEIGHT / 2) / 55) ** 2)
    return (np.clip((1.6 - distance) / 0.9, 0.0, 1.0) * 255).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--picture", type=Path, default=None, help="write original | plain | matched here")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engine_module = import_engine()
    from differential_inpaint.backend.engine.cli_run import quiet_libraries
    from differential_inpaint.backend.engine.regions import composite_over
    from differential_inpaint.backend.engine.seams import to_oklab
    from differential_inpaint.protocol import JobParams
    from tests.support.colour_cast import engine_with_colour_cast

    quiet_libraries()
    engine = engine_with_colour_cast(
        engine_module.Engine(device="cpu", scan_default_locations=False), HEIGHT * WIDTH
    )
    image, mask = painting(), feathered_ellipse()
    strength = mask.astype(np.float64) / 255.0
    params = JobParams(prompt="a house", steps=20, seed=1, snap=0.0)
    runs = {
        "plain": params,
        "color_match": params.replace(color_match=True),
        "color_match + keep_threshold 2%": params.replace(color_match=True, keep_threshold=0.02),
    }
    pictures = {}
    original_lab = to_oklab(image[..., :3])
    bands = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    print(f"{HEIGHT}x{WIDTH} painting, feathered ellipse, colour-casting stand-in model")
    heading = "  ".join(f"{a:.2f}-{b:.2f}" for a, b in bands)
    print(f"mean Oklab distance to the original, by band of e: {heading}  all")
    for name, job in runs.items():
        result = engine.inpaint(image, mask, job, model="builtin:tiny-sd15")
        shown = composite_over(image, result.image)[..., :3]
        pictures[name] = shown
        error = np.abs(to_oklab(shown) - original_lab).sum(axis=-1)
        by_band = [error[(strength > a) & (strength < b)].mean() for a, b in bands]
        partly = error[(strength > 0) & (strength < 1)].mean()
        print(f"  {name:>32}: {'  '.join(f'{e:9.4f}' for e in by_band)}  {partly:.4f}")
    if args.picture is not None:
        from PIL import Image

        row = [image[..., :3], pictures["plain"], pictures["color_match"]]
        gap = np.ones((HEIGHT, 8, 3), np.float32)
        strip = np.concatenate([part for picture in row for part in (picture, gap)][:-1], axis=1)
        Image.fromarray((np.clip(strip, 0, 1) * 255).round().astype(np.uint8)).save(args.picture)
        print(f"wrote {args.picture} (original | plain | colour match)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
