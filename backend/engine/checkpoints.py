"""Loading Stable Diffusion checkpoints offline: single files and diffusers folders.

diffusers' single-file loader fetches each component's config (and the tokenizers) from
the Hub. Here they are derived instead: the family and every architecture number from
the state dict's keys and shapes, the few facts weights cannot carry (attention head
counts, scheduler, VAE scaling) from the family, and the CLIP tokenizer from the BPE
merges shipped with the engine. The weights are converted with diffusers' own
conversion functions and loaded strictly, so a wrong derivation fails loudly.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .configs import (
    FLOW_FAMILIES,
    SD15_SCHEDULER_CONFIG,
    SDXL_SCHEDULER_CONFIG,
    VAE_SCALING_FACTOR,
    base_family,
)

# .sft: safetensors under another name (BFL's flux1-dev.sft, ae.sft); .pt / .pth: pickles as .ckpt.
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
GGUF_SUFFIX = ".gguf"  # quantised FLUX.1 / SD3 transformers (gguf_files.py)
CHECKPOINT_SUFFIXES = (*SAFETENSORS_SUFFIXES, *PICKLE_SUFFIXES, GGUF_SUFFIX)

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD15_CLIP = "cond_stage_model.transformer.text_model."
SD15_CLIP_LEGACY = "cond_stage_model.transformer."  # saved by old transformers, no text_model.
SD2_OPENCLIP = "cond_stage_model.model."
SDXL_CLIP = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP = "conditioner.embedders.1.model."
SDXL_REFINER_OPENCLIP = "conditioner.embedders.0.model."

Shapes = Mapping[str, tuple[int, ...]]


class UnsupportedCheckpoint(ValueError):
    """The file is readable but is not an SD1.x / SDXL (inpainting) checkpoint."""


# -- reading ---------------------------------------------------------------------------


def _unwrap(state: Any) -> dict[str, Any]:
    while isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UnsupportedCheckpoint("the file holds no state dict")
    return state


def _torch_load(path: Path, mmap: bool) -> dict[str, Any]:
    kind = path.suffix.lower() if path.suffix.lower() in PICKLE_SUFFIXES else ".ckpt"
    try:
        # weights_only: a .ckpt is a pickle; never run code from one.
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True, mmap=mmap))
    except (UnsupportedCheckpoint, OSError):
        raise
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):  # legacy (pre-zip) format cannot be memory-mapped
            return _torch_load(path, mmap=False)
        raise _unreadable(kind) from exc
    except Exception as exc:  # the unpickler's errors: damaged files, or code in the pickle
        if "Unsupported global" in str(exc):
            raise UnsupportedCheckpoint(
                f"the {kind} contains Python objects besides tensors and cannot be loaded safely; "
                "convert it to .safetensors"
            ) from exc
        raise _unreadable(kind) from exc


def _unreadable(kind: str, exc: Exception | None = None) -> UnsupportedCheckpoint:
    """A truncated download or a damaged file: say so (with the reader's first line, if short)."""
    lines = str(exc).strip().splitlines() if exc is not None else []
    detail = f": {lines[0]}" if lines and len(lines[0]) <= 100 else ""
    return UnsupportedCheckpoint(f"it is not a readable {kind} file (damaged or incomplete?){detail}")


def _plain_os_error(exc: OSError) -> OSError:
    """The error of a file that went away or cannot be read, saying why without its path.

    safetensors' OSErrors carry the path in their text and no errno; a file listed a while
    ago may have been moved or deleted since (the daemon lists models at start-up).
    """
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, "it is no longer there (moved or deleted?)")
    if exc.strerror:
        return exc
    found = re.search(r"os error (\d+)", str(exc))
    code = int(found[1]) if found else errno.EIO
    return OSError(code, os.strerror(code))


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape without reading the weights (safetensors header; GGUF's tensor list, logical
    shapes; a pickle memory-mapped)."""
    try:
        if path.suffix.lower() == GGUF_SUFFIX:
            from .gguf_files import read_gguf_shapes

            return read_gguf_shapes(path)
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(path), framework="pt") as f:
                    return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 - not a dict
            except SafetensorError as exc:
                raise _unreadable(".safetensors", exc) from exc
        state = _torch_load(path, mmap=True)
    except OSError as exc:
        raise _plain_os_error(exc) from exc
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Key -> tensor; a GGUF file's quantised weights as diffusers' GGUFParameters."""
    try:
        if path.suffix.lower() == GGUF_SUFFIX:
            from .gguf_files import read_gguf_state_dict

            return read_gguf_state_dict(path)
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                return load_file(str(path), device="cpu")
            except SafetensorError as exc:
                raise _unreadable(".safetensors", exc) from exc
        return {k: v for k, v in _torch_load(path, mmap=True).items() if isinstance(v, torch.Tensor)}
    except OSError as exc:
        raise _plain_os_error(exc) from exc


