"""Time per step: the flow-matching differential sampler vs diffusers' FluxImg2ImgPipeline.

Both run the same random-weight FLUX.1-dev-architecture model (FluxTransformer2DModel
with its guidance embedding, a 16-channel VAE, CLIP-L and T5 encoders), the same
flow-matching Euler schedule with FLUX's resolution-dependent shift, step count,
distilled guidance and seed. The differential sampler gets a gradient mask (every step
resets some latents, as in real use); img2img gets strength 1, so both run every step.
A step is the interval between two consecutive step callbacks (synchronised on GPUs),
so prompt encoding, VAE encode and decode are excluded from both alike. One warm-up run
each, then `--runs` runs of each, interleaved; the figure is the median step.

    python benchmarks/bench_flux.py                    # CPU: a small FLUX transformer, 256x256
    python benchmarks/bench_flux.py --device cuda --full-size --bf16 --size 1024

--full-size builds the real FLUX.1 transformer (19 double and 38 single blocks, 24 heads
of 128) and VAE with random weights (no download; about 24 GB in bf16); the text
encoders stay tiny, as they run once and are not timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampler import StepClock, import_engine, print_comparison, time_both  # noqa: E402 - after the path


def build_pipeline(full_size: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """A FluxPipeline with random weights: the tiny model's encoders, a larger transformer."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from differential_inpaint.backend.engine.flow_models import assemble_flow_pipeline
    from differential_inpaint.backend.engine.tiny import (
        T5_DIM,
        build_tiny_pipeline,
        tiny_flow_vae_config,
        tiny_flux_transformer_config,
    )

    tiny = build_tiny_pipeline("tiny-flux")
    transformer_config = tiny_flux_transformer_config("flux")
    vae_config = tiny_flow_vae_config("flux")
    if full_size:  # FLUX.1 dev's transformer and VAE, exactly (the T5 width stays tiny)
        transformer_config.update(
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            pooled_projection_dim=32,
            joint_attention_dim=T5_DIM,
            axes_dims_rope=(16, 56, 56),
        )
        vae_config.update(block_out_channels=[128, 256, 512, 512], layers_per_block=2)
    else:  # small but not trivial: 2 double and 4 single blocks, 4 heads of 32
        transformer_config.update(
            num_layers=2,
            num_single_layers=4,
            attention_head_dim=32,
            num_attention_heads=4,
            axes_dims_rope=(8, 12, 12),
        )
    torch.manual_seed(0)
    with torch.device(device):
        transformer = FluxTransformer2DModel.from_config(transformer_config).to(dtype)
        vae = AutoencoderKL.from_config(vae_config).to(dtype)
    pipe = assemble_flow_pipeline(
        "flux", vae, transformer, tiny.text_encoder, tiny.tokenizer, tiny.text_encoder_2, tiny.tokenizer_2
    )
    pipe.to(device=device, dtype=dtype)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="the real FLUX.1 transformer and VAE sizes")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 (GPU)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--check", action="store_true", help="also compare latents on a uniform mask")
    args = parser.parse_args(argv)

    engine = import_engine()
    from diffusers import FluxImg2ImgPipeline

    from differential_inpaint.backend.engine.cli_run import quiet_libraries

    quiet_libraries()
    from differential_inpaint.backend.engine.flow_pipeline import FlowDifferentialPipeline
    from differential_inpaint.backend.engine.schedulers import make_scheduler

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    started = time.perf_counter()
    pipe = build_pipeline(args.full_size, device, dtype)
    build_s = time.perf_counter() - started
    img2img = FluxImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    differential = FlowDifferentialPipeline(pipe, device=device, dtype=dtype)

    size = args.size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    gradient = (
        torch.linspace(0.0, 1.0, size, dtype=torch.float64).view(1, 1, 1, size).expand(1, 1, size, size)
    )
    common = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "output_type": "latent"}

    def run_img2img(strength: float = 1.0) -> tuple[list[float], torch.Tensor]:
        clock = StepClock(device)
        out = img2img(
            prompt="a photograph of a red door",
            image=image.to(device=device, dtype=dtype),
            strength=strength,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(1),
            callback_on_step_end=clock.diffusers_callback,
            **common,
        ).images
        return clock.steps(), img2img._unpack_latents(out, size, size, img2img.vae_scale_factor)

    def run_differential(strength_map: torch.Tensor = gradient) -> tuple[list[float], torch.Tensor]:
        clock = StepClock(device)
        out = differential(
            image,
            strength_map,
            prompt="a photograph of a red door",
            scheduler=make_scheduler("euler", pipe.scheduler.config),
            generator=torch.Generator().manual_seed(1),
            callback=clock.tick,
            **common,
        )
        return clock.steps(), out

    ours, theirs, check = time_both(
        run_img2img,
        run_differential,
        runs=args.runs,
        reset=lambda: setattr(img2img, "scheduler", make_scheduler("euler", pipe.scheduler.config)),
        check_strength=0.75 if args.check else None,
        size=size,
    )

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e6
    kind = "full-size FLUX.1" if args.full_size else "small FLUX.1-style"
    print(f"engine: {engine.__name__}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print(
        f"device: {name}, {str(dtype).removeprefix('torch.')}; "
        f"transformer: {kind}, {params:.1f}M parameters, random weights"
    )
    print(
        f"{size}x{size}, {args.steps} steps, flow-matching Euler, guidance {args.guidance}; "
        f"{args.runs} runs each after a warm-up; model built in {build_s:.1f} s"
    )
    print_comparison("diffusers FLUX img2img", ours, theirs, check, 0.75)
    return 0


if __name__ == "__main__":
    sys.exit(main())
