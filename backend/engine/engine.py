"""The engine the daemon and the CLI call: models, regions, masks, one job at a time."""

from __future__ import annotations

import copy
import gc
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from .configs import WORKING_AREA
from .errors import EngineError, InvalidRequest, JobCancelled, OutOfMemory, UnknownModel
from .masks import composite_alpha, process_mask
from .params import InpaintParams, InpaintResult, ModelInfo
from .tiny import BUILTIN_PREFIX, BUILTINS, TINY_WORKING_AREA

MAX_REGION_PIXELS = 8192 * 8192

ProgressCallback = Callable[[str, int, int], None]
PreviewCallback = Callable[[int, Callable[[], np.ndarray]], None]


@dataclass
class LoadedModel:
    name: str
    family: str
    sampler: Any  # DifferentialDiffusionPipeline
    working_area: int  # pixels of area regions are resized to
    multiple: int  # working sizes are multiples of this


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


class Engine:
    """Differential Diffusion inpainting with cached models; `inpaint` is thread-safe.

    device: None picks cuda (fp16) > mps (fp16) > cpu (fp32).
    model_dirs: extra folders to search for checkpoints (see catalog.py for the order).
    default_model: the spec used when a job names none.
    vae_tiling: decode/encode the VAE in tiles (less memory on small GPUs).
    cpu_offload: keep models in CPU memory, moving each component to the GPU only
        while it runs (slower, for GPUs that cannot hold a whole pipeline).
    max_loaded: how many pipelines stay loaded (least recently used is dropped).
    scan_default_locations: also search the usual ComfyUI/A1111 folders and the HF cache.
    allow_paths: whether a spec may be a filesystem path.
    """

    def __init__(
        self,
        device: str | None = None,
        model_dirs: Sequence[Path | str] = (),
        default_model: str | None = None,
        *,
        vae_tiling: bool = False,
        cpu_offload: bool = False,
        max_loaded: int = 1,
        scan_default_locations: bool = True,
        allow_paths: bool = True,
    ) -> None:
        self.device, self.dtype = pick_device(device)
        self.model_dirs = [Path(d).expanduser() for d in model_dirs]
        self.default_model = default_model or None
        self.vae_tiling = vae_tiling
        self.cpu_offload = cpu_offload and self.device.type != "cpu"
        self.max_loaded = max(1, max_loaded)
        self.scan_default_locations = scan_default_locations
        self.allow_paths = allow_paths
        self._job_lock = threading.Lock()
        self._catalog_lock = threading.RLock()
        self._entries: dict[str, CatalogEntry] = {}
        self._by_path: dict[str, CatalogEntry] = {}  # models named by path, listed from then on
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()

    # -- models ----------------------------------------------------------------------

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in, in order (existing or not)."""
        return search_folders(self.model_dirs, self.scan_default_locations)

    def _refresh(self) -> dict[str, CatalogEntry]:
        with self._catalog_lock:
            entries = {e.name: e for e in discover(self.search_folders())}
            for entry in self._by_path.values():
                entries.setdefault(entry.name, entry)
            self._entries = entries
            return entries

    def list_models(self) -> list[ModelInfo]:
        """Every model found now (re-scans the folders), built-ins last."""
        return [ModelInfo(e.name, e.family, e.source) for e in self._refresh().values()]

    def resolve_model(self, spec: str | None) -> str:
        """The canonical name for `spec` (see catalog.py for the grammar); UnknownModel if none."""
        with self._catalog_lock:
            return self._resolve(spec).name

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
            f"'{spec}' is not a Stable Diffusion 1.5 or SDXL diffusers model in the Hugging Face cache "
            f"({hf_cache_dir()}); models are never downloaded."
        )

    def _resolve_path(self, path: Path) -> CatalogEntry:
        path = path.resolve()
        for entry in [*self._entries.values(), *self._by_path.values()]:
            if entry.location is not None and entry.location.resolve() == path:
                return entry
        family = classify(path)
        if family is None:
            reason = why_unusable(path) or "it is not a .safetensors/.ckpt checkpoint or a diffusers folder"
            raise UnknownModel(f"Cannot use '{path.name}' as a model: {reason}.")
        entry = CatalogEntry(name_for_path(path, {**self._entries, **self._by_path}), family, "path", path)
        self._by_path[entry.name] = entry
        self._entries[entry.name] = entry
        return entry

    def _folders_text(self) -> str:
        folders = [str(f.path) for f in self.search_folders()]
        return ", ".join(folders) if folders else "(no folders configured)"

    def _load(self, entry: CatalogEntry) -> LoadedModel:
        """The loaded model for `entry`, from the cache or loaded now (dropping the oldest)."""
        with self._catalog_lock:
            if entry.name in self._loaded:
                self._loaded.move_to_end(entry.name)
                return self._loaded[entry.name]
            while len(self._loaded) >= self.max_loaded:
                self._loaded.popitem(last=False)
                self._free_memory()
        model = self._load_uncached(entry)
        with self._catalog_lock:
            self._loaded[entry.name] = model
        return model

    def _load_uncached(self, entry: CatalogEntry) -> LoadedModel:
        from .checkpoints import UnsupportedCheckpoint, load_folder, load_single_file
        from .pipeline import DifferentialDiffusionPipeline
        from .tiny import build_tiny_pipeline

        try:
            if entry.location is None:
                pipe = copy.deepcopy(build_tiny_pipeline(entry.name.removeprefix(BUILTIN_PREFIX)))
                if self.dtype != pipe.unet.dtype:
                    pipe.to(dtype=self.dtype)
                family, area = entry.family, TINY_WORKING_AREA
            elif entry.location.is_dir():
                pipe, family = load_folder(entry.location, self.dtype)
                area = WORKING_AREA[family]
            else:
                pipe, family = load_single_file(entry.location, self.dtype)
                area = WORKING_AREA[family]
        except UnsupportedCheckpoint as exc:
            raise UnknownModel(f"Cannot use '{entry.name}' as a model: {exc}.") from exc
        except OSError as exc:
            raise UnknownModel(f"Cannot read model '{entry.name}': {exc.strerror or exc}.") from exc
        if not self.cpu_offload:
            pipe.to(self.device)
        if self.vae_tiling:
            pipe.vae.enable_tiling()
        sampler = DifferentialDiffusionPipeline(
            pipe, device=self.device, dtype=self.dtype, cpu_offload=self.cpu_offload
        )
        multiple = sampler.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        return LoadedModel(entry.name, family, sampler, area, multiple)

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- jobs --------------------------------------------------------------------------

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: InpaintParams,
        *,
        model: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_preview: PreviewCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> InpaintResult:
        """Inpaint one region.

        image: float32 HxWx4 RGBA in [0, 1], straight alpha, sRGB.
        mask: uint8 HxW, 0 keep ... 255 change fully; gray = partial strength.
        Returns the result region (see InpaintResult). Raises InvalidRequest, UnknownModel,
        JobCancelled or OutOfMemory (all EngineError); the engine stays usable after any.
        """
        start = time.perf_counter()
        params = params.validated()
        image, mask = check_pixels(image, mask)
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        with self._catalog_lock:
            entry = self._resolve(model)

        from .pipeline import start_step

        processed = process_mask(mask, grow=params.grow, feather=params.feather, snap=params.snap)
        alpha = composite_alpha(processed, params.snap, steps=params.steps, strength=params.strength)
        max_strength = float(processed.max()) * params.strength  # from the pixel mask, in double
        if not np.any(alpha > 0) or start_step(max_strength, params.steps) == params.steps:
            # Nothing is ever free: the input, untouched, and no model needed.
            out = np.concatenate([image[..., :3], np.zeros_like(image[..., :1])], axis=-1)
            return InpaintResult(out, int(seed), {"total": time.perf_counter() - start})

        with self._job_lock:
            try:
                return self._run(
                    entry,
                    image,
                    processed,
                    alpha,
                    max_strength,
                    params,
                    seed,
                    start,
                    on_progress,
                    on_preview,
                    should_cancel,
                )
            except BaseException as exc:
                # Whatever the job held (latents, activations) goes before the next job; the
                # finished frames in the traceback would otherwise keep their tensors alive.
                traceback.clear_frames(exc.__traceback__)
                self._free_memory()
                if isinstance(exc, Exception) and not isinstance(exc, EngineError) and _is_out_of_memory(exc):
                    raise OutOfMemory(
                        f"The {self.device.type.upper()} device ran out of memory. Try a smaller "
                        "region, fewer loaded models, VAE tiling or CPU offload."
                    ) from exc
                raise

    def _run(
        self,
        entry: CatalogEntry,
        image: np.ndarray,
        processed: np.ndarray,
        alpha: np.ndarray,
        max_strength: float,
        params: InpaintParams,
        seed: int,
        start: float,
        on_progress: ProgressCallback | None,
        on_preview: PreviewCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> InpaintResult:
        import torch

        from .pipeline import start_step
        from .preview import latent_preview
        from .regions import image_to_tensor, resize, tensor_to_image, working_size
        from .schedulers import make_scheduler

        progress = on_progress or (lambda _stage, _step, _steps: None)
        timings: dict[str, float] = {}
        marks = {"loading": time.perf_counter()}

        def cancel_check() -> None:
            if should_cancel is not None and should_cancel():
                raise JobCancelled("The job was cancelled.")

        cancel_check()
        progress("loading", 0, 1)
        loaded = self._load(entry)
        progress("loading", 1, 1)
        cancel_check()

        height, width = processed.shape
        size = working_size(height, width, loaded.working_area, loaded.multiple)
        rgb = resize(image_to_tensor(image[..., :3]), size).clamp_(0.0, 1.0)
        strength = torch.from_numpy(processed)[None, None] * params.strength
        strength_work = resize(strength, size, mode="bilinear").clamp_(0.0, 1.0)
        num_run = params.steps - start_step(max_strength, params.steps)

        def on_stage(stage: str) -> None:
            marks[stage] = time.perf_counter()
            progress(stage, 0, num_run if stage == "sampling" else 1)

        def on_step(state: Any) -> None:
            progress("sampling", state.step, state.num_steps_run)
            if on_preview is not None:
                current = state.pred_original if state.pred_original is not None else state.latents
                shown = torch.where(state.free, current, state.original_latents)
                on_preview(state.step, lambda: latent_preview(shown, loaded.family))

        generator = torch.Generator("cpu").manual_seed(seed)
        scheduler = make_scheduler(params.scheduler, loaded.sampler.pipe.scheduler.config)
        decoded = loaded.sampler(
            rgb,
            strength_work,
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            scheduler=scheduler,
            generator=generator,
            should_cancel=should_cancel,
            callback=on_step,
            on_stage=on_stage,
            max_strength=max_strength,
        )
        progress("decoding", 1, 1)
        end = time.perf_counter()

        new_rgb = tensor_to_image(resize(decoded.float().cpu(), (height, width)).clamp_(0.0, 1.0))
        # Mask-0 pixels keep the input's values bit for bit; the rest are the new pixels.
        out_rgb = np.where(alpha[..., None] > 0, new_rgb, image[..., :3])
        result = np.concatenate([out_rgb, alpha[..., None]], axis=-1).astype(np.float32, copy=False)

        timings["load"] = marks["encoding"] - marks["loading"]
        timings["encode"] = marks["sampling"] - marks["encoding"]
        timings["sample"] = marks.get("decoding", end) - marks["sampling"]
        timings["decode"] = end - marks.get("decoding", end)
        timings["total"] = time.perf_counter() - start
        return InpaintResult(result, int(seed), timings)


def check_pixels(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate the region and mask; returns (float32 HxWx4, uint8 HxW)."""
    if not isinstance(image, np.ndarray) or not isinstance(mask, np.ndarray):
        raise InvalidRequest("The image and the mask must be arrays of pixels.")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidRequest(f"The image must be H x W x 4 (RGBA), got shape {image.shape}.")
    if image.dtype != np.float32:
        raise InvalidRequest(f"The image must be float32 RGBA in [0, 1], got {image.dtype}.")
    if image.shape[2] == 3:
        image = np.concatenate([image, np.ones_like(image[..., :1])], axis=-1)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise InvalidRequest(f"The mask must be H x W (one channel), got shape {mask.shape}.")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    if mask.dtype != np.uint8:
        raise InvalidRequest(f"The mask must be 8-bit (uint8), got {mask.dtype}.")
    height, width = image.shape[:2]
    if mask.shape != (height, width):
        raise InvalidRequest(
            f"The mask is {mask.shape[1]}x{mask.shape[0]} pixels but the image is {width}x{height}."
        )
    if height == 0 or width == 0:
        raise InvalidRequest("The region is empty.")
    if height * width > MAX_REGION_PIXELS:
        raise InvalidRequest(
            f"The region is {width}x{height} pixels; at most {MAX_REGION_PIXELS} pixels are accepted."
        )
    if not np.isfinite(image).all():
        raise InvalidRequest("The image contains NaN or infinite values.")
    return image, mask


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
