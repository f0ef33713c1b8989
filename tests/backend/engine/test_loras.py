"""LoRAs: found in the painters' folders with their family, switched on per job, the base model
untouched by them, loaded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from differential_inpaint.backend.engine import Engine, InvalidRequest, UnknownModel
from differential_inpaint.backend.engine.loras import build_tiny_lora, lora_family
from differential_inpaint.protocol import JobParams, Lora

from .conftest import random_region

SD15 = "builtin:tiny-sd15"
SDXL = "builtin:tiny-sdxl"
LORA15 = "builtin:tiny-lora-sd15"
LORAXL = "builtin:tiny-lora-sdxl"


def _params(*loras: tuple[str, float], **kwargs: Any) -> JobParams:
    options: dict[str, Any] = {
        "prompt": "a red door",
        "steps": 4,
        "seed": 11,
        "loras": tuple(Lora(*x) for x in loras),
    }
    options.update(kwargs)
    return JobParams(**options)


def _kohya(state: dict[str, Any]) -> dict[str, Any]:
    """The same LoRA in kohya's layout (lora_unet_..., lora_down/lora_up, alpha = rank)."""
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        module, _, kind = key.removeprefix("unet.").rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.lora_{'down' if kind == 'A.weight' else 'up'}.weight"] = tensor.contiguous()
        if kind == "A.weight":
            out[f"{name}.alpha"] = torch.tensor(float(tensor.shape[0]))
    return out


@pytest.fixture(scope="module")
def lora_engine() -> Engine:
    return Engine(device="cpu", scan_default_locations=False)


def _region() -> tuple[np.ndarray, np.ndarray]:
    image = random_region(64, 64, seed=3)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:56, 16:64] = 255
    mask[8:56, 16:24] = 120
    return image, mask


def test_families_are_read_from_the_files(tmp_path: Path) -> None:
    for name, family in (("tiny-lora-sd15", "sd15"), ("tiny-lora-sdxl", "sdxl")):
        state = build_tiny_lora(name)
        assert lora_family({k: tuple(v.shape) for k, v in state.items()}) == family
        assert lora_family({k: tuple(v.shape) for k, v in _kohya(state).items()}) == family
    real_xl = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 2048)}
    real_15 = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 768)
    }
    flux = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (16, 3072)}
    assert lora_family(real_xl) == "sdxl" and lora_family(real_15) == "sd15" and lora_family(flux) == "flux"
    assert lora_family({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}) is None
    double = "transformer.transformer_blocks.0.attn.to_q.lora_A.weight"
    assert lora_family({double: (16, 3072)}) == "flux" and lora_family({double: (16, 1536)}) == "sd3"


def test_loras_are_found_where_painters_keep_them(tmp_path: Path) -> None:
    home = Path.home()  # a temporary folder (conftest)
    comfy = home / "ComfyUI" / "models"
    (comfy / "checkpoints").mkdir(parents=True)
    (comfy / "loras" / "styles").mkdir(parents=True)
    save_file(_kohya(build_tiny_lora("tiny-lora-sd15")), comfy / "loras" / "styles" / "ink.safetensors")
    a1111 = home / "stable-diffusion-webui" / "models"
    (a1111 / "Stable-diffusion").mkdir(parents=True)
    (a1111 / "Lora").mkdir(parents=True)
    save_file(dict(build_tiny_lora("tiny-lora-sdxl")), a1111 / "Lora" / "detail-xl.safetensors")
    mine = tmp_path / "my-loras"
    mine.mkdir()
    save_file(dict(build_tiny_lora("tiny-lora-sd15")), mine / "watercolor.safetensors")
    (mine / "notes.txt").write_text("not a LoRA")
    save_file({"x": torch.zeros(1)}, mine / "not-a-lora.safetensors")

    engine = Engine(device="cpu", lora_dirs=[mine])
    found = {(i.name, i.family, i.source) for i in engine.list_loras()}
    assert found == {
        ("watercolor", "sd15", "folder"),
        ("styles/ink", "sd15", "comfyui"),
        ("detail-xl", "sdxl", "automatic1111"),
        (LORA15, "sd15", "builtin"),
        (LORAXL, "sdxl", "builtin"),
    }
    assert engine.loras.finder.resolve("ink").name == "styles/ink"  # the stem, where unique
    assert engine.loras.finder.resolve("watercolor.safetensors").name == "watercolor"
    with pytest.raises(UnknownModel, match=r"Unknown LoRA 'nope'.*watercolor.*--lora-dir"):
        engine.loras.finder.resolve("nope")


