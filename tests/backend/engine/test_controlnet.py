"""ControlNet: the residuals in the differential loop, the built-in tiny ControlNets, finding
and loading ControlNet files and folders, and control images made from photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint.backend.engine import Engine, InvalidRequest, UnknownModel
from differential_inpaint.backend.engine.controlnet import (
    ControlGuide,
    ControlInput,
    ControlNetInfo,
    ControlNets,
    build_tiny_controlnet,
    control_residuals,
    load_controlnet,
)
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
from differential_inpaint.backend.engine.preprocess import canny_edges
from differential_inpaint.backend.engine.schedulers import make_scheduler
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.protocol import ControlParams, JobParams

from .conftest import random_region

SD15_CONTROLNET = "builtin:tiny-controlnet-sd15"
SIZE = 64


def _region() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask: left half kept, right half changed, a control image)."""
    image = random_region(SIZE, 2 * SIZE, seed=1)
    mask = np.zeros((SIZE, 2 * SIZE), np.uint8)
    mask[:, SIZE:] = 255
    control = random_region(SIZE, 2 * SIZE, seed=2)
    return image, mask, control


def _job(model: str = "builtin:tiny-sd15", **kwargs: Any) -> JobParams:
    return JobParams(**{"prompt": "a red door", "steps": 6, "seed": 3, "model": model, **kwargs})


def _control(image: np.ndarray, **params: Any) -> ControlInput:
    params.setdefault("model", SD15_CONTROLNET)
    return ControlInput(image, ControlParams(**params))


def test_strength_zero_equals_no_controlnet_bit_for_bit(engine: Engine) -> None:
    image, mask, control = _region()
    plain = engine.inpaint(image, mask, _job())
    zero = engine.inpaint(image, mask, _job(), controls=[_control(control, strength=0.0)])
    np.testing.assert_array_equal(plain.image, zero.image)


def test_a_controlnet_changes_only_free_pixels(engine: Engine) -> None:
    image, mask, control = _region()
    plain = engine.inpaint(image, mask, _job())
    steered = engine.inpaint(image, mask, _job(), controls=[_control(control, strength=1.0)])
    kept = mask == 0
    np.testing.assert_array_equal(steered.image[kept][:, :3], image[kept][:, :3])
    np.testing.assert_array_equal(steered.image[kept], plain.image[kept])
    assert np.abs(steered.image[~kept] - plain.image[~kept]).mean() > 1e-3


def test_the_control_image_steers(engine: Engine) -> None:
    image, mask, control = _region()
    one = engine.inpaint(image, mask, _job(), controls=[_control(control)])
    other = engine.inpaint(image, mask, _job(), controls=[_control(control[::-1].copy())])
    assert np.abs(one.image - other.image).mean() > 1e-3


def test_a_controlnet_from_half_way_changes_less_than_one_all_along(engine: Engine) -> None:
    image, mask, control = _region()
    plain = engine.inpaint(image, mask, _job())
    whole = engine.inpaint(image, mask, _job(), controls=[_control(control, start=0.0, end=1.0)])
    late = engine.inpaint(image, mask, _job(), controls=[_control(control, start=0.5, end=1.0)])
    free = mask > 0
    change_whole = np.abs(whole.image[free] - plain.image[free]).mean()
    change_late = np.abs(late.image[free] - plain.image[free]).mean()
    assert 0 < change_late < change_whole


def test_two_controls_add_their_residuals() -> None:
    """Several ControlNets sum their residuals, as diffusers' MultiControlNetModel does."""
    model = build_tiny_controlnet("tiny-controlnet-sd15")
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    other = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    embeds = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor(500)
    guides = [ControlGuide(model, image, 0.7, 0.0, 1.0), ControlGuide(model, other, 1.2, 0.0, 1.0)]
    summed = control_residuals(guides, sample, t, embeds, None, 0, 10)
    first = control_residuals(guides[:1], sample, t, embeds, None, 0, 10)
    second = control_residuals(guides[1:], sample, t, embeds, None, 0, 10)
    for a, b, both in zip(
        first["down_block_additional_residuals"],
        second["down_block_additional_residuals"],
        summed["down_block_additional_residuals"],
        strict=True,
    ):
        torch.testing.assert_close(a + b, both)
    assert control_residuals(guides, sample, t, embeds, None, 9, 10) != {}
    late = [ControlGuide(model, image, 1.0, 0.5, 1.0)]
    assert control_residuals(late, sample, t, embeds, None, 4, 10) == {}
    assert control_residuals(late, sample, t, embeds, None, 5, 10) != {}


