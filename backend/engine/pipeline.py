"""Differential Diffusion on the components of a diffusers Stable Diffusion pipeline.

Levin & Fried, "Differential Diffusion: Giving Each Pixel Its Strength": a grayscale
map gives every pixel its own denoising strength e in [0, 1], in one sampling run.
With N steps and timesteps t_0 > ... > t_{N-1}:

1. the strength map is downsampled to latent resolution;
2. sampling starts where the strongest pixel starts, like img2img with strength max(e);
3. z0 = VAE latents of the image, one noise tensor eps for the whole run;
4. before step i, pixel p is *free* when e_p >= 1 - i / N; every other latent pixel is
   reset to add_noise(z0, eps, t_i); then the model step runs;
5. after the last step, pixels that were never free are set to z0 exactly;
6. decode (the caller composites in pixel space).

Randomness is drawn in img2img's order (VAE latent sample, then the noise, then the
generator handed to scheduler.step), so a uniform map equals diffusers' img2img.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from .controlnet import ControlGuide, control_residuals
from .errors import JobCancelled

# Added to N * e before rounding down: resampling a uniform map in float64 can return
# 0.7 - 4e-16 where 0.7 was painted, which must not lose a whole step.
_THRESHOLD_TOLERANCE = 1e-9


def start_step(max_strength: float, num_steps: int) -> int:
    """Index of the first step that runs: img2img's `N - int(N * strength)`, in double precision.

    In float32, strength 0.7 with 10 steps gives int(6.9999998) = 6 steps where img2img runs 7.
    """
    return num_steps - min(int(num_steps * float(max_strength)), num_steps)


def flow_start_step(max_strength: float, num_steps: int) -> int:
    """The first step FLUX's and SD3's img2img run: `int(N - N * strength)`, computed as they do.

    They round the steps run up where SD rounds them down: 10 steps at 0.75 run 8 (SD: 7), at
    0.35 run 4 (SD: 3); at 0.7 both run 7.
    """
    return int(max(num_steps - min(num_steps * float(max_strength), num_steps), 0))


StartRule = Callable[[float, int], int]  # (max strength, N) -> the first step that runs


def raise_if_cancelled(should_cancel: Callable[[], bool] | None) -> None:
    """JobCancelled when the caller asked to stop: checked between steps and stages."""
    if should_cancel is not None and should_cancel():
        raise JobCancelled("The job was cancelled.")


def first_free_step(
    strength: torch.Tensor,
    num_steps: int,
    max_strength: float | Sequence[float],
    start: StartRule = start_step,
) -> torch.Tensor:
    """Per pixel, the first step index i at which it is free (num_steps: never).

    e >= 1 - i/N  <=>  i >= N - N*e  <=>  i >= N - floor(N*e) for whole i. The integer
    form avoids float ties, and makes the free sets nested by construction: free at
    step i implies free at every later step. `max_strength`: one, or one per sample.

    The strongest pixel runs as many steps as the family's img2img runs at that strength
    (`start`: SD rounds N*e down, FLUX and SD3 round it up), and every pixel in its last,
    partial step with it: a uniform map is img2img. A resampled map cannot be stronger
    than the pixel mask it came from.
    """
    strengths = max_strength if isinstance(max_strength, Sequence) else [max_strength]
    per_sample = (-1, *[1] * (strength.dim() - 1))
    most = torch.tensor([num_steps - start(m, num_steps) for m in strengths]).view(per_sample)
    top = torch.tensor([math.floor(num_steps * float(m) + _THRESHOLD_TOLERANCE) for m in strengths]).view(
        per_sample
    )
    free_steps = torch.floor(strength.double() * num_steps + _THRESHOLD_TOLERANCE).long().clamp(min=0)
    return num_steps - torch.where((free_steps >= top) & (free_steps > 0), most, free_steps)


def partial_free(strength: torch.Tensor, num_steps: int, first_free: torch.Tensor) -> torch.Tensor:
    """The smooth rule's fraction per pixel: how far N*e lies past its whole number k of
    free steps, in [0, 1) (see the sampler's `smooth`); 0 where k was capped by where
    sampling starts, as img2img drops that fraction too."""
    scaled = strength.double() * num_steps  # no tolerance: e = 0 must have no fraction at all
    whole = (num_steps - first_free).double()
    fraction = (scaled - whole).clamp(0.0, 1.0)
    return torch.where(fraction < 1.0, fraction, torch.zeros_like(fraction))


def _per_sample(value: float | Sequence[float], batch_size: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, Sequence) else [float(value)] * batch_size


@dataclass
class StepState:
    """What a step callback sees, after the model step ran."""

    step: int  # steps done, 1..num_steps_run
    num_steps_run: int
    step_index: int  # index in the full schedule of N steps
    timestep: torch.Tensor
    latents: torch.Tensor
    free: torch.Tensor  # bool (B, 1, h, w): pixels the sampler was allowed to change
    noised_original: torch.Tensor  # z0 noised to this step's level, used for the reset
    original_latents: torch.Tensor  # z0
    pred_original: torch.Tensor | None  # the scheduler's x0 estimate, where it gives one


@dataclass
class FreeSchedule:
    """Which latent pixels are free at which step: steps 1, 2, 4 and 5 of the rule, the same
    for every family (the samplers differ in the model call and how they noise z0).

    first_free: long (B, 1, h, w), each pixel's first free step index (N: never).
    fraction: the smooth rule's part of a step per pixel (empty without `smooth`).
    sample_start: long (B, 1, 1, 1), each sample's first step (a fan's samples differ).
    t_start: the first step the batch runs.
    """

    num_steps: int
    first_free: torch.Tensor
    fraction: torch.Tensor
    sample_start: torch.Tensor
    t_start: int
    smooth: bool

    @classmethod
    def plan(
        cls,
        strength: torch.Tensor,
        latent_size: tuple[int, int],
        num_steps: int,
        max_strength: float | Sequence[float] | None,
        *,
        start: StartRule = start_step,
        smooth: bool = False,
        device: torch.device,
        dtype: torch.dtype,
    ) -> FreeSchedule:
        """The schedule of the pixel strength map `strength` (B, 1, H, W) on a latent grid.

        The map goes to latent resolution bilinearly, without antialias, as the references
        do; on the CPU, as float64 is not for every device. `max_strength`: max(e) over the
        full-resolution pixel mask (None: over `strength`), one or one per sample.
        """
        if max_strength is None:
            max_strength = [float(m) for m in strength.flatten(1).max(dim=1).values]
        max_strengths = _per_sample(max_strength, strength.shape[0])
        latent_strength = F.interpolate(
            strength.cpu().double(), size=latent_size, mode="bilinear", align_corners=False
        )
        first_free = first_free_step(latent_strength, num_steps, max_strengths, start)
        fraction = partial_free(latent_strength, num_steps, first_free) if smooth else torch.zeros(0)
        starts = [start(m, num_steps) for m in max_strengths]
        return cls(
            num_steps=num_steps,
            first_free=first_free.to(device),
            fraction=fraction.to(device, dtype),
            sample_start=torch.tensor(starts, device=device).view(-1, 1, 1, 1),
            t_start=min(starts),
            smooth=smooth,
        )

    @property
    def never_free(self) -> torch.Tensor:
        return self.first_free >= self.num_steps

    def reset(
        self, step_index: int, latents: torch.Tensor, noised_original: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latents the model step starts from, the free mask) before step `step_index`.

        Free: e >= 1 - i/N; every other pixel goes back to the original noised to this step's
        level. At and before its own first step a sample is its noised original: what its
        latents are when it starts alone (the same values, bit for bit). Smooth: free one
        step later, and blended at the step between (see the sampler's `smooth`).
        """
        first_free = self.first_free
        free = first_free < step_index if self.smooth else first_free <= step_index
        started = self.sample_start < step_index
        stepped = latents
        latents = torch.where(free & started, latents, noised_original)
        if self.smooth:
            blended = (first_free == step_index) & started & (self.fraction > 0)
            mixed = noised_original + self.fraction * (stepped - noised_original)
            latents = torch.where(blended, mixed, latents)
        return latents, free

    def finish(self, latents: torch.Tensor, original_latents: torch.Tensor) -> torch.Tensor:
        """ "Keep" means keep: pixels never free are the original latents exactly (smooth: plus
        their fraction of one step's change, for pixels below 1/N)."""
        never_free = self.never_free
        kept = original_latents
        if self.smooth:
            partly = never_free & (self.fraction > 0)
            kept = torch.where(partly, original_latents + self.fraction * (latents - original_latents), kept)
        return torch.where(never_free, kept, latents)


