"""Offload modes and memory estimates (memory.py): the auto choice, sequential offload, the batch estimate."""

from __future__ import annotations

import argparse
import copy
import logging
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint.backend.engine import Engine, cli_run
from differential_inpaint.backend.engine.errors import EngineError
from differential_inpaint.backend.engine.flow_pipeline import FlowDifferentialPipeline
from differential_inpaint.backend.engine.job import fitting_samples
from differential_inpaint.backend.engine.memory import (
    GIB,
    DeviceMemory,
    activation_bytes,
    choose_offload,
    parse_offload,
)
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline, is_offloaded_in_groups
from differential_inpaint.backend.engine.schedulers import make_scheduler
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.protocol import JobParams

# FLUX.1 dev in bf16: the transformer's 11.9 B parameters, T5-XXL's 4.76 B, CLIP-L, the VAE.
FLUX_DEV = {
    "transformer": 23_800_000_000,
    "text_encoder_2": 9_520_000_000,
    "text_encoder": 246_000_000,
    "vae": 168_000_000,
}
# SD1.5 in fp16: UNet 860 M parameters, CLIP-L text encoder 123 M, VAE 84 M.
SD15 = {"unet": 1_720_000_000, "text_encoder": 246_000_000, "vae": 168_000_000}


def _gpu(total_gb: float, free_gb: float) -> DeviceMemory:
    return DeviceMemory("GPU", int(free_gb * GIB), int(total_gb * GIB))


CASES = [
    # (components, family, pixels, device memory, expected mode)
    (SD15, "sd15", 512 * 512, _gpu(24, 23), "none"),
    (SD15, "sd15", 512 * 512, _gpu(4, 3.2), "model"),  # 2 GB weights, 1 GB activations, 0.5 GB headroom
    (SD15, "sd15", 512 * 512, _gpu(2, 1.8), "sequential"),
    (FLUX_DEV, "flux", 1024 * 1024, _gpu(80, 78), "none"),
    (FLUX_DEV, "flux", 1024 * 1024, _gpu(40, 38), "none"),  # 31.4 GB, 2.5 GB activations, 2 GB headroom
    (FLUX_DEV, "flux", 1024 * 1024, _gpu(32, 31), "model"),
    (FLUX_DEV, "flux", 1024 * 1024, _gpu(24, 23.3), "sequential"),  # the transformer alone: 22.2 GB
    (FLUX_DEV, "flux", 1024 * 1024, _gpu(12, 11.5), "sequential"),
    (FLUX_DEV, "flux", 1024 * 1024, None, "none"),  # the CPU never offloads
]


@pytest.mark.parametrize(("sizes", "family", "pixels", "memory", "mode"), CASES)
def test_auto_chooses_from_the_model_size_and_the_free_memory(
    sizes: dict[str, int], family: str, pixels: int, memory: DeviceMemory | None, mode: str
) -> None:
    choice = choose_offload(sizes, family, pixels, memory, label=f"{family} model 'm'", dtype_name="bf16")
    assert choice.mode == mode
    assert choice.reason.startswith(f"{family} model 'm' (")
    wording = {"none": "no offload", "model": "model offload", "sequential": "sequential offload"}
    assert wording[mode] in choice.reason


def test_the_reason_gives_the_figures_the_choice_was_made_from() -> None:
    choice = choose_offload(
        FLUX_DEV, "flux", 1024 * 1024, _gpu(24, 22.1), label="flux model 'FLUX.1-dev'", dtype_name="bf16"
    )
    assert choice.reason == (
        "flux model 'FLUX.1-dev' (31.4 GB in bf16) on a 24 GB GPU with 22.1 GB free: sequential "
        "offload, the transformer (22.2 GB) with a 1024x1024 job's activations does not fit"
    )
    model = choose_offload(SD15, "sd15", 512 * 512, _gpu(4, 3.2), label="sd15 model 'x'", dtype_name="fp16")
    assert "all of it does not fit but the unet (1.6 GB) with a 512x512 job's activations does" in (
        model.reason
    )
    cpu = choose_offload(SD15, "sd15", 512 * 512, None, label="sd15 model 'x'", dtype_name="fp32")
    assert cpu.mode == "none" and "on the CPU" in cpu.reason


def test_a_mode_given_is_kept_with_its_figures_except_on_the_cpu() -> None:
    big = _gpu(80, 78)
    asked = choose_offload(SD15, "sd15", 512 * 512, big, label="m", dtype_name="fp16", asked="sequential")
    assert asked.mode == "sequential" and asked.reason.endswith("sequential offload, as asked")
    on_cpu = choose_offload(SD15, "sd15", 512 * 512, None, label="m", dtype_name="fp32", asked="model")
    assert on_cpu.mode == "none"


