"""Time per step: the differential sampler vs diffusers' StableDiffusionImg2ImgPipeline.

Both run the same random-weight SD1.5-architecture model, scheduler, step count, guidance
and seed at 512x512. The differential sampler gets a gradient mask (every step resets some
latents, as in real use); img2img gets strength 1, so both run every step. A step is the
interval between two consecutive step callbacks (synchronised on GPUs), so prompt
encoding, VAE encode and decode are excluded from both alike. One warm-up run each, then
`--runs` runs of each, interleaved; the figure is the median step.

CPU (default): a small but not trivial UNet (block_out_channels 64/128/256).
GPU: `--device cuda --full-size --fp16` builds the full SD1.5 UNet, VAE and CLIP-L text
encoder with random weights (no download) and runs in half precision.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


def import_engine() -> types.ModuleType:
    """The engine package, installed or straight from this checkout (no install needed)."""
    try:
        import differential_inpaint.backend.engine as engine

        return engine
    except ModuleNotFoundError:
        pass
    root = types.ModuleType("differential_inpaint")
    root.__path__ = []  # a namespace for the folders of this checkout
    sys.modules["differential_inpaint"] = root
    spec = importlib.util.spec_from_file_location(
        "differential_inpaint.backend",
        REPO / "backend" / "__init__.py",
        submodule_search_locations=[str(REPO / "backend")],
    )
    assert spec is not None and spec.loader is not None
    backend = importlib.util.module_from_spec(spec)
    sys.modules["differential_inpaint.backend"] = backend
    spec.loader.exec_module(backend)
    import differential_inpaint.backend.engine as engine

    return engine


def build_pipeline(full_size: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """A StableDiffusionPipeline with random weights, built directly on `device`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from differential_inpaint.backend.engine.checkpoints import assemble_pipeline
    from differential_inpaint.backend.engine.tokenizers import build_tokenizer

    tokenizer = build_tokenizer("clip")
    if full_size:  # the SD1.5 architecture, exactly
        unet_config: dict[str, Any] = {
            "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "cross_attention_dim": 768,
        }
        vae_channels = [128, 256, 512, 512]
        vae_layers = 2
        text = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        }
    else:  # small but not trivial: three levels, attention at two
        unet_config = {
            "block_out_channels": [64, 128, 256],
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": 256,
        }
        vae_channels = [32, 64, 64, 64]
        vae_layers = 1
        text = {
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        }
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            attention_head_dim=8,
            **unet_config,
        )
        vae = AutoencoderKL(
            block_out_channels=vae_channels,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=vae_layers,
            latent_channels=4,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **text,
            )
        )
    pipe = assemble_pipeline("sd15", vae, unet, text_encoder, tokenizer)
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class StepClock:
    """Timestamps taken in step callbacks; the device is synchronised first."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def tick(self, *_args: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        self.stamps.append(time.perf_counter())

    def diffusers_callback(self, _pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        return kwargs

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


def time_both(
    run_img2img: Callable[..., tuple[list[float], torch.Tensor]],
    run_differential: Callable[..., tuple[list[float], torch.Tensor]],
    *,
    runs: int,
    reset: Callable[[], None],
    check_strength: float | None,
    size: int,
) -> tuple[list[float], list[float], float | None]:
    """(our step times, img2img's, the check): one warm-up of each, then `runs` of each
    interleaved, so drift and other load hit both alike; `reset` gives img2img a fresh
    scheduler before each run. With `check_strength`, the largest latent difference of a
    uniform map at that strength against img2img at it."""
    with torch.inference_mode():
        reset()
        run_img2img()  # warm-up: kernels, allocator, caches
        run_differential()
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(runs):
            reset()
            theirs += run_img2img()[0]
            ours += run_differential()[0]
        check = None
        if check_strength is not None:
            reset()
            _, reference = run_img2img(check_strength)
            uniform = torch.full((1, 1, size, size), check_strength, dtype=torch.float64)
            _, latents = run_differential(uniform)
            check = float((latents.float() - reference.float()).abs().max())
    return ours, theirs, check


def print_comparison(
    reference: str, ours: list[float], theirs: list[float], check: float | None, check_strength: float
) -> None:
    """The medians, their ratio against the goal, and the check."""
    ours_ms, theirs_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    print("per step = interval between step callbacks: encode/decode excluded from both")
    print(f"{reference + ':':<24}{theirs_ms:9.2f} ms/step (median of {len(theirs)})")
    print(f"{'differential sampler:':<24}{ours_ms:9.2f} ms/step (median of {len(ours)})")
    print(f"ratio differential / img2img: {ours_ms / theirs_ms:.3f}   (goal <= 1.05)")
    if check is not None:
        print(
            f"uniform mask {check_strength:g} vs img2img strength {check_strength:g}: "
            f"max |latent difference| = {check:.3g}"
        )


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
    parser.add_argument("--check", action="store_true", help="also compare latents on a uniform mask")
    args = parser.parse_args(argv)

    engine = import_engine()
    from diffusers import StableDiffusionImg2ImgPipeline

    from differential_inpaint.backend.engine.cli_run import quiet_libraries

    quiet_libraries()

    from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
    from differential_inpaint.backend.engine.schedulers import make_scheduler

    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    started = time.perf_counter()
    pipe = build_pipeline(args.full_size, device, dtype)
    build_s = time.perf_counter() - started
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    differential = DifferentialDiffusionPipeline(pipe, device=device, dtype=dtype)

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
            prompt="a photograph of a red door",
            scheduler=make_scheduler(args.scheduler, pipe.scheduler.config),
            generator=torch.Generator().manual_seed(1),
            callback=clock.tick,
            **common,
        )
        return clock.steps(), out

    ours, theirs, check = time_both(
        run_img2img,
        run_differential,
        runs=args.runs,
        reset=lambda: setattr(img2img, "scheduler", make_scheduler(args.scheduler, pipe.scheduler.config)),
        check_strength=0.7 if args.check else None,
        size=size,
    )

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    kind = "full-size SD1.5" if args.full_size else "small SD1.5-style"
    print(f"engine: {engine.__name__}; torch {torch.__version__}")
    print(
        f"device: {name}, {str(dtype).removeprefix('torch.')}; "
        f"UNet: {kind}, {params:.1f}M parameters, random weights"
    )
    print(
        f"{size}x{size}, {args.steps} steps, {args.scheduler}, CFG {args.guidance}; "
        f"{args.runs} runs each after a warm-up; model built in {build_s:.1f} s"
    )
    print_comparison("diffusers img2img", ours, theirs, check, 0.7)
    return 0


if __name__ == "__main__":
    sys.exit(main())