# -- what is it ------------------------------------------------------------------------


def _has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in shapes)


# Keys that only FLUX.1's and SD3's own (BFL / Stability) layouts have, with or without a prefix.
_FLOW_MARKERS = {
    "double_blocks.0.img_attn.qkv.weight": "FLUX.1",
    "joint_blocks.0.x_block.attn.qkv.weight": "SD3",
}


def _flow_checkpoint_kind(shapes: Shapes) -> str | None:
    for key in shapes:
        for marker, kind in _FLOW_MARKERS.items():
            if key.endswith(marker):
                return kind
    return None


def detect_family(shapes: Shapes) -> str:
    """ "sd15", "sdxl", "sd15-inpaint" or "sdxl-inpaint"; for a FLUX.1 or SD3 transformer
    (alone or with its parts) "flux", "flux-schnell", "flux-fill" or "sd3";
    UnsupportedCheckpoint otherwise."""
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    flow = _flow_checkpoint_kind(shapes) if conv_in is None else None
    if flow is not None:
        from .flow_checkpoints import flow_checkpoint_family

        family = flow_checkpoint_family(shapes)
        if family is None:
            raise UnsupportedCheckpoint(
                f"its {flow} transformer is stored under a prefix this version does not know"
            )
        return family
    if conv_in is None:
        raise UnsupportedCheckpoint("no Stable Diffusion UNet in it (a LoRA, VAE or embedding?)")
    in_channels = conv_in[1]
    if in_channels not in (4, 9):
        raise UnsupportedCheckpoint(
            f"its UNet takes {in_channels} input channels (only 4 and 9 are supported)"
        )
    suffix = "-inpaint" if in_channels == 9 else ""
    if _has_prefix(shapes, SDXL_OPENCLIP) and _has_prefix(shapes, SDXL_CLIP):
        return "sdxl" + suffix
    if _has_prefix(shapes, SDXL_REFINER_OPENCLIP):
        raise UnsupportedCheckpoint("it is an SDXL refiner, which cannot inpaint on its own")
    if _has_prefix(shapes, SD2_OPENCLIP):
        raise UnsupportedCheckpoint("it is a Stable Diffusion 2.x checkpoint (not supported)")
    if _has_prefix(shapes, SD15_CLIP_LEGACY):
        return "sd15" + suffix
    raise UnsupportedCheckpoint("its text encoder is not the one of SD1.x or SDXL")


# -- configs from shapes ---------------------------------------------------------------