def test_offload_modes_are_parsed_and_others_named() -> None:
    assert parse_offload(" Sequential ") == "sequential"
    with pytest.raises(EngineError, match="Unknown offload mode 'half'.*none, model, sequential, auto"):
        parse_offload("half")
    with pytest.raises(EngineError, match="Unknown offload mode 'half'"):
        Engine("cpu", offload="half", scan_default_locations=False)


def test_the_activation_estimate_grows_with_pixels_and_differs_per_family() -> None:
    sizes = [256 * 256, 512 * 512, 768 * 768, 1024 * 1024, 1536 * 1536]
    for family in ("sd15", "sdxl", "flux", "flux-schnell", "sd3"):
        estimates = [activation_bytes(family, p) for p in sizes]
        assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates), family
    # Per pixel, SD1.5's UNet (guidance doubles it) holds more than FLUX's transformer (the VAE
    # decode is FLUX's peak), so more FLUX samples fit in the same memory.
    for pixels in sizes[1:]:
        assert activation_bytes("flux", pixels) < activation_bytes("sd15", pixels)
    assert activation_bytes("sd15", 512 * 512) == GIB  # the figure the SD batches were sized by
    assert activation_bytes("sd15", 512 * 512, element_size=4) == 2 * GIB  # float32
    free = 20 * GIB
    assert fitting_samples(free, 1024 * 1024, "flux", 16) > fitting_samples(free, 1024 * 1024, "sd15", 16)
    counts = [fitting_samples(free, p, "sdxl", 64) for p in sizes]
    assert counts == sorted(counts, reverse=True) and counts[-1] >= 1
    assert fitting_samples(-GIB, 512 * 512, "sd15", 8) == 1  # an offloaded model bigger than free


def _sd_latents(sampler: Any, pipe: Any) -> torch.Tensor:
    strength = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    strength[..., 32:] = 0.8
    return sampler(
        torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        strength,
        prompt="a red door",
        num_inference_steps=3,
        scheduler=make_scheduler("euler", pipe.scheduler.config),
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
    )


@pytest.mark.parametrize(("name", "sampler_class"), [("tiny-sd15", DifferentialDiffusionPipeline),
                                                      ("tiny-flux", FlowDifferentialPipeline)])  # fmt: skip
def test_sequential_offload_hooks_the_denoiser_and_text_encoders_and_changes_nothing(
    name: str, sampler_class: Any
) -> None:
    resident_pipe = build_tiny_pipeline(name)
    resident = _sd_latents(sampler_class(resident_pipe), resident_pipe)
    pipe = copy.deepcopy(build_tiny_pipeline(name))  # the built one is shared: hooks go on a copy
    sampler = sampler_class(pipe, offload="sequential")
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module) and m is not pipe.vae]
    assert len(modules) >= 2 and all(is_offloaded_in_groups(m) for m in modules)
    assert not is_offloaded_in_groups(pipe.vae)  # moved whole while it runs, parked after
    kept = [m for m in resident_pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert not any(is_offloaded_in_groups(m) for m in kept)
    assert sampler.cpu_offload  # a ControlNet handed to it goes back to CPU memory after
    assert torch.equal(_sd_latents(sampler, pipe), resident)


def test_run_and_serve_take_offload_and_cpu_offload_as_model() -> None:
    from differential_inpaint.backend.daemon import cli as daemon_cli

    run = argparse.ArgumentParser()
    cli_run.add_arguments(run)
    required = ["--image", "i", "--mask", "m", "--out", "o"]
    assert run.parse_args(required).offload == "auto"
    assert run.parse_args([*required, "--offload", "sequential"]).offload == "sequential"
    assert run.parse_args([*required, "--cpu-offload"]).offload == "model"
    serve = argparse.ArgumentParser()
    daemon_cli.add_arguments(serve)
    assert serve.parse_args(["--offload", "none"]).offload == "none"
    assert serve.parse_args(["--cpu-offload"]).offload == "model"
    assert daemon_cli._engine_options(serve.parse_args(["--offload", "model"]))["offload"] == "model"
    with pytest.raises(SystemExit):
        serve.parse_args(["--offload", "half"])


def test_the_engine_logs_and_reports_the_choice_at_load(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine("cpu", offload="sequential", scan_default_locations=False)
    assert engine.models.offload == "none"  # the CPU never offloads
    image = np.zeros((64, 64, 4), np.float32)
    image[..., 3] = 1.0
    mask = np.full((64, 64), 255, np.uint8)
    with caplog.at_level(logging.INFO, logger="differential_inpaint.engine"):
        engine.inpaint(image, mask, JobParams(steps=2, model="builtin:tiny-sd15"))
    choice = engine.models.loaded_offload()["builtin:tiny-sd15"]
    assert choice.mode == "none" and choice.reason.startswith("sd15 model 'builtin:tiny-sd15' (")
    assert "in fp32) on the CPU: no offload" in choice.reason
    assert choice.reason in caplog.text
