"""ControlNets: found where painters keep them, loaded offline, and their residuals per step.

A ControlNet spec is one of:

- ``builtin:tiny-controlnet-sd15``, ``builtin:tiny-controlnet-sdxl``,
  ``builtin:tiny-controlnet-union-sdxl``, ``builtin:tiny-controlnet-flux``,
  ``builtin:tiny-controlnet-union-flux``,
  ``builtin:tiny-controlnet-sd3``  tiny random ControlNets that fit the built-in tiny
                        models (tests; they steer nothing meaningful, the same in every process);
- ``hf:ORG/NAME``       a diffusers ControlNet in the Hugging Face cache (never downloaded);
- a discovered name     a file or diffusers folder found in the ControlNet folders (below),
                        named by its path relative to that folder, or by its file stem when unique;
- a path                (where paths are allowed: not for the daemon's clients) to a single file
                        (.safetensors, .pth, .ckpt: diffusers' key layout or the original one,
                        ``control_v11p_sd15_canny.pth``) or a diffusers folder (config.json +
                        weights). A single file's architecture is read from its tensors' shapes.

ControlNet folders: ComfyUI's ``models/controlnet``, Automatic1111's ``models/ControlNet`` (and
its extension's ``extensions/sd-webui-controlnet/models``) in every installation the checkpoints
are searched in (catalog.py), the folders given with ``--controlnet-dir``, and the Hugging Face
cache. The family a ControlNet fits (sd15, sdxl, flux, sd3) is read from its shapes; the kinds it takes
from its name (``..._canny...``), every kind for a ControlNet Union.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...protocol import ControlParams
from .catalog import HF_PREFIX, FileMemo, SearchFolder, search_folders, walk_models
from .checkpoints import UnsupportedCheckpoint, read_shapes, read_state_dict
from .configs import base_family
from .errors import InvalidRequest, UnknownModel
from .tiny import (
    BUILTIN_PREFIX,
    SEED,
    tiny_flux_transformer_config,
    tiny_sd3_transformer_config,
    tiny_unet_config,
)

CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt")
# name -> family
BUILTIN_CONTROLNETS: dict[str, str] = {
    "tiny-controlnet-sd15": "sd15",
    "tiny-controlnet-sdxl": "sdxl",
    "tiny-controlnet-union-sdxl": "sdxl",
    "tiny-controlnet-flux": "flux",
    "tiny-controlnet-union-flux": "flux",
    "tiny-controlnet-sd3": "sd3",
}
# The ControlNets of the flow families (diffusers' classes), by family.
FLOW_CONTROLNET_CLASSES: dict[str, str] = {"flux": "FluxControlNetModel", "sd3": "SD3ControlNetModel"}
# ControlNet Union, one model for several kinds: the index of each kind it takes, by family.
# SDXL: xinsir's ControlNet++ (its "control type").
_SDXL_UNION: dict[str, int] = {
    "pose": 0,
    "openpose": 0,
    "depth": 1,
    "softedge": 2,
    "hed": 2,
    "scribble": 2,
    "canny": 3,
    "lineart": 3,
    "mlsd": 3,
    "normal": 4,
    "segment": 5,
    "seg": 5,
    "tile": 6,
    "inpaint": 7,
    "repaint": 7,
}
# FLUX.1: InstantX's and Shakker-Labs' Union (its "control mode"; Union Pro 2.0 takes none).
# Line art and scribbles are edges to it, as canny's are.
_FLUX_UNION: dict[str, int] = {
    "canny": 0,
    "lineart": 0,
    "scribble": 0,
    "tile": 1,
    "depth": 2,
    "blur": 3,
    "pose": 4,
    "openpose": 4,
    "gray": 5,
    "low-quality": 6,
}
UNION_KINDS: dict[str, dict[str, int]] = {"sdxl": _SDXL_UNION, "flux": _FLUX_UNION}
# The words a ControlNet's file name carries for the kinds it was trained on.
_KIND_WORDS: dict[str, tuple[str, ...]] = {
    "canny": ("canny",),
    "depth": ("depth",),
    "lineart": ("lineart", "line_art", "line-art", "anime"),
    "scribble": ("scribble", "sketch"),
    "softedge": ("softedge", "hed", "pidi"),
    "pose": ("pose",),
    "openpose": ("pose",),
    "tile": ("tile",),
    "inpaint": ("inpaint",),
    "normal": ("normal",),
    "segment": ("seg",),
    "seg": ("seg",),
    "mlsd": ("mlsd",),
    "shuffle": ("shuffle",),
    "ip2p": ("ip2p",),
}
_APP_CONTROLNET_FOLDERS = (
    "models/controlnet",
    "models/ControlNet",
    "extensions/sd-webui-controlnet/models",
)
_CONTROLNET_CLASSES = ("ControlNetModel", "ControlNetUnionModel", *FLOW_CONTROLNET_CLASSES.values())
# The original (LDM) layout's keys, with or without the "control_model." prefix.
_LDM_PREFIX = "control_model."
WHERE_TO_PUT = (
    "put ControlNet files (.safetensors/.pth) or diffusers folders in ComfyUI's models/controlnet, "
    "Automatic1111's models/ControlNet, or a folder given with --controlnet-dir"
)


@dataclass(frozen=True)
class ControlNetInfo:
    """A ControlNet clients may name. `name` is the spec to send back; no paths are exposed."""

    name: str
    family: str  # "sd15", "sdxl", "flux" or "sd3"
    source: str  # "builtin", "huggingface-cache", "comfyui", "automatic1111", "folder", "path"
    location: Path | None = None  # None for built-ins; never sent to clients
    union: bool = False  # a ControlNet Union: one model, every kind in UNION_KINDS[family]

    def takes(self, kind: str) -> bool:
        """Whether this ControlNet was made for `kind`: by its name, or any kind for a Union or a
        built-in (random: it means nothing either way)."""
        if self.union:
            return kind in UNION_KINDS.get(self.family, {})
        if self.location is None:
            return True
        words = _KIND_WORDS.get(kind, (kind,))
        text = self.name.lower()
        return any(word in text for word in words)


@dataclass(frozen=True)
class ControlInput:
    """One control of a job, as the engine takes it: the image (float32 HxWx4 RGBA or HxWx3 RGB
    in [0, 1], the region's size) and how it steers (the protocol's `ControlParams`)."""

    image: np.ndarray
    params: ControlParams = field(default_factory=ControlParams)


@dataclass
class ControlGuide:
    """One control ready for the sampler: the loaded ControlNet, its image at the working size
    (float (1, 3, H, W), [0, 1], or -1 where an inpaint ControlNet is told to fill) and where it
    acts."""

    model: Any  # ControlNetModel, ControlNetUnionModel, FluxControlNetModel or SD3ControlNetModel
    image: Any  # torch.Tensor
    strength: float
    start: float
    end: float
    union_index: int | None = None  # the control type of a ControlNet Union

    def active(self, step_index: int, num_steps: int) -> bool:
        """Whether it steers step `step_index` of N: diffusers' rule (a step acts when it lies
        within [start, end]), on the whole schedule, so that a result's controls act at the same
        noise levels whatever the strength it starts at."""
        if self.strength == 0.0:
            return False
        return not (step_index / num_steps < self.start or (step_index + 1) / num_steps > self.end)


def control_residuals(
    guides: Sequence[ControlGuide],
    sample: Any,
    timestep: Any,
    encoder_hidden_states: Any,
    added_cond_kwargs: dict[str, Any] | None,
    step_index: int,
    num_steps: int,
) -> dict[str, Any]:
    """The UNet's extra keywords for one step: every active control's residuals, scaled by its
    strength and summed (diffusers' MultiControlNetModel); {} when none acts, so that a job
    without an active control runs exactly the UNet call it always did.

    sample: the scaled model input (both CFG halves, 4 latent channels); the control images are
    repeated to its batch, as diffusers' ControlNet img2img pipeline does (guess mode off)."""
    import torch

    down: list[Any] | None = None
    mid: Any = None
    rows = sample.shape[0]
    for guide in guides:
        if not guide.active(step_index, num_steps):
            continue
        image = guide.image.to(device=sample.device, dtype=sample.dtype)
        image = image.repeat(rows // image.shape[0], 1, 1, 1)
        kwargs: dict[str, Any] = {"added_cond_kwargs": added_cond_kwargs, "return_dict": False}
        if guide.union_index is not None:
            control_type = torch.zeros(rows, guide.model.config.num_control_type, dtype=sample.dtype)
            control_type[:, guide.union_index] = 1
            down_res, mid_res = guide.model(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                controlnet_cond=[image],
                control_type=control_type.to(sample.device),
                control_type_idx=[guide.union_index],
                conditioning_scale=[guide.strength],
                **kwargs,
            )
        else:
            down_res, mid_res = guide.model(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                controlnet_cond=image,
                conditioning_scale=guide.strength,
                **kwargs,
            )
        if down is None:
            down, mid = list(down_res), mid_res
        else:
            down = [a + b for a, b in zip(down, down_res, strict=True)]
            mid = mid + mid_res
    if down is None:
        return {}
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


# -- finding ------------------------------------------------------------------------------


class ControlNets:
    """Finds ControlNets, resolves specs for a job's model and keeps the few used last loaded.

    model_dirs, scan_default_locations: the checkpoints' folders (catalog.py), whose installations'
        ControlNet folders are searched.
    controlnet_dirs: folders of ControlNets (``--controlnet-dir``), searched first.
    allow_paths: whether a spec may be a filesystem path (not for the daemon's clients).
    cpu_offload: keep them in CPU memory; the sampler moves each to the device while it runs.
    """

    def __init__(
        self,
        device: Any,
        dtype: Any,
        model_dirs: Sequence[Path | str] = (),
        controlnet_dirs: Sequence[Path | str] = (),
        *,
        scan_default_locations: bool = True,
        allow_paths: bool = True,
        max_loaded: int = 4,
        cpu_offload: bool = False,
    ) -> None:
        self.device, self.dtype = device, dtype
        self.model_dirs = [Path(d).expanduser() for d in model_dirs]
        self.controlnet_dirs = [Path(d).expanduser() for d in controlnet_dirs]
        self.scan_default_locations = scan_default_locations
        self.allow_paths = allow_paths
        self.max_loaded = max(1, max_loaded)
        self.cpu_offload = cpu_offload
        self._lock = threading.RLock()
        self._loaded: OrderedDict[str, Any] = OrderedDict()

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in for ControlNets, in order (existing or not)."""
        folders = [SearchFolder(d, "folder") for d in self.controlnet_dirs]
        for folder in search_folders(self.model_dirs, self.scan_default_locations):
            if folder.source in ("comfyui", "automatic1111"):
                app = folder.path.parent.parent  # <app>/models/checkpoints -> <app>
                folders.extend(SearchFolder(app / sub, folder.source) for sub in _APP_CONTROLNET_FOLDERS)
            elif folder.source == "huggingface-cache":
                folders.append(folder)
        unique: dict[Path, SearchFolder] = {}
        for folder in folders:
            key = folder.path.resolve() if folder.path.exists() else folder.path
            unique.setdefault(key, folder)
        return list(unique.values())

    def list_controlnets(self) -> list[ControlNetInfo]:
        """Every usable ControlNet found now, the built-ins last."""
        found: dict[str, ControlNetInfo] = {}
        for folder in self.search_folders():
            if not folder.path.is_dir():
                continue
            if folder.source == "huggingface-cache":
                for repo_id, snapshot in _hf_cache_controlnets(folder.path):
                    info = _classified(HF_PREFIX + repo_id, folder.source, snapshot)
                    if info is not None:
                        found.setdefault(info.name, info)
                continue
            for path in _walk(folder.path):
                info = _classified(path.relative_to(folder.path).as_posix(), folder.source, path)
                if info is not None:
                    found.setdefault(info.name, info)
        builtins = [ControlNetInfo(BUILTIN_PREFIX + n, f, "builtin") for n, f in BUILTIN_CONTROLNETS.items()]
        builtins = [_with_union(info) for info in builtins]
        return [*sorted(found.values(), key=lambda m: m.name.lower()), *builtins]

    def resolve(self, spec: str | None, kind: str, family: str) -> ControlNetInfo:
        """The ControlNet a control of `kind` on a model of `family` takes: the one `spec` names
        (UnknownModel when none; InvalidRequest when it fits another family or not the kind), or
        for None the first found that takes both (InvalidRequest saying where to put one)."""
        family = base_family(family)
        if family not in ("sd15", "sdxl", *FLOW_CONTROLNET_CLASSES):
            raise InvalidRequest(f"ControlNet is not available for {family.upper()} models.")
        found = self.list_controlnets()
        if spec is None or not spec.strip():
            fitting = [m for m in found if m.family == family and m.takes(kind) and m.location is not None]
            if fitting:
                return fitting[0]
            raise InvalidRequest(
                f"No {_family_name(family)} ControlNet for '{kind}' was found: name one, or "
                + WHERE_TO_PUT
                + self._looked_in()
            )
        info = self._find(spec.strip(), found)
        if info.family != family:
            raise InvalidRequest(
                f"The ControlNet '{info.name}' is for {_family_name(info.family)} models; this job's "
                f"model is {_family_name(family)}."
            )
        if info.union and not info.takes(kind):
            kinds = UNION_KINDS.get(info.family, {})
            raise InvalidRequest(
                f"The ControlNet Union '{info.name}' takes {', '.join(sorted(kinds))}, not '{kind}'."
            )
        return info

    def _find(self, spec: str, found: list[ControlNetInfo]) -> ControlNetInfo:
        for info in found:
            if info.name in (spec, HF_PREFIX + spec):
                return info
        stems = [m for m in found if m.location is not None and Path(m.name).stem == spec]
        if len(stems) == 1:
            return stems[0]
        path = Path(spec).expanduser()
        if self.allow_paths and path.exists():
            given = _classified(path.name, "path", path)
            if given is None:
                raise UnknownModel(f"Cannot use '{path.name}' as a ControlNet: {why_unusable(path)}.")
            return given
        names = ", ".join(m.name for m in found)
        raise UnknownModel(
            f"Unknown ControlNet '{spec}'. The ControlNets found are: {names}; to add one, "
            + WHERE_TO_PUT
            + self._looked_in()
        )

    def _looked_in(self) -> str:
        folders = [str(f.path) for f in self.search_folders()]
        return f" (looked in: {', '.join(folders)})." if folders else "."

    # -- loading --------------------------------------------------------------------------

    def load(self, info: ControlNetInfo, dtype: Any = None) -> Any:
        """The loaded model (on the device, in `dtype`: the diffusion model's), from the cache or
        loaded now (dropping the least recently used)."""
        dtype = dtype or self.dtype
        key = info.name
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                model = self._loaded[key]
                if model.dtype != dtype:
                    model.to(dtype=dtype)
                return model
            while len(self._loaded) >= self.max_loaded:
                self._loaded.popitem(last=False)
        model = load_controlnet(info)
        if not self.cpu_offload:
            model.to(device=self.device)
        if model.dtype != dtype:
            model.to(dtype=dtype)
        with self._lock:
            self._loaded[key] = model
        return model


def _family_name(family: str) -> str:
    return {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "FLUX.1"}.get(family, family.upper())


def _with_union(info: ControlNetInfo) -> ControlNetInfo:
    if "union" in info.name.lower():
        return ControlNetInfo(info.name, info.family, info.source, info.location, union=True)
    return info


def _walk(folder: Path) -> Iterable[Path]:
    """ControlNet files and diffusers folders under `folder` (not inside diffusers folders)."""
    return walk_models(
        folder, lambda f: (f / "config.json").is_file(), lambda f: f.suffix.lower() in CONTROLNET_SUFFIXES
    )


def _hf_cache_controlnets(cache: Path) -> Iterable[tuple[str, Path]]:
    """(repo id, snapshot folder) for every diffusers ControlNet in the HF cache."""
    try:
        repos = sorted(cache.glob("models--*"))
    except OSError:
        return
    for repo in repos:
        snapshots = (
            sorted((repo / "snapshots").glob("*/config.json")) if (repo / "snapshots").is_dir() else []
        )
        for config in snapshots:
            if _folder_class(config.parent) in _CONTROLNET_CLASSES:
                yield repo.name.removeprefix("models--").replace("--", "/"), config.parent
                break


def _folder_class(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


_classified_files = FileMemo[tuple[str, bool]]()


def _classified(name: str, source: str, path: Path) -> ControlNetInfo | None:
    try:
        kind = classify_controlnet(path)
    except (UnsupportedCheckpoint, OSError, ValueError, RuntimeError, KeyError):
        return None
    if kind is None:
        return None
    family, union = kind
    return ControlNetInfo(name, family, source, path, union or "union" in name.lower())


def classify_controlnet(path: Path) -> tuple[str, bool] | None:
    """(family, whether a Union) of a ControlNet file or diffusers folder; None when it is none
    (UnsupportedCheckpoint from `controlnet_config` says why)."""

    def kind() -> tuple[str, bool] | None:
        try:
            cls, config = controlnet_config(path)
            return (
                config_family({"_class_name": cls, **config}),
                cls == "ControlNetUnionModel" or bool(config.get("num_mode")),  # FLUX: a control mode
            )
        except (UnsupportedCheckpoint, OSError, ValueError, KeyError):
            return None

    return _classified_files.get(path, kind, path / "config.json" if path.is_dir() else None)


def why_unusable(path: Path) -> str:
    try:
        cls, config = controlnet_config(path)
        config_family({"_class_name": cls, **config})
    except (UnsupportedCheckpoint, OSError, ValueError, KeyError) as exc:
        return str(exc) or type(exc).__name__
    return "it cannot be read"


def config_family(config: Mapping[str, Any]) -> str:
    """sd15, sdxl, flux or sd3, from a ControlNet's config; UnsupportedCheckpoint for others (SD2)."""
    for family, cls in FLOW_CONTROLNET_CLASSES.items():
        if config.get("_class_name") == cls:
            return family
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if config.get("cross_attention_dim") == 1024:
        raise UnsupportedCheckpoint("it is a ControlNet for Stable Diffusion 2.x (not supported)")
    if config.get("addition_embed_type") is None and config.get("class_embed_type") is None:
        return "sd15"
    raise UnsupportedCheckpoint("it is not a ControlNet for SD1.5 or SDXL")


# -- configs from shapes ----------------------------------------------------------------


def _count(shapes: Mapping[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in shapes if (m := regex.match(key))})


def _is_ldm_layout(shapes: Mapping[str, Any]) -> bool:
    return any(key.startswith(("input_hint_block.", _LDM_PREFIX + "input_hint_block.")) for key in shapes)


def _ldm_layers_per_block(shapes: Mapping[str, Any]) -> int:
    """Resnets per level of an original-layout ControlNet: input blocks up to the first
    downsampler."""
    count = 0
    for i in range(1, 1 + _count(shapes, r"input_blocks\.(\d+)\.")):
        if f"input_blocks.{i}.0.op.weight" in shapes:
            return count
        count += 1
    return count


def derive_controlnet_config(shapes: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(class name, config) of a ControlNet in diffusers' key layout, from its shapes.

    What the weights do not carry is the family's: SD1.5's 8 heads, SDXL's 64 channels a head,
    SDXL's 256-wide time embedding of sizes (for other widths, the tiny models': two text encoders
    of equal width)."""
    if "controlnet_blocks.0.weight" in shapes and "transformer_blocks.0.attn.to_q.weight" in shapes:
        return derive_flow_controlnet_config(shapes)
    if "conv_in.weight" not in shapes or "controlnet_cond_embedding.conv_in.weight" not in shapes:
        raise UnsupportedCheckpoint("it is not a ControlNet (no conditioning embedding in it)")
    levels = _count(shapes, r"down_blocks\.(\d+)\.")
    block_out = [shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0] for i in range(levels)]
    depths = [
        _count(shapes, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        for i in range(levels)
    ]
    attn_k = next(shape for key, shape in shapes.items() if key.endswith("attn2.to_k.weight"))
    proj_in = next(shape for key, shape in shapes.items() if key.endswith("proj_in.weight"))
    embedding = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    blocks = _count(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    embedding += [shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0] for j in range(1, blocks, 2)]
    is_sdxl = "add_embedding.linear_1.weight" in shapes
    config: dict[str, Any] = {
        "in_channels": shapes["conv_in.weight"][1],
        "conditioning_channels": shapes["controlnet_cond_embedding.conv_in.weight"][1],
        "block_out_channels": block_out,
        "layers_per_block": _count(shapes, r"down_blocks\.0\.resnets\.(\d+)\."),
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "transformer_layers_per_block": [d or 1 for d in depths],
        "cross_attention_dim": attn_k[1],
        "use_linear_projection": len(proj_in) == 2,
        "attention_head_dim": [max(1, c // 64) for c in block_out] if is_sdxl else 8,
        "conditioning_embedding_out_channels": embedding,
        "norm_num_groups": 32,
    }
    time_embed = shapes["time_embedding.linear_1.weight"][0]
    if time_embed != 4 * block_out[0]:
        raise UnsupportedCheckpoint("its time embedding does not follow the Stable Diffusion layout")
    if is_sdxl:
        added_in = shapes["add_embedding.linear_1.weight"][1]
        time_dim = 256 if added_in == 2816 else (added_in - attn_k[1] // 2) // 6
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=added_in,
        )
    if "task_embedding" in shapes:
        num_control_type, channels = shapes["task_embedding"]
        config.update(
            num_control_type=num_control_type,
            num_trans_channel=channels,
            num_trans_layer=_count(shapes, r"transformer_layes\.(\d+)\."),
            num_proj_channel=shapes["spatial_ch_projs.weight"][0],
        )
        return "ControlNetUnionModel", config
    return "ControlNetModel", config


def derive_flow_controlnet_config(shapes: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(class name, config) of a FLUX.1 or SD3 ControlNet in diffusers' key layout, from its shapes.

    FLUX: its single blocks or its image embedding (controlnet_x_embedder); the rotary axes are
    not in the weights (FLUX.1's for 128 channels a head, the tiny model's otherwise). SD3: the
    latent patch embedding of its control image (pos_embed_input); InstantX's (a text embedder)
    take pooled zeros and unshifted latents, SD3.5's (none) the prompt's pooled vector."""
    inner, _ = shapes["transformer_blocks.0.attn.to_q.weight"]
    head = (
        shapes["transformer_blocks.0.attn.norm_q.weight"][0]
        if ("transformer_blocks.0.attn.norm_q.weight" in shapes)
        else 64
    )
    config: dict[str, Any] = {
        "num_layers": _count(shapes, r"transformer_blocks\.(\d+)\."),
        "attention_head_dim": head,
        "num_attention_heads": inner // head,
        "pooled_projection_dim": shapes["time_text_embed.text_embedder.linear_1.weight"][1],
    }
    if "context_embedder.weight" in shapes:
        config["joint_attention_dim"] = shapes["context_embedder.weight"][1]
    if "controlnet_x_embedder.weight" in shapes:
        config.update(
            in_channels=shapes["x_embedder.weight"][1],
            num_single_layers=_count(shapes, r"single_transformer_blocks\.(\d+)\."),
            guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in shapes,
            axes_dims_rope=[16, 56, 56]
            if head == 128
            else list(tiny_flux_transformer_config("flux")["axes_dims_rope"]),
        )
        if "controlnet_mode_embedder.weight" in shapes:
            config["num_mode"] = shapes["controlnet_mode_embedder.weight"][0]
        if "input_hint_block.conv_out.weight" in shapes:
            config["conditioning_embedding_channels"] = shapes["input_hint_block.conv_out.weight"][0]
        return "FluxControlNetModel", config
    if "pos_embed_input.proj.weight" not in shapes:
        raise UnsupportedCheckpoint("it is neither a FLUX.1 nor an SD3 ControlNet")
    _, in_channels, patch, _ = shapes["pos_embed_input.proj.weight"]
    with_text = "context_embedder.weight" in shapes
    config.update(
        in_channels=in_channels,
        out_channels=in_channels,
        patch_size=patch,
        caption_projection_dim=shapes["context_embedder.weight"][0] if with_text else inner,
        joint_attention_dim=config.get("joint_attention_dim"),
        use_pos_embed="pos_embed.proj.weight" in shapes,
        force_zeros_for_pooled_projection=with_text,
        qk_norm="rms_norm" if "transformer_blocks.0.attn.norm_q.weight" in shapes else None,
    )
    if "pos_embed.pos_embed" in shapes:
        config["pos_embed_max_size"] = round(shapes["pos_embed.pos_embed"][1] ** 0.5)
    return "SD3ControlNetModel", config


def controlnet_config(path: Path) -> tuple[str, dict[str, Any]]:
    """(class name, config) of a ControlNet file or diffusers folder, without its weights."""
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnsupportedCheckpoint(f"its config.json cannot be read ({exc})") from exc
        cls = config.get("_class_name")
        if cls not in _CONTROLNET_CLASSES:
            raise UnsupportedCheckpoint(f"it is a {cls or 'folder'}, not a ControlNet")
        return cls, config
    shapes = read_shapes(path)
    if _is_ldm_layout(shapes):
        return derive_controlnet_config(_ldm_converted_shapes(shapes))
    return derive_controlnet_config(shapes)


def _strip_ldm_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    return {key.removeprefix(_LDM_PREFIX): value for key, value in state.items()}


def _ldm_converted_shapes(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """An original-layout ControlNet's shapes under diffusers' keys (converted on placeholders)."""
    import torch

    stripped = _strip_ldm_prefix(shapes)
    # Meta tensors: shapes without memory, as the conversion only renames keys.
    placeholders = {key: torch.empty(shape, device="meta") for key, shape in stripped.items()}
    converted = _convert_ldm(placeholders)
    return {key: tuple(value.shape) for key, value in converted.items() if value is not None}


def _convert_ldm(state: dict[str, Any]) -> dict[str, Any]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    state = _strip_ldm_prefix(state)
    try:
        converted = convert_controlnet_checkpoint(state, {"layers_per_block": _ldm_layers_per_block(state)})
    except (KeyError, IndexError, ValueError) as exc:
        raise UnsupportedCheckpoint(f"its keys do not follow the original ControlNet layout ({exc})") from exc
    # diffusers' conversion leaves out SDXL's added embedding (sizes and pooled text).
    for layer in ("linear_1", "linear_2"):
        for kind in ("weight", "bias"):
            ldm = f"label_emb.0.{0 if layer == 'linear_1' else 2}.{kind}"
            if ldm in state:
                converted[f"add_embedding.{layer}.{kind}"] = state[ldm]
    return converted


def load_controlnet(info: ControlNetInfo) -> Any:
    """Build the ControlNet `info` names, float32 on the CPU; UnknownModel naming it when it cannot
    be read."""
    if info.location is None:
        return build_tiny_controlnet(info.name.removeprefix(BUILTIN_PREFIX))
    path = info.location
    try:
        if path.is_dir():
            return _load_folder(path)
        cls_name, config = controlnet_config(path)
        state = read_state_dict(path)
        if _is_ldm_layout(state):
            state = _convert_ldm(state)
        model = _controlnet_class(cls_name).from_config(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            shown = ", ".join([*missing[:3], *unexpected[:3]])
            raise UnsupportedCheckpoint(f"its weights do not match the architecture read from it ({shown})")
        return model.float().eval().requires_grad_(False)
    except (UnsupportedCheckpoint, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UnknownModel(f"Cannot use '{info.name}' as a ControlNet: {exc}.") from exc


def _controlnet_class(name: str) -> Any:
    import diffusers

    if name not in _CONTROLNET_CLASSES:
        raise UnsupportedCheckpoint(f"it is a {name}, not a ControlNet")
    return getattr(diffusers, name)


def _load_folder(folder: Path) -> Any:
    cls_name, _config = controlnet_config(folder)
    cls = _controlnet_class(cls_name)
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError):
        model = cls.from_pretrained(str(folder), local_files_only=True, variant="fp16")
    return model.float().eval().requires_grad_(False)


# -- the built-in tiny ControlNets --------------------------------------------------------


def tiny_controlnet_config(name: str) -> dict[str, Any]:
    """A ControlNet of the tiny UNet's blocks (tiny.py), taking 4-channel latents and an RGB
    image through a four-level conditioning embedding (the real 8x, as original files have)."""
    family = BUILTIN_CONTROLNETS[name]
    if family == "flux":  # one double and one single block: FLUX's two kinds of residuals
        config = tiny_flux_transformer_config("flux")
        config.pop("out_channels")
        if "union" in name:  # InstantX's Union has 10 control modes
            config["num_mode"] = 10
        return {**config, "num_single_layers": 1}
    if family == "sd3":  # SD3's transformer takes as many residuals as it has blocks
        return {**tiny_sd3_transformer_config(), "num_layers": 1}
    unet = tiny_unet_config(family)
    keys = (
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "transformer_layers_per_block",
        "attention_head_dim",
        "use_linear_projection",
        "cross_attention_dim",
        "addition_embed_type",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
        "norm_num_groups",
    )
    config = {key: unet[key] for key in keys if key in unet}
    config.update(in_channels=4, conditioning_embedding_out_channels=[16, 16, 32, 32])
    if "union" in name:
        width = unet["block_out_channels"][0]
        config.update(num_control_type=8, num_trans_channel=width, num_trans_head=8, num_proj_channel=width)
    return config


@functools.cache
def _build_tiny(name: str) -> Any:
    import torch

    family = BUILTIN_CONTROLNETS[name]
    cls_name = "ControlNetUnionModel" if "union" in name and family == "sdxl" else "ControlNetModel"
    cls = _controlnet_class(FLOW_CONTROLNET_CLASSES.get(family, cls_name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = cls.from_config(tiny_controlnet_config(name))
        if family in FLOW_CONTROLNET_CLASSES:
            # Their zero layers (the residuals' way out and the control image's embedding) start
            # at zero: random ones make the tiny model steer, so that tests see it. A Union's
            # control modes are embedded apart enough that each steers its own way.
            if getattr(model, "controlnet_mode_embedder", None) is not None:
                with torch.no_grad():
                    model.controlnet_mode_embedder.weight.normal_(0.0, 1.0)
            embedding = model.controlnet_x_embedder if family == "flux" else model.pos_embed_input.proj
            with torch.no_grad():
                for module in [
                    *model.controlnet_blocks,
                    *getattr(model, "controlnet_single_blocks", []),
                    embedding,
                ]:
                    module.weight.normal_(0.0, 0.05)
                    module.bias.normal_(0.0, 0.05)
            return model.eval().requires_grad_(False)
        # A real ControlNet's zero layers (the residuals' way out, a Union's projection) start at
        # zero and learn, and its image embedding learns to see edges; random ones, scaled to keep
        # the image's variation, make the tiny model steer by its image, so that tests see it.
        embedding = model.controlnet_cond_embedding
        zeroed = [*model.controlnet_down_blocks, model.controlnet_mid_block]
        if hasattr(model, "spatial_ch_projs"):
            zeroed.append(model.spatial_ch_projs)
        with torch.no_grad():
            for module in zeroed:
                module.weight.normal_(0.0, 0.05)
                module.bias.normal_(0.0, 0.05)
            for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
                gain = 0.2 if conv is embedding.conv_out else 2.0
                conv.weight.normal_(0.0, gain / conv.weight[0].numel() ** 0.5)
                conv.bias.zero_()
    return model.eval().requires_grad_(False)


_build_lock = threading.Lock()


def build_tiny_controlnet(name: str) -> Any:
    """A built-in tiny ControlNet, float32 on the CPU: a copy of the one built once per process."""
    import copy

    if name not in BUILTIN_CONTROLNETS:
        names = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_CONTROLNETS)
        raise UnknownModel(
            f"Unknown built-in ControlNet '{BUILTIN_PREFIX}{name}'. The built-in ones are: {names}."
        )
    with _build_lock:
        return copy.deepcopy(_build_tiny(name))


def check_fits(model: Any, unet: Any, name: str, model_name: str) -> None:
    """InvalidRequest when the ControlNet's blocks are not the UNet's (a tiny ControlNet on a real
    model, or a file of another size): its residuals could not be added."""
    ours, theirs = model.config, unet.config
    if "block_out_channels" not in ours:  # FLUX/SD3: the residuals are the transformer's tokens
        width = ours.num_attention_heads * ours.attention_head_dim
        if width != theirs.num_attention_heads * theirs.attention_head_dim:
            raise InvalidRequest(
                f"The ControlNet '{name}' does not fit the model '{model_name}': its blocks are "
                "of another width (a ControlNet for another model of the same family?)."
            )
        return
    if list(ours.block_out_channels) != list(theirs.block_out_channels) or (
        ours.cross_attention_dim != theirs.cross_attention_dim
    ):
        raise InvalidRequest(
            f"The ControlNet '{name}' does not fit the model '{model_name}': its blocks are of "
            "another size (a ControlNet for another model of the same family?)."
        )


# -- a job's controls ---------------------------------------------------------------------


def check_controls(controls: Sequence[ControlInput], image: np.ndarray) -> list[ControlInput]:
    """The controls with their images checked: the region's size, RGB(A) in [0, 1], finite;
    InvalidRequest naming the control otherwise."""
    height, width = image.shape[:2]
    checked = []
    for index, control in enumerate(controls):
        if not isinstance(control, ControlInput):
            raise InvalidRequest(f"Control {index + 1} is not a ControlInput.")
        picture = control.image
        what = f"control image {index + 1} ({control.params.kind})"
        if not isinstance(picture, np.ndarray) or picture.ndim != 3 or picture.shape[2] not in (3, 4):
            raise InvalidRequest(f"The {what} must be H x W x 4 (RGBA) pixels.")
        if picture.shape[:2] != (height, width):
            raise InvalidRequest(
                f"The {what} is {picture.shape[1]}x{picture.shape[0]} pixels but the image is "
                f"{width}x{height}."
            )
        picture = picture.astype(np.float32, copy=False)
        if not np.isfinite(picture).all():
            raise InvalidRequest(f"The {what} contains NaN or infinite values.")
        if not control.params.start < control.params.end:
            raise InvalidRequest(f"The {what} starts at {control.params.start:g}, not before its end.")
        checked.append(ControlInput(np.clip(picture, 0.0, 1.0), control.params))
    return checked


def guide_for(
    info: ControlNetInfo, model: Any, params: ControlParams, rgb: Any, fill: Any | None
) -> ControlGuide:
    """A control ready for the sampler. rgb: (1, 3, H, W) at the working size; fill: (1, 1, H, W)
    the change map there, for an inpaint control (its image is -1 where the map is above half)."""
    import torch

    image = rgb
    if params.kind == "inpaint" and fill is not None:
        image = torch.where(fill > 0.5, torch.full_like(rgb, -1.0), rgb)
    # A Union that takes no control type (FLUX Union Pro 2.0) reads the kind from the image.
    types = getattr(model.config, "num_control_type", None) or getattr(model.config, "num_mode", None)
    union_index = UNION_KINDS.get(info.family, {}).get(params.kind) if info.union and types else None
    if info.union and types and (union_index is None or union_index >= types):
        raise InvalidRequest(
            f"The ControlNet Union '{info.name}' has {types} control types; "
            f"'{params.kind}' is not one of them."
        )
    return ControlGuide(
        model, image, float(params.strength), float(params.start), float(params.end), union_index
    )
