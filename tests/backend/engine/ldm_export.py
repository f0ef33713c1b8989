"""Write a diffusers SD1.5 / SDXL pipeline as an original (LDM) single-file checkpoint.

The inverse of diffusers' single-file conversion, written generally (any number of
blocks and layers) so that the tiny built-in models can be saved the way real
checkpoints are distributed, and loaded back through the engine's offline path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

RESNET_RENAMES = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _resnet(name: str) -> str:
    for hf, ldm in RESNET_RENAMES:
        name = name.replace(hf, ldm)
    return name


def unet_to_ldm(unet: Any) -> dict[str, torch.Tensor]:
    config = unet.config
    per_level = config.layers_per_block
    levels = len(config.block_out_channels)
    prefixes: list[tuple[str, str, bool]] = [  # (diffusers prefix, ldm prefix, is resnet)
        ("time_embedding.linear_1.", "time_embed.0.", False),
        ("time_embedding.linear_2.", "time_embed.2.", False),
        ("add_embedding.linear_1.", "label_emb.0.0.", False),
        ("add_embedding.linear_2.", "label_emb.0.2.", False),
        ("conv_in.", "input_blocks.0.0.", False),
        ("conv_norm_out.", "out.0.", False),
        ("conv_out.", "out.2.", False),
        ("mid_block.resnets.0.", "middle_block.0.", True),
        ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
    ]
    for i in range(levels):
        for j in range(per_level):
            index = 1 + i * (per_level + 1) + j
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", True))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.", False))
        if i < levels - 1:
            index = 1 + i * (per_level + 1) + per_level
            prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", False))
        has_attention = config.up_block_types[i].startswith("CrossAttn")
        for j in range(per_level + 1):
            index = i * (per_level + 1) + j
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", True))
            prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.", False))
        if i < levels - 1:
            index = i * (per_level + 1) + per_level
            slot = 2 if has_attention else 1
            prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{index}.{slot}.", False))

    out = {}
    for key, value in unet.state_dict().items():
        for hf, ldm, is_resnet in prefixes:
            if key.startswith(hf):
                rest = key[len(hf) :]
                out["model.diffusion_model." + ldm + (_resnet(rest) if is_resnet else rest)] = value
                break
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
    return out


def vae_to_ldm(vae: Any) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    prefixes: list[tuple[str, str]] = [
        ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
        ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
        ("encoder.mid_block.resnets.0.", "encoder.mid.block_1."),
        ("encoder.mid_block.resnets.1.", "encoder.mid.block_2."),
        ("decoder.mid_block.resnets.0.", "decoder.mid.block_1."),
        ("decoder.mid_block.resnets.1.", "decoder.mid.block_2."),
        ("encoder.conv_norm_out.", "encoder.norm_out."),
        ("decoder.conv_norm_out.", "decoder.norm_out."),
    ]
    for i in range(levels):
        prefixes.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        prefixes.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        prefixes.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block."))
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."))
    attention_renames = [
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ]

    out = {}
    for key, value in vae.state_dict().items():
        name = key
        for hf, ldm in prefixes:
            if name.startswith(hf):
                name = ldm + name[len(hf) :]
                break
        name = name.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in name:
            head, tail = name.split(".mid.attn_1.")
            for hf, ldm in attention_renames:
                if tail.startswith(hf):
                    tail = ldm + tail[len(hf) :]
            name = f"{head}.mid.attn_1.{tail}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + name] = value
    return out


def clip_to_ldm(text_encoder: Any, prefix: str) -> dict[str, torch.Tensor]:
    """HF-layout CLIP keys under `prefix` (always with the text_model. level, as in checkpoints)."""
    out = {}
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        key = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + key] = value
    return out


def openclip_to_ldm(text_encoder: Any, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP layout (fused q/k/v, resblocks, transposed projection) under `prefix`."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out: dict[str, torch.Tensor] = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
        prefix + "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    state.pop("embeddings.position_ids", None)
    layers = len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")})
    for n in range(layers):
        hf, ldm = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[f"{ldm}attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{hf}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            )
            out[f"{ldm}attn.out_proj.{kind}"] = state.pop(f"{hf}self_attn.out_proj.{kind}")
            out[f"{ldm}ln_1.{kind}"] = state.pop(f"{hf}layer_norm1.{kind}")
            out[f"{ldm}ln_2.{kind}"] = state.pop(f"{hf}layer_norm2.{kind}")
            out[f"{ldm}mlp.c_fc.{kind}"] = state.pop(f"{hf}mlp.fc1.{kind}")
            out[f"{ldm}mlp.c_proj.{kind}"] = state.pop(f"{hf}mlp.fc2.{kind}")
    if state:
        raise KeyError(f"no OpenCLIP name for {sorted(state)[:3]}")
    return out


def pipeline_to_ldm(pipe: Any) -> dict[str, torch.Tensor]:
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        state.update(openclip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    else:
        state.update(clip_to_ldm(pipe.text_encoder, "cond_stage_model.transformer."))
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def save_single_file(pipe: Any, path: Path) -> Path:
    state = pipeline_to_ldm(pipe)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 0}, path)
    return path