def test_unknown_and_wrong_family_loras_are_clear_errors(lora_engine: Engine) -> None:
    image, mask = _region()
    with pytest.raises(UnknownModel, match="Unknown LoRA 'missing'"):
        lora_engine.inpaint(image, mask, _params(("missing", 1.0)), model=SD15)
    with pytest.raises(InvalidRequest, match=r"made for sdxl; the model 'builtin:tiny-sd15' is sd15"):
        lora_engine.inpaint(image, mask, _params((LORAXL, 1.0)), model=SD15)


def test_paths_are_refused_where_not_allowed(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    save_file(dict(build_tiny_lora("tiny-lora-sd15")), path)
    assert Engine(device="cpu", scan_default_locations=False).loras.finder.resolve(str(path)).family == "sd15"
    closed = Engine(device="cpu", scan_default_locations=False, lora_paths=False)
    with pytest.raises(UnknownModel):
        closed.loras.finder.resolve(str(path))


def test_a_lora_changes_free_pixels_only_and_leaves_the_base_model_exactly_as_it_was(
    lora_engine: Engine,
) -> None:
    image, mask = _region()
    before = lora_engine.inpaint(image, mask, _params(), model=SD15).image
    loads = lora_engine.loras.loads
    with_lora = lora_engine.inpaint(image, mask, _params((LORA15, 1.0)), model=SD15).image
    assert lora_engine.loras.loads == loads + 1
    keep = mask == 0
    assert with_lora[keep, :3].tobytes() == image[keep, :3].tobytes() == before[keep, :3].tobytes()
    assert np.abs(with_lora[~keep, :3] - before[~keep, :3]).mean() > 1e-3
    # Weight 0 is no LoRA, bit for bit; so is the model after a LoRA job.
    assert (
        lora_engine.inpaint(image, mask, _params((LORA15, 0.0)), model=SD15).image.tobytes()
        == before.tobytes()
    )
    assert lora_engine.inpaint(image, mask, _params(), model=SD15).image.tobytes() == before.tobytes()
    # The same LoRA again is not loaded again, and paints the same.
    again = lora_engine.inpaint(image, mask, _params((LORA15, 1.0)), model=SD15).image
    assert again.tobytes() == with_lora.tobytes()
    half = lora_engine.inpaint(image, mask, _params((LORA15, 0.5)), model=SD15).image
    assert lora_engine.loras.loads == loads + 1
    assert 0 < np.abs(half - before).mean() < np.abs(with_lora - before).mean()


def test_kohya_and_diffusers_layouts_of_one_lora_paint_the_same(lora_engine: Engine, tmp_path: Path) -> None:
    kohya = tmp_path / "kohya.safetensors"
    save_file(_kohya(build_tiny_lora("tiny-lora-sd15")), kohya)
    image, mask = _region()
    builtin = lora_engine.inpaint(image, mask, _params((LORA15, 0.8)), model=SD15).image
    from_file = lora_engine.inpaint(image, mask, _params((str(kohya), 0.8)), model=SD15).image
    np.testing.assert_allclose(from_file, builtin, atol=1e-5)


def test_sdxl_loras(lora_engine: Engine) -> None:
    image, mask = _region()
    before = lora_engine.inpaint(image, mask, _params(), model=SDXL).image
    with_lora = lora_engine.inpaint(image, mask, _params((LORAXL, 1.0)), model=SDXL).image
    assert np.abs(with_lora - before).mean() > 1e-3
    assert (
        lora_engine.inpaint(image, mask, _params((LORAXL, 0.0)), model=SDXL).image.tobytes()
        == before.tobytes()
    )
    assert lora_engine.inpaint(image, mask, _params(), model=SDXL).image.tobytes() == before.tobytes()


def _transformer_lora(model: str, seed: int) -> dict[str, Any]:
    """A diffusers-layout LoRA on the attention projections of a built-in FLUX.1 / SD3 model."""
    from differential_inpaint.backend.engine.tiny import build_tiny_pipeline

    generator = torch.Generator("cpu").manual_seed(seed)
    state = {}
    for name, module in build_tiny_pipeline(model).transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("attn.to_q", "attn.to_k", "attn.to_v")):
            out_features, in_features = module.weight.shape
            state[f"transformer.{name}.lora_A.weight"] = (
                torch.randn(4, in_features, generator=generator) * 0.3
            )
            state[f"transformer.{name}.lora_B.weight"] = (
                torch.randn(out_features, 4, generator=generator) * 0.3
            )
    return state


