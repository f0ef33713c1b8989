"""Smooth strength (the sampler's `smooth`) and the seam options (colour match, keep
unchanged): what they keep exact, and what they make better."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint.backend.engine import Engine
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline, StepState
from differential_inpaint.backend.engine.schedulers import SCHEDULERS, make_scheduler
from differential_inpaint.backend.engine.seams import from_oklab, keep_unchanged, match_colors, to_oklab
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.protocol import JobParams
from tests.support.colour_cast import cast, engine_with_colour_cast

from .conftest import random_region

HEIGHT, WIDTH = 16, 256  # pixels; 2 x 32 latents


def _sampler() -> DifferentialDiffusionPipeline:
    return DifferentialDiffusionPipeline(build_tiny_pipeline("tiny-sd15"))


def _run(
    sampler: DifferentialDiffusionPipeline, strength: torch.Tensor, scheduler: str, steps: int, **kwargs: Any
) -> tuple[torch.Tensor, list[StepState]]:
    states: list[StepState] = []
    image = torch.rand(
        1, 3, strength.shape[-2], strength.shape[-1], generator=torch.Generator().manual_seed(0)
    )
    latents = sampler(
        image,
        strength,
        prompt="a stone wall",
        num_inference_steps=steps,
        guidance_scale=7.0,
        scheduler=make_scheduler(scheduler, sampler.pipe.scheduler.config),
        generator=torch.Generator().manual_seed(3),
        callback=states.append,
        output_type="latent",
        **kwargs,
    )
    return latents, states


def _ramp() -> torch.Tensor:
    return (
        torch.linspace(0.0, 1.0, WIDTH, dtype=torch.float64).view(1, 1, 1, WIDTH).expand(1, 1, HEIGHT, WIDTH)
    )


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_smooth_keeps_the_invariants_on_every_scheduler(scheduler: str) -> None:
    sampler = _sampler()
    ramp = _ramp().clone()
    ramp[..., : WIDTH // 4] = 0.0  # a quarter kept
    latents, states = _run(sampler, ramp, scheduler, 4, smooth=True)
    z0 = states[0].original_latents
    # Mask 0: the original latents, bit for bit (the first 7 latent columns are 0 after resampling).
    assert torch.equal(latents[..., :7], z0[..., :7])
    # The free sets are nested.
    for before, after in zip(states, states[1:], strict=False):
        assert bool((after.free | ~before.free).all())
    # A uniform map is exactly what it is without smooth: img2img, step rounding included.
    for value in (0.35, 0.7, 1.0):
        uniform = torch.full((1, 1, 32, 32), value, dtype=torch.float64)
        smooth, _ = _run(sampler, uniform, scheduler, 10, smooth=True)
        stepped, _ = _run(sampler, uniform, scheduler, 10)
        assert torch.equal(smooth, stepped), (scheduler, value)


def _change_by_column(smooth: bool, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean |final latents - z0| per latent column of a 64x512 ramp, over rows and 4 seeds
    (as benchmarks/bench_smooth.py measures it, with fewer seeds)."""
    sampler = _sampler()
    height, width = 64, 512
    ramp = (
        torch.linspace(0.0, 1.0, width, dtype=torch.float64).view(1, 1, 1, width).expand(1, 1, height, width)
    )
    total = torch.zeros(width // 8, dtype=torch.float64)
    for seed in range(4):
        states: list[StepState] = []
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
        latents = sampler(
            image,
            ramp,
            prompt="a stone wall",
            num_inference_steps=steps,
            guidance_scale=1.0,
            scheduler=make_scheduler("euler", sampler.pipe.scheduler.config),
            generator=torch.Generator().manual_seed(seed),
            callback=states.append,
            output_type="latent",
            smooth=smooth,
        )
        total += (latents - states[0].original_latents).abs().double().mean(dim=(0, 1, 2))
    columns = torch.nn.functional.interpolate(ramp, size=(height // 8, width // 8), mode="bilinear")
    return columns[0, 0, 0].numpy(), total.numpy()


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_on_a_ramp_at_four_steps_the_change_grows_with_the_mask_inside_every_band() -> None:
    mask, change = _change_by_column(smooth=True, steps=4)
    for band in range(4):
        inside = (mask >= band / 4) & (mask < (band + 1) / 4)
        assert _rank_correlation(mask[inside], change[inside]) >= 0.8, (band, change[inside])
    assert (change[mask > 0.05] > 0).all(), "every gray above 0.05 changes something"
    # The paper's rule, for contrast: nothing changes below 1/N.
    mask, stepped = _change_by_column(smooth=False, steps=4)
    assert (stepped[(mask > 0.05) & (mask < 0.25)] == 0).all()


def test_the_engine_passes_smooth_and_off_is_the_papers_rule(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = DifferentialDiffusionPipeline.__call__

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["smooth"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DifferentialDiffusionPipeline, "__call__", spy)
    mask = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    image = random_region(32, 64)
    params = JobParams(prompt="x", steps=4, seed=1)
    assert params.smooth, "smooth is the default"
    engine.inpaint(image, mask, params, model="builtin:tiny-sd15")
    engine.inpaint(image, mask, params.replace(smooth=False), model="builtin:tiny-sd15")
    assert seen == [True, False]


# --- colour match and keep unchanged ---------------------------------------------


def test_oklab_round_trips() -> None:
    rgb = np.random.default_rng(0).random((8, 8, 3))
    np.testing.assert_allclose(from_oklab(to_oklab(rgb)), rgb, atol=1e-6)
    assert abs(to_oklab(np.ones((1, 1, 3)))[0, 0, 0] - 1.0) < 1e-6  # white: L = 1


def test_colour_match_takes_out_a_cast_in_the_gray_zone_only() -> None:
    original = random_region(32, 96, seed=4)[..., :3]
    strength = np.tile(np.linspace(0.0, 1.0, 96), (32, 1))
    drifted = cast(original)
    matched = match_colors(drifted, original, strength)
    gray = (strength > 0.1) & (strength < 0.6)
    before = np.abs(to_oklab(drifted)[gray] - to_oklab(original)[gray]).mean()
    after = np.abs(to_oklab(matched)[gray] - to_oklab(original)[gray]).mean()
    assert after < 0.5 * before, (before, after)
    # Untouched where nothing was asked, and where everything was.
    assert np.array_equal(matched[strength == 0], drifted[strength == 0])
    assert np.array_equal(matched[strength == 1], drifted[strength == 1])
    # A hard mask has no gray zone: nothing to measure, nothing changes.
    hard = (strength > 0.5).astype(float)
    assert np.array_equal(match_colors(drifted, original, hard), drifted)


def test_keep_unchanged_clears_alpha_where_the_change_is_below_the_threshold() -> None:
    original = np.full((1, 4, 3), 0.5, np.float32)
    new = original + np.array([0.0, 0.01, 0.03, 0.2], np.float32)[None, :, None]
    alpha = np.ones((1, 4), np.float32)
    kept = keep_unchanged(alpha, new, original, 0.02)
    assert kept[0, 0] == 0 and kept[0, 1] == 0  # below the threshold: the original, exactly
    assert 0 < kept[0, 2] < 1 and kept[0, 3] == 1  # fading in up to twice the threshold
    assert keep_unchanged(alpha, new, original, 0.0) is alpha


def test_the_engine_colour_matches_and_keeps_mask_zero_bit_for_bit() -> None:
    engine = engine_with_colour_cast(Engine(device="cpu", scan_default_locations=False), 64 * 192)
    image = random_region(64, 192, seed=5)
    mask = np.zeros((64, 192), np.uint8)
    mask[:, 32:] = np.linspace(0, 255, 160).astype(np.uint8)
    params = JobParams(prompt="x", steps=10, seed=1, snap=0.0)
    plain = engine.inpaint(image, mask, params, model="builtin:tiny-sd15")
    matched = engine.inpaint(image, mask, params.replace(color_match=True), model="builtin:tiny-sd15")
    keep = mask == 0
    assert matched.image[keep, :3].tobytes() == image[keep, :3].tobytes()
    gray = (mask > 25) & (mask < 150)

    def error(result: Any) -> float:
        return float(np.abs(to_oklab(result.image[..., :3])[gray] - to_oklab(image[..., :3])[gray]).mean())

    assert error(matched) < 0.6 * error(plain), (error(plain), error(matched))
    # Keep unchanged: the barely changed edge of the gray zone becomes the original again.
    kept = engine.inpaint(image, mask, params.replace(keep_threshold=0.02), model="builtin:tiny-sd15")
    assert (kept.image[..., 3] == 0).sum() > (plain.image[..., 3] == 0).sum()
    untouched = kept.image[..., 3] == 0
    assert kept.image[untouched, :3].tobytes() == image[untouched, :3].tobytes()


def _paper_reference(
    pipe: Any, image: torch.Tensor, strength: torch.Tensor, steps: int, seed: int
) -> torch.Tensor:
    """The paper's rule written out plainly from diffusers' parts (SD1.5, Euler, no
    guidance), independent of the sampler's code: its latents."""
    scheduler = make_scheduler("euler", pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    vae = pipe.vae
    z0 = vae.encode(2.0 * image - 1.0).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(z0.shape, generator=generator)
    e = torch.nn.functional.interpolate(strength, size=z0.shape[-2:], mode="bilinear", align_corners=False)
    free_steps = torch.floor(e * steps + 1e-9).clamp(max=int(steps * float(strength.max())))
    t_start = steps - int(steps * float(strength.max()))
    timesteps = scheduler.timesteps[t_start:]
    scheduler.set_begin_index(t_start)
    embeds, _ = pipe.encode_prompt("a stone wall", "cpu", 1, False)
    latents = scheduler.add_noise(z0, noise, timesteps[:1])
    for i, t in enumerate(timesteps):
        free = free_steps >= steps - (t_start + i)  # e >= 1 - i/N in whole steps
        latents = torch.where(free, latents, scheduler.add_noise(z0, noise, t.reshape(1)))
        model_input = scheduler.scale_model_input(latents, t)
        predicted = pipe.unet(model_input, t, encoder_hidden_states=embeds).sample
        latents = scheduler.step(predicted, t, latents).prev_sample
    return torch.where(free_steps == 0, z0, latents)


def test_smooth_off_is_the_papers_rule_latent_for_latent() -> None:
    sampler = _sampler()
    strength = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    for band, value in enumerate([0.0, 0.3, 0.55, 0.9]):
        strength[..., band * 16 : (band + 1) * 16] = value
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def ours(smooth: bool) -> torch.Tensor:
        return sampler(
            image,
            strength,
            prompt="a stone wall",
            num_inference_steps=10,
            guidance_scale=1.0,
            scheduler=make_scheduler("euler", sampler.pipe.scheduler.config),
            generator=torch.Generator().manual_seed(5),
            output_type="latent",
            smooth=smooth,
        )

    with torch.no_grad():
        reference = _paper_reference(sampler.pipe, image, strength, 10, 5)
    torch.testing.assert_close(ours(False), reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours(True), reference, atol=1e-3), "smooth changes the gray bands"
