"""Differential Diffusion on flow-matching models: FLUX.1 (dev, schnell, Fill) and SD3/3.5.

The rule is the SD sampler's (pipeline.py), in step-index space: before step i of N a
latent pixel is free when e >= 1 - i/N; every other pixel is reset to z0 noised to step
i's level, which for flow matching is `scheduler.scale_noise(z0, t_i, eps)` =
sigma_i * eps + (1 - sigma_i) * z0 on the model's shifted sigma schedule. What differs:

- the schedule: FlowMatchEulerDiscreteScheduler with the model's shift; FLUX (and SD3
  models with dynamic shifting) shift it by the image's sequence length, computed as
  diffusers' img2img pipelines compute it;
- the start: FLUX's and SD3's img2img run ceil(N * s) steps (`flow_start_step`), SD's
  floor(N * s); the strongest pixel runs as this family's img2img runs it;
- the model call: FLUX takes its latents packed in 2x2 patches, (B, h*w/4, 64). The
  latents stay unpacked (B, 16, h, w) here, where the map is, and only the model's
  input and output are packed and unpacked: packing is a permutation and the Euler step
  works element by element, so this is img2img's arithmetic, value for value, and no
  packed tensor ever meets an unpacked mask;
- guidance: FLUX dev's distilled guidance goes in as an embedding (no second batch),
  schnell takes none, SD3 uses classifier-free guidance (unconditional half first);
- FLUX Fill sees the masked image and its mask in extra channels, as ComfyUI's
  InpaintModelConditioning gives them: the binarised mask (>= 0.5), the image gray there.

Randomness is drawn in img2img's order (the VAE's latent sample, then the noise; Fill's
masked image sample after them, as FluxFillPipeline), so a uniform map is img2img.

ControlNets (FluxControlNetModel, SD3ControlNetModel) see each step's reset latents, as the
SD sampler's do; their control images are VAE latents sampled with the generator before the
image's, as FluxControlNetImg2ImgPipeline samples them. A control that acts in no step of the
run is never encoded, so that it draws nothing and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from .controlnet import ControlGuide
from .pipeline import FreeSchedule, LatentSampler, StepState, flow_start_step, raise_if_cancelled


class FlowDifferentialPipeline(LatentSampler):
    """The differential sampler over a loaded FluxPipeline, FluxFillPipeline or
    StableDiffusion3Pipeline's components.

    `pipe` provides the transformer, VAE, text encoders, tokenizers and encode_prompt();
    this class owns the sampling loop. max_sequence_length: T5 tokens of the prompt
    (None: what the family was trained with, see flow_models.MAX_SEQUENCE_LENGTH).
    """

    start_rule = staticmethod(flow_start_step)

    def __init__(
        self,
        pipe: Any,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: str = "none",
        max_sequence_length: int | None = None,
    ) -> None:
        from .flow_models import MAX_SEQUENCE_LENGTH, flow_family

        super().__init__(pipe, device=device, dtype=dtype, offload=offload)
        self.transformer = pipe.transformer
        self.family = flow_family(pipe)
        self.is_flux = self.family != "sd3"
        self.is_fill = self.family == "flux-fill"
        self.has_guidance_embeds = self.is_flux and bool(self.transformer.config.guidance_embeds)
        self.max_sequence_length = max_sequence_length or MAX_SEQUENCE_LENGTH[self.family]
        # Latent sides must be even: FLUX packs 2x2 patches, SD3's transformer patchifies 2x2.
        self.multiple = self.vae_scale_factor * 2

    def components(self) -> list[torch.nn.Module]:
        pipe = self.pipe
        names = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
        return [m for m in (getattr(pipe, n, None) for n in names) if m is not None]

    # -- the pieces ----------------------------------------------------------------

    def encode_prompt(
        self, prompt: str, negative_prompt: str, batch_size: int, do_cfg: bool
    ) -> dict[str, torch.Tensor]:
        """Text conditioning: the T5 (and CLIP) sequence, the pooled CLIP vector, and for
        FLUX the text position ids; SD3 with guidance on puts the unconditional half first."""
        pipe = self.pipe
        encoders = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2", "text_encoder_3")]
        with self._on_device(*encoders):
            if self.is_flux:
                embeds, pooled, text_ids = pipe.encode_prompt(
                    prompt=prompt,
                    prompt_2=None,
                    device=self.device,
                    num_images_per_prompt=batch_size,
                    max_sequence_length=self.max_sequence_length,
                )
                return {
                    "prompt_embeds": embeds.to(self.dtype),
                    "pooled": pooled.to(self.dtype),
                    "text_ids": text_ids,
                }
            embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                num_images_per_prompt=batch_size,
                do_classifier_free_guidance=do_cfg,
                negative_prompt=negative_prompt,
                max_sequence_length=self.max_sequence_length,
            )
        if do_cfg:
            embeds = torch.cat([negative, embeds])
            pooled = torch.cat([negative_pooled, pooled])
        return {"prompt_embeds": embeds.to(self.dtype), "pooled": pooled.to(self.dtype)}

    def set_timesteps(self, scheduler: Any, num_steps: int, height: int, width: int) -> None:
        """The full schedule of N steps, shifted as the family's img2img pipeline shifts it."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        config = scheduler.config
        # Image tokens: latent pixels in 2x2 patches (FLUX packs them, SD3's transformer too).
        image_seq_len = (height // self.vae_scale_factor // 2) * (width // self.vae_scale_factor // 2)

        def shift(default_max_shift: float) -> float:
            return float(
                calculate_shift(
                    image_seq_len,
                    config.get("base_image_seq_len", 256),
                    config.get("max_image_seq_len", 4096),
                    config.get("base_shift", 0.5),
                    config.get("max_shift", default_max_shift),
                )
            )

        if self.is_flux:  # FluxImg2ImgPipeline: its own sigmas, the shift always computed
            sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
            retrieve_timesteps(scheduler, num_steps, self.device, sigmas=sigmas, mu=shift(1.15))
        elif config.get("use_dynamic_shifting", False):  # StableDiffusion3Img2ImgPipeline
            retrieve_timesteps(scheduler, num_steps, self.device, mu=shift(1.16))
        else:
            retrieve_timesteps(scheduler, num_steps, self.device)

    def fill_condition(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """FLUX Fill's extra input, packed: the latents of the image grayed where the mask
        is set (sampled with the generator, as FluxFillPipeline), then the mask folded
        into 8x8 blocks. mask: (B, 1, H, W) binary."""
        pipe = self.pipe
        height, width = image.shape[-2:]
        pixels = (2.0 * image - 1.0).to(device=self.device, dtype=self.vae_dtype)
        masked_image = pixels * (1 - mask.to(pixels))
        with self._on_device(self.vae):
            mask_latents, masked_image_latents = pipe.prepare_mask_latents(
                mask.to(device=self.device, dtype=self.dtype),
                masked_image,
                image.shape[0],
                self.vae.config.latent_channels,
                1,
                height,
                width,
                self.dtype,
                self.device,
                generator,
            )
        return torch.cat([masked_image_latents, mask_latents], dim=-1)

    def control_condition(
        self,
        guide: ControlGuide,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """A ControlNet's control image as it takes it: VAE latents sampled with the generator
        (FLUX's packed), or pixels in [-1, 1] for a FLUX ControlNet with its own image encoder
        (XLabs'). Where an inpaint control is told to fill (-1) the pixels are black."""
        image = guide.image.clamp(0.0, 1.0).repeat(batch_size, 1, 1, 1)
        if self.is_flux and guide.model.input_hint_block is not None:
            return (2.0 * image - 1.0).to(device=self.device, dtype=self.dtype)
        latents, _mean = self.encode_image(image, generator)
        if not self.is_flux and guide.model.config.force_zeros_for_pooled_projection:
            # InstantX's SD3 ControlNets were trained on unshifted latents (diffusers' rule).
            config = self.vae.config
            latents = latents + (config.shift_factor or 0.0) * config.scaling_factor
        if self.is_flux:
            _, channels, h, w = latents.shape
            latents = self.pipe._pack_latents(latents, batch_size, channels, h, w)
        return latents

    def control_kwargs(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        cond: dict[str, torch.Tensor],
        guidance_scale: float,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """The transformer's extra keywords for this step: the active controls' residuals,
        scaled by their strengths and summed (diffusers' multi-ControlNet models); {} when
        none acts, so that the call is the one a job without controls makes.

        model_input: what the transformer gets (FLUX: packed, without Fill's channels; SD3:
        both CFG halves); timestep: as the transformer gets it."""
        active: list[tuple[ControlGuide, torch.Tensor]] = extra.get("active_controls", [])
        summed: list[list[torch.Tensor] | None] | None = None
        repeat = False
        for guide, condition in active:
            model = guide.model
            if self.is_flux:
                guidance = None
                if model.config.guidance_embeds:
                    guidance = torch.full([1], guidance_scale, device=self.device, dtype=torch.float32)
                    guidance = guidance.expand(model_input.shape[0])
                mode = None
                if guide.union_index is not None:  # a Union's control mode, one per row
                    mode = torch.full((model_input.shape[0], 1), guide.union_index, device=self.device)
                blocks, singles = model(
                    hidden_states=model_input,
                    controlnet_cond=condition,
                    controlnet_mode=mode,
                    conditioning_scale=guide.strength,
                    timestep=timestep,
                    guidance=guidance,
                    pooled_projections=cond["pooled"],
                    encoder_hidden_states=cond["prompt_embeds"],
                    txt_ids=cond["text_ids"],
                    img_ids=extra["img_ids"],
                    return_dict=False,
                )
                # XLabs' ControlNets (own image encoder) have few blocks, repeated over FLUX's.
                repeat = model.input_hint_block is not None
                outputs = [blocks, singles]
            else:
                rows = model_input.shape[0]
                pooled = cond["pooled"]
                if model.config.force_zeros_for_pooled_projection:
                    pooled = torch.zeros_like(pooled)
                text = cond["prompt_embeds"] if model.config.joint_attention_dim is not None else None
                outputs = [
                    model(
                        hidden_states=model_input,
                        timestep=timestep,
                        encoder_hidden_states=text,
                        pooled_projections=pooled,
                        controlnet_cond=condition.repeat(rows // condition.shape[0], 1, 1, 1),
                        conditioning_scale=guide.strength,
                        return_dict=False,
                    )[0]
                ]
            if summed is None:
                summed = [list(o) if o is not None else None for o in outputs]
            else:
                summed = [
                    [a + b for a, b in zip(s, o, strict=True)] if s is not None and o is not None else s
                    for s, o in zip(summed, outputs, strict=True)
                ]
        if summed is None:
            return {}
        if self.is_flux:
            return {
                "controlnet_block_samples": summed[0],
                "controlnet_single_block_samples": summed[1],
                "controlnet_blocks_repeat": repeat,
            }
        return {"block_controlnet_hidden_states": summed[0]}

    def predict(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: dict[str, torch.Tensor],
        guidance_scale: float,
        do_cfg: bool,
        extra: dict[str, Any],
    ) -> torch.Tensor:
        """The model's velocity for unpacked latents (B, C, h, w), as img2img computes it."""
        batch_size, channels, h, w = latents.shape
        if self.is_flux:
            pipe = self.pipe
            packed = pipe._pack_latents(latents, batch_size, channels, h, w)
            timestep = t.expand(batch_size).to(latents.dtype)
            controls = self.control_kwargs(packed, timestep / 1000, cond, guidance_scale, extra)
            if self.is_fill:
                packed = torch.cat([packed, extra["fill"]], dim=2)
            velocity = self.transformer(
                hidden_states=packed,
                timestep=timestep / 1000,
                guidance=extra["guidance"],
                pooled_projections=cond["pooled"],
                encoder_hidden_states=cond["prompt_embeds"],
                txt_ids=cond["text_ids"],
                img_ids=extra["img_ids"],
                return_dict=False,
                **controls,
            )[0]
            return pipe._unpack_latents(
                velocity, h * self.vae_scale_factor, w * self.vae_scale_factor, self.vae_scale_factor
            )
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        timestep = t.expand(model_input.shape[0])
        velocity = self.transformer(
            hidden_states=model_input,
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled"],
            return_dict=False,
            **self.control_kwargs(model_input, timestep, cond, guidance_scale, extra),
        )[0]
        if do_cfg:
            uncond, text = velocity.chunk(2)
            velocity = uncond + guidance_scale * (text - uncond)
        return velocity

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
        guidance_scale: float = 3.5,
        scheduler: Any,
        generator: torch.Generator | list[torch.Generator] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        callback: Callable[[StepState], None] | None = None,
        on_stage: Callable[[str], None] | None = None,
        max_strength: float | Sequence[float] | None = None,
        smooth: bool = False,
        mask: torch.Tensor | None = None,
        output_type: str = "image",
        controls: Sequence[ControlGuide] = (),
    ) -> torch.Tensor:
        """Run Differential Diffusion; the arguments are DifferentialDiffusionPipeline's.

        guidance_scale: FLUX dev's distilled guidance (3.5 is its usual value), SD3's CFG
            scale (off at 1 or less); schnell ignores it. FLUX ignores the negative prompt.
        mask: FLUX Fill's mask (B, 1, H, W) in [0, 1], the painter's before the global
            strength; the model is told to fill where it is >= 0.5 (None: where the
            strength map is). Other models ignore it.
        smooth: as DifferentialDiffusionPipeline's; where img2img of this family rounds
            the strongest pixel's steps up, its partial step is rounded up with it, so a
            uniform map is still img2img exactly.
        controls: ControlNets with their images (controlnet.py), FluxControlNetModel or
            SD3ControlNetModel as the model's family; each acts in the steps of [start, end]
            of the whole schedule, as the SD sampler's.
        """
        batch_size = image.shape[0]
        num_steps = num_inference_steps
        do_cfg = not self.is_flux and guidance_scale > 1.0
        stage = on_stage or (lambda _name: None)

        height, width = image.shape[-2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(f"The image's sides must be multiples of {self.multiple}.")
        if type(scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
            raise ValueError("FLUX and SD3 models sample with the flow-matching Euler scheduler.")

        raise_if_cancelled(should_cancel)
        stage("encoding")
        cond = self.encode_prompt(prompt, negative_prompt, batch_size, do_cfg)
        raise_if_cancelled(should_cancel)

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

        # 2. Start where the strongest pixel starts: img2img with strength max(e). scale_noise
        #    and step read the scheduler's step index, so both are called in loop order.
        self.set_timesteps(scheduler, num_steps, height, width)
        t_start = schedule.t_start
        timesteps = scheduler.timesteps[t_start:]
        scheduler.set_begin_index(t_start)

        # 3. The control images of the controls that act in this run, then z0 and one noise
        #    tensor eps for the whole run, in the ControlNet img2img pipelines' order; start
        #    from z0 noised to the first step's level.
        acting = [g for g in controls if any(g.active(s, num_steps) for s in range(t_start, num_steps))]
        conditions = [self.control_condition(g, batch_size, generator) for g in acting]
        original_latents, _mean = self.encode_image(image, generator)
        noise = randn_tensor(
            original_latents.shape, generator=generator, device=self.device, dtype=self.dtype
        )
        latents = original_latents
        if len(timesteps) > 0:
            latents = scheduler.scale_noise(original_latents, timesteps[:1].repeat(batch_size), noise)
        extra: dict[str, Any] = {}
        if self.is_flux:
            h, w = latent_size
            extra["img_ids"] = self.pipe._prepare_latent_image_ids(
                batch_size, h // 2, w // 2, self.device, self.dtype
            )
            extra["guidance"] = None
            if self.has_guidance_embeds:
                guidance = torch.full([1], guidance_scale, device=self.device, dtype=torch.float32)
                extra["guidance"] = guidance.expand(batch_size)
        if self.is_fill:
            fill_mask = (mask if mask is not None else strength).to(torch.float64)
            extra["fill"] = self.fill_condition(image, (fill_mask >= 0.5).to(self.dtype), generator)
        raise_if_cancelled(should_cancel)

        # 4. The differential loop (i = step_index, in the full schedule of N steps).
        stage("sampling")
        with self._on_device(self.transformer, *[guide.model for guide in acting]):
            for i, t in enumerate(timesteps):
                raise_if_cancelled(should_cancel)
                step_index = t_start + i

                # Non-free pixels go back to the original noised to this step's level: before
                # this step's `step`, scale_noise reads this step's sigma.
                noised_original = scheduler.scale_noise(
                    original_latents, t.reshape(1).repeat(batch_size), noise
                )
                latents, free = schedule.reset(step_index, latents, noised_original)
                extra["active_controls"] = [
                    (guide, condition)
                    for guide, condition in zip(acting, conditions, strict=True)
                    if guide.active(step_index, num_steps)
                ]

                velocity = self.predict(latents, t, cond, guidance_scale, do_cfg, extra)
                sigma = scheduler.sigmas[step_index]
                pred_original = latents - sigma.to(latents) * velocity  # x0 = x_t - sigma * v
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]

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
                            pred_original=pred_original,
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
