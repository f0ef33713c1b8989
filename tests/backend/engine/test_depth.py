"""Depth models found and loaded offline: the built-in tiny one, a transformers folder, the
Hugging Face cache, single files in transformers' and the original Depth-Anything-V2 key
layouts, ComfyUI's depth folder; and the errors for what is none of them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from differential_inpaint.backend.engine import Engine, InvalidRequest
from differential_inpaint.backend.engine.depth import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_SIDE,
    TINY_DEPTH,
    TINY_INPUT_SIDE,
    DepthEstimator,
    DepthModels,
    build_tiny_depth_model,
)

from .conftest import random_region

REPO = "depth-anything/Depth-Anything-V2-Small-hf"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as transformers saves a model (the layout on the Hub)."""
    folder = tmp_path_factory.mktemp("depth") / "tiny-depth-hf"
    build_tiny_depth_model().save_pretrained(folder)
    size = {"height": TINY_INPUT_SIDE, "width": TINY_INPUT_SIDE}
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"size": size, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)})
    )
    return folder


def _models(**options: Any) -> DepthModels:
    return DepthModels(torch.device("cpu"), torch.float32, **{"scan_default_locations": False, **options})


def _reference(side: int) -> DepthEstimator:
    return DepthEstimator("reference", build_tiny_depth_model(), side, IMAGENET_MEAN, IMAGENET_STD)


