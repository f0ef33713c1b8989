"""IP-Adapter: reference images steer the free pixels only, weight 0 is none, the UNet is its own
again after, and adapters with their image encoders are found in the painters' folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from differential_inpaint.backend.engine import Engine, InvalidRequest, UnknownModel
from differential_inpaint.backend.engine.ip_adapter import (
    ReferenceImage,
    build_tiny_image_encoder,
    build_tiny_ip_adapter,
    clip_pixels,
)
from differential_inpaint.protocol import JobParams

from .conftest import random_region

SD15 = "builtin:tiny-sd15"
SDXL = "builtin:tiny-sdxl"


def _params(**kwargs: Any) -> JobParams:
    return JobParams(**{"prompt": "a red door", "steps": 4, "seed": 5, **kwargs})


def _region() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = random_region(64, 64, seed=4)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:56, 16:64] = 255
    mask[8:56, 16:24] = 100
    reference = random_region(40, 90, seed=9)[..., :3]  # any size, RGB
    return image, mask, reference


@pytest.fixture(scope="module")
def ip_engine() -> Engine:
    return Engine(device="cpu", scan_default_locations=False)


def _comfyui_with_tiny_adapter(home: Path) -> None:
    """A ComfyUI installation holding the tiny SD1.5 adapter and its encoder as files."""
    models = home / "ComfyUI" / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "ipadapter").mkdir(parents=True)
    (models / "clip_vision").mkdir(parents=True)
    state = build_tiny_ip_adapter("tiny-ip-adapter-sd15")
    flat = {f"{part}.{key}": tensor for part, tensors in state.items() for key, tensor in tensors.items()}
    save_file(flat, models / "ipadapter" / "ip-adapter_tiny.safetensors")
    encoder = {k: v.contiguous() for k, v in build_tiny_image_encoder().state_dict().items()}
    save_file(encoder, models / "clip_vision" / "clip-vision-tiny.safetensors")
    (models / "clip_vision" / "unrelated.safetensors").write_bytes(b"not a model")


def test_a_reference_steers_free_pixels_weight_0_is_none_and_the_unet_is_its_own_after(
    ip_engine: Engine,
) -> None:
    image, mask, reference = _region()
    unet = ip_engine.models.load(ip_engine.models.resolve(SD15)).sampler.unet
    processors = dict(unet.attn_processors)
    before = ip_engine.inpaint(image, mask, _params(), model=SD15).image
    steered = ip_engine.inpaint(
        image, mask, _params(), model=SD15, references=[ReferenceImage(reference, 1.0)]
    )
    keep = mask == 0
    assert steered.image[keep, :3].tobytes() == image[keep, :3].tobytes()
    assert np.abs(steered.image[~keep, :3] - before[~keep, :3]).mean() > 1e-3
    none = ip_engine.inpaint(image, mask, _params(), model=SD15, references=[ReferenceImage(reference, 0.0)])
    assert none.image.tobytes() == before.tobytes()
    assert ip_engine.inpaint(image, mask, _params(), model=SD15).image.tobytes() == before.tobytes()
    assert all(unet.attn_processors[name] is processor for name, processor in processors.items())
    assert unet.encoder_hid_proj is None
    # The same adapter again reads nothing; a second reference at its own weight adds to the first.
    loads = ip_engine.ip_adapters.loads
    again = ip_engine.inpaint(image, mask, _params(), model=SD15, references=[ReferenceImage(reference, 1.0)])
    assert again.image.tobytes() == steered.image.tobytes()
    two = [ReferenceImage(reference, 1.0), ReferenceImage(np.ascontiguousarray(reference[::-1]), 0.5)]
    both = ip_engine.inpaint(image, mask, _params(), model=SD15, references=two)
    assert both.image.tobytes() != steered.image.tobytes()
    assert ip_engine.ip_adapters.loads == loads


def test_sdxl_references(ip_engine: Engine) -> None:
    image, mask, reference = _region()
    before = ip_engine.inpaint(image, mask, _params(), model=SDXL).image
    steered = ip_engine.inpaint(
        image, mask, _params(), model=SDXL, references=[ReferenceImage(reference, 0.8)]
    )
    assert np.abs(steered.image - before).mean() > 1e-3
    assert ip_engine.inpaint(image, mask, _params(), model=SDXL).image.tobytes() == before.tobytes()


def test_adapters_and_encoders_are_found_in_comfyuis_folders_and_paint_as_the_builtin() -> None:
    _comfyui_with_tiny_adapter(Path.home())  # a temporary folder (conftest)
    engine = Engine(device="cpu")
    found = {(a.name, a.family, a.source) for a in engine.list_ip_adapters()}
    assert ("ip-adapter_tiny", "sd15", "comfyui") in found
    assert ("builtin:tiny-ip-adapter-sdxl", "sdxl", "builtin") in found
    assert [e.name for e in engine.ip_adapters.encoders.find()] == ["clip-vision-tiny"]
    image, mask, reference = _region()
    builtin = [ReferenceImage(reference, 0.7, "builtin:tiny-ip-adapter-sd15")]
    from_files = [ReferenceImage(reference, 0.7, "ip-adapter_tiny")]
    expected = engine.inpaint(image, mask, _params(), model=SD15, references=builtin).image
    got = engine.inpaint(image, mask, _params(), model=SD15, references=from_files).image
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_wrong_family_unknown_adapter_and_missing_encoder_are_clear_errors(
    ip_engine: Engine, tmp_path: Path
) -> None:
    image, mask, reference = _region()
    with pytest.raises(InvalidRequest, match="made for sdxl; the model 'builtin:tiny-sd15' is sd15"):
        ip_engine.inpaint(
            image,
            mask,
            _params(),
            model=SD15,
            references=[ReferenceImage(reference, 1.0, "builtin:tiny-ip-adapter-sdxl")],
        )
    with pytest.raises(InvalidRequest, match="IP-Adapters work with SD1.5 and SDXL models"):
        ip_engine.inpaint(
            image, mask, _params(), model="builtin:tiny-flux", references=[ReferenceImage(reference)]
        )
    with pytest.raises(UnknownModel, match="Unknown IP-Adapter 'nope'"):
        ip_engine.inpaint(
            image, mask, _params(), model=SD15, references=[ReferenceImage(reference, 1.0, "nope")]
        )
    lonely = tmp_path / "adapters"
    lonely.mkdir()
    state = build_tiny_ip_adapter("tiny-ip-adapter-sd15")
    save_file(
        {f"{part}.{key}": t for part, tensors in state.items() for key, t in tensors.items()},
        lonely / "ip-adapter_alone.safetensors",
    )
    engine = Engine(device="cpu", scan_default_locations=False, ip_adapter_dirs=[lonely])
    with pytest.raises(UnknownModel, match="needs a CLIP vision image encoder with an embedding of 32"):
        engine.inpaint(
            image,
            mask,
            _params(),
            model=SD15,
            references=[ReferenceImage(reference, 1.0, "ip-adapter_alone")],
        )


def test_reference_images_are_cropped_to_the_centre_and_normalised_as_clip_does() -> None:
    wide = np.zeros((20, 60, 3), np.float32)
    wide[:, 20:40] = 1.0  # the centre square is white, the sides black
    pixels = clip_pixels(wide, 32)
    assert tuple(pixels.shape) == (1, 3, 32, 32)
    white = (1.0 - 0.48145466) / 0.26862954
    assert abs(float(pixels[0, 0, 16, 16]) - white) < 1e-3


def test_real_adapters_and_encoders_are_read_from_their_shapes() -> None:
    from differential_inpaint.backend.engine.ip_adapter import (
        encoder_input,
        encoder_signature,
        ip_adapter_family,
        vision_config,
    )

    sd15 = {"image_proj.proj.weight": (3072, 1024), "ip_adapter.1.to_k_ip.weight": (320, 768)}
    sdxl = {"image_proj.proj.weight": (8192, 1280), "ip_adapter.1.to_k_ip.weight": (640, 2048)}
    assert ip_adapter_family(sd15) == "sd15" and ip_adapter_family(sdxl) == "sdxl"
    assert ip_adapter_family({"ip_adapter.1.to_k_ip.weight": (320, 768)}) is None  # no projection
    plus = {"proj_in.weight": torch.zeros(768, 1280), "latents": torch.zeros(1, 16, 768)}
    assert encoder_input(plus) == ("hidden", 1280)
    assert encoder_input({"proj.weight": torch.zeros(3072, 1024)}) == ("embeds", 1024)
    vit_h = {
        "vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, 1280),
        "vision_model.encoder.layers.31.mlp.fc1.weight": (5120, 1280),
        "vision_model.encoder.layers.0.mlp.fc1.weight": (5120, 1280),
        "visual_projection.weight": (1024, 1280),
    }
    assert encoder_signature(vit_h) == "1024:1280"
    config = vision_config(vit_h)
    assert (config.num_hidden_layers, config.num_attention_heads, config.image_size) == (32, 16, 224)
    assert (config.projection_dim, config.intermediate_size, config.hidden_act) == (1024, 5120, "gelu")
