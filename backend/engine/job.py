"""One inpainting job: validate it, process the mask, sample the region, composite the result.

`Engine` is what the daemon and the CLI call. It holds a `ModelRegistry` (registry.py)
for the models and runs one job at a time; `inpaint` reads top to bottom as the job's
steps, `_run` is the part that needs the model.
"""

from __future__ import annotations

import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...protocol import DEFAULT_LIMITS, JobParams, Limits, ProtocolError
from .catalog import CatalogEntry, SearchFolder
from .errors import EngineError, InvalidRequest, OutOfMemory
from .masks import composite_alpha, process_mask
from .registry import ModelInfo, ModelRegistry, pick_device
from .schedulers import check_scheduler_name

ProgressCallback = Callable[[str, int, int], None]
PreviewCallback = Callable[[int, Callable[[], np.ndarray]], None]


@dataclass
class InpaintResult:
    """The result region, the size of the request's region.

    image: float32 HxWx4 RGBA in [0, 1], straight alpha. RGB holds the new pixels (and
    the input's RGB, bit for bit, wherever alpha is 0); A is the composite alpha: 0
    where the processed mask is 0, 1 as soon as the mask is clearly above 0.
    """

    image: np.ndarray
    seed: int
    timings: dict[str, float] = field(default_factory=dict)


class Engine:
    """Differential Diffusion inpainting with cached models; `inpaint` is thread-safe.

    device: None picks cuda (fp16) > mps (fp16) > cpu (fp32).
    limits: the protocol's limits a job must keep to (steps, region size, prompt length).
    model_options: how models are found and kept, passed to `ModelRegistry`.
    """

    def __init__(
        self, device: str | None = None, *, limits: Limits = DEFAULT_LIMITS, **model_options: Any
    ) -> None:
        self.device, self.dtype = pick_device(device)
        self.limits = limits
        self.models = ModelRegistry(self.device, self.dtype, **model_options)
        self._job_lock = threading.Lock()
        self._memory_left = False  # a job stopped half-way and nobody has freed memory since

    # -- models ----------------------------------------------------------------------

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in, in order (existing or not)."""
        return self.models.search_folders()

    def list_models(self) -> list[ModelInfo]:
        """Every model found now (re-scans the folders), built-ins last."""
        return self.models.list_models()

    def resolve_model(self, spec: str | None) -> str:
        """The canonical name for `spec` (see catalog.py for the grammar); UnknownModel if none."""
        return self.models.resolve(spec).name

    def free_memory(self) -> None:
        """Give back what a failed or cancelled job left: its offloaded components parked, the
        garbage collected, the device's cache emptied (tenths of a second).

        `inpaint` does not do it when a job stops, so that its caller can answer first (the
        daemon calls this once its client has the job's last word); the next job does it
        first if nobody did.
        """
        with self._job_lock:
            self._memory_left = False
            self.models.free_memory()

    # -- jobs --------------------------------------------------------------------------

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: JobParams,
        *,
        model: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_preview: PreviewCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> InpaintResult:
        """Inpaint one region.

        image: float32 HxWx4 RGBA in [0, 1], straight alpha, sRGB.
        mask: uint8 HxW, 0 keep ... 255 change fully; gray = partial strength.
        params: checked against the protocol's spec and `limits` (see check_params).
        model: the model spec; None takes `params.model` (None there too: the default model).
        should_cancel: polled between the sampling steps and before and after each stage;
            when it returns True the job stops with JobCancelled.
        Returns the result region (see InpaintResult). Raises InvalidRequest, UnknownModel,
        JobCancelled or OutOfMemory (all EngineError); the engine stays usable after any
        (see `free_memory`).
        """
        start = time.perf_counter()
        params = check_params(params, self.limits)
        image, mask = check_pixels(image, mask, self.limits)
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        entry = self.models.resolve(model if model is not None else params.model)

        from .pipeline import start_step

        processed = process_mask(mask, grow=params.grow, feather=params.feather, snap=params.snap)
        alpha = composite_alpha(processed, params.snap, steps=params.steps, strength=params.strength)
        max_strength = float(processed.max()) * params.strength  # from the pixel mask, in double
        if not np.any(alpha > 0) or start_step(max_strength, params.steps) == params.steps:
            # Nothing is ever free: the input, untouched, and no model needed.
            out = np.concatenate([image[..., :3], np.zeros_like(image[..., :1])], axis=-1)
            return InpaintResult(out, int(seed), {"total": time.perf_counter() - start})

        with self._job_lock:
            if self._memory_left:
                self._memory_left = False
                self.models.free_memory()
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
                # The job's tensors (latents, activations) go now: the finished frames in the
                # traceback would otherwise keep them alive. Collecting the garbage and emptying
                # the device's cache take longer; they wait for `free_memory` or the next job.
                traceback.clear_frames(exc.__traceback__)
                self._memory_left = True
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
        params: JobParams,
        seed: int,
        start: float,
        on_progress: ProgressCallback | None,
        on_preview: PreviewCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> InpaintResult:
        import torch

        from .pipeline import raise_if_cancelled, start_step
        from .preview import latent_preview
        from .regions import image_to_tensor, resize, tensor_to_image, working_size
        from .schedulers import make_scheduler

        progress = on_progress or (lambda _stage, _step, _steps: None)
        timings: dict[str, float] = {}
        marks = {"loading": time.perf_counter()}

        raise_if_cancelled(should_cancel)
        progress("loading", 0, 1)
        loaded = self.models.load(entry)
        progress("loading", 1, 1)
        raise_if_cancelled(should_cancel)

        height, width = processed.shape
        size = working_size(height, width, loaded.working_area, loaded.multiple)
        rgb = resize(image_to_tensor(image[..., :3]), size).clamp_(0.0, 1.0)
        strength = torch.from_numpy(processed)[None, None] * params.strength
        strength_work = resize(strength, size, mode="bilinear").clamp_(0.0, 1.0)
        num_run = params.steps - start_step(max_strength, params.steps)

        def on_stage(stage: str) -> None:
            marks[stage] = time.perf_counter()
            progress(stage, 0, num_run if stage == "sampling" else 1)

        def make_preview(state: Any) -> np.ndarray:  # made only when the caller takes one
            current = state.pred_original if state.pred_original is not None else state.latents
            return latent_preview(torch.where(state.free, current, state.original_latents), loaded.family)

        def on_step(state: Any) -> None:
            progress("sampling", state.step, state.num_steps_run)
            if on_preview is not None:
                on_preview(state.step, lambda: make_preview(state))

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
        raise_if_cancelled(should_cancel)
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


def check_params(params: JobParams, limits: Limits = DEFAULT_LIMITS) -> JobParams:
    """The job's parameters checked by the protocol's spec (InvalidRequest naming the field),
    then by what only the engine knows: the scheduler must be one it offers (UnknownScheduler)."""
    try:
        params = params.validated(limits)
    except ProtocolError as exc:
        raise InvalidRequest(exc.message) from exc
    return params.replace(scheduler=check_scheduler_name(params.scheduler))


def check_pixels(image: Any, mask: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
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
    if not limits.fits(width, height):
        raise InvalidRequest(
            f"The region is {width}x{height} pixels; at most {limits.max_pixels} pixels, "
            f"{limits.max_side} on a side, are accepted."
        )
    if not np.isfinite(image).all():
        raise InvalidRequest("The image contains NaN or infinite values.")
    return image, mask


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