@pytest.mark.parametrize(("model", "family"), [("tiny-flux", "flux"), ("tiny-sd3", "sd3")])
def test_flux_and_sd3_loras_in_diffusers_layout(
    lora_engine: Engine, tmp_path: Path, model: str, family: str
) -> None:
    path = tmp_path / f"{model}-lora.safetensors"
    save_file(_transformer_lora(model, seed=1), path)
    assert lora_engine.loras.finder.resolve(str(path)).family == family
    image, mask = _region()
    spec = f"builtin:{model}"
    before = lora_engine.inpaint(image, mask, _params(), model=spec).image
    with_lora = lora_engine.inpaint(image, mask, _params((str(path), 1.0)), model=spec).image
    assert np.abs(with_lora - before).mean() > 1e-4
    assert lora_engine.inpaint(image, mask, _params(), model=spec).image.tobytes() == before.tobytes()
    with pytest.raises(InvalidRequest, match=f"made for {family}"):
        lora_engine.inpaint(image, mask, _params((str(path), 1.0)), model=SD15)


def test_a_kohya_lora_with_text_encoder_layers_switches_those_off_too(
    lora_engine: Engine, tmp_path: Path
) -> None:
    generator = torch.Generator("cpu").manual_seed(3)
    unet_only = _kohya(build_tiny_lora("tiny-lora-sd15"))
    with_text = dict(unet_only)
    for layer in range(3):  # the tiny text encoder's layers: 32 wide
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            name = f"lora_te_text_model_encoder_layers_{layer}_self_attn_{projection}"
            with_text[f"{name}.lora_down.weight"] = torch.randn(4, 32, generator=generator)
            with_text[f"{name}.lora_up.weight"] = torch.randn(32, 4, generator=generator)
            with_text[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(unet_only, tmp_path / "unet-only.safetensors")
    save_file(with_text, tmp_path / "with-text.safetensors")
    assert lora_family({k: tuple(v.shape) for k, v in with_text.items()}) == "sd15"
    image, mask = _region()
    before = lora_engine.inpaint(image, mask, _params(), model=SD15).image
    unet = lora_engine.inpaint(
        image, mask, _params((str(tmp_path / "unet-only.safetensors"), 1.0)), model=SD15
    )
    both = lora_engine.inpaint(
        image, mask, _params((str(tmp_path / "with-text.safetensors"), 1.0)), model=SD15
    )
    assert np.abs(both.image - unet.image).mean() > 1e-4  # the text encoder's layers act too
    assert lora_engine.inpaint(image, mask, _params(), model=SD15).image.tobytes() == before.tobytes()
