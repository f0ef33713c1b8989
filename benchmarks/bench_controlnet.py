"""Time per step with one ControlNet: the differential sampler vs diffusers'
StableDiffusionControlNetImg2ImgPipeline.

Both run the same random-weight SD1.5-architecture model (bench_sampler.py's), a ControlNet of
that UNet's blocks (`ControlNetModel.from_unet`), the same control image, scheduler, step count,
guidance and seed at 512x512. The differential sampler gets a gradient mask (every step resets
some latents, as in real use); the pipeline gets strength 1, so both run every step, the
ControlNet acting in all of them. A step is the interval between two consecutive step callbacks
(synchronised on GPUs), so prompt encoding, VAE encode and decode are excluded from both alike.
One warm-up run each, then `--runs` runs of each, interleaved; the figure is the median step.

CPU (default): bench_sampler's small UNet. GPU: `--device cuda --full-size --fp16`.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from bench_sampler import StepClock, build_pipeline, import_engine, print_comparison, time_both


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="the real SD1.5 UNet/VAE/CLIP sizes")
    parser.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--strength", type=float, default=1.0, help="the ControlNet's strength")
    parser.add_argument("--check", action="store_true", help="also compare latents on a uniform mask")
    args = parser.parse_args(argv)

    engine = import_engine()
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline

    from differential_inpaint.backend.engine.cli_run import quiet_libraries

    quiet_libraries()

    from differential_inpaint.backend.engine.controlnet import ControlGuide
    from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
    from differential_inpaint.backend.engine.schedulers import make_scheduler

    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    started = time.perf_counter()
    pipe = build_pipeline(args.full_size, device, dtype)
    torch.manual_seed(1)
    controlnet = ControlNetModel.from_unet(pipe.unet).to(device=device, dtype=dtype).eval()
    build_s = time.perf_counter() - started
    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    reference = StableDiffusionControlNetImg2ImgPipeline(**components, controlnet=controlnet)
    reference.set_progress_bar_config(disable=True)
    differential = DifferentialDiffusionPipeline(pipe, device=device, dtype=dtype)

    size = args.size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    control = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    guides = [ControlGuide(controlnet, control.to(device), args.strength, 0.0, 1.0)]
    gradient = (
        torch.linspace(0.0, 1.0, size, dtype=torch.float64).view(1, 1, 1, size).expand(1, 1, size, size)
    )
    common = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "output_type": "latent"}
    prompt = "a photograph of a red door"

    def run_reference(strength: float = 1.0) -> tuple[list[float], torch.Tensor]:
        clock = StepClock(device)
        out = reference(
            prompt=prompt,
            image=image.to(device=device, dtype=dtype),
            control_image=control.to(device=device, dtype=dtype),
            strength=strength,
            controlnet_conditioning_scale=args.strength,
            generator=torch.Generator().manual_seed(1),
            callback_on_step_end=clock.diffusers_callback,
            **common,
        ).images
        return clock.steps(), out

    def run_differential(strength_map: torch.Tensor = gradient) -> tuple[list[float], torch.Tensor]:
        clock = StepClock(device)
        out = differential(
            image,
            strength_map,
            prompt=prompt,
            scheduler=make_scheduler(args.scheduler, pipe.scheduler.config),
            generator=torch.Generator().manual_seed(1),
            callback=clock.tick,
            controls=guides,
            **common,
        )
        return clock.steps(), out

    ours, theirs, check = time_both(
        run_reference,
        run_differential,
        runs=args.runs,
        reset=lambda: setattr(reference, "scheduler", make_scheduler(args.scheduler, pipe.scheduler.config)),
        check_strength=0.7 if args.check else None,
        size=size,
    )

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    unet_m = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    control_m = sum(p.numel() for p in controlnet.parameters()) / 1e6
    kind = "full-size SD1.5" if args.full_size else "small SD1.5-style"
    print(f"engine: {engine.__name__}; torch {torch.__version__}")
    print(
        f"device: {name}, {str(dtype).removeprefix('torch.')}; UNet: {kind}, {unet_m:.1f}M parameters, "
        f"ControlNet {control_m:.1f}M, random weights"
    )
    print(
        f"{size}x{size}, {args.steps} steps, {args.scheduler}, CFG {args.guidance}, ControlNet strength "
        f"{args.strength:g}; {args.runs} runs each after a warm-up; models built in {build_s:.1f} s"
    )
    print_comparison("diffusers ControlNet img2img", ours, theirs, check, 0.7)
    return 0


if __name__ == "__main__":
    sys.exit(main())
