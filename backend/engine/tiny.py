"""Built-in tiny models: the real SD1.5 / SDXL architectures, random weights, fixed seed.

They paint noise; they exist so that every mechanism (text encoders, SDXL's added
embeddings, the 9-channel inpainting UNet, the VAE's 8x downsampling) runs anywhere,
offline, in seconds. Their sizes follow the rules single-file loading uses to derive
configs (8 attention heads for SD1.5, 64 channels per head for SDXL, 64 per head in the
text encoders), so a tiny model written as a single file loads back identically.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch

from .checkpoints import assemble_pipeline
from .configs import VAE_SCALING_FACTOR
from .tokenizers import MAX_LENGTH, TINY_VOCAB_SIZE, build_tokenizer

BUILTIN_PREFIX = "builtin:"
# name -> family
BUILTINS: dict[str, str] = {
    "tiny-sd15": "sd15",
    "tiny-sdxl": "sdxl",
    "tiny-sd15-inpaint": "sd15-inpaint",
    "tiny-sdxl-inpaint": "sdxl-inpaint",
}
TINY_WORKING_AREA = 128 * 128  # pixels of area: small, so that tests stay fast on two cores
SEED = 20240229


def tiny_vae_config(family: str) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,  # 3 downsamplers: the real 8x
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [32, 32, 64, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 256,
        "scaling_factor": VAE_SCALING_FACTOR[family.removesuffix("-inpaint")],
        "force_upcast": family.startswith("sdxl"),
    }


def tiny_unet_config(family: str) -> dict[str, Any]:
    in_channels = 9 if family.endswith("-inpaint") else 4
    if family.startswith("sdxl"):
        return {
            "sample_size": 32,
            "in_channels": in_channels,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": [64, 128],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2],
            "attention_head_dim": [1, 2],  # heads: 64 channels each, as SDXL
            "use_linear_projection": True,
            "cross_attention_dim": 64,  # 32 + 32 from the two text encoders
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
            "norm_num_groups": 32,
        }
    return {
        "sample_size": 32,
        "in_channels": in_channels,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": 8,  # 8 heads, as SD1.5
        "cross_attention_dim": 32,
        "norm_num_groups": 32,
    }


def tiny_text_config(hidden_act: str, pad_token_id: int, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=1,
        max_position_embeddings=MAX_LENGTH,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        projection_dim=projection_dim,
        bos_token_id=TINY_VOCAB_SIZE - 2,
        eos_token_id=TINY_VOCAB_SIZE - 1,
        pad_token_id=pad_token_id,
    )


# Building seeds torch's global RNG: two builds at once would interleave their draws and
# give weights that depend on the timing.
_build_lock = threading.Lock()


@functools.cache
def _build(name: str) -> Any:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    family = BUILTINS[name]
    # A private RNG stream: building a model must not move the caller's torch seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel.from_config(tiny_unet_config(family))
        vae = AutoencoderKL.from_config(tiny_vae_config(family))
        tokenizer = build_tokenizer("tiny")
        text_encoder = CLIPTextModel(tiny_text_config("quick_gelu", tokenizer.pad_token_id))
        text_encoder_2 = tokenizer_2 = None
        if family.startswith("sdxl"):
            tokenizer_2 = build_tokenizer("tiny", pad_token="!")
            text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config("gelu", tokenizer_2.pad_token_id))
    pipe = assemble_pipeline(family, vae, unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def build_tiny_pipeline(name: str) -> Any:
    """The diffusers pipeline of a built-in model, float32 on the CPU, built once per process.

    Callers must not modify it in place; Engine copies it before moving it to a device.
    """
    if name not in BUILTINS:
        raise KeyError(name)
    with _build_lock:
        return _build(name)