def _count(shapes: Shapes, pattern: str) -> int:
    """Number of distinct values of the (\\d+) group in `pattern` among the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for key in shapes if (m := regex.match(key))})


def derive_unet_config(shapes: Shapes, family: str) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel config from the LDM UNet's keys and shapes."""
    conv_in = shapes[UNET + "input_blocks.0.0.weight"]
    levels: list[dict[str, int]] = []
    level: dict[str, int] | None = None
    num_input_blocks = _count(shapes, re.escape(UNET) + r"input_blocks\.(\d+)\.")
    for i in range(1, num_input_blocks):
        block = f"{UNET}input_blocks.{i}."
        if block + "0.op.weight" in shapes:  # a downsampler closes the level
            level = None
            continue
        if level is None:
            level = {"channels": 0, "resnets": 0, "depth": 0}
            levels.append(level)
        level["channels"] = shapes[block + "0.out_layers.3.weight"][0]
        level["resnets"] += 1
        level["depth"] = _count(shapes, re.escape(block) + r"1\.transformer_blocks\.(\d+)\.")

    if not levels or len({lv["resnets"] for lv in levels}) != 1:
        raise UnsupportedCheckpoint("its UNet blocks do not follow the Stable Diffusion layout")
    block_out_channels = [lv["channels"] for lv in levels]
    has_attention = [lv["depth"] > 0 for lv in levels]
    depths = [lv["depth"] or 1 for lv in levels]
    mid_depth = _count(shapes, re.escape(UNET) + r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    if mid_depth != depths[-1]:
        raise UnsupportedCheckpoint("its UNet's middle block does not follow the Stable Diffusion layout")

    attn_k = next(
        shape for key, shape in shapes.items() if key.startswith(UNET) and key.endswith("attn2.to_k.weight")
    )
    proj_in = next(
        shape for key, shape in shapes.items() if key.startswith(UNET) and key.endswith("proj_in.weight")
    )
    is_sdxl = base_family(family) == "sdxl"
    config: dict[str, Any] = {
        "sample_size": 128 if is_sdxl else 64,
        "in_channels": conv_in[1],
        "out_channels": shapes[UNET + "out.2.weight"][0],
        "block_out_channels": block_out_channels,
        "layers_per_block": levels[0]["resnets"],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attention)],
        "transformer_layers_per_block": depths if len(set(depths)) > 1 else depths[0],
        "cross_attention_dim": attn_k[1],
        "use_linear_projection": len(proj_in) == 2,
        # Not in the weights: SD1.x uses 8 heads everywhere, SDXL 64 channels per head.
        # (diffusers' `attention_head_dim` is, for these UNets, the number of heads.)
        "attention_head_dim": [max(1, c // 64) for c in block_out_channels] if is_sdxl else 8,
    }
    time_embed = shapes[UNET + "time_embed.0.weight"][0]
    if time_embed != 4 * block_out_channels[0]:
        config["time_embedding_dim"] = time_embed
    if is_sdxl:
        added_in = shapes[UNET + "label_emb.0.0.weight"][1]
        pooled_dim = shapes[SDXL_OPENCLIP + "text_projection"][1]
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=(added_in - pooled_dim) // 6,  # 6 numbers: size, crop, size
            projection_class_embeddings_input_dim=added_in,
        )
    return config


