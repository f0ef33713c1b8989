"""FLUX.1 and SD3/3.5 from single files, offline: all-in-one checkpoints and ComfyUI's split files.

Two layouts are read:

- all-in-one: one .safetensors with the transformer (``model.diffusion_model.``), the VAE
  (``vae.`` for FLUX, ``first_stage_model.`` for SD3) and the text encoders
  (``text_encoders.clip_l.transformer.``, ``text_encoders.clip_g.transformer.``,
  ``text_encoders.t5xxl.transformer.``), as ComfyUI saves them and Stability ships SD3.5;
- split: the transformer alone (BFL's / Stability's keys, no prefix) in ComfyUI's
  ``models/unet`` or ``models/diffusion_models``, the text encoders (transformers' own keys)
  in ``models/text_encoders`` or ``models/clip``, the VAE (``ae.safetensors``, LDM keys) in
  ``models/vae``.

The files may be .safetensors or .sft (BFL's name for the same format), pickled state
dicts (.ckpt, .pt, .pth, read with ``weights_only``), or, for the transformer alone, GGUF
(city96's quantised Q8_0 / Q5_K / Q4_K... files, kept quantised through diffusers' GGUF
support, gguf_files.py). ComfyUI's "scaled fp8" files (``t5xxl_fp8_e4m3fn_scaled``, scaled
fp8 transformers: fp8 weights with a per-tensor ``scale_weight``) are dequantised on loading
into the compute dtype; plain fp8 transformers keep their fp8 storage (``keep_float8``).

Parts an all-in-one file lacks, or a lone transformer needs, come from files given
explicitly (``--text-encoder``, ``--vae``) or else are matched in the ComfyUI tree around
the transformer: a part is taken when exactly one file of its kind fits the transformer
(T5's width = the transformer's text width, CLIP-L's (and CLIP-G's) pooled width, a
16-channel VAE). As for SD checkpoints (checkpoints.py), every config is derived from the
weights' shapes, the few facts they do not carry from the family, the weights converted
with diffusers' own functions and loaded strictly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (
    GGUF_SUFFIX,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    Shapes,
    UnsupportedCheckpoint,
    _check_keys,
    _finish,
    _inconsistent,
    _load_strict,
    _text_state_dict,
    derive_text_config,
    read_shapes,
    read_state_dict,
)
from .configs import FLOW_VAE_FACTORS, base_family

TRANSFORMER = "model.diffusion_model."
FLUX_MARKER = "double_blocks.0.img_attn.qkv.weight"
SD3_MARKER = "joint_blocks.0.x_block.attn.qkv.weight"
# Prefixes of the parts inside all-in-one files.
PART_PREFIXES = {
    "vae": ("vae.", "first_stage_model."),
    "clip_l": ("text_encoders.clip_l.transformer.",),
    "clip_g": ("text_encoders.clip_g.transformer.",),
    "t5": ("text_encoders.t5xxl.transformer.",),
}
ROLE_NAMES = {
    "vae": "VAE",
    "clip_l": "CLIP-L text encoder",
    "clip_g": "CLIP-G text encoder",
    "t5": "T5-XXL text encoder",
}
CLIP_KEY = "text_model.embeddings.token_embedding.weight"
T5_KEY = "encoder.block.0.layer.0.SelfAttention.q.weight"
VAE_KEY = "decoder.conv_in.weight"

# ComfyUI's folders for the transformer alone and for the parts, under its models folder.
COMFY_TRANSFORMER_FOLDERS = ("unet", "diffusion_models", "checkpoints")
COMFY_PART_FOLDERS = {"clip_l": ("text_encoders", "clip"), "vae": ("vae",)}
COMFY_PART_FOLDERS["clip_g"] = COMFY_PART_FOLDERS["t5"] = COMFY_PART_FOLDERS["clip_l"]

# Not in the weights: FLUX.1's rotary axes for its 128-channel heads (the built-in tiny
# model's for its 16-channel heads).
_FLUX_ROPE_AXES = {128: (16, 56, 56), 16: (4, 6, 6)}


def _prefix_of(shapes: Shapes, marker: str) -> str | None:
    """The prefix under which `marker` is a key, None if it is not."""
    for key in shapes:
        if key.endswith(marker):
            return key[: -len(marker)]
    return None


# Weights every transformer of the family has: without them a file is not usable.
_ESSENTIAL = {
    "sd3": ("x_embedder.proj.weight", "context_embedder.weight", "pos_embed", "y_embedder.mlp.0.weight"),
    "flux": ("img_in.weight", "txt_in.weight", "vector_in.in_layer.weight", "final_layer.linear.weight"),
}


def flow_checkpoint_family(shapes: Shapes) -> str | None:
    """ "flux", "flux-schnell", "flux-fill" or "sd3" for a file with a FLUX.1 or SD3
    transformer in BFL's / Stability's layout (with or without ``model.diffusion_model.``);
    None for other files; UnsupportedCheckpoint for a transformer missing essential weights."""
    kind = "sd3"
    p = _prefix_of(shapes, SD3_MARKER)
    if p is None:
        kind, p = "flux", _prefix_of(shapes, FLUX_MARKER)
    if p is None or p not in ("", TRANSFORMER):
        return None
    lacking = [key for key in _ESSENTIAL[kind] if p + key not in shapes]
    if lacking:
        name = "SD3" if kind == "sd3" else "FLUX.1"
        raise UnsupportedCheckpoint(f"its {name} transformer is incomplete (no {lacking[0]}; damaged?)")
    if kind == "sd3":
        return "sd3"
    if shapes[p + "img_in.weight"][1] != shapes[p + "final_layer.linear.weight"][0]:
        return "flux-fill"
    return "flux" if _has(shapes, p + "guidance_in.") else "flux-schnell"


def _has(shapes: Shapes, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in shapes)


def _count(shapes: Shapes, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in shapes if (m := regex.match(key))})


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# -- configs from shapes (keys without prefix) ------------------------------------------


def derive_flux_config(shapes: Shapes) -> dict[str, Any]:
    hidden, in_channels = shapes["img_in.weight"]
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    if head_dim not in _FLUX_ROPE_AXES:
        raise UnsupportedCheckpoint(f"its transformer has {head_dim}-channel heads (FLUX.1 has 128)")
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": shapes["final_layer.linear.weight"][0],
        "num_layers": _count(shapes, r"double_blocks\.(\d+)\."),
        "num_single_layers": _count(shapes, r"single_blocks\.(\d+)\."),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "guidance_embeds": _has(shapes, "guidance_in."),
        "axes_dims_rope": _FLUX_ROPE_AXES[head_dim],
    }


def derive_sd3_config(shapes: Shapes) -> dict[str, Any]:
    hidden, in_channels, patch, _ = shapes["x_embedder.proj.weight"]
    qk_norm = "joint_blocks.0.x_block.attn.ln_q.weight" in shapes
    # Not in the weights without qk-norm (SD3 Medium): 64 channels a head, as every SD3.
    head_dim = shapes["joint_blocks.0.x_block.attn.ln_q.weight"][0] if qk_norm else 64
    pos_max = math.isqrt(shapes["pos_embed"][1])
    attn2 = sorted(
        {int(m[1]) for k in shapes if (m := re.match(r"joint_blocks\.(\d+)\.x_block\.attn2\.", k))}
    )
    return {
        "sample_size": min(128, pos_max),
        "patch_size": patch,
        "in_channels": in_channels,
        "num_layers": _count(shapes, r"joint_blocks\.(\d+)\."),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": shapes["context_embedder.weight"][1],
        "caption_projection_dim": shapes["context_embedder.weight"][0],
        "pooled_projection_dim": shapes["y_embedder.mlp.0.weight"][1],
        "out_channels": shapes["final_layer.linear.weight"][0] // (patch * patch),
        "pos_embed_max_size": pos_max,
        "qk_norm": "rms_norm" if qk_norm else None,
        "dual_attention_layers": tuple(attn2),
    }


def derive_flow_vae_config(shapes: Shapes, family: str) -> dict[str, Any]:
    """AutoencoderKL config of FLUX's / SD3's 16-channel VAE from its LDM keys (no prefix)."""
    levels = _count(shapes, r"encoder\.down\.(\d+)\.")
    scaling, shift = FLOW_VAE_FACTORS[base_family(family)]
    return {
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [shapes[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(levels)],
        "layers_per_block": _count(shapes, r"encoder\.down\.0\.block\.(\d+)\."),
        "latent_channels": shapes[VAE_KEY][1],
        "norm_num_groups": 32,
        "sample_size": 1024,
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
        "scaling_factor": scaling,
        "shift_factor": shift,
        "force_upcast": True,
    }


def derive_t5_config(shapes: Shapes) -> Any:
    from transformers import T5Config

    vocab, width = shapes["shared.weight"]
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    ff = shapes["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"][0]
    return T5Config(
        vocab_size=vocab,
        d_model=width,
        d_kv=shapes[T5_KEY][0] // heads,
        d_ff=ff,
        num_layers=_count(shapes, r"encoder\.block\.(\d+)\."),
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=4 * buckets,  # not in the weights: T5's 128 for 32 buckets
        feed_forward_proj="gated-gelu" if gated else "relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
    )


# -- finding the parts -------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    role: str  # "vae", "clip_l", "clip_g", "t5"
    path: Path
    prefix: str  # of the part's keys in the file
    width: int  # latent channels (VAE) or hidden width (text encoders)


def _role_by_name(path: Path) -> str | None:
    name = path.name.lower().replace("-", "_")
    for role, marks in (("clip_l", ("clip_l", "clipl")), ("clip_g", ("clip_g", "clipg")), ("t5", ("t5",))):
        if any(mark in name for mark in marks):
            return role
    return None


def parts_in(path: Path, shapes: Shapes) -> list[Part]:
    """The VAE and text encoders a file holds (an all-in-one file, or one part alone)."""
    found = []
    for role, prefixes in PART_PREFIXES.items():
        for prefix in prefixes:
            key = {"vae": VAE_KEY, "t5": T5_KEY}.get(role, CLIP_KEY)
            if prefix + key in shapes:
                found.append(Part(role, path, prefix, _width(shapes, prefix, role)))
                break
    if found:
        return found
    if VAE_KEY in shapes and "encoder.conv_in.weight" in shapes:
        return [Part("vae", path, "", _width(shapes, "", "vae"))]
    if T5_KEY in shapes and "shared.weight" in shapes:
        return [Part("t5", path, "", _width(shapes, "", "t5"))]
    if CLIP_KEY in shapes:
        width = _width(shapes, "", "clip_l")
        clip = _role_by_name(path)  # by name (clip_l.safetensors), else by width (CLIP-L 768, bigG 1280)
        if clip not in ("clip_l", "clip_g"):
            clip = {768: "clip_l", 1280: "clip_g"}.get(width)
        if clip is not None:
            return [Part(clip, path, "", width)]
    return []


def _width(shapes: Shapes, prefix: str, role: str) -> int:
    if role == "vae":
        return shapes[prefix + VAE_KEY][1]
    if role == "t5":
        return shapes[prefix + "shared.weight"][1]
    return shapes[prefix + CLIP_KEY][1]


def _fits(part: Part, family: str, transformer: dict[str, Any]) -> bool:
    if part.role == "vae":
        return part.width == 16
    if part.role == "t5":
        return part.width == transformer["joint_attention_dim"]
    if family != "sd3":
        return part.role == "clip_l" and part.width == transformer["pooled_projection_dim"]
    return part.width < transformer["pooled_projection_dim"]


def needed_roles(family: str) -> tuple[str, ...]:
    return ("vae", "clip_l", "clip_g", "t5") if family == "sd3" else ("vae", "clip_l", "t5")


def part_folders(path: Path) -> dict[str, list[Path]]:
    """Folders to look in for each part of the transformer at `path`: its own folder, then
    ComfyUI's part folders when it sits in a ComfyUI models tree."""
    folders: dict[str, list[Path]] = {role: [path.parent] for role in COMFY_PART_FOLDERS}
    for ancestor in list(path.parents)[:4]:
        if ancestor.name in COMFY_TRANSFORMER_FOLDERS:
            root = ancestor.parent
            for role, names in COMFY_PART_FOLDERS.items():
                folders[role] += [root / name for name in names if root / name != path.parent]
            break
    return folders


