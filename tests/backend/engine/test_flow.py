"""The flow-matching sampler (FLUX.1, FLUX Fill, SD3) on the tiny models, against diffusers'
own img2img and Fill pipelines, latent for latent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxFillPipeline, FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline

from differential_inpaint.backend.engine import Engine, UnknownScheduler
from differential_inpaint.backend.engine.errors import JobCancelled
from differential_inpaint.backend.engine.flow_models import flow_family
from differential_inpaint.backend.engine.flow_pipeline import FlowDifferentialPipeline
from differential_inpaint.backend.engine.pipeline import StepState, first_free_step, flow_start_step
from differential_inpaint.backend.engine.schedulers import make_scheduler
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.protocol import JobParams

from .conftest import random_region

SIZE = 64  # pixels; 8x8 latents, 4x4 tokens
STEPS = 10


def _image(batch: int = 1, height: int = SIZE, width: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def _pipe(name: str) -> Any:
    return build_tiny_pipeline(name)


def _run(name: str, strength: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    pipe = _pipe(name)
    options: dict[str, Any] = {
        "prompt": "a red door",
        "negative_prompt": "blurry",
        "num_inference_steps": STEPS,
        "guidance_scale": 4.0,
        "generator": torch.Generator().manual_seed(42),
        "output_type": "latent",
    }
    options.update(kwargs)
    image = options.pop("image", None)
    if image is None:
        image = _image(strength.shape[0], *strength.shape[-2:])
    scheduler = make_scheduler("euler", pipe.scheduler.config)
    return FlowDifferentialPipeline(pipe)(image, strength, scheduler=scheduler, **options)


def _reference(
    name: str, strength: float, height: int = SIZE, width: int = SIZE, **kwargs: Any
) -> torch.Tensor:
    """diffusers' own pipeline at `strength`, its latents unpacked as ours are."""
    pipe = _pipe(name)
    cls: Any = {"tiny-sd3": StableDiffusion3Img2ImgPipeline, "tiny-flux-fill": FluxFillPipeline}.get(
        name, FluxImg2ImgPipeline
    )
    reference = cls(**pipe.components)
    reference.scheduler = make_scheduler("euler", pipe.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    if name == "tiny-flux-schnell":
        kwargs["max_sequence_length"] = 256  # schnell's T5 prompt length (dev's: 512)
    if name == "tiny-sd3":
        kwargs["negative_prompt"] = "blurry"  # FLUX takes none: no true CFG
    options: dict[str, Any] = {"guidance_scale": 4.0, **kwargs}
    latents = reference(
        prompt="a red door",
        image=_image(1, height, width),
        strength=strength,
        num_inference_steps=STEPS,
        height=height,
        width=width,
        generator=torch.Generator().manual_seed(42),
        output_type="latent",
        **options,
    ).images
    if name != "tiny-sd3":
        latents = reference._unpack_latents(latents, height, width, reference.vae_scale_factor)
    return latents


@pytest.mark.parametrize(
    ("name", "strength", "smooth", "size"),
    [
        ("tiny-flux", 0.7, False, (SIZE, SIZE)),
        ("tiny-flux", 0.75, True, (SIZE, 96)),  # 8 steps (SD: 7); a wider image shifts more
        ("tiny-flux", 1.0, False, (SIZE, SIZE)),
        ("tiny-sd3", 0.7, False, (SIZE, SIZE)),
        ("tiny-sd3", 0.35, True, (96, SIZE)),
    ],
)
def test_a_uniform_map_is_diffusers_img2img_exactly(
    name: str, strength: float, smooth: bool, size: tuple[int, int]
) -> None:
    # Exactly, not at float rounding: the same operations on the same tensors in the same
    # order (the same start step, sigmas and scale_noise; FLUX's packing is a permutation and
    # its Euler step works element by element, so stepping unpacked latents changes no value).
    uniform = torch.full((1, 1, *size), strength, dtype=torch.float64)
    ours = _run(name, uniform, smooth=smooth)
    assert torch.equal(ours, _reference(name, strength, *size))


def test_builtin_schnell_runs_one_batch_unguided_on_256_t5_tokens() -> None:
    """builtin:tiny-flux-schnell: the transformer sees one batch (no CFG), no guidance
    embedding and schnell's 256 T5 tokens, on schnell's unshifted schedule; the guidance and
    negative prompt asked for change nothing, and a uniform map is diffusers'
    FluxImg2ImgPipeline at guidance 0, latent for latent."""
    pipe = build_tiny_pipeline("tiny-flux-schnell")
    assert not pipe.transformer.config.guidance_embeds
    assert not pipe.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.shift == 1.0
    seen: list[dict[str, Any]] = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.append(kwargs), with_kwargs=True
    )
    uniform = torch.full((1, 1, SIZE, SIZE), 0.55, dtype=torch.float64)
    try:
        ours = _run("tiny-flux-schnell", uniform)  # guidance 4, negative prompt "blurry"
    finally:
        hook.remove()
    assert len(seen) == STEPS - int(STEPS * (1 - 0.55)), len(seen)
    for kwargs in seen:
        assert kwargs["hidden_states"].shape[0] == 1 and kwargs["guidance"] is None
        assert kwargs["encoder_hidden_states"].shape[:2] == (1, 256)
    assert torch.equal(ours, _run("tiny-flux-schnell", uniform, guidance_scale=0.0, negative_prompt=""))
    assert torch.equal(ours, _reference("tiny-flux-schnell", 0.55, guidance_scale=0.0))


