"""FLUX.1 and SD3/3.5 pipelines: assembled from their components, with the family's scheduler.

The flow-matching families' diffusers pipelines (FluxPipeline, FluxFillPipeline,
StableDiffusion3Pipeline) hold the components and encode the prompts; the differential
loop is FlowDifferentialPipeline's (flow_pipeline.py).
"""

from __future__ import annotations

from typing import Any

from .configs import FLOW_SCHEDULER_CONFIG

# T5 tokens of the prompt the model was trained with: FLUX dev and Fill 512, schnell and SD3 256.
MAX_SEQUENCE_LENGTH = {"flux": 512, "flux-fill": 512, "flux-schnell": 256, "sd3": 256}


def flow_family(pipe: Any) -> str:
    """ "flux", "flux-schnell", "flux-fill" or "sd3" for a pipeline's components."""
    transformer = pipe.transformer
    if type(transformer).__name__ == "SD3Transformer2DModel":
        return "sd3"
    config = transformer.config
    if config.in_channels != (config.out_channels or config.in_channels):
        return "flux-fill"  # the masked image and the mask come in with the latents
    return "flux" if config.guidance_embeds else "flux-schnell"


def assemble_flow_pipeline(
    family: str,
    vae: Any,
    transformer: Any,
    text_encoder: Any,
    tokenizer: Any,
    text_encoder_2: Any,
    tokenizer_2: Any,
    text_encoder_3: Any = None,
    tokenizer_3: Any = None,
) -> Any:
    """The family's diffusers pipeline of these components, with its reference scheduler.

    FLUX: CLIP-L (text_encoder) and T5 (text_encoder_2). SD3: CLIP-L, CLIP-G and T5
    (text_encoder_3; None: SD3 conditions on zeros in its place).
    """
    from diffusers import FluxFillPipeline, FluxPipeline, StableDiffusion3Pipeline
    from diffusers.schedulers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLOW_SCHEDULER_CONFIG[family])
    if family == "sd3":
        return StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            text_encoder_3=text_encoder_3,
            tokenizer_3=tokenizer_3,
        )
    if text_encoder_3 is not None or tokenizer_3 is not None:
        raise ValueError("a FLUX pipeline has two text encoders (CLIP-L and T5)")
    cls = FluxFillPipeline if family == "flux-fill" else FluxPipeline
    return cls(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


# diffusers pipeline classes of the flow families, as a folder's model_index.json names them.
_FLUX_PIPELINES = {"FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxFillPipeline"}
_SD3_PIPELINES = {
    "StableDiffusion3Pipeline",
    "StableDiffusion3Img2ImgPipeline",
    "StableDiffusion3InpaintPipeline",
}


def flow_folder_family(index: dict[str, Any], transformer: dict[str, Any]) -> str | None:
    """The flow family of a diffusers folder from its model_index.json and transformer/config.json,
    None if it is not a FLUX.1 or SD3 pipeline."""
    name = index.get("_class_name")
    if name in _SD3_PIPELINES:
        return "sd3"
    if name not in _FLUX_PIPELINES:
        return None
    in_channels = transformer.get("in_channels", 64)
    if in_channels != (transformer.get("out_channels") or in_channels):
        return "flux-fill"
    return "flux" if transformer.get("guidance_embeds") else "flux-schnell"