def _original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' layout (as saved) back to the original repository's, to write such a file."""
    refinenet = {0: 4, 1: 3, 2: 2, 3: 1}
    renames = [
        (r"backbone\.embeddings\.cls_token", "pretrained.cls_token"),
        (r"backbone\.embeddings\.mask_token", "pretrained.mask_token"),
        (r"backbone\.embeddings\.position_embeddings", "pretrained.pos_embed"),
        (r"backbone\.embeddings\.patch_embeddings\.projection\.", "pretrained.patch_embed.proj."),
        (r"backbone\.layernorm\.", "pretrained.norm."),
        (r"backbone\.encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"pretrained.blocks.\1.ls\2.gamma"),
        (r"backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"pretrained.blocks.\1.attn.proj."),
        (r"backbone\.encoder\.layer\.(\d+)\.", r"pretrained.blocks.\1."),
        (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"depth_head.projects.\1."),
        (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"depth_head.resize_layers.\1."),
        (r"neck\.convs\.(\d)\.", lambda m: f"depth_head.scratch.layer{int(m[1]) + 1}_rn."),
        (
            r"neck\.fusion_stage\.layers\.(\d)\.",
            lambda m: f"depth_head.scratch.refinenet{refinenet[int(m[1])]}.",
        ),
        (r"head\.conv1\.", "depth_head.scratch.output_conv1."),
        (r"head\.conv2\.", "depth_head.scratch.output_conv2.0."),
        (r"head\.conv3\.", "depth_head.scratch.output_conv2.2."),
    ]
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        split = re.fullmatch(r"backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(\w+)\.(\w+)", key)
        if split:
            qkv.setdefault((split[1], split[3]), {})[split[2]] = tensor
            continue
        for pattern, replacement in renames:
            key, n = re.subn(f"^{pattern}", replacement, key)
            if n:
                break
        key = (
            key.replace("projection.", "out_conv.")
            .replace("residual_layer1.convolution", "resConfUnit1.conv")
            .replace("residual_layer2.convolution", "resConfUnit2.conv")
        )
        out[key] = tensor
    for (layer, kind), parts in qkv.items():
        out[f"pretrained.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts[n] for n in ("query", "key", "value")]
        )
    return out


def _saved_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_the_builtin_is_the_same_model_in_every_load() -> None:
    image = random_region(30, 44)
    first = _models().load(TINY_DEPTH).estimate(image)
    assert first.shape == (30, 44) and first.dtype == np.float64 and first.std() > 0.1
    assert _reference(TINY_INPUT_SIDE).estimate(image).tobytes() == first.tobytes()


def test_a_transformers_folder_with_its_preprocessor_settings(tiny_folder: Path) -> None:
    loaded = _models().load(str(tiny_folder))
    assert loaded.side == TINY_INPUT_SIDE
    image = random_region(30, 44, seed=1)
    np.testing.assert_array_equal(loaded.estimate(image), _reference(TINY_INPUT_SIDE).estimate(image))


def test_the_hugging_face_cache_by_repo_id(tiny_folder: Path) -> None:
    from differential_inpaint.backend.engine.catalog import hf_cache_dir

    repo = hf_cache_dir() / ("models--" + REPO.replace("/", "--"))
    shutil.copytree(tiny_folder, repo / "snapshots" / "0123abc")
    models = DepthModels(torch.device("cpu"), torch.float32)  # the default places: the cache
    assert "hf:" + REPO in [m.name for m in models.list_models()]
    for spec in (REPO, "hf:" + REPO, None):  # None: the first found
        assert models.resolve(spec).name == "hf:" + REPO
    image = random_region(20, 20, seed=2)
    np.testing.assert_array_equal(
        models.load(REPO).estimate(image), _reference(TINY_INPUT_SIDE).estimate(image)
    )


@pytest.mark.parametrize("layout", ["transformers", "original"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_single_weights_file_in_either_layout(
    tiny_folder: Path, tmp_path: Path, layout: str, suffix: str
) -> None:
    state = _saved_state(tiny_folder)
    if layout == "original":
        state = _original_layout(state)
        assert (
            "pretrained.blocks.0.attn.qkv.weight" in state
            and "depth_head.scratch.refinenet4.out_conv.weight" in state
        )
    path = tmp_path / f"depth_anything_v2_tiny{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = _models().load(str(path))
    assert loaded.side == INPUT_SIDE  # a file carries no preprocessing: Depth Anything's own
    image = random_region(28, 42, seed=3)
    np.testing.assert_allclose(
        loaded.estimate(image), _reference(INPUT_SIDE).estimate(image), rtol=1e-5, atol=1e-5
    )


def test_comfyuis_depth_folder_is_searched(tiny_folder: Path) -> None:
    home = Path.home()  # the test's own (conftest)
    (home / "ComfyUI" / "models" / "checkpoints").mkdir(parents=True)
    depth = home / "ComfyUI" / "models" / "depthanything"
    depth.mkdir()
    save_file(_original_layout(_saved_state(tiny_folder)), str(depth / "depth_anything_v2_vits.safetensors"))
    engine = Engine(device="cpu")
    found = engine.depth_models.list_models()
    assert [(m.name, m.source) for m in found] == [
        ("depth_anything_v2_vits.safetensors", "comfyui"),
        (TINY_DEPTH, "builtin"),
    ]
    assert engine.depth_models.resolve(None).name == "depth_anything_v2_vits.safetensors"
    assert engine.depth_models.resolve("depth_anything_v2_vits").name == "depth_anything_v2_vits.safetensors"


def test_a_model_folder_lists_only_its_depth_files(tiny_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    save_file({"x": torch.zeros(1)}, str(folder / "sd15.safetensors"))  # a checkpoint: not listed
    save_file(_saved_state(tiny_folder), str(folder / "my-depth.safetensors"))
    shutil.copytree(tiny_folder, folder / "nested" / "da-v2")
    names = [m.name for m in _models(model_dirs=[folder]).list_models()]
    assert names == ["my-depth.safetensors", "nested/da-v2", TINY_DEPTH]


def test_what_is_not_a_depth_model_is_named(tmp_path: Path) -> None:
    models = _models()
    cases = {
        "notes.txt": (b"hello", "is not a .safetensors, .pth, .pt or .bin weights file"),
        "broken.pth": (b"PK\x03\x04 not a zip", "cannot be read as weights"),
        "folder": (None, "it has no config.json of a Depth Anything model"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is None:
            path.mkdir()
            (path / "config.json").write_text('{"model_type": "unet"}')
        else:
            path.write_bytes(content)
        with pytest.raises(
            InvalidRequest, match=f"Cannot use '{name}' as a depth model: .*{re.escape(message)}"
        ):
            models.load(str(path))
    wrong = tmp_path / "depth-sd.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.zeros(2)}, str(wrong))
    with pytest.raises(InvalidRequest, match="'depth-sd.safetensors' as a depth model: its tensors are not"):
        models.load(str(wrong))


def test_paths_are_refused_where_not_allowed_but_the_operators_default_may_be_one(
    tiny_folder: Path,
) -> None:
    models = _models(allow_paths=False, default_model=str(tiny_folder))
    with pytest.raises(InvalidRequest, match="Unknown depth model"):
        models.resolve(str(tiny_folder))
    assert models.resolve(None).location == tiny_folder
