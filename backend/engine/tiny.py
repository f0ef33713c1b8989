"""Built-in tiny models: the real SD1.5 / SDXL / FLUX.1 / SD3 architectures, random weights.

They paint noise; they exist so that every mechanism (text encoders, SDXL's added
embeddings, the 9-channel inpainting UNet, the VAE's 8x downsampling, FLUX's packed
transformer with its guidance embedding or, schnell's, without, FLUX Fill's mask channels,
SD3's three text encoders with a T5 and its tokenizer built in code) runs anywhere,
offline, in seconds.
Every one is built from a fixed seed, so it is the same model in every process. The SD
models' sizes follow the rules single-file loading uses to derive configs (8 attention
heads for SD1.5, 64 channels per head for SDXL, 64 per head in the text encoders), so a
tiny model written as a single file loads back identically.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch

from .checkpoints import assemble_pipeline
from .configs import FLOW_VAE_FACTORS, VAE_SCALING_FACTOR, base_family, is_flow
from .tokenizers import MAX_LENGTH, TINY_T5_VOCAB_SIZE, TINY_VOCAB_SIZE, build_t5_tokenizer, build_tokenizer

BUILTIN_PREFIX = "builtin:"
# name -> family
BUILTINS: dict[str, str] = {
    "tiny-sd15": "sd15",
    "tiny-sdxl": "sdxl",
    "tiny-sd15-inpaint": "sd15-inpaint",
    "tiny-sdxl-inpaint": "sdxl-inpaint",
    "tiny-flux": "flux",
    "tiny-flux-schnell": "flux-schnell",
    "tiny-flux-fill": "flux-fill",
    "tiny-sd3": "sd3",
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


def tiny_flow_vae_config(family: str) -> dict[str, Any]:
    """FLUX's and SD3's VAE, small: 16 latent channels, no quant convs, shifted and scaled."""
    scaling, shift = FLOW_VAE_FACTORS[base_family(family)]
    return {
        **tiny_vae_config("sd15"),
        "latent_channels": 16,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "scaling_factor": scaling,
        "shift_factor": shift,
        "force_upcast": True,
    }


T5_DIM = 64  # the tiny T5's width: FLUX's and SD3's joint attention dimension


def tiny_flux_transformer_config(family: str) -> dict[str, Any]:
    """FluxTransformer2DModel: 16 latent channels in 2x2 patches = 64 features a token;
    Fill adds the packed masked-image latents (64) and the 8x8 mask blocks (256)."""
    return {
        "patch_size": 1,
        "in_channels": 384 if family == "flux-fill" else 64,
        "out_channels": 64,
        "num_layers": 1,
        "num_single_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": T5_DIM,
        "pooled_projection_dim": 32,  # CLIP-L's pooled output
        "guidance_embeds": family != "flux-schnell",
        "axes_dims_rope": (4, 6, 6),  # sums to attention_head_dim
    }


def tiny_sd3_transformer_config() -> dict[str, Any]:
    """SD3Transformer2DModel with SD3.5's RMS-normed attention."""
    return {
        "sample_size": 16,
        "patch_size": 2,
        "in_channels": 16,
        "num_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": T5_DIM,  # CLIP-L + CLIP-G (32 + 32) padded to T5's width
        "caption_projection_dim": 32,
        "pooled_projection_dim": 64,  # CLIP-L's and CLIP-G's pooled outputs side by side
        "out_channels": 16,
        "pos_embed_max_size": 64,
        "qk_norm": "rms_norm",
    }


def tiny_t5_config() -> Any:
    """T5 v1.1 (gated GELU), as FLUX's and SD3's T5-XXL, tiny."""
    from transformers import T5Config

    return T5Config(
        vocab_size=TINY_T5_VOCAB_SIZE,
        d_model=T5_DIM,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
    )


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
    family = BUILTINS[name]
    # A private RNG stream: building a model must not move the caller's torch seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        pipe = _build_flow(family) if is_flow(family) else _build_sd(family)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def _build_sd(family: str) -> Any:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_config(tiny_unet_config(family))
    vae = AutoencoderKL.from_config(tiny_vae_config(family))
    tokenizer = build_tokenizer("tiny")
    text_encoder = CLIPTextModel(tiny_text_config("quick_gelu", tokenizer.pad_token_id))
    text_encoder_2 = tokenizer_2 = None
    if family.startswith("sdxl"):
        tokenizer_2 = build_tokenizer("tiny", pad_token="!")
        text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config("gelu", tokenizer_2.pad_token_id))
    return assemble_pipeline(family, vae, unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2)


def _build_flow(family: str) -> Any:
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    from .flow_models import assemble_flow_pipeline

    vae = AutoencoderKL.from_config(tiny_flow_vae_config(family))
    tokenizer = build_tokenizer("tiny")
    t5_tokenizer = build_t5_tokenizer("tiny")
    if family == "sd3":
        transformer = SD3Transformer2DModel.from_config(tiny_sd3_transformer_config())
        clip_l = CLIPTextModelWithProjection(tiny_text_config("quick_gelu", tokenizer.pad_token_id))
        tokenizer_2 = build_tokenizer("tiny", pad_token="!")
        clip_g = CLIPTextModelWithProjection(tiny_text_config("gelu", tokenizer_2.pad_token_id))
        t5 = T5EncoderModel(tiny_t5_config())
        return assemble_flow_pipeline(
            family, vae, transformer, clip_l, tokenizer, clip_g, tokenizer_2, t5, t5_tokenizer
        )
    transformer = FluxTransformer2DModel.from_config(tiny_flux_transformer_config(family))
    clip_l = CLIPTextModel(tiny_text_config("quick_gelu", tokenizer.pad_token_id))
    t5 = T5EncoderModel(tiny_t5_config())
    return assemble_flow_pipeline(family, vae, transformer, clip_l, tokenizer, t5, t5_tokenizer)


def build_tiny_pipeline(name: str) -> Any:
    """The diffusers pipeline of a built-in model, float32 on the CPU, built once per process.

    Callers must not modify it in place; Engine copies it before moving it to a device.
    """
    if name not in BUILTINS:
        raise KeyError(name)
    with _build_lock:
        return _build(name)
