"""Write FLUX.1 / SD3 pipelines as the files people download: BFL's and Stability's keys.

The inverse of diffusers' single-file conversion for the transformers (a table of which
diffusers weights each original weight is made of), LDM keys for the VAE, transformers'
own keys for the text encoders, in the two layouts flow_checkpoints.py reads: all-in-one
(ComfyUI's / Stability's prefixes) and ComfyUI's split folders; as safetensors (.safetensors,
.sft) or pickles (.ckpt, .pt, .pth), ComfyUI's scaled fp8, and quantised GGUF transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
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


def transformer_to_original(
    transformer: Any, state: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """BFL's (FLUX) or Stability's (SD3) keys for a diffusers transformer (or `state`, its
    weights otherwise held), every weight used once."""
    state = transformer.state_dict() if state is None else state
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
    suffixes: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """ComfyUI's split files under `models`: role -> path ("transformer", "vae", "clip_l", ...);
    `suffixes` (role -> ".sft", ".ckpt", ...) where not .safetensors."""
    suffix = {"transformer": ".safetensors", "vae": ".safetensors", **(suffixes or {})}
    paths = {
        "transformer": _save(
            transformer_to_original(pipe.transformer),
            models / transformer_folder / ("model" + suffix["transformer"]),
            dtype,
        ),
        "vae": _save(vae_to_original(pipe.vae), models / "vae" / ("ae" + suffix["vae"]), dtype),
    }
    names = {"clip_l": "clip_l", "clip_g": "clip_g", "t5": "t5xxl_fp16"}
    for role, model in parts_of(pipe).items():
        name = names[role] + suffix.get(role, ".safetensors")
        paths[role] = _save(text_to_original(model), models / text_folder / name, dtype)
    return paths


def _save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None) -> Path:
    """safetensors for .safetensors / .sft; a pickle otherwise (.ckpt under "state_dict", as
    LDM's checkpoints, .pt / .pth the state dict itself)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if path.suffix in (".safetensors", ".sft"):
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state} if path.suffix == ".ckpt" else state, path)
    return path


# -- ComfyUI's scaled fp8 -------------------------------------------------------------------


def scale_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled fp8 layout: every 2-D weight divided by a per-tensor scale (its largest
    magnitude over e4m3fn's largest, 448) and stored as e4m3fn, the scale as
    ``<name>.scale_weight``, a ``scaled_fp8`` marker; the rest as it is."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if (
            key.endswith(".weight")
            and value.ndim == 2
            and not key.endswith(("shared.weight", "embedding.weight"))
        ):
            scale = value.abs().max().float() / 448
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key.removesuffix("weight") + "scale_weight"] = scale.reshape(())
            out[key.removesuffix("weight") + "scale_input"] = torch.ones(())
        else:
            out[key] = value
    return out


# -- GGUF -------------------------------------------------------------------------------------

# As in city96's files: 1-D weights F32, the input embedders F16, the conditioning embedders and
# the final layer BF16, other 2-D weights quantised where their rows are whole blocks.
_F16 = ("img_in.", "txt_in.", "x_embedder.", "context_embedder.")
_BF16 = ("time_in.", "vector_in.", "guidance_in.", "final_layer.", "t_embedder.", "y_embedder.")


def save_gguf(transformer: Any, path: Path, qtype: Any) -> Path:
    """The transformer in BFL's / Stability's keys as a GGUF file, 2-D weights as `qtype`
    (a gguf.GGMLQuantizationType: Q8_0 by gguf's quantiser, Q5_K / Q4_K by quantize_k)."""
    import gguf

    sd3 = type(transformer).__name__ == "SD3Transformer2DModel"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "sd3" if sd3 else "flux")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for key, tensor in transformer_to_original(transformer).items():
        data = tensor.float().numpy()
        if tensor.ndim == 1:
            writer.add_tensor(key, data)
        elif key.startswith(_BF16):
            raw = tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
            writer.add_tensor(key, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)
        elif key.startswith(_F16) or tensor.ndim != 2 or tensor.shape[-1] % block:
            writer.add_tensor(key, data.astype(np.float16))
        elif qtype in (gguf.GGMLQuantizationType.Q5_K, gguf.GGMLQuantizationType.Q4_K):
            writer.add_tensor(key, quantize_k(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(key, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantize_k(rows: np.ndarray, qtype: Any) -> np.ndarray:
    """Q4_K / Q5_K blocks (gguf-py only dequantises these): 256 weights a block in 8 sub-blocks
    of 32, each sub-block a 6-bit scale and minimum of the block's float16 scale and minimum,
    weights of 4 (Q4_K) or 5 (Q5_K) bits; the byte layout gguf.quants.dequantize reads."""
    import gguf

    five = qtype == gguf.GGMLQuantizationType.Q5_K
    levels = 31 if five else 15
    x = rows.astype(np.float32).reshape(-1, 8, 32)
    n = x.shape[0]
    low = np.minimum(x.min(-1), 0.0)
    step = (x.max(-1) - low) / levels
    d = (step.max(-1) / 63).astype(np.float16)
    dmin = ((-low).max(-1) / 63).astype(np.float16)

    def six_bits(value: np.ndarray, unit: np.ndarray) -> np.ndarray:
        unit = unit.astype(np.float32)[:, None]
        return np.round(value / np.where(unit > 0, unit, 1)).clip(0, 63).astype(np.uint8)

    sc, mn = six_bits(step, d), six_bits(-low, dmin)
    scale = (d.astype(np.float32)[:, None] * sc)[..., None]
    offset = (dmin.astype(np.float32)[:, None] * mn)[..., None]
    q = np.round((x + offset) / np.where(scale > 0, scale, 1)).clip(0, levels).astype(np.uint8)
    scales = np.empty((n, 12), np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    low_bits = q & 0x0F
    qs = (low_bits[:, 0::2] | (low_bits[:, 1::2] << 4)).reshape(n, 128)
    head = [d.reshape(n, 1).view(np.uint8), dmin.reshape(n, 1).view(np.uint8), scales]
    if five:
        qh = np.zeros((n, 32), np.uint8)
        for sub in range(8):
            qh |= ((q[:, sub] >> 4) & 1) << sub
        head.append(qh)
    return np.concatenate([*head, qs], axis=1).reshape(rows.shape[0], -1)
