"""Depth as a change map: Depth Anything (V2) through transformers, found and loaded offline.

A depth model spec is one of:

- ``builtin:tiny-depth``   a tiny random Depth Anything built in code (tests; its depth means
                           nothing, but it is the same in every process);
- ``hf:ORG/NAME`` or ``ORG/NAME``  a model in the Hugging Face cache
                           (``depth-anything/Depth-Anything-V2-Small-hf``), never downloaded;
- a discovered name        a file or folder found in the depth folders (below), named by its
                           path relative to that folder, or by its file stem when unique;
- a path                   (where paths are allowed: not for the daemon's clients) to a
                           transformers folder (config.json + weights, preprocessor_config.json
                           optional) or a single weights file (.safetensors, .pth, .pt, .bin),
                           in transformers' key layout or in the original Depth-Anything(-V2)
                           layout (``depth_anything_v2_vits.pth``, converted on load); a single
                           file's architecture is read from its tensors' shapes.

Depth folders: in every folder the diffusion models are searched in (catalog.py), the depth
files there (names with "depth"); in ComfyUI and Automatic1111/Forge installations their depth
folders (``models/depthanything``, ``models/depth_anything``, ComfyUI controlnet_aux's
``ckpts``, Forge's ``models/ControlNetPreprocessor``); and the Hugging Face cache.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import HF_PREFIX, SearchFolder, search_folders, walk_models
from .errors import InvalidRequest
from .tiny import BUILTIN_PREFIX

TINY_DEPTH = BUILTIN_PREFIX + "tiny-depth"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Where ComfyUI and Automatic1111/Forge keep depth models, relative to their `models` folder's
# parent (the installation).
_APP_DEPTH_FOLDERS = (
    "models/depthanything",
    "models/depth_anything",
    "models/depth-anything",
    "models/ControlNetPreprocessor/depth_anything_v2",
    "custom_nodes/comfyui_controlnet_aux/ckpts",
    "extensions/sd-webui-controlnet/annotator/downloads/depth_anything_v2",
)
# Depth Anything's preprocessing (transformers' DPTImageProcessor for it): the shorter side
# to 518, both sides a multiple of the 14-pixel patch, ImageNet's mean and deviation.
INPUT_SIDE = 518
TINY_INPUT_SIDE = 56
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_SEED = 20240229
WHERE_TO_PUT = (
    "put a Depth Anything V2 model (depth_anything_v2_vits.pth, a .safetensors of it, or the "
    "Hugging Face folder depth-anything/Depth-Anything-V2-Small-hf) in a model folder or "
    "ComfyUI's models/depthanything, or name one with --depth-model"
)


@dataclass(frozen=True)
class DepthModelInfo:
    name: str  # the spec to send back
    source: str  # "builtin", "huggingface-cache", or the kind of folder it was found in
    location: Path | None = None  # None for the built-in; never sent to clients


class DepthEstimator:
    """One loaded depth model: `estimate` gives a region's relative depth."""

    def __init__(self, name: str, model: Any, side: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.name = name
        self.model = model.eval()
        self.side = side
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.patch = int(getattr(model.config, "patch_size", 14))

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The model's input size for a region: the shorter side about `side`, the aspect
        kept (a strip at most 4:1), both a multiple of the patch."""
        scale = self.side / min(height, width)
        longest = 4 * self.side
        h = min(longest, max(self.patch, round(height * scale / self.patch) * self.patch))
        w = min(longest, max(self.patch, round(width * scale / self.patch) * self.patch))
        return h - h % self.patch, w - w % self.patch

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """float32 HxWx4 RGBA sRGB in [0, 1] -> float64 HxW relative depth, larger = nearer,
        at the region's size (bilinear up from the model's)."""
        import torch

        from .regions import image_to_tensor, resize

        height, width = image.shape[:2]
        parameter = next(self.model.parameters())
        x = resize(image_to_tensor(image[..., :3]), self.input_size(height, width)).clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(device=parameter.device, dtype=parameter.dtype)
        with torch.inference_mode():
            predicted = self.model(pixel_values=x).predicted_depth[:, None].float().cpu()
        return resize(predicted, (height, width), mode="bilinear")[0, 0].double().numpy()


class DepthModels:
    """Finds depth models, resolves specs and keeps the last one used loaded. Thread-safe.

    model_dirs, scan_default_locations: the diffusion models' folders (catalog.py), whose
        depth folders are searched.
    default_model: the spec a job that names none takes (a path too: the operator gave it);
        None: the first found (never the built-in, whose depth means nothing).
    allow_paths: whether a job's spec may be a filesystem path (not for the daemon's clients).
    """

    def __init__(
        self,
        device: Any,
        dtype: Any,
        model_dirs: Sequence[Path | str] = (),
        default_model: str | None = None,
        *,
        scan_default_locations: bool = True,
        allow_paths: bool = True,
    ) -> None:
        self.device, self.dtype = device, dtype
        self.model_dirs = [Path(d).expanduser() for d in model_dirs]
        self.default_model = default_model or None
        self.scan_default_locations = scan_default_locations
        self.allow_paths = allow_paths
        self._lock = threading.RLock()
        self._loaded: DepthEstimator | None = None

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in for depth models, in order (existing or not)."""
        folders: list[SearchFolder] = []
        for folder in search_folders(self.model_dirs, self.scan_default_locations):
            if folder.source in ("comfyui", "automatic1111"):
                app = folder.path.parent.parent  # <app>/models/checkpoints -> <app>
                folders.extend(SearchFolder(app / sub, folder.source) for sub in _APP_DEPTH_FOLDERS)
            else:
                folders.append(folder)
        unique: dict[Path, SearchFolder] = {}
        for folder in folders:
            unique.setdefault(folder.path, folder)
        return list(unique.values())

    def list_models(self) -> list[DepthModelInfo]:
        """Every depth model found now, the built-in last."""
        found: dict[str, DepthModelInfo] = {}
        for folder in self.search_folders():
            if not folder.path.is_dir():
                continue
            if folder.source == "huggingface-cache":
                for repo_id, snapshot in _hf_cache_depth_models(folder.path):
                    found.setdefault(
                        HF_PREFIX + repo_id, DepthModelInfo(HF_PREFIX + repo_id, folder.source, snapshot)
                    )
                continue
            # A plain model folder holds checkpoints too: only files that say they are depth.
            named_only = folder.source == "folder"
            for path in _walk(folder.path, named_only):
                name = path.relative_to(folder.path).as_posix()
                found.setdefault(name, DepthModelInfo(name, folder.source, path))
        return [*sorted(found.values(), key=lambda m: m.name.lower()), DepthModelInfo(TINY_DEPTH, "builtin")]

    def resolve(self, spec: str | None) -> DepthModelInfo:
        """The depth model `spec` names (None or blank: the default, else the first found);
        InvalidRequest saying where to put one when there is none."""
        with self._lock:
            return self._resolve(spec, self.allow_paths)

    def _resolve(self, spec: str | None, allow_paths: bool) -> DepthModelInfo:
        if spec is None or not spec.strip():
            if self.default_model:
                return self._resolve(self.default_model, allow_paths=True)
            real = [m for m in self.list_models() if m.location is not None]
            if real:
                return real[0]
            raise InvalidRequest("No depth model was found: " + WHERE_TO_PUT + self._looked_in())
        spec = spec.strip()
        if spec == TINY_DEPTH:
            return DepthModelInfo(TINY_DEPTH, "builtin")
        models = self.list_models()
        for model in models:
            if model.name in (spec, HF_PREFIX + spec):
                return model
        stems = [m for m in models if m.location is not None and Path(m.name).stem == spec]
        if len(stems) == 1:
            return stems[0]
        path = Path(spec).expanduser()
        if allow_paths and path.exists():
            return DepthModelInfo(path.name, "path", path)
        found = ", ".join(m.name for m in models)
        raise InvalidRequest(
            f"Unknown depth model '{spec}'. The depth models found are: {found}; to add one, "
            + WHERE_TO_PUT
            + self._looked_in()
        )

    def _looked_in(self) -> str:
        folders = [str(f.path) for f in self.search_folders()]
        return f" (looked in: {', '.join(folders)})." if folders else "."

    def load(self, spec: str | None) -> DepthEstimator:
        """The loaded model for `spec`: the one kept, or loaded now (replacing it)."""
        info = self.resolve(spec)
        with self._lock:
            if self._loaded is not None and self._loaded.name == info.name:
                return self._loaded
            self._loaded = None  # the old one goes before the new one loads
            estimator = load_depth_model(info)
            estimator.model.to(device=self.device, dtype=self.dtype)
            self._loaded = estimator
            return estimator