# Parts come as safetensors or pickles (GGUF text encoders use llama.cpp's keys: not read).
PART_SUFFIXES = (*SAFETENSORS_SUFFIXES, *PICKLE_SUFFIXES)


def _candidates(folder: Path) -> list[Path]:
    """Files that may be parts in `folder` and its subfolders."""
    if not folder.is_dir():
        return []
    found = []
    for depth_glob in ("*", "*/*"):
        found += [
            p for p in sorted(folder.glob(depth_glob)) if p.suffix.lower() in PART_SUFFIXES and p.is_file()
        ]
    return found


def find_parts(
    path: Path,
    shapes: Shapes,
    family: str,
    transformer: dict[str, Any],
    text_encoders: Sequence[Path] = (),
    vae: Path | None = None,
) -> dict[str, Part]:
    """The part of each role the model needs: given explicitly, else in the file, else the
    one fitting file in the folders around it. UnsupportedCheckpoint naming what is missing
    (and where it looked) or ambiguous."""
    roles = needed_roles(family)
    chosen: dict[str, Part] = {}
    given = [(Path(p).expanduser(), False) for p in text_encoders]
    if vae is not None:
        given.insert(0, (Path(vae).expanduser(), True))
    for explicit, is_vae in given:
        try:
            parts = [p for p in parts_in(explicit, read_shapes(explicit)) if (p.role == "vae") == is_vae]
        except (OSError, UnsupportedCheckpoint) as exc:
            raise UnsupportedCheckpoint(f"'{explicit}' cannot be read ({exc})") from exc
        if not parts:
            kind = "a VAE" if is_vae else "a text encoder (CLIP-L, CLIP-G or T5-XXL)"
            raise UnsupportedCheckpoint(f"'{explicit}' is not {kind}")
        # Parts of roles this family has no use for (CLIP-G for FLUX, given to `serve` for
        # its SD3 models) are left for the models that take them.
        for part in (p for p in parts if p.role in roles):
            if not _fits(part, family, transformer):
                raise UnsupportedCheckpoint(
                    f"'{explicit.name}' does not fit this {family} model "
                    f"(a {ROLE_NAMES[part.role]} {part.width} wide)"
                )
            chosen.setdefault(part.role, part)
    for part in parts_in(path, shapes):
        if part.role in roles:
            chosen.setdefault(part.role, part)
    if (
        family == "sd3"
        and "t5" not in chosen
        and {"clip_l", "clip_g"} <= chosen.keys()
        and chosen["clip_l"].path == path
    ):
        roles = tuple(r for r in roles if r != "t5")  # an SD3 file with its CLIPs only: no T5
    folders = part_folders(path)
    missing, ambiguous = [], []
    for role in roles:
        if role in chosen:
            continue
        fitting: list[Part] = []
        for folder in folders[role]:
            for candidate in _candidates(folder):
                if candidate == path:
                    continue
                try:
                    candidate_shapes = read_shapes(candidate)
                except (OSError, UnsupportedCheckpoint):
                    continue
                if _has(candidate_shapes, TRANSFORMER):
                    continue  # a whole checkpoint: its parts belong to its own model
                parts = parts_in(candidate, candidate_shapes)
                if len(parts) == 1 and parts[0].role == role and _fits(parts[0], family, transformer):
                    fitting.append(parts[0])
        unique = {p.path.resolve(): p for p in fitting}
        if len(unique) == 1:
            chosen[role] = next(iter(unique.values()))
        elif unique:
            names = ", ".join(sorted(p.path.name for p in unique.values()))
            option = "--vae" if role == "vae" else "--text-encoder"
            ambiguous.append(
                f"several files could be its {ROLE_NAMES[role]} ({names}): choose one with {option}"
            )
        else:
            where = ", ".join(str(f) for f in folders[role])
            missing.append(f"no {ROLE_NAMES[role]} (looked in the file and in {where})")
    if missing or ambiguous:
        raise UnsupportedCheckpoint(
            f"it is a {family} transformer but "
            + "; ".join([*missing, *ambiguous])
            + " (give them with --text-encoder FILE and --vae FILE)"
        )
    if family == "sd3" and "clip_g" in chosen:
        widths = chosen["clip_l"].width + chosen["clip_g"].width
        if widths != transformer["pooled_projection_dim"]:
            raise UnsupportedCheckpoint(
                f"its CLIP-L and CLIP-G text encoders give {widths} pooled features, "
                f"the transformer takes {transformer['pooled_projection_dim']}"
            )
    return chosen