def test_flux_fill_with_a_uniform_map_is_diffusers_flux_fill_exactly() -> None:
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 16:48, 8:40] = 0.8  # binarised: told to fill where >= 0.5
    uniform = torch.full((1, 1, SIZE, SIZE), 0.75, dtype=torch.float64)
    ours = _run("tiny-flux-fill", uniform, mask=mask)
    reference = _reference("tiny-flux-fill", 0.75, mask_image=(mask >= 0.5).float())
    assert torch.equal(ours, reference)


def test_flux_fill_gets_the_binarised_mask_and_the_grayed_image() -> None:
    pipe = build_tiny_pipeline("tiny-flux-fill")
    seen: list[torch.Tensor] = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.append(kwargs["hidden_states"].clone()), with_kwargs=True
    )
    try:
        _run("tiny-flux-fill", _bands(), mask=_bands().float(), num_inference_steps=4)
    finally:
        hook.remove()
    assert seen and all(x.shape == (1, 16, 64 + 64 + 256) for x in seen)
    mask_tokens = seen[0][0, :, 128:]  # 4x4 tokens of 2x2 latent pixels of 8x8 mask pixels
    columns = mask_tokens.view(4, 4, 8, 8, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(-1)
    assert set(columns.tolist()) == {0.0, 1.0}
    assert all(torch.equal(x[..., 64:], seen[0][..., 64:]) for x in seen)  # the same every step
    # Bands 0 and 0.3 are kept visible; 0.6 and 1 are hidden (>= 0.5).
    grid = mask_tokens.view(4, 4, 8, 8, 2, 2).permute(0, 4, 2, 1, 5, 3).reshape(SIZE, SIZE)
    assert grid[:, :32].max() == 0 and grid[:, 32:].min() == 1


def _bands() -> torch.Tensor:
    """Four vertical bands of strength 0, 0.3, 0.6, 1 (two latent columns each)."""
    strength = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)
    for band, value in enumerate([0.0, 0.3, 0.6, 1.0]):
        strength[..., band * 16 : (band + 1) * 16] = value
    return strength


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-sd3", "tiny-flux-fill"])
def test_gray_bands_change_monotonically_with_nested_free_sets(name: str) -> None:
    states: list[StepState] = []
    latents = _run(name, _bands(), callback=states.append)
    z0 = states[-1].original_latents
    # Measured in latents: the tiny random VAE's decoder would swamp the differences in pixels.
    change = [float((latents - z0)[..., c * 2 : c * 2 + 2].abs().mean()) for c in range(4)]
    assert change[0] == 0.0 and change[0] < change[1] < change[2] < change[3], change
    free_columns = [s.free[0, 0, 0].tolist() for s in states]
    for before, after in zip(free_columns, free_columns[1:], strict=False):
        assert all(a or not b for b, a in zip(before, after, strict=True))  # free stays free
    first_free = [next((s.step_index for s in states if s.free[0, 0, 0, c]), None) for c in range(8)]
    assert first_free[0] is None and first_free[3] == 7 and first_free[5] == 4 and first_free[7] == 0