def derive_vae_config(shapes: Shapes, family: str) -> dict[str, Any]:
    num_levels = _count(shapes, re.escape(VAE) + r"encoder\.down\.(\d+)\.")
    return {
        "in_channels": shapes[VAE + "encoder.conv_in.weight"][1],
        "out_channels": shapes[VAE + "decoder.conv_out.weight"][0],
        "down_block_types": ["DownEncoderBlock2D"] * num_levels,
        "up_block_types": ["UpDecoderBlock2D"] * num_levels,
        "block_out_channels": [
            shapes[f"{VAE}encoder.down.{i}.block.0.conv2.weight"][0] for i in range(num_levels)
        ],
        "layers_per_block": _count(shapes, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\."),
        "latent_channels": shapes[VAE + "post_quant_conv.weight"][0],
        "sample_size": 1024 if base_family(family) == "sdxl" else 512,
        "scaling_factor": VAE_SCALING_FACTOR[base_family(family)],
        "force_upcast": base_family(family) == "sdxl",
    }


def derive_text_config(shapes: Shapes, prefix: str, tokenizer: Any) -> Any:
    """CLIPTextConfig for the HF-layout CLIP (SD1.x, SDXL's first) or OpenCLIP (SDXL's second)."""
    from transformers import CLIPTextConfig

    if prefix == SDXL_OPENCLIP:
        vocab, hidden = shapes[prefix + "token_embedding.weight"]
        positions = shapes[prefix + "positional_embedding"][0]
        layers = _count(shapes, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
        intermediate = shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0]
        projection = shapes[prefix + "text_projection"][1]
        hidden_act = "gelu"  # OpenCLIP ViT-bigG
    else:
        vocab, hidden = shapes[prefix + "embeddings.token_embedding.weight"]
        positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
        layers = _count(shapes, re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
        intermediate = shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0]
        projection = hidden
        hidden_act = "quick_gelu"  # OpenAI CLIP ViT-L
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),  # 64 channels per head in every CLIP here
        max_position_embeddings=positions,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# -- building --------------------------------------------------------------------------


def assemble_pipeline(
    family: str,
    vae: Any,
    unet: Any,
    text_encoder: Any,
    tokenizer: Any,
    text_encoder_2: Any = None,
    tokenizer_2: Any = None,
) -> Any:
    """A StableDiffusion(XL)Pipeline of these components with the family's reference scheduler.

    SD1.x: PNDM, no safety checker. SDXL (which needs the second text encoder and
    tokenizer): Euler. The single-file loader, the built-in tiny models and the benchmark
    all assemble their pipelines here.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.schedulers import EulerDiscreteScheduler, PNDMScheduler

    if base_family(family) == "sdxl":
        if text_encoder_2 is None or tokenizer_2 is None:
            raise ValueError("an SDXL pipeline needs its second text encoder and tokenizer")
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        )
    if text_encoder_2 is not None or tokenizer_2 is not None:
        raise ValueError(f"a {family} pipeline has one text encoder and tokenizer")
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _check_keys(model: torch.nn.Module, state_dict: Mapping[str, Any], what: str) -> None:
    """Fail naming what is missing or left over unless `state_dict` has every weight of `model`."""
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        sample = sorted(missing)[:3] + sorted(unexpected)[:3]
        raise UnsupportedCheckpoint(
            f"its {what} does not match the derived architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected weights, e.g. {sample})"
        )


def _load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Load every parameter, or fail naming what is missing or left over."""
    _check_keys(model, state_dict, what)
    model.load_state_dict(state_dict, strict=True, assign=True)
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            # Non-persistent buffers are not in checkpoints; CLIP's position ids are the only ones.
            if not name.endswith("position_ids"):
                raise UnsupportedCheckpoint(f"its {what} left the buffer {name} unset")
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            owner.position_ids = torch.arange(buffer.shape[-1]).expand((1, -1))


