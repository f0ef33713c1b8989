"""Write FLUX.1 / SD3 pipelines as the files people download: BFL's and Stability's keys.

The inverse of diffusers' single-file conversion for the transformers (a table of which
diffusers weights each original weight is made of), LDM keys for the VAE, transformers'
own keys for the text encoders, in the two layouts flow_checkpoints.py reads: all-in-one
(ComfyUI's / Stability's prefixes) and ComfyUI's split folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .ldm_export import vae_to_ldm

# original key -> (diffusers keys concatenated along dim 0, shift/scale swapped)
Table = dict[str, tuple[list[str], bool]]


def _wb(table: Table, original: str, parts: list[str], swap: bool = False) -> None:
    for suffix in ("weight", "bias"):
        table[f"{original}.{suffix}"] = ([f"{p}.{suffix}" for p in parts], swap)


def flux_table(config: Any) -> Table:
    t: Table = {}
    _wb(t, "img_in", ["x_embedder"])
    _wb(t, "txt_in", ["context_embedder"])
    for ours, theirs in (
        ("time_in", "timestep_embedder"),
        ("vector_in", "text_embedder"),
        ("guidance_in", "guidance_embedder"),
    ):
        if theirs == "guidance_embedder" and not config.guidance_embeds:
            continue
        _wb(t, f"{ours}.in_layer", [f"time_text_embed.{theirs}.linear_1"])
        _wb(t, f"{ours}.out_layer", [f"time_text_embed.{theirs}.linear_2"])
    for i in range(config.num_layers):
        o, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        _wb(t, o + "img_mod.lin", [d + "norm1.linear"])
        _wb(t, o + "txt_mod.lin", [d + "norm1_context.linear"])
        _wb(t, o + "img_attn.qkv", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"])
        _wb(t, o + "txt_attn.qkv", [d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"])
        t[o + "img_attn.norm.query_norm.scale"] = ([d + "attn.norm_q.weight"], False)
        t[o + "img_attn.norm.key_norm.scale"] = ([d + "attn.norm_k.weight"], False)
        t[o + "txt_attn.norm.query_norm.scale"] = ([d + "attn.norm_added_q.weight"], False)
        t[o + "txt_attn.norm.key_norm.scale"] = ([d + "attn.norm_added_k.weight"], False)
        _wb(t, o + "img_attn.proj", [d + "attn.to_out.0"])
        _wb(t, o + "txt_attn.proj", [d + "attn.to_add_out"])
        for ours, theirs in (("img_mlp", "ff"), ("txt_mlp", "ff_context")):
            _wb(t, f"{o}{ours}.0", [f"{d}{theirs}.net.0.proj"])
            _wb(t, f"{o}{ours}.2", [f"{d}{theirs}.net.2"])
    for i in range(config.num_single_layers):
        o, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        _wb(t, o + "modulation.lin", [d + "norm.linear"])
        _wb(t, o + "linear1", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp"])
        _wb(t, o + "linear2", [d + "proj_out"])
        t[o + "norm.query_norm.scale"] = ([d + "attn.norm_q.weight"], False)
        t[o + "norm.key_norm.scale"] = ([d + "attn.norm_k.weight"], False)
    _wb(t, "final_layer.linear", ["proj_out"])
    _wb(t, "final_layer.adaLN_modulation.1", ["norm_out.linear"], swap=True)
    return t


def sd3_table(config: Any) -> Table:
    t: Table = {"pos_embed": (["pos_embed.pos_embed"], False)}
    _wb(t, "x_embedder.proj", ["pos_embed.proj"])
    _wb(t, "t_embedder.mlp.0", ["time_text_embed.timestep_embedder.linear_1"])
    _wb(t, "t_embedder.mlp.2", ["time_text_embed.timestep_embedder.linear_2"])
    _wb(t, "y_embedder.mlp.0", ["time_text_embed.text_embedder.linear_1"])
    _wb(t, "y_embedder.mlp.2", ["time_text_embed.text_embedder.linear_2"])
    _wb(t, "context_embedder", ["context_embedder"])
    last = config.num_layers - 1
    for i in range(config.num_layers):
        o, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}."
        _wb(t, o + "x_block.attn.qkv", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"])
        _wb(
            t,
            o + "context_block.attn.qkv",
            [d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"],
        )
        if config.qk_norm:
            for block, norm in (("x_block", ""), ("context_block", "added_")):
                t[f"{o}{block}.attn.ln_q.weight"] = ([f"{d}attn.norm_{norm}q.weight"], False)
                t[f"{o}{block}.attn.ln_k.weight"] = ([f"{d}attn.norm_{norm}k.weight"], False)
        _wb(t, o + "x_block.attn.proj", [d + "attn.to_out.0"])
        _wb(t, o + "x_block.adaLN_modulation.1", [d + "norm1.linear"])
        _wb(t, o + "x_block.mlp.fc1", [d + "ff.net.0.proj"])
        _wb(t, o + "x_block.mlp.fc2", [d + "ff.net.2"])
        _wb(t, o + "context_block.adaLN_modulation.1", [d + "norm1_context.linear"], swap=i == last)
        if i != last:
            _wb(t, o + "context_block.attn.proj", [d + "attn.to_add_out"])
            _wb(t, o + "context_block.mlp.fc1", [d + "ff_context.net.0.proj"])
            _wb(t, o + "context_block.mlp.fc2", [d + "ff_context.net.2"])
    _wb(t, "final_layer.linear", ["proj_out"])
    _wb(t, "final_layer.adaLN_modulation.1", ["norm_out.linear"], swap=True)
    return t


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def transformer_to_original(transformer: Any) -> dict[str, torch.Tensor]:
    """BFL's (FLUX) or Stability's (SD3) keys for a diffusers transformer, every weight used once."""
    state = transformer.state_dict()
    sd3 = type(transformer).__name__ == "SD3Transformer2DModel"
    table = sd3_table(transformer.config) if sd3 else flux_table(transformer.config)
    out, used = {}, set()
    for original, (parts, swap) in table.items():
        tensor = torch.cat([state[p] for p in parts], dim=0).contiguous()
        out[original] = _swap(tensor) if swap else tensor
        used.update(parts)
    assert used == set(state), sorted(set(state) - used)[:5]
    return out


def vae_to_original(vae: Any) -> dict[str, torch.Tensor]:
    return {k.removeprefix("first_stage_model."): v.contiguous() for k, v in vae_to_ldm(vae).items()}


def text_to_original(text_encoder: Any) -> dict[str, torch.Tensor]:
    """transformers' keys as the files have them (CLIP under text_model., T5 without the
    tied embed_tokens copy)."""
    state = {
        k: v.contiguous() for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")
    }
    state.pop("encoder.embed_tokens.weight", None)
    if "shared.weight" not in state:
        state = {
            k if k.startswith("text_model.") or k == "text_projection.weight" else "text_model." + k: v
            for k, v in state.items()
        }
    return state


def parts_of(pipe: Any) -> dict[str, Any]:
    """role -> component of a FLUX / SD3 pipeline."""
    if type(pipe.transformer).__name__ == "SD3Transformer2DModel":
        return {"clip_l": pipe.text_encoder, "clip_g": pipe.text_encoder_2, "t5": pipe.text_encoder_3}
    return {"clip_l": pipe.text_encoder, "t5": pipe.text_encoder_2}


def save_all_in_one(pipe: Any, path: Path, dtype: torch.dtype | None = None) -> Path:
    sd3 = type(pipe.transformer).__name__ == "SD3Transformer2DModel"
    state = {"model.diffusion_model." + k: v for k, v in transformer_to_original(pipe.transformer).items()}
    vae_prefix = "first_stage_model." if sd3 else "vae."
    state.update({vae_prefix + k: v for k, v in vae_to_original(pipe.vae).items()})
    names = {"clip_l": "clip_l", "clip_g": "clip_g", "t5": "t5xxl"}
    for role, model in parts_of(pipe).items():
        prefix = f"text_encoders.{names[role]}.transformer."
        state.update({prefix + k: v for k, v in text_to_original(model).items()})
    return _save(state, path, dtype)


def save_comfy_tree(
    pipe: Any,
    models: Path,
    transformer_folder: str = "diffusion_models",
    text_folder: str = "text_encoders",
    dtype: torch.dtype | None = None,
) -> dict[str, Path]:
    """ComfyUI's split files under `models`: role -> path ("transformer", "vae", "clip_l", ...)."""
    paths = {
        "transformer": _save(
            transformer_to_original(pipe.transformer),
            models / transformer_folder / "model.safetensors",
            dtype,
        ),
        "vae": _save(vae_to_original(pipe.vae), models / "vae" / "ae.safetensors", dtype),
    }
    names = {"clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors", "t5": "t5xxl_fp16.safetensors"}
    for role, model in parts_of(pipe).items():
        paths[role] = _save(text_to_original(model), models / text_folder / names[role], dtype)
    return paths


def _save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(path))
    return path
