"""One inpainting job: validate it, process the mask, sample the region, composite the result.

`Engine` is what the daemon and the CLI call. It holds a `ModelRegistry` (registry.py)
for the models and runs one job at a time; `inpaint` reads top to bottom as the job's
steps, `_run` is the part that needs the model.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...protocol import DEFAULT_LIMITS, Depth, JobParams, Limits, ProtocolError
from . import seams
from .addons import AddonInfo
from .catalog import CatalogEntry, SearchFolder
from .controlnet import ControlInput, ControlNetInfo, ControlNets, check_controls
from .depth import DepthModels
from .errors import EngineError, InvalidRequest, OutOfMemory
from .ip_adapter import IPAdapters, ReferenceImage
from .loras import LoraLibrary
from .maps import change_map, depth_map, pixel_strength, unit_map
from .masks import composite_alpha, process_mask
from .memory import OffloadChoice, activation_bytes
from .parts import NO_PARTS, ChosenParts, PartFile
from .regions import Context, context_window
from .registry import ModelInfo, ModelRegistry, pick_device
from .schedulers import check_scheduler_name

ProgressCallback = Callable[[str, int, int], None]
PreviewCallback = Callable[[int, int, Callable[[], np.ndarray]], None]  # (result index, step, make)


@dataclass
class InpaintResult:
    """The result region, the size of the request's region.

    image: float32 HxWx4 RGBA in [0, 1], straight alpha. RGB holds the new pixels (and
    the input's RGB, bit for bit, wherever the composite alpha is 0); A is the blend map
    where the job gave one, else the composite alpha: 0 where the processed mask is 0, 1
    as soon as the mask is clearly above 0.
    mask: the processed change map it was made with (float64 HxW in [0, 1], before x
    strength; one array shared by a job's results): where it is 0, RGB is the input's.
    """

    image: np.ndarray
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    index: int = 0  # in the job's results
    strength: float = 1.0  # the global strength it was made with
    mask: np.ndarray | None = None


ResultCallback = Callable[[InpaintResult], None]


class Engine:
    """Differential Diffusion inpainting with cached models; `inpaint` is thread-safe.

    device: None picks cuda (fp16) > mps (fp16) > cpu (fp32).
    limits: the protocol's limits a job must keep to (steps, region size, prompt length).
    max_batch: how many results of one job sample together at most; None: as memory allows.
    depth_model: the depth model spec a job that names none takes (depth.py); None: the first found.
    depth_model_paths: whether a job's `depth_model` may be a path (the daemon's clients: no).
    lora_dirs: folders of LoRAs, searched before the installations' (loras.py).
    lora_paths: whether a job's LoRA may be a path (the daemon's clients: no).
    ip_adapter_dirs: folders of IP-Adapters and their image encoders (ip_adapter.py).
    ip_adapter_paths: whether a job's IP-Adapter may be a path (the daemon's clients: no).
    controlnet_dirs: folders of ControlNets, searched before the installations' (controlnet.py).
    controlnet_paths: whether a job's ControlNet may be a path (the daemon's clients: no).
    model_options: how models are found and kept, passed to `ModelRegistry`; depth models and
        ControlNets are searched in its folders too.
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_batch: int | None = None,
        depth_model: str | None = None,
        depth_model_paths: bool = True,
        lora_dirs: Sequence[str | Any] = (),
        lora_paths: bool = True,
        ip_adapter_dirs: Sequence[str | Any] = (),
        ip_adapter_paths: bool = True,
        controlnet_dirs: Sequence[str | Any] = (),
        controlnet_paths: bool = True,
        **model_options: Any,
    ) -> None:
        self.device, self.dtype = pick_device(device)
        self.limits = limits
        self.max_batch = max_batch  # samples run together at most; None: by free memory (batch_size)
        self.models = ModelRegistry(self.device, self.dtype, **model_options)
        self.depth_models = DepthModels(
            self.device,
            self.dtype,
            self.models.model_dirs,
            depth_model,
            scan_default_locations=self.models.scan_default_locations,
            allow_paths=depth_model_paths,
        )
        self.controlnets = ControlNets(
            self.device,
            self.dtype,
            self.models.model_dirs,
            controlnet_dirs,
            scan_default_locations=self.models.scan_default_locations,
            allow_paths=controlnet_paths,
            cpu_offload=self.models.offload != "none",
        )
        self.loras = LoraLibrary(
            lora_dirs,
            self.models.model_dirs,
            scan_default_locations=self.models.scan_default_locations,
            allow_paths=lora_paths,
        )
        self.ip_adapters = IPAdapters(
            ip_adapter_dirs,
            self.models.model_dirs,
            scan_default_locations=self.models.scan_default_locations,
            allow_paths=ip_adapter_paths,
        )
        self._job_lock = threading.Lock()
        self._memory_left = False  # a job stopped half-way and nobody has freed memory since

    # -- models ----------------------------------------------------------------------

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in, in order (existing or not)."""
        return self.models.search_folders()

    def list_models(self) -> list[ModelInfo]:
        """Every model found now (re-scans the folders), built-ins last."""
        return self.models.list_models()

    def list_controlnets(self) -> list[ControlNetInfo]:
        """Every ControlNet found now (re-scans the folders), built-ins last."""
        return self.controlnets.list_controlnets()

    def list_loras(self) -> list[AddonInfo]:
        """Every LoRA found now (re-scans the folders), built-ins last, each with its family."""
        return self.loras.find()

    def list_ip_adapters(self) -> list[AddonInfo]:
        """Every IP-Adapter found now (re-scans the folders), built-ins last, each with its family."""
        return self.ip_adapters.find()

    def list_parts(self) -> list[PartFile]:
        """Every text encoder and VAE a job may choose for a FLUX.1 / SD3 single file (parts.py)."""
        return self.models.list_parts()

    def resolve_model(self, spec: str | None) -> str:
        """The canonical name for `spec` (see catalog.py for the grammar); UnknownModel if none."""
        return self.models.resolve(spec).name

    def loaded_offload(self) -> dict[str, OffloadChoice]:
        """Each loaded model's offload mode (none, model or sequential) and why, by name."""
        return self.models.loaded_offload()

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
        selection: np.ndarray | None = None,
        blend: np.ndarray | None = None,
        context: Context = None,
        controls: Sequence[ControlInput] = (),
        references: Sequence[ReferenceImage] = (),
    ) -> InpaintResult:
        """Inpaint one region once: `inpaint_batch` for a job of one result.

        image: float32 HxWx4 RGBA in [0, 1], straight alpha, sRGB.
        mask: the change map, HxW: uint8 (0 keep ... 255 change fully; gray = partial
            strength), uint16 (0 ... 65535) or float in [0, 1] (see maps.unit_map).
        params: checked against the protocol's spec and `limits` (see check_params); a
            `count` or `fan` of several results is refused here (InvalidRequest).
        model: the model spec; None takes `params.model` (None there too: the default model).
        should_cancel: polled between the sampling steps and before and after each stage;
            when it returns True the job stops with JobCancelled.
        selection, blend, context, controls: the other maps, the model's window and the
            ControlNets (see inpaint_batch).
        Returns the result region (see InpaintResult). Raises InvalidRequest, UnknownModel,
        JobCancelled or OutOfMemory (all EngineError); the engine stays usable after any
        (see `free_memory`).
        """
        if params.results != 1:
            raise InvalidRequest(f"This job asks for {params.results} results; use inpaint_batch.")
        return self.inpaint_batch(
            image,
            mask,
            params,
            model=model,
            on_progress=on_progress,
            on_preview=on_preview,
            should_cancel=should_cancel,
            selection=selection,
            blend=blend,
            context=context,
            controls=controls,
            references=references,
        )[0]

    def inpaint_batch(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: JobParams,
        *,
        model: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_preview: PreviewCallback | None = None,
        on_result: ResultCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        selection: np.ndarray | None = None,
        blend: np.ndarray | None = None,
        context: Context = None,
        controls: Sequence[ControlInput] = (),
        references: Sequence[ReferenceImage] = (),
    ) -> list[InpaintResult]:
        """Every result of a job, in index order: `params.count` variations (seeds seed,
        seed + 1, ...) or one per `params.fan` strength (one seed, one noise).

        Result k equals a job of its own with result k's seed and strength: on the CPU
        bit for bit (samples run one at a time); on a GPU samples run together in
        batches as memory allows (`batch_size`), equal up to the device's rounding.
        `on_result` gets each result as soon as it is done; after a cancel the results
        already handed over stay valid (JobCancelled is raised for the rest).

        selection: a map (as `mask`) that multiplies the change map after its levels.
        blend: a map (as `mask`) that is every result's alpha instead of the composite
            alpha; the change map still drives the sampler.
        context: the part of the region the model sees (regions.context_window: "mask", an
            (x, y, w, h) rectangle; None: all of it); outside it the input stays, alpha 0
            (the blend map where given). `params.loras` are switched on in the model (loras.py).
        references: IP-Adapter reference images with their weights and adapters (ip_adapter.py).
        controls: ControlNet inputs, each an image of the region's size with its kind, model,
            strength and start/end (controlnet.ControlInput); `preprocess` makes canny edges or
            the depth of the image first; an `inpaint` control is told to fill where the change
            map is above half. Otherwise as `inpaint`.
        """
        start = time.perf_counter()
        params = check_params(params, self.limits)
        image, mask = check_pixels(image, mask, self.limits)
        selection = check_map(selection, image, "selection")
        blend = check_map(blend, image, "blend mask")
        controls = check_controls(controls, image)
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        entry = self.models.resolve(model if model is not None else params.model)
        parts = self.models.choose_parts(entry, params.text_encoders, params.vae)
        loras = self.loras.resolve(params.loras, entry.name, entry.family)
        chosen_references = self.ip_adapters.resolve(references, entry.name, entry.family)
        processed = self._processed_map(image, mask, params, selection, on_progress, should_cancel)
        blend_alpha = None if blend is None else blend.astype(np.float32)
        control_images = self._control_images(controls, params.depth_model, on_progress, should_cancel)
        window = context_window(context, processed)
        if window is not None:
            # The model sees the window alone; each result is placed back in the whole region.
            whole = (image, outside_zeroed(processed, window), blend_alpha)
            image, processed = image[window], processed[window]
            blend_alpha = None if blend_alpha is None else blend_alpha[window]
            control_images = [picture[window] for picture in control_images]
        planned = [_plan(processed, params, seed, index) for index in range(params.results)]
        results: list[InpaintResult] = []

        def deliver(result: InpaintResult) -> None:
            if window is not None:
                result = _placed(result, window, *whole)
            results.append(result)
            if on_result is not None:
                on_result(result)

        def untouched(plan: _Planned) -> InpaintResult:
            # Nothing is ever free: the input, untouched, and no model needed.
            alpha = np.zeros_like(image[..., 0]) if blend_alpha is None else blend_alpha
            out = np.concatenate([image[..., :3], alpha[..., None]], axis=-1)
            return InpaintResult(
                out,
                plan.seed,
                {"total": time.perf_counter() - start},
                plan.index,
                plan.strength,
                processed,
            )

        if not any(plan.samples for plan in planned):
            for plan in planned:
                deliver(untouched(plan))
            return results

        with self._job_lock:
            if self._memory_left:
                self._memory_left = False
                self.models.free_memory()
            try:
                run = _BatchRun(
                    self,
                    entry,
                    image,
                    processed,
                    params,
                    start,
                    on_progress,
                    on_preview,
                    should_cancel,
                    parts,
                )
                run.blend = blend_alpha
                # Every job sets the model's LoRAs: its own on, any earlier job's off.
                self.loras.apply(run.loaded.sampler.pipe, loras, entry.name)
                run.references = self.ip_adapters.apply(run.loaded.sampler, chosen_references, entry.name)
                run.add_controls(controls, control_images)
                for chunk in run.chunks(planned):
                    made = [untouched(plan) for plan in chunk] if not chunk[0].samples else run.sample(chunk)
                    for result in made:
                        deliver(result)
                return results
            except BaseException as exc:
                # The job's tensors (latents, activations) go now: the finished frames in the
                # traceback would otherwise keep them alive. Collecting the garbage and emptying
                # the device's cache take longer; they wait for `free_memory` or the next job.
                traceback.clear_frames(exc.__traceback__)
                self._memory_left = True
                if isinstance(exc, Exception) and not isinstance(exc, EngineError) and _is_out_of_memory(exc):
                    raise OutOfMemory(
                        f"The {self.device.type.upper()} device ran out of memory. Try a smaller "
                        "region, fewer results, fewer loaded models, VAE tiling or --offload sequential."
                    ) from exc
                raise

    def strength_map(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: JobParams,
        *,
        selection: np.ndarray | None = None,
        context: Context = None,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Each pixel's effective strength (float64 HxW in [0, 1]) for a job with these
        inputs, without sampling: the map the sampler is given, at pixel resolution (with a
        `fan`, its first strength; 0 outside the `context`). Needs the depth model when
        `params.depth` asks for one, never the diffusion model. Raises as `inpaint`."""
        params = check_params(params, self.limits)
        image, mask = check_pixels(image, mask, self.limits)
        selection = check_map(selection, image, "selection")
        processed = self._processed_map(image, mask, params, selection, on_progress, should_cancel)
        window = context_window(context, processed)
        if window is not None:
            processed = outside_zeroed(processed, window)
        return pixel_strength(processed, params.result_strength(0))

    def _processed_map(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: JobParams,
        selection: np.ndarray | None,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> np.ndarray:
        """The change map the sampler works from (maps.change_map, then grow, feather and snap)."""
        depth = None
        if params.depth is not Depth.NONE:
            depth = depth_map(
                self.estimate_depth(image, params.depth_model, on_progress, should_cancel), params.depth
            )
        changed = change_map(mask, params, depth=depth, selection=selection)
        return process_mask(changed, grow=params.grow, feather=params.feather, snap=params.snap)

    def _control_images(
        self,
        controls: Sequence[ControlInput],
        depth_model: str | None,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> list[np.ndarray]:
        """Each control's image (float32 HxWx3): as sent, or made from it (preprocess.py; depth
        with the job's depth model)."""
        from .preprocess import control_image

        def depth(rgba: np.ndarray) -> np.ndarray:
            return self.estimate_depth(rgba, depth_model, on_progress, should_cancel)

        return [control_image(c.image, c.params.kind, c.params.preprocess, depth) for c in controls]

    def estimate_depth(
        self,
        image: np.ndarray,
        model: str | None = None,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """The region's relative depth (float64 HxW, larger = nearer) from a depth model
        (depth.py; None: the engine's default, else the first found)."""
        from .pipeline import raise_if_cancelled

        raise_if_cancelled(should_cancel)
        progress = on_progress or (lambda _stage, _step, _steps: None)
        with self._job_lock:  # one job at a time on the device, depth included
            progress("loading", 0, 1)
            estimator = self.depth_models.load(model)
            progress("loading", 1, 1)
            raise_if_cancelled(should_cancel)
            progress("encoding", 0, 1)
            estimate = estimator.estimate(image)
            progress("encoding", 1, 1)
        raise_if_cancelled(should_cancel)
        return estimate

    def batch_size(self, pixels: int, family: str = "sd15", onload: int = 0, element_size: int = 2) -> int:
        """How many samples of `pixels` working pixels of a `family` model sample together: one
        on the CPU (as fast per sample, and bit for bit a job of its own); on a GPU as many as
        its free memory holds, less the `onload` bytes sampling moves there (an offloaded
        denoiser), at the family's activations per sample (memory.activation_bytes, in a dtype
        of `element_size` bytes); or `max_batch` when set. An estimate: a chunk that runs out
        of memory is split in two and run again (see _BatchRun.sample)."""
        if self.max_batch is not None:
            return self.max_batch
        if self.device.type == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info(self.device)
            return fitting_samples(free - onload, pixels, family, self.limits.max_results, element_size)
        if self.device.type == "mps":
            return 2  # unified memory shared with the system: a modest batch
        return 1


def fitting_samples(free: int, pixels: int, family: str, most: int, element_size: int = 2) -> int:
    """How many samples of a `family` model at `pixels` working pixels fit in `free` bytes
    (80% of them: the rest for the allocator's fragments), between 1 and `most`."""
    return max(1, min(most, int(max(free, 0) * 0.8) // activation_bytes(family, pixels, element_size)))


@dataclass(frozen=True)
class _Planned:
    """One result of a job, before sampling."""

    index: int
    seed: int
    strength: float  # the global strength this result is made with
    alpha: np.ndarray  # its composite alpha
    max_strength: float  # max(mask * strength), from the pixel mask, in double
    samples: bool  # False: nothing is ever free, the result is the input


def _plan(processed: np.ndarray, params: JobParams, seed: int, index: int) -> _Planned:
    from .pipeline import start_step

    strength = params.result_strength(index)
    alpha = composite_alpha(processed, params.snap, steps=params.steps, strength=strength)
    max_strength = float(processed.max()) * strength
    # Some pixel is free at some step (N * max(e) >= 1), in every family: SD's start rule
    # says so without the model (FLUX's and SD3's would start a step nothing keeps).
    samples = bool(np.any(alpha > 0)) and start_step(max_strength, params.steps) < params.steps
    return _Planned(index, params.result_seed(seed, index), strength, alpha, max_strength, samples)


class _BatchRun:
    """The model side of one job: the model loaded once, the results sampled in chunks."""

    def __init__(
        self,
        engine: Engine,
        entry: CatalogEntry,
        image: np.ndarray,
        processed: np.ndarray,
        params: JobParams,
        start: float,
        on_progress: ProgressCallback | None,
        on_preview: PreviewCallback | None,
        should_cancel: Callable[[], bool] | None,
        parts: ChosenParts = NO_PARTS,
    ) -> None:
        from .pipeline import raise_if_cancelled
        from .regions import image_to_tensor, resize, working_size

        self.engine, self.image, self.processed, self.params, self.start = (
            engine,
            image,
            processed,
            params,
            start,
        )
        self.progress = on_progress or (lambda _stage, _step, _steps: None)
        self.on_preview, self.should_cancel = on_preview, should_cancel
        self.marks = {"loading": time.perf_counter()}
        raise_if_cancelled(should_cancel)
        self.progress("loading", 0, 1)
        self.loaded = engine.models.load(entry, parts)
        self.progress("loading", 1, 1)
        raise_if_cancelled(should_cancel)
        self.load_seconds = time.perf_counter() - self.marks["loading"]
        height, width = processed.shape
        self.size = working_size(height, width, self.loaded.working_area, self.loaded.multiple)
        self.rgb = resize(image_to_tensor(image[..., :3]), self.size).clamp_(0.0, 1.0)
        self.steps_done = 0
        self.steps_total = 0
        self.blend: np.ndarray | None = None  # float32 HxW: the results' alpha, when given
        self.references: Any = None  # ip_adapter.ReferenceEmbeds, when the job has references
        self.guides: list[Any] = []  # controlnet.ControlGuide, one per control

    def add_controls(self, controls: Sequence[ControlInput], images: Sequence[np.ndarray]) -> None:
        """Load each control's ControlNet (one that fits the model's family and this kind) and
        put its image at the working size."""
        import torch

        from .controlnet import check_fits, guide_for
        from .pipeline import raise_if_cancelled
        from .regions import image_to_tensor, resize

        if not controls:
            return
        sampler = self.loaded.sampler
        family = self.loaded.family
        denoiser = getattr(sampler, "unet", None) or getattr(sampler, "transformer", None)
        fill = resize(torch.from_numpy(self.processed)[None, None].float(), self.size, mode="bilinear")
        for control, picture in zip(controls, images, strict=True):
            info = self.engine.controlnets.resolve(control.params.model, control.params.kind, family)
            self.progress("loading", 0, 1)
            model = self.engine.controlnets.load(info, self.loaded.sampler.dtype)
            self.progress("loading", 1, 1)
            raise_if_cancelled(self.should_cancel)
            check_fits(model, denoiser, info.name, self.loaded.name)
            rgb = resize(image_to_tensor(picture), self.size, mode="bilinear")
            self.guides.append(guide_for(info, model, control.params, rgb, fill))

    def chunks(self, planned: list[_Planned]) -> list[list[_Planned]]:
        """Consecutive results that sample together, at most `batch_size` a chunk; a result
        that needs no sampling is a chunk of its own, so that results stay in order."""
        start_step = start_rule(self.loaded.family)

        loaded = self.loaded
        most = self.engine.batch_size(
            self.size[0] * self.size[1], loaded.family, loaded.onload_bytes, loaded.sampler.dtype.itemsize
        )
        chunks: list[list[_Planned]] = []
        for plan in planned:
            last = chunks[-1] if chunks else None
            if last is not None and plan.samples and last[0].samples and len(last) < most:
                last.append(plan)
            else:
                chunks.append([plan])
        steps = self.params.steps
        self.steps_total = sum(
            steps - min(start_step(p.max_strength, steps) for p in chunk)
            for chunk in chunks
            if chunk[0].samples
        )
        return chunks

    def sample(self, chunk: list[_Planned]) -> list[InpaintResult]:
        """The chunk's results; a chunk of several that runs out of GPU memory is split in two."""
        try:
            return self._sample(chunk)
        except Exception as exc:
            if len(chunk) == 1 or isinstance(exc, EngineError) or not _is_out_of_memory(exc):
                raise
            traceback.clear_frames(exc.__traceback__)  # the activations go before the retry
        self.engine.models.free_memory()
        half = len(chunk) // 2
        return self.sample(chunk[:half]) + self.sample(chunk[half:])

    def _sample(self, chunk: list[_Planned]) -> list[InpaintResult]:
        import torch

        from .pipeline import raise_if_cancelled
        from .preview import latent_preview
        from .regions import resize, tensor_to_image
        from .schedulers import make_scheduler

        params, loaded, image = self.params, self.loaded, self.image
        height, width = self.processed.shape
        marks = {"encoding": time.perf_counter()}
        pixel_mask = torch.from_numpy(self.processed)[None, None]
        strength_work = torch.cat(
            [
                resize(
                    torch.from_numpy(pixel_strength(self.processed, plan.strength))[None, None],
                    self.size,
                    mode="bilinear",
                ).clamp_(0.0, 1.0)
                for plan in chunk
            ]
        )
        start_step = start_rule(loaded.family)
        num_run = params.steps - min(start_step(plan.max_strength, params.steps) for plan in chunk)
        done_before = self.steps_done

        def on_stage(stage: str) -> None:
            marks[stage] = time.perf_counter()
            if stage == "sampling":
                self.progress(stage, done_before, self.steps_total)
            else:
                self.progress(stage, 0, 1)

        def make_preview(state: Any) -> np.ndarray:  # made only when the caller takes one
            current = state.pred_original if state.pred_original is not None else state.latents
            return latent_preview(torch.where(state.free, current, state.original_latents), loaded.family)

        def on_step(state: Any) -> None:
            self.steps_done = done_before + state.step
            self.progress("sampling", self.steps_done, self.steps_total)
            if self.on_preview is not None:
                self.on_preview(chunk[0].index, state.step, lambda: make_preview(state))

        # One generator per sample, seeded as that result's own job would be; a chunk of one
        # passes it alone, exactly as a job of one result.
        generators = [torch.Generator("cpu").manual_seed(plan.seed) for plan in chunk]
        scheduler = make_scheduler(params.scheduler, loaded.sampler.pipe.scheduler.config)
        decoded = loaded.sampler(
            self.rgb.repeat(len(chunk), 1, 1, 1),
            strength_work,
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            scheduler=scheduler,
            generator=generators[0] if len(chunk) == 1 else generators,
            should_cancel=self.should_cancel,
            callback=on_step,
            on_stage=on_stage,
            max_strength=[plan.max_strength for plan in chunk],
            smooth=params.smooth,
            # The painter's mask: FLUX Fill is told to fill where it is at least half set.
            mask=resize(pixel_mask, self.size, mode="bilinear").clamp(0.0, 1.0).repeat(len(chunk), 1, 1, 1),
            **({"references": self.references} if self.references is not None else {}),
            **({"controls": self.guides} if self.guides else {}),
        )
        self.steps_done = done_before + num_run
        self.progress("decoding", 1, 1)
        raise_if_cancelled(self.should_cancel)
        end = time.perf_counter()
        new_rgb = resize(decoded.float().cpu(), (height, width)).clamp_(0.0, 1.0)
        timings = {
            "load": self.load_seconds,
            "encode": marks["sampling"] - marks["encoding"],
            "sample": marks.get("decoding", end) - marks["sampling"],
            "decode": end - marks.get("decoding", end),
        }
        self.load_seconds = 0.0  # the model loads once a job
        results = []
        for k, plan in enumerate(chunk):
            rgb = tensor_to_image(new_rgb[k : k + 1])
            alpha = plan.alpha
            if params.color_match:
                rgb = seams.match_colors(rgb, image[..., :3], pixel_strength(self.processed, plan.strength))
            alpha = seams.keep_unchanged(alpha, rgb, image[..., :3], params.keep_threshold)
            # Mask-0 pixels keep the input's values bit for bit; the rest are the new pixels.
            out_rgb = np.where(alpha[..., None] > 0, rgb, image[..., :3])
            if self.blend is not None:
                alpha = self.blend  # the painter's own opacity; the RGB stays the sampler's
            out = np.concatenate([out_rgb, alpha[..., None]], axis=-1).astype(np.float32, copy=False)
            own = {**timings, "total": time.perf_counter() - self.start}
            results.append(InpaintResult(out, plan.seed, own, plan.index, plan.strength, self.processed))
        return results


def outside_zeroed(m: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """A copy of the map with 0 outside the window."""
    out = np.zeros_like(m)
    out[window] = m[window]
    return out


def _placed(
    result: InpaintResult,
    window: tuple[slice, slice],
    image: np.ndarray,
    processed: np.ndarray,
    blend: np.ndarray | None,
) -> InpaintResult:
    """A result of the window, placed in the whole region: the input around it, alpha 0 there
    (or the blend map's)."""
    alpha = np.zeros_like(image[..., 0]) if blend is None else blend
    out = np.concatenate([image[..., :3], alpha[..., None]], axis=-1)
    out[window] = result.image
    return dataclasses.replace(result, image=out, mask=processed)


def start_rule(family: str) -> Callable[[float, int], int]:
    """Where a family's img2img starts: FLUX and SD3 run ceil(N * s) steps, SD floor(N * s)."""
    from .configs import is_flow
    from .pipeline import flow_start_step, start_step

    return flow_start_step if is_flow(family) else start_step


def check_params(params: JobParams, limits: Limits = DEFAULT_LIMITS) -> JobParams:
    """The job's parameters checked by the protocol's spec (InvalidRequest naming the field),
    then by what only the engine knows: the scheduler must be one it offers (UnknownScheduler)."""
    try:
        params = params.validated(limits)
    except ProtocolError as exc:
        raise InvalidRequest(exc.message) from exc
    return params.replace(scheduler=check_scheduler_name(params.scheduler))


def check_pixels(image: Any, mask: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """Validate the region and mask; returns (float32 HxWx4, float64 HxW in [0, 1])."""
    if not isinstance(image, np.ndarray) or not isinstance(mask, np.ndarray):
        raise InvalidRequest("The image and the mask must be arrays of pixels.")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidRequest(f"The image must be H x W x 4 (RGBA), got shape {image.shape}.")
    if image.dtype != np.float32:
        raise InvalidRequest(f"The image must be float32 RGBA in [0, 1], got {image.dtype}.")
    if image.shape[2] == 3:
        image = np.concatenate([image, np.ones_like(image[..., :1])], axis=-1)
    mask = check_map(mask, image, "mask")
    height, width = image.shape[:2]
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


def check_map(array: Any, image: np.ndarray, what: str) -> Any:
    """A map of the image's size as float64 HxW in [0, 1] (maps.unit_map); None stays None."""
    if array is None:
        return None
    m = unit_map(array, what)
    height, width = image.shape[:2]
    if m.shape != (height, width):
        raise InvalidRequest(
            f"The {what} is {m.shape[1]}x{m.shape[0]} pixels but the image is {width}x{height}."
        )
    return m


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
