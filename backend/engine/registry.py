"""The models an engine can use: the device they run on, the names they go by, the few kept loaded.

A model spec (see catalog.py for the grammar) resolves to a `CatalogEntry`; loading an
entry builds its `DifferentialDiffusionPipeline` once and keeps it in a small LRU, so
jobs on the same model skip the load.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import (
    HF_PREFIX,
    CatalogEntry,
    SearchFolder,
    classify,
    discover,
    hf_cache_dir,
    name_for_path,
    search_folders,
    why_unusable,
)
from .configs import WORKING_AREA, is_flow
from .errors import EngineError, UnknownModel
from .memory import (
    DENOISERS,
    OffloadChoice,
    choose_offload,
    device_memory,
    dtype_name,
    module_bytes,
    parse_offload,
)
from .parts import (
    NO_PARTS,
    ChosenParts,
    PartFile,
    choose_parts,
    find_part_files,
    lacking,
    part_search_folders,
)
from .tiny import BUILTIN_PREFIX, BUILTINS, TINY_WORKING_AREA

log = logging.getLogger("differential_inpaint.engine")

ModelFamily = (
    str  # "sd15", "sdxl", "sd15-inpaint", "sdxl-inpaint", "flux", "flux-schnell", "flux-fill", "sd3"
)


@dataclass(frozen=True)
class ModelInfo:
    """A model clients may name. `name` is the spec to send back; no paths are exposed."""

    name: str
    family: ModelFamily
    source: str  # "builtin", "huggingface-cache", or the kind of folder it was found in
    lacks: tuple[str, ...] = ()  # the parts a FLUX.1 / SD3 single file has not in itself (parts.py)


@dataclass
class LoadedModel:
    name: str
    family: str
    sampler: Any  # DifferentialDiffusionPipeline, or FlowDifferentialPipeline for FLUX and SD3
    working_area: int  # pixels of area regions are resized to
    multiple: int  # working sizes are multiples of this
    offload: OffloadChoice = OffloadChoice("none", "")  # where its weights live, and why
    denoiser_bytes: int = 0  # its UNet's or transformer's weights

    @property
    def onload_bytes(self) -> int:
        """What sampling moves onto the device besides the activations: with model offload the
        denoiser's weights (sequential offload moves one block at a time)."""
        return self.denoiser_bytes if self.offload.mode == "model" else 0


def pick_device(device: str | None) -> tuple[Any, Any]:
    """(torch.device, dtype): None = cuda (fp16) > mps (fp16) > cpu (fp32)."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"Unknown device '{device}': use cuda, cuda:N, mps or cpu.") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("CUDA was requested but no CUDA GPU is available to PyTorch.")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise EngineError("MPS was requested but is not available on this machine.")
    if chosen.type not in ("cuda", "mps", "cpu"):
        raise EngineError(f"Unsupported device '{device}': use cuda, cuda:N, mps or cpu.")
    return chosen, (torch.float16 if chosen.type in ("cuda", "mps") else torch.float32)


def flow_dtype(dtype: Any) -> Any:
    """The dtype FLUX and SD3 run in: bfloat16 where SD runs in float16 (their activations
    overflow float16), else the engine's."""
    import torch

    return torch.bfloat16 if dtype == torch.float16 else dtype


