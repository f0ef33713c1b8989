"""ControlNet on FLUX.1 and SD3: the tiny ControlNets in the differential flow sampler, diffusers'
FluxControlNetImg2ImgPipeline for a uniform map, and FLUX/SD3 ControlNet files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint.backend.engine import Engine, InvalidRequest
from differential_inpaint.backend.engine.controlnet import (
    ControlGuide,
    ControlInput,
    ControlNets,
    build_tiny_controlnet,
)
from differential_inpaint.backend.engine.flow_pipeline import FlowDifferentialPipeline
from differential_inpaint.backend.engine.schedulers import make_scheduler
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.protocol import ControlParams, JobParams

from .conftest import random_region

SIZE = 64
CONTROLNETS = {
    "builtin:tiny-flux": "builtin:tiny-controlnet-flux",
    "builtin:tiny-sd3": "builtin:tiny-controlnet-sd3",
}


def _region() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask: left half kept, right half changed, a control image)."""
    image = random_region(SIZE, 2 * SIZE, seed=1)
    mask = np.zeros((SIZE, 2 * SIZE), np.uint8)
    mask[:, SIZE:] = 255
    return image, mask, random_region(SIZE, 2 * SIZE, seed=2)


def _job(model: str) -> JobParams:
    return JobParams(prompt="a red door", steps=6, seed=3, model=model, guidance=4.0)


def _control(image: np.ndarray, model: str, **params: Any) -> ControlInput:
    return ControlInput(image, ControlParams(model=CONTROLNETS[model], **params))


@pytest.mark.parametrize("model", list(CONTROLNETS))
def test_flow_controlnet_steers_free_pixels_only_and_by_its_window(engine: Engine, model: str) -> None:
    image, mask, control = _region()
    plain = engine.inpaint(image, mask, _job(model))
    zero = engine.inpaint(image, mask, _job(model), controls=[_control(control, model, strength=0.0)])
    np.testing.assert_array_equal(plain.image, zero.image)  # never encoded, never called

    whole = engine.inpaint(image, mask, _job(model), controls=[_control(control, model, strength=1.0)])
    kept, free = mask == 0, mask > 0
    np.testing.assert_array_equal(whole.image[kept][:, :3], image[kept][:, :3])
    np.testing.assert_array_equal(whole.image[kept], plain.image[kept])

    late = engine.inpaint(
        image, mask, _job(model), controls=[_control(control, model, strength=1.0, start=0.5, end=1.0)]
    )
    change_whole = np.abs(whole.image[free] - plain.image[free]).mean()
    change_late = np.abs(late.image[free] - plain.image[free]).mean()
    assert 0 < change_late < change_whole


def test_controlnet_of_another_family_is_refused_on_flow_models(engine: Engine) -> None:
    image, mask, control = _region()
    flux_on_sd3 = ControlInput(control, ControlParams(model="builtin:tiny-controlnet-flux"))
    with pytest.raises(InvalidRequest, match="'builtin:tiny-controlnet-flux' is for FLUX.1 models"):
        engine.inpaint(image, mask, _job("builtin:tiny-sd3"), controls=[flux_on_sd3])
    sdxl_on_flux = ControlInput(control, ControlParams(model="builtin:tiny-controlnet-sdxl"))
    with pytest.raises(InvalidRequest, match="is for SDXL models; this job's model is FLUX.1"):
        engine.inpaint(image, mask, _job("builtin:tiny-flux"), controls=[sdxl_on_flux])


@pytest.mark.parametrize(
    ("name", "mode"), [("tiny-controlnet-flux", None), ("tiny-controlnet-union-flux", 2)]
)
def test_uniform_map_equals_diffusers_flux_controlnet_img2img(name: str, mode: int | None) -> None:
    """[0, 1] acts in every step, so the whole-schedule window is diffusers' (which counts on
    the steps img2img runs); latent for latent, its control latents sampled first. A Union
    gets its control mode as diffusers' `control_mode`."""
    from diffusers import FluxControlNetImg2ImgPipeline

    pipe = build_tiny_pipeline("tiny-flux")
    controlnet = build_tiny_controlnet(name)
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    control = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    options: dict[str, Any] = {"prompt": "a red door", "num_inference_steps": 10, "guidance_scale": 4.0}
    strength = torch.full((1, 1, SIZE, SIZE), 0.7, dtype=torch.float64)
    ours = FlowDifferentialPipeline(pipe)(
        image,
        strength,
        scheduler=make_scheduler("euler", pipe.scheduler.config),
        generator=torch.Generator().manual_seed(42),
        output_type="latent",
        controls=[ControlGuide(controlnet, control, 0.8, 0.0, 1.0, union_index=mode)],
        **options,
    )
    components = {k: v for k, v in pipe.components.items() if k not in ("image_encoder", "feature_extractor")}
    reference = FluxControlNetImg2ImgPipeline(**components, controlnet=controlnet)
    reference.scheduler = make_scheduler("euler", pipe.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    latents = reference(
        image=image,
        control_image=2.0 * control - 1.0,  # tensors go to the VAE as given
        strength=0.7,
        controlnet_conditioning_scale=0.8,
        control_mode=mode,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(42),
        output_type="latent",
        **options,
    ).images
    latents = reference._unpack_latents(latents, SIZE, SIZE, reference.vae_scale_factor)
    assert torch.equal(ours, latents)


def test_a_flux_union_controlnet_steers_by_the_kind_it_is_told(engine: Engine) -> None:
    """One Union model, its control mode from the control's kind: depth and canny steer apart,
    line art is canny's mode, and a kind it has no mode for is refused by name."""
    image, mask, control = _region()
    job = _job("builtin:tiny-flux")

    def run(kind: str) -> np.ndarray:
        params = ControlParams(kind=kind, model="builtin:tiny-controlnet-union-flux")
        return engine.inpaint(image, mask, job, controls=[ControlInput(control, params)]).image

    canny, depth = run("canny"), run("depth")
    assert np.abs(canny - depth).mean() > 0
    np.testing.assert_array_equal(run("lineart"), canny)
    np.testing.assert_array_equal(canny[mask == 0][:, :3], image[mask == 0][:, :3])
    with pytest.raises(InvalidRequest, match="takes .*depth.* not 'inpaint'"):
        run("inpaint")
    listed = {c.name: c for c in engine.list_controlnets()}
    union = listed["builtin:tiny-controlnet-union-flux"]
    assert union.union and union.family == "flux" and union.takes("pose") and not union.takes("inpaint")


@pytest.mark.parametrize(
    ("name", "family"), [("tiny-controlnet-flux", "flux"), ("tiny-controlnet-sd3", "sd3")]
)
def test_flow_controlnet_files_and_folders_are_found_with_their_family(
    tmp_path: Path, name: str, family: str
) -> None:
    from safetensors.torch import save_file

    model = build_tiny_controlnet(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / f"{name}.safetensors")
    model.save_pretrained(tmp_path / f"{name}-folder")
    finder = ControlNets("cpu", torch.float32, controlnet_dirs=[tmp_path], scan_default_locations=False)
    found = {info.name: info for info in finder.list_controlnets() if info.location is not None}
    assert {found[f"{name}.safetensors"].family, found[f"{name}-folder"].family} == {family}
    info = finder.resolve(f"{name}.safetensors", "canny", family)
    loaded = finder.load(info)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