# -- building ---------------------------------------------------------------------------


def _meta(cls: Any, config: Any) -> Any:
    with torch.device("meta"):
        return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)


def _convert_flux(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers' FLUX conversion; it splits the single blocks' fused projection for
    FLUX.1's width (3072) only, so other widths (the tiny model) split it here."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    inner = config["num_attention_heads"] * config["attention_head_dim"]
    fused: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if inner != 3072:
        for i in range(config["num_single_layers"]):
            weight, bias = (
                state[f"single_blocks.{i}.linear1.weight"],
                state[f"single_blocks.{i}.linear1.bias"],
            )
            fused[i] = (weight, bias)
            state[f"single_blocks.{i}.linear1.weight"] = torch.empty(7 * 3072, 1, device="meta")
            state[f"single_blocks.{i}.linear1.bias"] = torch.empty(7 * 3072, device="meta")
    converted = convert_flux_transformer_checkpoint_to_diffusers(state)
    sizes = (inner, inner, inner, 4 * inner)
    for i, (weight, bias) in fused.items():
        block = f"single_transformer_blocks.{i}."
        for name, w, b in zip(
            ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
            torch.split(weight, sizes),
            torch.split(bias, sizes),
            strict=True,
        ):
            converted[block + name + ".weight"], converted[block + name + ".bias"] = w, b
    return converted


def _t5_tokenizer(vocab_size: int) -> Any:
    from .tokenizers import TINY_T5_VOCAB_SIZE, build_t5_tokenizer

    if vocab_size == TINY_T5_VOCAB_SIZE:
        return build_t5_tokenizer("tiny")
    tokenizer = build_t5_tokenizer("t5xxl")
    if vocab_size < len(tokenizer):
        raise UnsupportedCheckpoint(
            f"its T5 text encoder has a vocabulary of {vocab_size} tokens, fewer than T5-XXL's "
            f"{len(tokenizer)}; use a diffusers folder of the model, which carries its own tokenizer"
        )
    return tokenizer


def _build_parts(
    family: str, parts: dict[str, Part], states: dict[Path, dict[str, torch.Tensor]]
) -> dict[str, Any]:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    from .tokenizers import tokenizer_for_vocab_size

    built: dict[str, Any] = {}
    vae_state = _strip(states[parts["vae"].path], parts["vae"].prefix)
    vae_shapes = {k: tuple(v.shape) for k, v in vae_state.items()}
    vae_config = derive_flow_vae_config(vae_shapes, family)
    vae = _meta(AutoencoderKL, vae_config)
    _load_strict(
        vae,
        convert_ldm_vae_checkpoint({"first_stage_model." + k: v for k, v in vae_state.items()}, vae_config),
        "VAE",
    )
    built["vae"] = vae
    for role in ("clip_l", "clip_g"):
        if role not in parts:
            continue
        state = _strip(states[parts[role].path], parts[role].prefix)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        tokenizer = tokenizer_for_vocab_size(
            shapes[CLIP_KEY][0], pad_token="!" if role == "clip_g" else "<|endoftext|>"
        )
        config = derive_text_config(shapes, "text_model.", tokenizer)
        config.hidden_act = "gelu" if role == "clip_g" else "quick_gelu"  # OpenCLIP bigG / OpenAI L
        with_projection = family == "sd3"
        if with_projection:
            if "text_projection.weight" not in shapes:
                raise UnsupportedCheckpoint(f"its {ROLE_NAMES[role]} has no text projection, which SD3 needs")
            config.projection_dim = shapes["text_projection.weight"][0]
        else:
            state.pop("text_projection.weight", None)
        model = _meta(CLIPTextModelWithProjection if with_projection else CLIPTextModel, config)
        _load_strict(model, _text_state_dict(model, state), ROLE_NAMES[role])
        built[role], built[role + "_tokenizer"] = model, tokenizer
    if "t5" in parts:
        state = _strip(states[parts["t5"].path], parts["t5"].prefix)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
        t5 = _meta(T5EncoderModel, derive_t5_config(shapes))
        _load_strict(t5, state, ROLE_NAMES["t5"])
        built["t5"], built["t5_tokenizer"] = t5, _t5_tokenizer(shapes["shared.weight"][0])
    return built


def load_flow_single_file(
    path: Path,
    dtype: torch.dtype = torch.float32,
    text_encoders: Sequence[Path] = (),
    vae: Path | None = None,
) -> tuple[Any, str]:
    """(FluxPipeline / FluxFillPipeline / StableDiffusion3Pipeline, family) of the FLUX.1 or
    SD3 transformer in the file at `path` with its VAE and text encoders (see the module's
    docstring for where they are found)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from .flow_models import assemble_flow_pipeline

    shapes = read_shapes(path)
    family = flow_checkpoint_family(shapes)
    if family is None:
        raise UnsupportedCheckpoint("no FLUX.1 or SD3 transformer in it")
    prefix = TRANSFORMER if _has(shapes, TRANSFORMER) else ""
    transformer_shapes = {k[len(prefix) :]: s for k, s in shapes.items() if k.startswith(prefix)}
    try:
        config = (
            derive_sd3_config(transformer_shapes)
            if family == "sd3"
            else derive_flux_config(transformer_shapes)
        )
    except KeyError as exc:
        raise _inconsistent(exc) from exc
    parts = find_parts(path, shapes, family, config, text_encoders, vae)
    states: dict[Path, dict[str, torch.Tensor]] = {}
    for file in (path, *(part.path for part in parts.values())):
        if file not in states:
            states[file] = unscale_fp8(read_state_dict(file), dtype)
    try:
        state = _strip(states[path], prefix) if prefix else dict(states[path])
        cls = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
        transformer = _meta(cls, config)
        if family == "sd3":
            converted = convert_sd3_transformer_checkpoint_to_diffusers(state)
        else:
            converted = _convert_flux(state, config)
        if path.suffix.lower() == GGUF_SUFFIX:
            _check_keys(transformer, converted, "transformer")
            transformer = _quantised(cls, config, converted, dtype)
        else:
            _load_strict(transformer, converted, "transformer")
        built = _build_parts(family, parts, states)
    except UnsupportedCheckpoint:
        raise
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise _inconsistent(exc) from exc
    if family == "sd3":
        pipe = assemble_flow_pipeline(
            family,
            built["vae"],
            transformer,
            built["clip_l"],
            built["clip_l_tokenizer"],
            built["clip_g"],
            built["clip_g_tokenizer"],
            built.get("t5"),
            built.get("t5_tokenizer"),
        )
    else:
        pipe = assemble_flow_pipeline(
            family,
            built["vae"],
            transformer,
            built["clip_l"],
            built["clip_l_tokenizer"],
            built["t5"],
            built["t5_tokenizer"],
        )
    kept = path.suffix.lower() == GGUF_SUFFIX or keep_float8(transformer, dtype)
    _finish(pipe, dtype, skip=("transformer",) if kept else ())
    return pipe, family


def _quantised(
    cls: Any, config: dict[str, Any], converted: dict[str, torch.Tensor], dtype: torch.dtype
) -> Any:
    """The transformer with a GGUF file's weights, quantised ones kept quantised (diffusers'
    GGUF layers dequantise each weight to `dtype` as it runs), the config given, not fetched."""
    import json
    import tempfile

    from diffusers import GGUFQuantizationConfig

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(
            json.dumps({"_class_name": cls.__name__, **config}), encoding="utf-8"
        )
        return cls.from_single_file(
            converted,
            config=folder,
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
            dtype=dtype,
            local_files_only=True,
        )


SCALED_FP8_MARKER = "scaled_fp8"


def unscale_fp8(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """ComfyUI's "scaled fp8" files store each fp8 weight divided by its ``<name>.scale_weight``
    (with a ``scaled_fp8`` marker and, for fp8 matmuls, ``<name>.scale_input``): the weights
    as weight * scale_weight in `dtype`. Other files are returned as they are."""
    if not any(k.endswith((SCALED_FP8_MARKER, ".scale_weight")) for k in state):
        return state
    unscaled = {}
    for key, value in state.items():
        if key.endswith((SCALED_FP8_MARKER, ".scale_weight", ".scale_input")):
            continue
        scale = state.get(key.removesuffix("weight") + "scale_weight") if key.endswith(".weight") else None
        unscaled[key] = value if scale is None else (value.float() * scale.float()).to(dtype)
    return unscaled


FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def keep_float8(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Keep a model's float8 linear layers (an fp8 file's) in float8, each cast to `dtype`
    while it runs (diffusers' layerwise casting); every other weight in `dtype`. False (and
    nothing done) when no linear layer is all float8."""
    from diffusers.hooks import apply_layerwise_casting

    kept = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        storage = {p.dtype for p in own}
        if isinstance(module, torch.nn.Linear) and len(storage) == 1 and storage <= set(FLOAT8):
            apply_layerwise_casting(module, storage.pop(), dtype, skip_modules_pattern=())
            kept += 1
        else:
            for param in own:
                if param.is_floating_point() and param.dtype != dtype:
                    param.data = param.data.to(dtype)
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and buffer.dtype != dtype:
                    setattr(module, name, buffer.to(dtype))
    if kept:
        model.eval().requires_grad_(False)
    else:
        model.to(dtype=dtype)
    return kept > 0