def test_each_reset_is_the_original_noised_to_that_steps_sigma() -> None:
    states: list[StepState] = []
    _run("tiny-flux", _bands(), callback=states.append)
    pipe = build_tiny_pipeline("tiny-flux")
    sampler = FlowDifferentialPipeline(pipe)
    scheduler = make_scheduler("euler", pipe.scheduler.config)
    sampler.set_timesteps(scheduler, STEPS, SIZE, SIZE)
    z0 = states[0].original_latents
    sigmas = scheduler.sigmas
    eps = (states[0].noised_original - (1 - sigmas[0]) * z0) / sigmas[0]
    for state in states:
        sigma = sigmas[state.step_index]
        torch.testing.assert_close(
            state.noised_original, sigma * eps + (1 - sigma) * z0, rtol=1e-5, atol=1e-5
        )
    assert len({round(float(sigmas[s.step_index]), 6) for s in states}) == STEPS
    # FLUX's resolution-dependent shift: a 4x larger image is noisier at the same step.
    larger = make_scheduler("euler", pipe.scheduler.config)
    sampler.set_timesteps(larger, STEPS, 4 * SIZE, 4 * SIZE)
    assert bool((larger.sigmas[1:-1] > sigmas[1:-1]).all())


def test_flow_families_start_as_their_img2img_and_round_the_top_step_up() -> None:
    assert [flow_start_step(s, 10) for s in (0.7, 0.75, 0.5, 0.05, 1.0)] == [3, 2, 5, 9, 0]
    strength = torch.tensor([0.75, 0.72, 0.7, 0.69, 0.05], dtype=torch.float64).view(1, 1, 1, 5)
    first = first_free_step(strength, 10, 0.75, flow_start_step)
    # 0.75 and everything in its partial step (7, 7.5] run its 8 steps; below, the rule's own.
    assert first.flatten().tolist() == [2, 2, 2, 4, 10]


def test_fans_and_variations_in_one_batch_are_each_a_run_of_its_own() -> None:
    strength = torch.cat([_bands(), _bands() * 0.5])
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    image = _image().repeat(2, 1, 1, 1)
    together = _run(
        "tiny-sd3", strength, image=image, generator=generators, max_strength=[1.0, 0.5], smooth=True
    )
    for k, seed in enumerate((1, 2)):
        alone = _run(
            "tiny-sd3",
            strength[k : k + 1],
            image=image[k : k + 1],
            generator=torch.Generator().manual_seed(seed),
            max_strength=[1.0, 0.5][k],
            smooth=True,
        )
        torch.testing.assert_close(together[k : k + 1], alone, rtol=1e-5, atol=1e-5)


def test_a_cancel_stops_within_a_step() -> None:
    states: list[StepState] = []
    with pytest.raises(JobCancelled):
        _run("tiny-flux", _bands(), callback=states.append, should_cancel=lambda: len(states) >= 2)
    assert len(states) == 2


def test_only_flow_matching_euler_samples_flux_and_sd3() -> None:
    config = build_tiny_pipeline("tiny-sd3").scheduler.config
    assert type(make_scheduler("euler", config)).__name__ == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(UnknownScheduler, match="flow-matching Euler"):
        make_scheduler("dpmpp_2m", config)