def is_offloaded_in_groups(module: torch.nn.Module) -> bool:
    """Whether diffusers' group offloading (sequential offload) places `module`."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return bool(_is_group_offload_enabled(module))


class LatentSampler:
    """What every differential sampler does around its loop: keeping the components on the
    device while they run (or parked in CPU memory, with CPU offload), and the VAE's way
    between pixels and the model's scaled latents.

    offload: "none" (the components are on the device), "model" (each moves there while it
    runs) or "sequential" (each block moves there while it runs); see memory.py.
    """

    start_rule: StartRule = staticmethod(start_step)  # where img2img of this family starts

    def __init__(
        self,
        pipe: Any,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: str = "none",
    ) -> None:
        self.pipe = pipe
        self.vae = pipe.vae
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload_mode = offload
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_dtype = dtype
        if offload == "sequential":
            self._offload_sequentially()

    @property
    def cpu_offload(self) -> bool:
        """Whether the components live in CPU memory (model or sequential offload): a module the
        sampler is handed (a ControlNet, an image encoder) goes back there after it ran."""
        return self.offload_mode != "none"

    def components(self) -> list[torch.nn.Module]:
        """Every module of the pipeline, for `offload`."""
        return [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]

    # -- component placement -------------------------------------------------------

    def _offload_sequentially(self) -> None:
        """Sequential offload: diffusers' group offloading keeps the denoiser's and the text
        encoders' weights in CPU memory and moves each block of the denoiser (a UNet's down or
        up block, a transformer block) and each layer of the text encoders to the device only
        while it runs. Its hooks sit on the modules themselves, so the sampler's own calls to
        them are offloaded too. The VAE (a few hundred MB, whose encode and decode are not its
        forward, where the hooks' tracing is) moves whole, as with model offload."""
        from diffusers.hooks import apply_group_offloading

        for name, module in self.pipe.components.items():
            if not isinstance(module, torch.nn.Module) or name == "vae" or is_offloaded_in_groups(module):
                continue
            if name in ("unet", "transformer"):
                # On CUDA the next block's copy overlaps this one's work, each block pinned
                # while it moves (not the whole model at once).
                streamed = self.device.type == "cuda"
                apply_group_offloading(
                    module,
                    onload_device=self.device,
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=streamed,
                    non_blocking=streamed,
                    low_cpu_mem_usage=streamed,
                )
            else:  # run once a job: layer by layer, each copy finished before the layer runs
                apply_group_offloading(module, onload_device=self.device, offload_type="leaf_level")

    @contextlib.contextmanager
    def _on_device(self, *modules: torch.nn.Module | None) -> Iterator[None]:
        """Hold `modules` on the device for a block; with CPU offload, park them after.

        Modules offloaded in groups (sequential offload) move themselves, block by block. A
        module handed over from CPU memory (a ControlNet) moves too, whatever the mode. A block
        that raises (a cancel, an error) leaves them on the device: parking a UNet takes a
        while, and the caller answers its client first, then calls `offload()`.
        """
        present = [m for m in modules if m is not None and not is_offloaded_in_groups(m)]
        for m in present:
            m.to(self.device)
        yield
        if self.cpu_offload:
            self._park(present)

    def offload(self) -> None:
        """With CPU offload, park every component in CPU memory (after a job that stopped)."""
        if self.cpu_offload:
            self._park([m for m in self.components() if not is_offloaded_in_groups(m)])

    def _park(self, modules: list[torch.nn.Module]) -> None:
        for m in modules:
            m.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- pixels and latents ----------------------------------------------------------

    def encode_image(
        self, image: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z0 sampled with the generator, as img2img does; the latent mean), both scaled.

        image: (B, 3, H, W) RGB in [0, 1]."""
        with self._on_device(self.vae):
            pixels = (2.0 * image - 1.0).to(device=self.device, dtype=self.vae_dtype)
            distribution = self.vae.encode(pixels).latent_dist
            sample, mean = distribution.sample(generator), distribution.mode()
        return self._scale_latents(sample), self._scale_latents(mean)

    def encode_blank(self, image: torch.Tensor) -> torch.Tensor:
        """Latents of an all-gray image: what an inpainting UNet sees where pixels are masked."""
        with self._on_device(self.vae):
            pixels = torch.zeros_like(image).to(device=self.device, dtype=self.vae_dtype)
            return self._scale_latents(self.vae.encode(pixels).latent_dist.mode())

    def _scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's latents in the model's space: SD1.5 scales them, SDXL fixes may normalise
        them per channel, FLUX and SD3 shift and scale them."""
        config = self.vae.config
        latents = latents.to(self.dtype)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            return (latents - mean) * config.scaling_factor / std
        shift = getattr(config, "shift_factor", None)
        if shift is not None:
            return (latents - shift) * config.scaling_factor
        return latents * config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> float32 (B, 3, H, W) RGB in [0, 1]."""
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        shift = getattr(config, "shift_factor", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            latents = latents * std / config.scaling_factor + mean
        elif shift is not None:
            latents = latents / config.scaling_factor + shift
        else:
            latents = latents / config.scaling_factor
        with self._on_device(self.vae):
            image = self.vae.decode(latents.to(self.vae_dtype), return_dict=False)[0]
        return (image.float() / 2.0 + 0.5).clamp(0.0, 1.0)


class DifferentialDiffusionPipeline(LatentSampler):
    """The differential sampler over a loaded StableDiffusion(XL)Pipeline's components.

    `pipe` provides the UNet, VAE, text encoder(s), tokenizer(s) and encode_prompt();
    this class only owns the sampling loop. Inpainting checkpoints (9-channel UNet) get
    the per-step free mask and the masked-image latents in their extra channels.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: str = "none",
    ) -> None:
        super().__init__(pipe, device=device, dtype=dtype, offload=offload)
        self.unet = pipe.unet
        self.is_sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.is_inpaint = self.unet.config.in_channels == 9
        # SDXL's VAE overflows in fp16 unless it is a fixed one; decode it in fp32.
        if dtype == torch.float16 and self.is_sdxl and getattr(self.vae.config, "force_upcast", False):
            self.vae_dtype = torch.float32
            self.vae.to(dtype=torch.float32)

    def components(self) -> list[torch.nn.Module]:
        pipe = self.pipe
        modules = (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
        return [m for m in modules if m is not None]

    # -- the pieces ----------------------------------------------------------------

    def encode_prompt(
        self, prompt: str, negative_prompt: str, batch_size: int, do_cfg: bool
    ) -> dict[str, torch.Tensor]:
        """Text conditioning, with the unconditional half first when guidance is on."""
        pipe = self.pipe
        if self.is_sdxl:
            with self._on_device(pipe.text_encoder, pipe.text_encoder_2):
                embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                    prompt=prompt,
                    device=self.device,
                    num_images_per_prompt=batch_size,
                    do_classifier_free_guidance=do_cfg,
                    # SDXL conditions "no negative prompt" on zeros (force_zeros_for_empty_prompt).
                    negative_prompt=negative_prompt or None,
                )
            if do_cfg:
                embeds = torch.cat([negative, embeds])
                pooled = torch.cat([negative_pooled, pooled])
            return {"prompt_embeds": embeds.to(self.dtype), "pooled": pooled.to(self.dtype)}
        with self._on_device(pipe.text_encoder):
            embeds, negative = pipe.encode_prompt(
                prompt,
                self.device,
                batch_size,
                do_cfg,
                negative_prompt=negative_prompt,
            )
        if do_cfg:
            embeds = torch.cat([negative, embeds])
        return {"prompt_embeds": embeds.to(self.dtype)}

    def sdxl_time_ids(self, height: int, width: int, rows: int) -> torch.Tensor:
        """(original size, crop top-left, target size): the whole working image, uncropped."""
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=self.dtype, device=self.device)
        return time_ids.repeat(rows, 1)

    # -- the sampler ---------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        strength: torch.Tensor,
        *,
        prompt: str,
        negative_prompt: str = "",
        num_inference_steps: int = 20,
        guidance_scale: float = 7.0,
        scheduler: Any,
        generator: torch.Generator | list[torch.Generator] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        callback: Callable[[StepState], None] | None = None,
        on_stage: Callable[[str], None] | None = None,
        max_strength: float | Sequence[float] | None = None,
        smooth: bool = False,
        mask: torch.Tensor | None = None,
        output_type: str = "image",
        references: Any = None,
        controls: Sequence[ControlGuide] = (),
    ) -> torch.Tensor:
        """Run Differential Diffusion.

        image: (B, 3, H, W) RGB in [0, 1], H and W multiples of the model's size multiple.
        strength: (B, 1, H, W) float64 per-pixel strength e = mask * global strength.
        max_strength: max(e) over the full-resolution pixel mask, when `strength` is a
            resampled copy of it (resampling must not change where sampling starts);
            one per sample where the samples' strengths differ (a strength fan).
        generator: one, or one per sample (a batch of variations: each sample draws
            what a job of its own with that generator would).
        mask: unused here (FLUX Fill's conditioning mask; see FlowDifferentialPipeline).
        references: IP-Adapter reference images' embeddings (ip_adapter.ReferenceEmbeds), given to
            the UNet with the text's; its adapters are installed by the caller.
        controls: ControlNets with their images (controlnet.py): in each step they act in, their
            residuals are computed from the latents after that step's reset and added to the UNet's.
        Returns decoded RGB (B, 3, H, W) in [0, 1], or the final latents for "latent".

        Samples of one batch may start at different steps (a fan): the batch runs from
        the earliest, and a sample is held at its noised original, as a job of its own
        starts, until its own first step.

        smooth: the change grows continuously with e instead of in N steps. Under the step
        rule a pixel with k = floor(N*e) >= 1 free steps was last reset one step before
        its first free one, so it is denoised k + 1 steps from its noised original, and one
        with k = 0 not at all: levels 0, 2, 3, ... Under `smooth`, N*e = k + f is level
        k + f: the pixel is reset up to step N - k - 1, at step N - k it is the blend
        noised original + f * (latents - noised original) (f = 0: reset, level k; f = 1:
        kept, level k + 1), and free after; with k = 0 it ends as z0 + f * (one step's
        change). e = 0 still ends as z0 exactly, and a uniform map is still img2img
        exactly: its blend falls on the first step, where the latents are the noised
        original. The free sets stay nested.
        """
        batch_size = image.shape[0]
        num_steps = num_inference_steps
        do_cfg = guidance_scale > 1.0 and self.unet.config.time_cond_proj_dim is None
        stage = on_stage or (lambda _name: None)

        height, width = image.shape[-2:]
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"The image's sides must be multiples of {self.vae_scale_factor}.")
        if scheduler.order != 1:
            raise ValueError("Differential sampling needs a scheduler with one model call per step.")

        # Text conditioning, the unconditional half first when guidance is on. A cancel is
        # honoured before and after every stage and between the steps.
        raise_if_cancelled(should_cancel)
        stage("encoding")
        cond = self.encode_prompt(prompt, negative_prompt, batch_size, do_cfg)
        raise_if_cancelled(should_cancel)
        added_cond_kwargs = None
        if self.is_sdxl:
            rows = cond["prompt_embeds"].shape[0]
            added_cond_kwargs = {
                "text_embeds": cond["pooled"],
                "time_ids": self.sdxl_time_ids(height, width, rows),
            }
        if references is not None:
            image_embeds = references.for_batch(batch_size, do_cfg)
            added_cond_kwargs = {**(added_cond_kwargs or {}), "image_embeds": image_embeds}

        # 1. The strength map at latent resolution, as each latent pixel's first free step.
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        schedule = FreeSchedule.plan(
            strength,
            latent_size,
            num_steps,
            max_strength,
            start=self.start_rule,
            smooth=smooth,
            device=self.device,
            dtype=self.dtype,
        )

        # 2. Start where the strongest pixel starts: img2img with strength max(e).
        scheduler.set_timesteps(num_steps, device=self.device)
        t_start = schedule.t_start
        timesteps = scheduler.timesteps[t_start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start)

        # 3. z0 and one noise tensor eps for the whole run, drawn in img2img's order; like
        #    img2img, start from z0 noised to the first step's level.
        original_latents, original_mean = self.encode_image(image, generator)
        noise = randn_tensor(
            original_latents.shape, generator=generator, device=self.device, dtype=self.dtype
        )
        latents = original_latents
        if len(timesteps) > 0:
            latents = scheduler.add_noise(original_latents, noise, timesteps[:1].repeat(batch_size))
        if self.is_inpaint:
            blank_latents = self.encode_blank(image)
        extra_step_kwargs = self._extra_step_kwargs(scheduler, generator)
        raise_if_cancelled(should_cancel)

        # 4. The differential loop (i = step_index, in the full schedule of N steps).
        stage("sampling")
        with self._on_device(self.unet, *[guide.model for guide in controls]):
            for i, t in enumerate(timesteps):
                raise_if_cancelled(should_cancel)
                step_index = t_start + i

                # Non-free pixels go back to the original noised to this step's level. One
                # timestep at a time: with a begin index set, a vectorised add_noise would use
                # one sigma (this step's) for every timestep.
                noised_original = scheduler.add_noise(
                    original_latents, noise, t.reshape(1).repeat(batch_size)
                )
                latents, free = schedule.reset(step_index, latents, noised_original)

                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = scheduler.scale_model_input(model_input, t)
                # ControlNets see the same reset latents as the UNet (never an inpainting
                # UNet's extra channels).
                residuals = control_residuals(
                    controls, model_input, t, cond["prompt_embeds"], added_cond_kwargs, step_index, num_steps
                )
                if self.is_inpaint:
                    # The model inpaints what is free now and sees the rest of the image.
                    mask_channel = free.to(self.dtype)
                    masked_image_latents = torch.where(free, blank_latents, original_mean)
                    if do_cfg:
                        mask_channel = torch.cat([mask_channel] * 2)
                        masked_image_latents = torch.cat([masked_image_latents] * 2)
                    model_input = torch.cat([model_input, mask_channel, masked_image_latents], dim=1)

                noise_pred = self.unet(
                    model_input,
                    t,
                    encoder_hidden_states=cond["prompt_embeds"],
                    added_cond_kwargs=added_cond_kwargs,
                    return_dict=False,
                    **residuals,
                )[0]
                if do_cfg:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)

                output = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=True)
                latents = output.prev_sample

                if callback is not None:
                    callback(
                        StepState(
                            step=i + 1,
                            num_steps_run=len(timesteps),
                            step_index=step_index,
                            timestep=t,
                            latents=latents,
                            free=free,
                            noised_original=noised_original,
                            original_latents=original_latents,
                            pred_original=getattr(output, "pred_original_sample", None),
                        )
                    )

        # 5. "Keep" means keep: pixels never free are the original latents exactly.
        latents = schedule.finish(latents, original_latents)
        if output_type == "latent":
            return latents

        # 6. Decode; the caller composites in pixel space.
        raise_if_cancelled(should_cancel)
        stage("decoding")
        return self.decode(latents)

    @staticmethod
    def _extra_step_kwargs(scheduler: Any, generator: torch.Generator | None) -> dict[str, Any]:
        """eta for DDIM (0, deterministic) and the generator for ancestral schedulers."""
        parameters = set(inspect.signature(scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in parameters:
            kwargs["eta"] = 0.0
        if "generator" in parameters:
            kwargs["generator"] = generator
        return kwargs
