"""The differential sampler on the tiny models, against diffusers' own img2img pipelines."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

from differential_inpaint.backend.engine.errors import JobCancelled
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline, StepState
from differential_inpaint.backend.engine.schedulers import SCHEDULERS, make_scheduler
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.protocol import DEFAULT_LIMITS

SIZE = 64  # pixels; 8x8 latents


def _image(batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _run(name: str, strength: torch.Tensor, scheduler: str = "euler", **kwargs: Any) -> torch.Tensor:
    pipe = build_tiny_pipeline(name)
    sampler = DifferentialDiffusionPipeline(pipe)
    options: dict[str, Any] = {
        "prompt": "a red door",
        "negative_prompt": "blurry",
        "num_inference_steps": 10,
        "guidance_scale": 7.0,
        "generator": torch.Generator().manual_seed(42),
        "output_type": "latent",
    }
    options.update(kwargs)
    image = options.pop("image", _image(strength.shape[0]))
    return sampler(image, strength, scheduler=make_scheduler(scheduler, pipe.scheduler.config), **options)


def _img2img(cls: Any, name: str, scheduler: str, strength: float, negative: str | None) -> torch.Tensor:
    pipe = build_tiny_pipeline(name)
    reference = cls(**pipe.components)
    reference.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    return reference(
        prompt="a red door",
        negative_prompt=negative,
        image=_image(),
        strength=strength,
        num_inference_steps=10,
        guidance_scale=7.0,
        generator=torch.Generator().manual_seed(42),
        output_type="latent",
    ).images


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_uniform_mask_equals_diffusers_img2img_sd15(scheduler: str) -> None:
    strength = 0.7  # 7 of 10 steps; float32 would run 6
    uniform = torch.full((1, 1, SIZE, SIZE), strength, dtype=torch.float64)
    ours = _run("tiny-sd15", uniform, scheduler)
    reference = _img2img(StableDiffusionImg2ImgPipeline, "tiny-sd15", scheduler, strength, "blurry")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_uniform_mask_equals_diffusers_img2img_sdxl(scheduler: str) -> None:
    uniform = torch.full((1, 1, SIZE, SIZE), 0.7, dtype=torch.float64)
    # An empty negative prompt is SDXL's "no negative prompt": zero embeddings.
    ours = _run("tiny-sdxl", uniform, scheduler, negative_prompt="")
    reference = _img2img(StableDiffusionXLImg2ImgPipeline, "tiny-sdxl", scheduler, 0.7, None)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def _bands() -> torch.Tensor:
    """Four vertical bands of strength 0, 0.3, 0.6, 1 (two latent columns each)."""
    strength = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)
    for band, value in enumerate([0.0, 0.3, 0.6, 1.0]):
        strength[..., band * 16 : (band + 1) * 16] = value
    return strength


def test_each_step_resets_kept_pixels_to_the_original_noised_to_that_step() -> None:
    states: list[StepState] = []
    _run("tiny-sd15", _bands(), "euler", callback=states.append)
    assert len(states) == 10
    scheduler = make_scheduler("euler", build_tiny_pipeline("tiny-sd15").scheduler.config)
    scheduler.set_timesteps(10)
    z0 = states[0].original_latents
    eps = (states[0].noised_original - z0) / scheduler.sigmas[0]
    for state in states:
        # One sigma per step (set_begin_index makes a vectorised add_noise return one for all).
        expected = z0 + scheduler.sigmas[state.step_index] * eps
        torch.testing.assert_close(state.noised_original, expected, rtol=1e-5, atol=1e-5)
    sigmas_seen = {round(float(((s.noised_original - z0) / eps).flatten()[0]), 4) for s in states}
    assert len(sigmas_seen) == 10


def test_free_sets_are_nested_and_follow_the_bands() -> None:
    states: list[StepState] = []
    latents = _run("tiny-sd15", _bands(), "euler", callback=states.append)
    free_columns = [s.free[0, 0, 0].tolist() for s in states]  # 8 latent columns per step
    for before, after in zip(free_columns, free_columns[1:], strict=False):
        assert all(a or not b for b, a in zip(before, after, strict=True))
    # e = 1 free from step 0, 0.6 from step 4, 0.3 from step 7, 0 never (bilinear edges aside).
    first_free = [
        next((s.step_index for s, f in zip(states, free_columns, strict=True) if f[c]), None)
        for c in range(8)
    ]
    assert first_free[0] is None and first_free[3] == 7 and first_free[5] == 4 and first_free[7] == 0
    # Never-free latents are the original latents, exactly.
    assert torch.equal(latents[..., :, :1], states[-1].original_latents[..., :, :1])


def test_batches_of_two_keep_each_image_its_own_mask() -> None:
    strength = torch.zeros(2, 1, SIZE, SIZE, dtype=torch.float64)
    strength[1] = 1.0
    states: list[StepState] = []
    latents = _run("tiny-sd15", strength, "euler_a", callback=states.append)
    assert latents.shape == (2, 4, 8, 8)
    assert torch.equal(latents[0], states[-1].original_latents[0])  # all kept
    assert (latents[1] - states[-1].original_latents[1]).abs().mean() > 0.1


@pytest.mark.parametrize("name", ["tiny-sd15-inpaint", "tiny-sdxl-inpaint"])
def test_inpainting_unet_gets_the_free_mask_and_masked_image_latents(name: str) -> None:
    pipe = build_tiny_pipeline(name)
    seen: list[torch.Tensor] = []
    hook = pipe.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        states: list[StepState] = []
        latents = _run(name, _bands(), "ddim", callback=states.append)
    finally:
        hook.remove()
    sampler = DifferentialDiffusionPipeline(pipe)
    _, image_latents = sampler.encode_image(_image(), None)  # the mean: no randomness
    blank_latents = sampler.encode_blank(_image())
    assert len(seen) == len(states) == 10
    for model_input, state in zip(seen, states, strict=True):
        assert model_input.shape[1] == 9
        uncond, cond = model_input.chunk(2)  # classifier-free guidance doubles the batch
        assert torch.equal(uncond[:, 4:], cond[:, 4:])
        assert torch.equal(cond[:, 4:5], state.free.float())  # the mask channel: free now
        expected = torch.where(state.free, blank_latents, image_latents)  # hidden where free
        torch.testing.assert_close(cond[:, 5:], expected)
    assert torch.equal(latents[..., :1], states[-1].original_latents[..., :1])


def test_cpu_offload_moves_components_per_stage_and_changes_nothing() -> None:
    pipe = build_tiny_pipeline("tiny-sd15")
    placed: list[str] = []
    sampler = DifferentialDiffusionPipeline(pipe, offload="model")
    original_to = torch.nn.Module.to

    def recording_to(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        for name in ("unet", "vae", "text_encoder"):
            if module is getattr(pipe, name):
                placed.append(f"{name}->{args[0] if args else kwargs}")
        return original_to(module, *args, **kwargs)

    torch.nn.Module.to = recording_to  # type: ignore[method-assign]
    try:
        offloaded = sampler(
            _image(),
            _bands(),
            prompt="a red door",
            num_inference_steps=3,
            scheduler=make_scheduler("euler", pipe.scheduler.config),
            generator=torch.Generator().manual_seed(3),
            output_type="latent",
        )
    finally:
        torch.nn.Module.to = original_to  # type: ignore[method-assign]
    assert placed[:2] == ["text_encoder->cpu", "text_encoder->cpu"]  # to the device, then parked
    assert {"unet->cpu", "vae->cpu"} <= set(placed)
    resident = _run("tiny-sd15", _bands(), "euler", num_inference_steps=3, negative_prompt="",
                    generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.equal(offloaded, resident)


def test_cpu_offload_parks_what_a_cancelled_job_left_only_when_asked() -> None:
    pipe = build_tiny_pipeline("tiny-sd15")
    sampler = DifferentialDiffusionPipeline(pipe, offload="model")
    moves = {"unet": 0, "vae": 0, "text_encoder": 0}
    original_to = torch.nn.Module.to

    def counting_to(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        for name in moves:
            if module is getattr(pipe, name):
                moves[name] += 1
        return original_to(module, *args, **kwargs)

    states: list[StepState] = []
    torch.nn.Module.to = counting_to  # type: ignore[method-assign]
    try:
        with pytest.raises(JobCancelled):
            sampler(
                _image(),
                _bands(),
                prompt="a red door",
                num_inference_steps=5,
                scheduler=make_scheduler("euler", pipe.scheduler.config),
                callback=states.append,
                should_cancel=lambda: len(states) >= 1,
            )
        # Text encoder and VAE went to the device and back; the UNet stays (the caller
        # answers first), until offload() parks everything.
        assert moves == {"unet": 1, "vae": 2, "text_encoder": 2}
        sampler.offload()
        assert moves == {"unet": 2, "vae": 3, "text_encoder": 3}
    finally:
        torch.nn.Module.to = original_to  # type: ignore[method-assign]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_starts_at_the_most_steps_allowed(scheduler: str) -> None:
    """The first step of the longest schedule a job may ask for (DDIM broke at 1000)."""
    states: list[StepState] = []
    with pytest.raises(JobCancelled):
        _run(
            "tiny-sd15",
            torch.ones(1, 1, SIZE, SIZE, dtype=torch.float64),
            scheduler,
            num_inference_steps=DEFAULT_LIMITS.max_steps,
            callback=states.append,
            should_cancel=lambda: len(states) >= 1,
        )
    assert len(states) == 1 and states[0].step_index == 0
    assert torch.isfinite(states[0].latents).all()


def test_images_the_vae_cannot_halve_three_times_are_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        _run("tiny-sd15", torch.ones(1, 1, 60, 64, dtype=torch.float64), image=torch.rand(1, 3, 60, 64))