def test_the_built_in_flow_models_are_their_families() -> None:
    assert [
        flow_family(_pipe(n)) for n in ("tiny-flux", "tiny-flux-schnell", "tiny-flux-fill", "tiny-sd3")
    ] == [
        "flux",
        "flux-schnell",
        "flux-fill",
        "sd3",
    ]


@pytest.mark.parametrize(
    "model", ["builtin:tiny-flux", "builtin:tiny-flux-schnell", "builtin:tiny-flux-fill", "builtin:tiny-sd3"]
)
def test_engine_jobs_keep_mask_zero_pixels_bit_for_bit(engine: Engine, model: str) -> None:
    image = random_region(72, 88, seed=3)
    mask = np.zeros((72, 88), np.uint8)
    mask[10:60, 20:70] = 255
    mask[10:60, 20:30] = 100  # a gray edge
    previews: list[np.ndarray] = []
    params = JobParams(prompt="a red door", steps=4, seed=11, guidance=3.5)
    result = engine.inpaint(
        image, mask, params, model=model, on_preview=lambda _i, _s, make: previews.append(make())
    )
    kept = mask == 0
    assert np.array_equal(result.image[kept][:, :3], image[kept][:, :3])
    assert (result.image[..., 3][kept] == 0).all() and (result.image[..., 3][~kept] > 0).all()
    assert np.abs(result.image[~kept][:, :3] - image[~kept][:, :3]).mean() > 0.01
    assert previews and previews[-1].dtype == np.uint8 and previews[-1].shape[-1] == 4
    info = {m.name: m.family for m in engine.list_models()}
    assert info[model] == model.removeprefix("builtin:tiny-")


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-flux-fill", "tiny-sd3"])
def test_a_diffusers_folder_loads_offline_as_the_same_model(tmp_path: Path, name: str) -> None:
    original = build_tiny_pipeline(name)
    original.save_pretrained(tmp_path / "models" / name)
    engine = Engine(device="cpu", model_dirs=[tmp_path / "models"], scan_default_locations=False)
    listed = {m.name: m.family for m in engine.list_models()}
    assert listed[name] == flow_family(original)
    loaded = engine.models.load(engine.models.resolve(name)).sampler.pipe  # HF_HUB_OFFLINE=1
    assert type(loaded) is type(original)
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        left, right = getattr(original, component, None), getattr(loaded, component, None)
        assert (left is None) == (right is None), component
        if left is not None:
            ours, theirs = left.state_dict(), right.state_dict()
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), (
                component
            )
    assert loaded.tokenizer_2("a red door").input_ids == original.tokenizer_2("a red door").input_ids
    public = [
        {k: v for k, v in s.config.items() if not k.startswith("_")}
        for s in (loaded.scheduler, original.scheduler)
    ]
    assert public[0] == public[1]
    strength = _bands()
    latents = [
        FlowDifferentialPipeline(pipe)(
            _image(), strength, prompt="a red door", num_inference_steps=3,
            scheduler=make_scheduler("euler", pipe.scheduler.config),
            generator=torch.Generator().manual_seed(1), output_type="latent",
        )
        for pipe in (loaded, original)
    ]  # fmt: skip
    # The weights are equal bit for bit; SD3's reloaded text encoders compute their embeddings
    # at float rounding (4e-6) of the built ones, so the latents are compared at rounding.
    torch.testing.assert_close(latents[0], latents[1], rtol=1e-5, atol=1e-5)


def test_progress_counts_the_steps_flow_img2img_runs(engine: Engine) -> None:
    progress: list[tuple[str, int, int]] = []
    params = JobParams(prompt="x", steps=4, seed=1, strength=0.6)  # 4 * 0.6 = 2.4: FLUX/SD3 run 3, SD 2
    engine.inpaint(
        random_region(32, 32), np.full((32, 32), 255, np.uint8), params, model="builtin:tiny-sd3",
        on_progress=lambda *update: progress.append(update),
    )  # fmt: skip
    sampling = [(step, total) for stage, step, total in progress if stage == "sampling"]
    assert sampling[-1] == (3, 3) and [s for s, _ in sampling] == [0, 1, 2, 3]
