"""Results per second: one job of `count` 4 sampled as one batch, against 4 separate jobs.

The differential sampler runs the same random-weight SD1.5-architecture model (see
bench_sampler.py) on a gradient mask at --size, with guidance, once with the four
variations in one batch (one generator per sample, as the engine does on a GPU) and
once as four runs of one. Everything a job does on the device is timed: prompt
encoding, VAE encode, the steps and the decode. One warm-up of each, then --runs
rounds, interleaved; the figure is the median round.

    python benchmarks/bench_batch.py                                     # CPU, small UNet
    python benchmarks/bench_batch.py --device cuda --full-size --fp16    # SD1.5 size, 512x512

On the CPU the engine runs variations one at a time (Engine.batch_size): a batch is
not faster there, as this prints.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampler import build_pipeline, import_engine  # noqa: E402 - after the path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="the real SD1.5 UNet/VAE/CLIP sizes")
    parser.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    import_engine()
    from differential_inpaint.backend.engine.cli_run import quiet_libraries

    quiet_libraries()
    from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
    from differential_inpaint.backend.engine.schedulers import make_scheduler

    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    pipe = build_pipeline(args.full_size, device, dtype)
    sampler = DifferentialDiffusionPipeline(pipe, device=device, dtype=dtype)
    size, count = args.size, args.count
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    gradient = (
        torch.linspace(0.0, 1.0, size, dtype=torch.float64).view(1, 1, 1, size).expand(1, 1, size, size)
    )

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def sample(batch: int, seeds: list[int]) -> torch.Tensor:
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return sampler(
            image.repeat(batch, 1, 1, 1),
            gradient.repeat(batch, 1, 1, 1),
            prompt="a photograph of a red door",
            num_inference_steps=args.steps,
            guidance_scale=7.5,
            scheduler=make_scheduler("euler", pipe.scheduler.config),
            generator=generators[0] if batch == 1 else generators,
        )

    def together() -> float:
        synchronise()
        start = time.perf_counter()
        sample(count, list(range(count)))
        synchronise()
        return time.perf_counter() - start

    def apart() -> float:
        synchronise()
        start = time.perf_counter()
        for seed in range(count):
            sample(1, [seed])
        synchronise()
        return time.perf_counter() - start

    together(), apart()  # warm-up: kernels, allocator, caches
    batched, separate = [], []
    for _ in range(args.runs):
        batched.append(together())
        separate.append(apart())
    t_batch, t_apart = statistics.median(batched), statistics.median(separate)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    model = "full SD1.5 size" if args.full_size else "small UNet"
    print(
        f"{name}, {model}, {dtype}, {size}x{size}, {args.steps} steps, count {count}, median of {args.runs}"
    )
    for label, seconds in ((f"one batch of {count}", t_batch), (f"{count} separate jobs", t_apart)):
        per_result, rate = seconds / count, count / seconds
        print(f"  {label:>18}: {seconds:7.2f} s  {per_result:6.3f} s/result  {rate:6.2f} results/s")
    print(f"  batching gives {t_apart / t_batch:.2f}x the results per second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