def _text_state_dict(model: torch.nn.Module, converted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Match converted CLIP keys to this transformers version's module layout."""
    converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
    converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    if hasattr(model, "text_model"):  # CLIPTextModel is flattened in newer transformers only
        converted = {
            k if k == "text_projection.weight" else "text_model." + k: v for k, v in converted.items()
        }
    return converted


def pipeline_from_state_dict(
    state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> tuple[Any, str]:
    """(diffusers StableDiffusion(XL)Pipeline, family) from an LDM-layout state dict, offline.

    UnsupportedCheckpoint when the weights are not those of a supported family, or do not
    fit together (a weight missing or of the wrong shape: a damaged file)."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    family = detect_family(shapes)
    if family in FLOW_FAMILIES:
        raise UnsupportedCheckpoint(
            f"it is a {family} model, which loads from its file with its parts, not from a state dict"
        )
    try:
        pipe = _pipeline_of_family(state_dict, shapes, family)
    except UnsupportedCheckpoint:
        raise
    except (KeyError, IndexError, ValueError, RuntimeError, StopIteration) as exc:
        # A file damaged inside (its header read fine): a weight missing, or of the wrong
        # shape, found by the derivation or by diffusers' converters and load_state_dict.
        if "out of memory" in str(exc).lower() or "can't allocate" in str(exc).lower():
            raise
        raise _inconsistent(exc) from exc
    _finish(pipe, dtype)
    return pipe, family


def _inconsistent(exc: BaseException) -> UnsupportedCheckpoint:
    if isinstance(exc, KeyError) and exc.args:
        detail = f"the weight {str(exc.args[0])[:100]} is missing"
    else:
        lines = str(exc).strip().splitlines()
        detail = lines[0].rstrip(":") if lines and len(lines[0]) <= 100 else type(exc).__name__
    return UnsupportedCheckpoint(
        f"its weights do not fit together (damaged, or a layout this version cannot read): {detail}"
    )


def _pipeline_of_family(state_dict: dict[str, torch.Tensor], shapes: Shapes, family: str) -> Any:
    """The pipeline of `family` from the LDM-layout `state_dict` (`_finish` then sets its dtype)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizers import tokenizer_for_vocab_size

    def build(cls: Any, config: Any) -> Any:
        with torch.device("meta"):
            return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)

    unet_config = derive_unet_config(shapes, family)
    unet = build(UNet2DConditionModel, unet_config)
    _load_strict(unet, convert_ldm_unet_checkpoint(state_dict, unet_config), "UNet")

    vae_config = derive_vae_config(shapes, family)
    vae = build(AutoencoderKL, vae_config)
    _load_strict(vae, convert_ldm_vae_checkpoint(state_dict, vae_config), "VAE")

    if base_family(family) == "sdxl":
        tokenizer = tokenizer_for_vocab_size(shapes[SDXL_CLIP + "embeddings.token_embedding.weight"][0])
        tokenizer_2 = tokenizer_for_vocab_size(
            shapes[SDXL_OPENCLIP + "token_embedding.weight"][0], pad_token="!"
        )
        text_encoder = build(CLIPTextModel, derive_text_config(shapes, SDXL_CLIP, tokenizer))
        _load_strict(
            text_encoder,
            _text_state_dict(text_encoder, convert_ldm_clip_checkpoint(state_dict)),
            "text encoder",
        )
        text_encoder_2 = build(
            CLIPTextModelWithProjection, derive_text_config(shapes, SDXL_OPENCLIP, tokenizer_2)
        )
        converted = convert_open_clip_checkpoint(text_encoder_2, state_dict, prefix=SDXL_OPENCLIP)
        _load_strict(text_encoder_2, _text_state_dict(text_encoder_2, converted), "second text encoder")
        pipe = assemble_pipeline(family, vae, unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2)
    else:
        prefix = SD15_CLIP if _has_prefix(shapes, SD15_CLIP) else SD15_CLIP_LEGACY
        tokenizer = tokenizer_for_vocab_size(shapes[prefix + "embeddings.token_embedding.weight"][0])
        text_encoder = build(CLIPTextModel, derive_text_config(shapes, prefix, tokenizer))
        _load_strict(
            text_encoder,
            _text_state_dict(text_encoder, convert_ldm_clip_checkpoint(state_dict)),
            "text encoder",
        )
        pipe = assemble_pipeline(family, vae, unet, text_encoder, tokenizer)
    return pipe


def load_single_file(
    path: Path,
    dtype: torch.dtype = torch.float32,
    text_encoders: Sequence[Path] = (),
    vae: Path | None = None,
) -> tuple[Any, str]:
    """(pipeline, family) of a single-file checkpoint. FLUX.1 and SD3 take their text
    encoders and VAE from the file, from `text_encoders` / `vae`, or from the ComfyUI
    folders around it (flow_checkpoints.py); SD1.x and SDXL files hold everything."""
    from .configs import is_flow

    try:
        family: str | None = detect_family(read_shapes(path))
    except UnsupportedCheckpoint:
        if path.suffix.lower() == GGUF_SUFFIX:
            raise
        family = None
    if family is not None and is_flow(family):
        from .flow_checkpoints import load_flow_single_file

        return load_flow_single_file(path, dtype, text_encoders, vae)
    if path.suffix.lower() == GGUF_SUFFIX:
        raise UnsupportedCheckpoint(
            f"it is a {family} model; GGUF files load FLUX.1 and SD3 transformers only"
        )
    return pipeline_from_state_dict(read_state_dict(path), dtype)


def _finish(pipe: Any, dtype: torch.dtype, skip: Sequence[str] = ()) -> None:
    """Every component in `dtype` and in eval mode (but those named in `skip`: already done)."""
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module) and name not in skip:
            # Checkpoints may mix precisions (an fp32 VAE, fp32 norms in an fp16 UNet).
            if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
                module.to(dtype=dtype)
            module.eval().requires_grad_(False)