class ModelRegistry:
    """Resolves model specs and keeps the `max_loaded` most recently used pipelines loaded.

    Thread-safe; a load itself runs outside the lock (the engine runs one job at a time).

    model_dirs: extra folders to search for checkpoints (see catalog.py for the order).
    default_model: the spec used when a job names none.
    vae_tiling: decode/encode the VAE in tiles (less memory on small GPUs).
    offload: where a model's weights live (memory.py): "none" on the device, "model" in CPU
        memory with each component moved to the GPU while it runs, "sequential" in CPU memory
        with each block moved while it runs, "auto" (default) chosen per model at load from its
        size and the device's free memory. The CPU never offloads.
    max_loaded: how many pipelines stay loaded (least recently used is dropped).
    scan_default_locations: also search the usual ComfyUI/A1111 folders and the HF cache.
    allow_paths: whether a spec may be a filesystem path.
    text_encoders, vae: files FLUX.1 / SD3 single files take their text encoders and VAE
        from, before their own and those found around them (see flow_checkpoints.py); a
        job's own choice (`choose_parts`) comes before these.
    part_paths: whether a job's text encoder or VAE may be a file (the daemon's clients: no).
    """

    def __init__(
        self,
        device: Any,
        dtype: Any,
        model_dirs: Sequence[Path | str] = (),
        default_model: str | None = None,
        *,
        vae_tiling: bool = False,
        offload: str = "auto",
        max_loaded: int = 1,
        scan_default_locations: bool = True,
        allow_paths: bool = True,
        text_encoders: Sequence[Path | str] = (),
        vae: Path | str | None = None,
        part_paths: bool = True,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.model_dirs = [Path(d).expanduser() for d in model_dirs]
        self.default_model = default_model or None
        self.vae_tiling = vae_tiling
        mode = parse_offload(offload)  # checked on every device, used where it means something
        self.offload = "none" if device.type == "cpu" else mode
        self.max_loaded = max(1, max_loaded)
        self.scan_default_locations = scan_default_locations
        self.allow_paths = allow_paths
        self.text_encoders = [Path(p).expanduser() for p in text_encoders]
        self.vae = Path(vae).expanduser() if vae else None
        self.part_paths = part_paths
        self._lock = threading.RLock()
        self._entries: dict[str, CatalogEntry] = {}
        self._by_path: dict[str, CatalogEntry] = {}  # models named by path, listed from then on
        # Keyed by the model's name and the files of the parts a job chose (none: the name alone).
        self._loaded: OrderedDict[tuple[str, ...], LoadedModel] = OrderedDict()

    # -- finding and naming ----------------------------------------------------------

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in, in order (existing or not)."""
        return search_folders(self.model_dirs, self.scan_default_locations)

    def list_models(self) -> list[ModelInfo]:
        """Every model found now (re-scans the folders), built-ins last."""
        return [ModelInfo(e.name, e.family, e.source, lacking(e)) for e in self._refresh().values()]

    def list_parts(self) -> list[PartFile]:
        """Every text encoder and VAE a job may choose for a FLUX.1 / SD3 single file (parts.py):
        the files given (`text_encoders`, `vae`) first, then those found (re-scans the folders)."""
        given = [*self.text_encoders, *([self.vae] if self.vae else [])]
        folders = part_search_folders(self.search_folders(), self._refresh().values())
        return find_part_files(folders, given)

    def choose_parts(self, entry: CatalogEntry, text_encoders: Sequence[str], vae: str | None) -> ChosenParts:
        """The files a job's `text_encoders` and `vae` name for `entry` (see parts.choose_parts);
        nothing named: none chosen, nothing scanned."""
        if not text_encoders and vae is None:
            return NO_PARTS
        return choose_parts(entry, self.list_parts(), text_encoders, vae, self.part_paths)

    def resolve(self, spec: str | None) -> CatalogEntry:
        """The entry `spec` names (None or blank: the default model); UnknownModel if none."""
        with self._lock:
            return self._resolve(spec)

    def _refresh(self) -> dict[str, CatalogEntry]:
        with self._lock:
            entries = {e.name: e for e in discover(self.search_folders())}
            for entry in self._by_path.values():
                entries.setdefault(entry.name, entry)
            self._entries = entries
            return entries

    def _resolve(self, spec: str | None) -> CatalogEntry:
        if spec is None or not str(spec).strip():
            if self.default_model:
                return self._resolve(self.default_model)
            real = [e for e in self._refresh().values() if e.source != "builtin"]
            if real:
                return real[0]
            raise UnknownModel(
                "No model was chosen and no checkpoint was found. Put a Stable Diffusion 1.5 or "
                "SDXL checkpoint in one of: " + self._folders_text()
            )
        spec = str(spec).strip()
        if spec.startswith(BUILTIN_PREFIX):
            if spec.removeprefix(BUILTIN_PREFIX) in BUILTINS:
                return CatalogEntry(spec, BUILTINS[spec.removeprefix(BUILTIN_PREFIX)], "builtin", None)
            names = ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
            raise UnknownModel(f"Unknown built-in model '{spec}'. The built-in models are: {names}.")
        entry = self._entries.get(spec) or self._find_by_name(spec) or self._find_by_name(spec, refresh=True)
        if entry is not None:
            return entry
        if spec.startswith(HF_PREFIX):
            return self._resolve_hf(spec)
        if self.allow_paths and Path(spec).expanduser().exists():
            return self._resolve_path(Path(spec).expanduser())
        raise UnknownModel(
            f"Unknown model '{spec}'. Run `differential-inpaint models` to see the models found; "
            f"looked in: {self._folders_text()}"
        )

    def _find_by_name(self, spec: str, refresh: bool = False) -> CatalogEntry | None:
        entries = self._refresh() if refresh else self._entries
        if spec in entries:
            return entries[spec]
        stem_matches = [e for e in entries.values() if e.location is not None and Path(e.name).stem == spec]
        return stem_matches[0] if len(stem_matches) == 1 else None

    def _resolve_hf(self, spec: str) -> CatalogEntry:
        repo = hf_cache_dir() / ("models--" + spec.removeprefix(HF_PREFIX).replace("/", "--"))
        snapshots = sorted((repo / "snapshots").glob("*/model_index.json")) if repo.is_dir() else []
        for index in snapshots:
            family = classify(index.parent)
            if family is not None:
                return CatalogEntry(spec, family, "huggingface-cache", index.parent)
        raise UnknownModel(
            f"'{spec}' is not a Stable Diffusion 1.5, SDXL, FLUX.1 or SD3 diffusers model in the "
            f"Hugging Face cache ({hf_cache_dir()}); models are never downloaded."
        )

    def _resolve_path(self, path: Path) -> CatalogEntry:
        path = path.resolve()
        for entry in [*self._entries.values(), *self._by_path.values()]:
            if entry.location is not None and entry.location.resolve() == path:
                return entry
        family = classify(path)
        if family is None:
            from .checkpoints import CHECKPOINT_SUFFIXES

            kinds = ", ".join(CHECKPOINT_SUFFIXES)
            reason = why_unusable(path) or f"it is not a checkpoint ({kinds}) or a diffusers folder"
            raise UnknownModel(f"Cannot use '{path.name}' as a model: {reason}.")
        entry = CatalogEntry(name_for_path(path, {**self._entries, **self._by_path}), family, "path", path)
        self._by_path[entry.name] = entry
        self._entries[entry.name] = entry
        return entry

    def _folders_text(self) -> str:
        folders = [str(f.path) for f in self.search_folders()]
        return ", ".join(folders) if folders else "(no folders configured)"

    # -- loading ---------------------------------------------------------------------

    def load(self, entry: CatalogEntry, parts: ChosenParts = NO_PARTS) -> LoadedModel:
        """The loaded model for `entry` with the job's chosen `parts`, from the cache or loaded
        now (dropping the oldest). Another choice of parts is another model."""
        key = (entry.name, *parts.key) if parts else (entry.name,)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            while len(self._loaded) >= self.max_loaded:
                self._loaded.popitem(last=False)
                self.free_memory()
        model = self._load_uncached(entry, parts)
        with self._lock:
            self._loaded[key] = model
        return model

    def _load_uncached(self, entry: CatalogEntry, parts: ChosenParts = NO_PARTS) -> LoadedModel:
        from .checkpoints import UnsupportedCheckpoint, load_folder, load_single_file
        from .tiny import build_tiny_pipeline

        # FLUX and SD3 overflow in float16: they run in bfloat16 where the engine picked float16.
        dtype = flow_dtype(self.dtype) if is_flow(entry.family) else self.dtype
        try:
            if entry.location is None:
                pipe = copy.deepcopy(build_tiny_pipeline(entry.name.removeprefix(BUILTIN_PREFIX)))
                if dtype != pipe.vae.dtype:
                    pipe.to(dtype=dtype)
                family, area = entry.family, TINY_WORKING_AREA
            elif entry.location.is_dir():
                pipe, family = load_folder(entry.location, dtype)
                area = WORKING_AREA[family]
            else:
                # The job's parts before the daemon's: the first of each role is taken.
                text_encoders = [*parts.text_encoders, *self.text_encoders]
                pipe, family = load_single_file(entry.location, dtype, text_encoders, parts.vae or self.vae)
                area = WORKING_AREA[family]
        except UnsupportedCheckpoint as exc:
            raise UnknownModel(f"Cannot use '{entry.name}' as a model: {exc}.") from exc
        except OSError as exc:
            raise UnknownModel(f"Cannot read model '{entry.name}': {exc.strerror or exc}.") from exc
        sizes = component_bytes(pipe)
        choice = self.choose_offload(entry.name, family, sizes, area, dtype)
        log.info("%s", choice.reason)
        if choice.mode == "none":
            pipe.to(self.device)
        if self.vae_tiling:
            pipe.vae.enable_tiling()
        options = {"device": self.device, "dtype": dtype, "offload": choice.mode}
        denoiser = sum(sizes.get(name, 0) for name in DENOISERS)
        if is_flow(family):
            from .flow_pipeline import FlowDifferentialPipeline

            flow = FlowDifferentialPipeline(pipe, **options)
            return LoadedModel(entry.name, family, flow, area, flow.multiple, choice, denoiser)
        from .pipeline import DifferentialDiffusionPipeline

        sampler = DifferentialDiffusionPipeline(pipe, **options)
        multiple = sampler.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        return LoadedModel(entry.name, family, sampler, area, multiple, choice, denoiser)

    def choose_offload(
        self, name: str, family: str, sizes: dict[str, int], pixels: int, dtype: Any
    ) -> OffloadChoice:
        """The offload mode of a model of `family` whose components weigh `sizes`, for jobs of
        its working area `pixels`, on this registry's device as it is now."""
        return choose_offload(
            sizes,
            family,
            pixels,
            device_memory(self.device),
            label=f"{family} model '{name}'",
            dtype_name=dtype_name(dtype),
            element_size=dtype.itemsize,
            asked=self.offload,
        )

    def loaded_offload(self) -> dict[str, OffloadChoice]:
        """Each loaded model's offload mode and why, by name (loaded with other parts too: the
        latest used)."""
        with self._lock:
            return {key[0]: model.offload for key, model in self._loaded.items()}

    def free_memory(self) -> None:
        """Give the device back what a dropped model or a stopped job held: components a job
        left on the device parked again (CPU offload), unreferenced tensors collected, the
        device's cache emptied."""
        with self._lock:
            loaded = list(self._loaded.values())
        for model in loaded:
            model.sampler.offload()
        gc.collect()
        if self.device.type in ("cuda", "mps"):
            import torch

            (torch.cuda if self.device.type == "cuda" else torch.mps).empty_cache()


def component_bytes(pipe: Any) -> dict[str, int]:
    """Each module of a diffusers pipeline by name, in bytes (parameters and buffers)."""
    import torch

    return {
        name: module_bytes(module)
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
