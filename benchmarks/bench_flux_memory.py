"""Peak GPU memory and time per step of a FLUX.1-dev differential job in each offload mode.

Builds FLUX.1 dev's sizes with random weights (no download): the transformer of diffusers'
FluxTransformer2DModel default config (19 double and 38 single blocks, 3072 wide, with the
guidance embedding: 11.9 B parameters, 23.8 GB in bf16), its VAE, CLIP-L and a T5-XXL-size
encoder (4.8 B parameters). The two large ones are built on the meta device and filled with
random values on the GPU, one at a time, then parked in CPU memory. Then one differential
job (a gradient map, so every step resets some latents) runs in each mode, from prompt to
decoded pixels, and the peak of torch.cuda.max_memory_allocated and the median step are
printed for each, with what `--offload auto` chooses for the `--budget-gb` GPU and whether
that mode's peak fits it. With --budget-gb the process is also held to that much GPU memory
(torch.cuda.set_per_process_memory_fraction), so a mode that does not fit runs out of memory
as it would on such a GPU.

    python benchmarks/bench_flux_memory.py --budget-gb 24             # CUDA, 1024x1024, 4 steps
    python benchmarks/bench_flux_memory.py --tiny                     # CPU: the script's code paths

--tiny runs a small FLUX on the CPU (memory is not measured there): a check that the script
works, for when a GPU is at hand. Without CUDA and without --tiny it says so and exits 2.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampler import StepClock, import_engine  # noqa: E402 - after the path

GIB = 1024**3
MODES = ("none", "model", "sequential")


def materialised(cls: Any, config: Any, device: torch.device, dtype: torch.dtype, from_config: bool) -> Any:
    """`cls` built on the meta device (no host time spent on initialising weights), then given
    random weights on `device` and moved to the CPU."""
    with torch.device("meta"):
        module = cls.from_config(config) if from_config else cls(config)
    if any(True for _ in module.buffers()):
        raise SystemExit(f"error: {cls.__name__} has buffers a meta build would leave unset")
    module = module.to_empty(device=device).to(dtype)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    return module.to("cpu").eval().requires_grad_(False)


def build_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """A FluxPipeline with random weights in CPU memory: FLUX.1 dev's sizes, or small ones."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    from differential_inpaint.backend.engine.flow_models import assemble_flow_pipeline
    from differential_inpaint.backend.engine.tiny import (
        T5_DIM,
        build_tiny_pipeline,
        tiny_flow_vae_config,
        tiny_flux_transformer_config,
        tiny_t5_config,
        tiny_text_config,
    )

    tiny_pipe = build_tiny_pipeline("tiny-flux")
    vae_config = tiny_flow_vae_config("flux")
    t5_config = tiny_t5_config()
    clip_config = tiny_text_config("quick_gelu", tiny_pipe.tokenizer.pad_token_id)
    transformer_config: dict[str, Any]
    if tiny:  # 2 double and 4 single blocks, as bench_flux.py's small model
        transformer_config = tiny_flux_transformer_config("flux")
        transformer_config.update(num_layers=2, num_single_layers=4, attention_head_dim=32,
                                  num_attention_heads=4, axes_dims_rope=(8, 12, 12),
                                  joint_attention_dim=T5_DIM)  # fmt: skip
    else:  # diffusers' defaults are FLUX.1's transformer (T5-XXL's 4096, CLIP-L's 768); dev
        # has the guidance embedding; the encoders and VAE get FLUX.1's sizes
        transformer_config = {"guidance_embeds": True}
        vae_config.update(block_out_channels=[128, 256, 512, 512], layers_per_block=2)
        t5_config.update(dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                              vocab_size=32128, relative_attention_num_buckets=32,
                              relative_attention_max_distance=128))  # fmt: skip
        clip_config.update(dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, projection_dim=768, vocab_size=49408))  # fmt: skip
    torch.manual_seed(0)
    transformer = materialised(FluxTransformer2DModel, transformer_config, device, dtype, from_config=True)
    t5 = materialised(T5EncoderModel, t5_config, device, dtype, from_config=False)
    vae = AutoencoderKL.from_config(vae_config).to(dtype)
    clip = CLIPTextModel(clip_config).to(dtype)
    pipe = assemble_flow_pipeline(
        "flux", vae, transformer, clip, tiny_pipe.tokenizer, t5, tiny_pipe.tokenizer_2
    )
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_mode(
    pipe: Any, mode: str, device: torch.device, dtype: torch.dtype, args: argparse.Namespace
) -> dict:
    """One differential job with the pipe placed for `mode`: peak memory, steps, latents."""
    from differential_inpaint.backend.engine.flow_pipeline import FlowDifferentialPipeline
    from differential_inpaint.backend.engine.schedulers import make_scheduler

    size = args.size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    gradient = (
        torch.linspace(0.0, 1.0, size, dtype=torch.float64).view(1, 1, 1, size).expand(1, 1, size, size)
    )
    free(device)
    started = time.perf_counter()
    try:
        if mode == "none":
            pipe.to(device)
        sampler = FlowDifferentialPipeline(pipe, device=device, dtype=dtype, offload=mode)
        clock = StepClock(device)
        with torch.inference_mode():
            pixels = sampler(
                image,
                gradient,
                prompt="a photograph of a red door",
                num_inference_steps=args.steps,
                guidance_scale=3.5,
                scheduler=make_scheduler("euler", pipe.scheduler.config),
                generator=torch.Generator().manual_seed(1),
                callback=clock.tick,
            )
        outcome: dict[str, Any] = {"pixels": pixels.float().cpu(), "steps": clock.steps()}
    except torch.cuda.OutOfMemoryError:
        outcome = {"pixels": None, "steps": [], "error": "out of memory"}
    outcome["seconds"] = time.perf_counter() - started
    outcome["peak"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if mode == "none":
        pipe.to("cpu")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a small FLUX on the CPU: checks the code paths")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--size", type=int, default=None, help="working size (default 1024; --tiny 128)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--budget-gb", type=float, default=None, help="the GPU to simulate, e.g. 24")
    parser.add_argument("--modes", default=",".join(MODES), help="offload modes to run, comma-separated")
    args = parser.parse_args(argv)
    args.size = args.size or (128 if args.tiny else 1024)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode(s) {', '.join(unknown)}: use {', '.join(MODES)}")
    # Sequential offload's hooks stay on the modules it was applied to: it runs last.
    modes.sort(key=MODES.index)

    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here; peak GPU memory needs one (--tiny checks the script on the CPU)")
        return 2
    engine = import_engine()
    from differential_inpaint.backend.engine.cli_run import quiet_libraries
    from differential_inpaint.backend.engine.memory import DeviceMemory, choose_offload, dtype_name
    from differential_inpaint.backend.engine.registry import component_bytes

    quiet_libraries()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    started = time.perf_counter()
    pipe = build_pipeline(args.tiny, device, dtype)
    sizes = component_bytes(pipe)
    print(f"engine: {engine.__file__}")
    print(f"built in {time.perf_counter() - started:.0f} s: " + ", ".join(
        f"{name} {size / GIB:.2f} GB" for name, size in sizes.items()))  # fmt: skip

    budget = args.budget_gb * GIB if args.budget_gb else None
    if device.type == "cuda":
        free(device)
        free_now, total = torch.cuda.mem_get_info(device)
        if budget is not None:
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)
            memory = DeviceMemory("GPU", int(budget - (total - free_now)), int(budget))
        else:
            memory = DeviceMemory("GPU", int(free_now), int(total))
    else:
        # The CPU has no device memory to measure: the budget (24 GB if none given) only
        # exercises the choice.
        budget = budget or 24 * GIB
        memory = DeviceMemory("GPU", int(budget * 0.95), int(budget))
    pixels = args.size * args.size
    choice = choose_offload(
        sizes,
        "flux",
        pixels,
        memory,
        label="FLUX.1 dev-size",
        dtype_name=dtype_name(dtype),
        element_size=dtype.itemsize,
    )
    print(f"auto: {choice.reason}")

    results = {mode: run_mode(pipe, mode, device, dtype, args) for mode in modes}
    reference = next((r["pixels"] for r in results.values() if r["pixels"] is not None), None)
    print(f"\n{args.size}x{args.size}, {args.steps} steps, {dtype_name(dtype)}, {device}")
    print(f"{'mode':<12}{'peak GPU GB':>12}{'median step s':>15}{'job s':>8}{'max |diff|':>12}  fits")
    for mode, r in results.items():
        peak = "n/a" if r["peak"] is None else f"{r['peak'] / GIB:.2f}"
        step = f"{statistics.median(r['steps']):.3f}" if r["steps"] else "-"
        diff = (
            "-"
            if r["pixels"] is None or reference is None
            else f"{(r['pixels'] - reference).abs().max():.2e}"
        )
        fits = r.get("error") or ("n/a" if r["peak"] is None else str(r["peak"] <= memory.total))
        chosen = "  <- auto" if mode == choice.mode else ""
        print(f"{mode:<12}{peak:>12}{step:>15}{r['seconds']:>8.1f}{diff:>12}  {fits}{chosen}")
    failed = results.get(choice.mode, {}).get("error")
    if failed:
        print(f"error: the mode auto chooses ({choice.mode}) failed: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