# -- diffusers folders -----------------------------------------------------------------


def folder_family(folder: Path) -> str:
    """Family of a diffusers folder from its model_index.json and unet/config.json (FLUX.1
    and SD3: transformer/config.json)."""
    from .flow_models import flow_folder_family

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        if index.get("transformer"):  # FLUX.1 or SD3: a transformer where SD has its UNet
            transformer = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
            flow = flow_folder_family(index, transformer)
            if flow is None:
                raise UnsupportedCheckpoint(
                    f"it is a {index.get('_class_name', 'pipeline')}, not FLUX.1 or SD3"
                )
            return flow
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, UnsupportedCheckpoint):
            raise
        raise UnsupportedCheckpoint(f"not a readable diffusers folder ({exc})") from exc
    if "text_encoder" not in index or not index.get("text_encoder") or index["text_encoder"][0] is None:
        raise UnsupportedCheckpoint("it has no text encoder (an SDXL refiner?)")
    in_channels = unet.get("in_channels", 4)
    if in_channels not in (4, 9):
        raise UnsupportedCheckpoint(
            f"its UNet takes {in_channels} input channels (only 4 and 9 are supported)"
        )
    suffix = "-inpaint" if in_channels == 9 else ""
    if unet.get("addition_embed_type") == "text_time" and index.get("text_encoder_2"):
        return "sdxl" + suffix
    if unet.get("cross_attention_dim") == 1024:
        raise UnsupportedCheckpoint("it is a Stable Diffusion 2.x model (not supported)")
    if unet.get("addition_embed_type") is None and unet.get("class_embed_type") is None:
        return "sd15" + suffix
    raise UnsupportedCheckpoint(f"it is a {index.get('_class_name', 'pipeline')}, not SD1.x or SDXL")


def load_folder(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, str]:
    from diffusers import (
        FluxFillPipeline,
        FluxPipeline,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    family = folder_family(folder)
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    if family == "sd3":  # FLUX and SD3 keep the folder's own scheduler and tokenizers
        cls: Any = StableDiffusion3Pipeline
    elif family == "flux-fill":
        cls = FluxFillPipeline
    elif base_family(family) == "flux":
        cls = FluxPipeline
    elif base_family(family) == "sdxl":
        cls = StableDiffusionXLPipeline
    else:
        cls = StableDiffusionPipeline
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipe = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as exc:
        # Some folders ship only the half-precision variant of their weights.
        try:
            pipe = cls.from_pretrained(str(folder), variant="fp16", **kwargs)
        except (OSError, ValueError):
            # The first error says what is wrong with the folder; the retry's only that
            # there is no fp16 variant either.
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnsupportedCheckpoint(f"its weights could not be loaded ({first_line})") from exc
    _finish(pipe, dtype)
    return pipe, family