def load_depth_model(info: DepthModelInfo) -> DepthEstimator:
    """Build the model `info` names, on the CPU in float32; InvalidRequest naming the file or
    folder when it is not a Depth Anything model."""
    if info.location is None:
        return DepthEstimator(
            info.name, build_tiny_depth_model(), TINY_INPUT_SIDE, IMAGENET_MEAN, IMAGENET_STD
        )
    path = info.location
    try:
        if path.is_dir():
            return _load_folder(info.name, path)
        return _load_file(info.name, path)
    except InvalidRequest:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"Cannot use '{path.name}' as a depth model: {_short(exc)}.") from exc


def build_tiny_depth_model() -> Any:
    """A tiny Depth Anything of the real architecture, random but the same in every process.

    Its convolutions are scaled up from transformers' tiny initial weights so that its
    output varies over a region (a flat estimate would be no map at all).
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    config = DepthAnythingConfig(
        backbone_config={
            "model_type": "dinov2",
            "hidden_size": 64,  # one head of 64 channels, as DINOv2's: files of it load by shapes
            "num_hidden_layers": 4,
            "num_attention_heads": 1,
            "mlp_ratio": 2,
            "image_size": TINY_INPUT_SIDE,
            "patch_size": 14,
            "out_indices": [1, 2, 3, 4],
            "apply_layernorm": True,
            "reshape_hidden_states": False,
        },
        reassemble_hidden_size=64,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = DepthAnythingForDepthEstimation(config)
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if weight.ndim == 4 and not name.startswith("backbone"):
                    weight.normal_(0.0, (2.0 / weight[0].numel()) ** 0.5)  # He: signals survive the ReLUs
            model.head.conv3.bias.fill_(1.0)
    return model.eval()


def _load_folder(name: str, folder: Path) -> DepthEstimator:
    from transformers import DepthAnythingForDepthEstimation

    config_file = folder / "config.json"
    if _model_type(config_file) != "depth_anything":
        raise InvalidRequest(
            f"Cannot use '{folder.name}' as a depth model: it has no config.json of a Depth Anything "
            "model (model_type depth_anything)."
        )
    model = DepthAnythingForDepthEstimation.from_pretrained(folder, local_files_only=True)
    side, mean, std = INPUT_SIDE, IMAGENET_MEAN, IMAGENET_STD
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        settings = json.loads(processor.read_text(encoding="utf-8"))
        size = settings.get("size") or {}
        side = int(size.get("height") or size.get("shortest_edge") or side)
        mean = settings.get("image_mean") or mean
        std = settings.get("image_std") or std
    return DepthEstimator(name, model, side, mean, std)


def _load_file(name: str, path: Path) -> DepthEstimator:
    from transformers import DepthAnythingForDepthEstimation

    state = read_state_dict(path)
    if any(key.startswith("pretrained.") for key in state) and any(
        k.startswith("depth_head.") for k in state
    ):
        state = convert_original_keys(state)
    if not (any(k.startswith("backbone.") for k in state) and any(k.startswith("head.") for k in state)):
        raise InvalidRequest(
            f"Cannot use '{path.name}' as a depth model: its tensors are not a Depth Anything "
            "model's (in transformers' layout or the original Depth-Anything-V2 one)."
        )
    config = config_from_shapes(state)
    model = DepthAnythingForDepthEstimation(config)
    state = _current_names(state, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        shown = ", ".join([*missing, *unexpected][:4])
        raise InvalidRequest(
            f"Cannot use '{path.name}' as a depth model: its tensors do not match a Depth Anything "
            f"model (missing or unexpected: {shown})."
        )
    return DepthEstimator(name, model, INPUT_SIDE, IMAGENET_MEAN, IMAGENET_STD)


def read_state_dict(path: Path) -> dict[str, Any]:
    """A weights file's tensors, on the CPU; InvalidRequest naming it when it holds none."""
    import torch

    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise InvalidRequest(
            f"Cannot use '{path.name}' as a depth model: it is not a .safetensors, .pth, .pt or .bin "
            "weights file or a model folder."
        )
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many kinds for a file that is not theirs
        raise InvalidRequest(
            f"Cannot use '{path.name}' as a depth model: it cannot be read as weights ({_short(exc)})."
        ) from exc
    for key in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidRequest(f"Cannot use '{path.name}' as a depth model: it holds no tensors by name.")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def convert_original_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The original Depth-Anything(-V2) key layout renamed to transformers' (the renames of
    transformers' convert_depth_anything_to_hf.py): the DINOv2 backbone's fused qkv split
    in three, the DPT head's refinenets numbered the other way round."""
    fusion = {1: 3, 2: 2, 3: 1, 4: 0}
    fixed = [
        (r"pretrained\.cls_token", "backbone.embeddings.cls_token"),
        (r"pretrained\.mask_token", "backbone.embeddings.mask_token"),
        (r"pretrained\.pos_embed", "backbone.embeddings.position_embeddings"),
        (r"pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
        (r"pretrained\.norm\.", "backbone.layernorm."),
        (r"pretrained\.blocks\.(\d+)\.ls(\d)\.gamma", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
        (r"pretrained\.blocks\.(\d+)\.(norm\d|mlp\.fc\d)\.", r"backbone.encoder.layer.\1.\2."),
        (r"pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.output.dense."),
        (r"depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
        (r"depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
        (r"depth_head\.scratch\.output_conv1\.", "head.conv1."),
        (r"depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
        (r"depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
    ]
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        qkv = re.fullmatch(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key)
        if qkv:
            layer, kind = qkv.groups()
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
                out[f"backbone.encoder.layer.{layer}.attention.attention.{part}.{kind}"] = chunk.clone()
            continue
        rn = re.fullmatch(r"depth_head\.scratch\.layer(\d)_rn\.weight", key)
        refine = re.fullmatch(r"depth_head\.scratch\.refinenet(\d)\.(.+)", key)
        if rn:
            out[f"neck.convs.{int(rn[1]) - 1}.weight"] = tensor
        elif refine:
            rest = (
                refine[2]
                .replace("out_conv.", "projection.")
                .replace("resConfUnit1.conv", "residual_layer1.convolution")
                .replace("resConfUnit2.conv", "residual_layer2.convolution")
            )
            out[f"neck.fusion_stage.layers.{fusion[int(refine[1])]}.{rest}"] = tensor
        else:
            for pattern, replacement in fixed:
                renamed, n = re.subn(f"^{pattern}", replacement, key)
                if n:
                    out[renamed] = tensor
                    break
            else:
                out[key] = tensor  # left for load_state_dict to name as unexpected
    return out


# transformers 5 names DINOv2's attention projections differently from the files on the Hub
# (and from the conversion above): rename to whichever names the model at hand has.
_ATTENTION_NAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def _current_names(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    out = {}
    for key, tensor in state.items():
        if key not in expected:
            for old, new in _ATTENTION_NAMES:
                for a, b in ((old, new), (new, old)):
                    if a in key and key.replace(a, b) in expected:
                        key = key.replace(a, b)
        out[key] = tensor
    return out


def config_from_shapes(state: dict[str, Any]) -> Any:
    """A DepthAnythingConfig for transformers-layout tensors: the backbone's width and depth,
    the neck's and head's widths read from their shapes; the backbone layers the neck takes
    are Depth Anything V2's for that depth (V1's only differ for a file of V1)."""
    from transformers import DepthAnythingConfig

    projection = state["backbone.embeddings.patch_embeddings.projection.weight"]
    hidden, patch = int(projection.shape[0]), int(projection.shape[-1])
    layers = 1 + max(int(m[1]) for k in state if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k)))
    fc1 = state.get("backbone.encoder.layer.0.mlp.fc1.weight")
    swiglu = fc1 is None  # DINOv2 giant's SwiGLU FFN has weights_in / weights_out instead
    positions = int(state["backbone.embeddings.position_embeddings"].shape[1]) - 1
    image_size = round(positions**0.5) * patch
    neck = [int(state[f"neck.reassemble_stage.layers.{i}.projection.weight"].shape[0]) for i in range(4)]
    fusion = int(state["neck.fusion_stage.layers.0.projection.weight"].shape[0])
    head_hidden = int(state["head.conv2.weight"].shape[0])
    step = layers // 4
    return DepthAnythingConfig(
        backbone_config={
            "model_type": "dinov2",
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": max(1, hidden // 64),
            "mlp_ratio": 4 if fc1 is None else int(fc1.shape[0]) // hidden,
            "use_swiglu_ffn": swiglu,
            "image_size": image_size,
            "patch_size": patch,
            "out_indices": [step * (i + 1) for i in range(4)],  # V2: e.g. 3, 6, 9, 12 of 12
            "apply_layernorm": True,
            "reshape_hidden_states": False,
        },
        reassemble_hidden_size=hidden,
        patch_size=patch,
        neck_hidden_sizes=neck,
        fusion_hidden_size=fusion,
        head_hidden_size=head_hidden,
    )


def _model_type(config_file: Path) -> str | None:
    try:
        return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _walk(folder: Path, named_only: bool) -> Iterable[Path]:
    """Depth weights files and transformers depth folders under `folder`."""
    return walk_models(
        folder,
        lambda f: _model_type(f / "config.json") == "depth_anything",
        lambda f: f.suffix.lower() in WEIGHT_SUFFIXES and (not named_only or "depth" in f.name.lower()),
    )


def _hf_cache_depth_models(cache: Path) -> Iterable[tuple[str, Path]]:
    """(repo id, snapshot folder) for every Depth Anything model in the HF cache."""
    try:
        repos = sorted(cache.glob("models--*"))
    except OSError:
        return
    for repo in repos:
        snapshots = (
            sorted((repo / "snapshots").glob("*/config.json")) if (repo / "snapshots").is_dir() else []
        )
        for config in snapshots:
            if _model_type(config) == "depth_anything":
                yield repo.name.removeprefix("models--").replace("--", "/"), config.parent
                break


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