def test_uniform_map_equals_diffusers_controlnet_img2img() -> None:
    """A uniform map with a ControlNet acting in every step is diffusers'
    StableDiffusionControlNetImg2ImgPipeline (CFG on, guess mode off), latent for latent."""
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    pipe = build_tiny_pipeline("tiny-sd15")
    controlnet = build_tiny_controlnet("tiny-controlnet-sd15")
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    control = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    options = {"num_inference_steps": 10, "guidance_scale": 7.0, "output_type": "latent"}
    reference = StableDiffusionControlNetImg2ImgPipeline(
        **{k: v for k, v in pipe.components.items() if k != "image_encoder"}, controlnet=controlnet
    )
    reference.scheduler = make_scheduler("euler", pipe.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    theirs = reference(
        prompt="a red door",
        negative_prompt="blurry",
        image=image,
        control_image=control,
        strength=0.7,
        controlnet_conditioning_scale=0.8,
        generator=torch.Generator().manual_seed(42),
        **options,
    ).images
    ours = DifferentialDiffusionPipeline(pipe)(
        image,
        torch.full((1, 1, SIZE, SIZE), 0.7, dtype=torch.float64),
        prompt="a red door",
        negative_prompt="blurry",
        scheduler=make_scheduler("euler", pipe.scheduler.config),
        generator=torch.Generator().manual_seed(42),
        controls=[ControlGuide(controlnet, control, 0.8, 0.0, 1.0)],
        **options,
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("controlnet", ["builtin:tiny-controlnet-sdxl", "builtin:tiny-controlnet-union-sdxl"])
def test_sdxl_controlnets_steer_free_pixels_only(engine: Engine, controlnet: str) -> None:
    image, mask, control = _region()
    job = _job("builtin:tiny-sdxl")
    plain = engine.inpaint(image, mask, job)
    steered = engine.inpaint(image, mask, job, controls=[_control(control, kind="depth", model=controlnet)])
    kept = mask == 0
    np.testing.assert_array_equal(steered.image[kept], plain.image[kept])
    assert np.abs(steered.image[~kept] - plain.image[~kept]).mean() > 1e-3


def test_inpaint_control_and_several_controls_run(engine: Engine) -> None:
    image, mask, control = _region()
    result = engine.inpaint(
        image,
        mask,
        _job(),
        controls=[_control(image, kind="inpaint"), _control(control, kind="canny", strength=0.5)],
    )
    kept = mask == 0
    np.testing.assert_array_equal(result.image[kept][:, :3], image[kept][:, :3])


def test_unknown_controlnet_is_a_clear_error(engine: Engine) -> None:
    image, mask, control = _region()
    with pytest.raises(UnknownModel, match="Unknown ControlNet 'nope'"):
        engine.inpaint(image, mask, _job(), controls=[_control(control, model="nope")])


def test_controlnet_of_another_family_is_a_clear_error(engine: Engine) -> None:
    image, mask, control = _region()
    with pytest.raises(InvalidRequest, match="'builtin:tiny-controlnet-sdxl' is for SDXL models"):
        engine.inpaint(
            image, mask, _job(), controls=[_control(control, model="builtin:tiny-controlnet-sdxl")]
        )
    with pytest.raises(InvalidRequest, match="'builtin:tiny-controlnet-sd15' is for SD1.5 models"):
        engine.inpaint(image, mask, _job("builtin:tiny-flux"), controls=[_control(control)])


def test_no_controlnet_for_the_kind_is_a_clear_error(engine: Engine) -> None:
    image, mask, control = _region()
    with pytest.raises(InvalidRequest, match="No SD1.5 ControlNet for 'canny' was found"):
        engine.inpaint(image, mask, _job(), controls=[_control(control, model=None)])


def test_control_image_of_another_size_is_refused(engine: Engine) -> None:
    image, mask, _control_image = _region()
    with pytest.raises(InvalidRequest, match="control image 1 .* is 10x10 pixels"):
        engine.inpaint(image, mask, _job(), controls=[_control(np.zeros((10, 10, 4), np.float32))])


def test_preprocess_of_a_kind_without_one_is_refused(engine: Engine) -> None:
    image, mask, control = _region()
    with pytest.raises(InvalidRequest, match="'pose' cannot be made from a photo"):
        engine.inpaint(image, mask, _job(), controls=[_control(control, kind="pose", preprocess=True)])


def test_canny_gives_the_edges_of_a_square() -> None:
    rgb = np.zeros((48, 48, 3), np.float32)
    rgb[12:36, 12:36] = 1.0
    edges = canny_edges(rgb)[..., 0]
    assert set(np.unique(edges)) == {0.0, 1.0}
    assert edges[14:34, 10:14].sum(axis=1).min() >= 1  # every row of the left side (corners aside)
    assert edges[10:14, 14:34].sum(axis=0).min() >= 1  # every column of the top
    assert edges[18:30, 18:30].sum() == 0 and edges[:6].sum() == 0  # not inside, not far outside
    assert edges.sum() < 4 * 24 * 3  # thin lines


def test_depth_preprocess_and_canny_preprocess_run(engine: Engine) -> None:
    image, mask, control = _region()
    job = _job(depth_model="builtin:tiny-depth")
    plain = engine.inpaint(image, mask, job)
    for kind in ("depth", "canny"):
        made = engine.inpaint(image, mask, job, controls=[_control(control, kind=kind, preprocess=True)])
        np.testing.assert_array_equal(made.image[mask == 0], plain.image[mask == 0])


# -- finding and loading -----------------------------------------------------------------


def _write_single_file(model: Any, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_controlnets_are_found_in_comfyui_a1111_and_given_folders(tmp_path: Path) -> None:
    sd15 = build_tiny_controlnet("tiny-controlnet-sd15")
    sdxl = build_tiny_controlnet("tiny-controlnet-sdxl")
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    _write_single_file(sd15, comfy / "models" / "controlnet" / "control_sd15_canny.safetensors")
    a1111 = tmp_path / "stable-diffusion-webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    _write_single_file(sdxl, a1111 / "models" / "ControlNet" / "xl_depth.safetensors")
    own = tmp_path / "mine"
    build_tiny_controlnet("tiny-controlnet-union-sdxl").save_pretrained(own / "union-promax")
    (own / "notes.safetensors").write_bytes(b"not a model")

    found = ControlNets("cpu", torch.float32, [comfy, a1111], [own], scan_default_locations=False)
    by_name = {info.name: info for info in found.list_controlnets()}
    assert by_name["control_sd15_canny.safetensors"].family == "sd15"
    assert by_name["xl_depth.safetensors"].family == "sdxl"
    assert by_name["union-promax"].family == "sdxl" and by_name["union-promax"].union
    assert "notes.safetensors" not in by_name
    assert found.resolve(None, "canny", "sd15").name == "control_sd15_canny.safetensors"
    assert found.resolve(None, "depth", "sdxl-inpaint").name == "union-promax"  # first by name
    assert found.resolve("control_sd15_canny", "canny", "sd15").family == "sd15"  # by stem


def test_single_files_and_folders_load_back_identically(tmp_path: Path) -> None:
    tiny = build_tiny_controlnet("tiny-controlnet-sdxl")
    path = _write_single_file(tiny, tmp_path / "xl.safetensors")
    loaded = load_controlnet(ControlNetInfo("xl.safetensors", "sdxl", "path", path))
    for key, value in tiny.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    union = build_tiny_controlnet("tiny-controlnet-union-sdxl")
    union_path = _write_single_file(union, tmp_path / "union.safetensors")
    loaded_union = load_controlnet(
        ControlNetInfo("union.safetensors", "sdxl", "path", union_path, union=True)
    )
    assert type(loaded_union).__name__ == "ControlNetUnionModel"
    folder = tmp_path / "sd15-folder"
    build_tiny_controlnet("tiny-controlnet-sd15").save_pretrained(folder)
    assert (
        load_controlnet(ControlNetInfo("sd15-folder", "sd15", "path", folder)).config.cross_attention_dim
        == 32
    )


def test_a_controlnet_given_by_path_runs_in_a_job(tmp_path: Path) -> None:
    path = _write_single_file(
        build_tiny_controlnet("tiny-controlnet-sd15"), tmp_path / "cn" / "canny.safetensors"
    )
    engine = Engine(device="cpu", scan_default_locations=False, controlnet_dirs=[tmp_path / "cn"])
    image, mask, control = _region()
    by_path = engine.inpaint(image, mask, _job(), controls=[_control(control, model=str(path))])
    by_name = engine.inpaint(image, mask, _job(), controls=[_control(control, model=None)])
    builtin = engine.inpaint(image, mask, _job(), controls=[_control(control)])
    np.testing.assert_array_equal(by_path.image, builtin.image)
    np.testing.assert_array_equal(by_name.image, builtin.image)
    daemon_like = Engine(device="cpu", scan_default_locations=False, controlnet_paths=False)
    with pytest.raises(UnknownModel, match="Unknown ControlNet"):
        daemon_like.inpaint(image, mask, _job(), controls=[_control(control, model=str(path))])


def _controlnet_to_ldm(model: Any) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet in the original layout ("control_model." + input_blocks, zero_convs,
    input_hint_block, middle_block_out), as A1111's control_v11 files are."""
    from diffusers import UNet2DConditionModel

    from .ldm_export import unet_to_ldm

    config = dict(model.config)
    unet = UNet2DConditionModel.from_config(
        {
            **{k: config[k] for k in ("block_out_channels", "layers_per_block", "down_block_types")},
            **{k: config[k] for k in ("transformer_layers_per_block", "attention_head_dim")},
            **{k: config[k] for k in ("use_linear_projection", "cross_attention_dim", "norm_num_groups")},
            **{k: config[k] for k in ("addition_embed_type", "addition_time_embed_dim")},
            "projection_class_embeddings_input_dim": config["projection_class_embeddings_input_dim"],
            "up_block_types": [t.replace("Down", "Up") for t in reversed(config["down_block_types"])],
        }
    )
    unet.load_state_dict(model.state_dict(), strict=False)
    kept = ("input_blocks.", "middle_block.", "time_embed.", "label_emb.")
    unet_state = {k.removeprefix("model.diffusion_model."): v for k, v in unet_to_ldm(unet).items()}
    state = {k: v for k, v in unet_state.items() if k.startswith(kept)}
    for i, block in enumerate(model.controlnet_down_blocks):
        state[f"zero_convs.{i}.0.weight"], state[f"zero_convs.{i}.0.bias"] = block.weight, block.bias
    state["middle_block_out.0.weight"] = model.controlnet_mid_block.weight
    state["middle_block_out.0.bias"] = model.controlnet_mid_block.bias
    embedding = model.controlnet_cond_embedding
    for index, conv in enumerate([embedding.conv_in, *embedding.blocks, embedding.conv_out]):
        state[f"input_hint_block.{2 * index}.weight"] = conv.weight
        state[f"input_hint_block.{2 * index}.bias"] = conv.bias
    return {"control_model." + k: v.contiguous() for k, v in state.items()}


@pytest.mark.parametrize("name", ["tiny-controlnet-sd15", "tiny-controlnet-sdxl"])
def test_original_layout_files_load_back_identically(tmp_path: Path, name: str) -> None:
    from safetensors.torch import save_file

    tiny = build_tiny_controlnet(name)
    path = tmp_path / "control_v11p_canny.safetensors"
    save_file(_controlnet_to_ldm(tiny), str(path))
    found = ControlNets("cpu", torch.float32, [], [tmp_path], scan_default_locations=False)
    info = found.resolve("control_v11p_canny", "canny", "sdxl" if "sdxl" in name else "sd15")
    loaded = load_controlnet(info)
    expected = tiny.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_a_batch_of_results_with_a_control_equals_jobs_of_their_own(engine: Engine) -> None:
    image, mask, control = _region()
    batched = Engine(device="cpu", scan_default_locations=False, max_batch=2)
    controls = [_control(control)]
    together = batched.inpaint_batch(image, mask, _job(count=2), controls=controls)
    for result in together:
        alone = engine.inpaint(image, mask, _job(seed=result.seed), controls=controls)
        np.testing.assert_allclose(result.image, alone.image, atol=2e-3)
