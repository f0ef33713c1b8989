"""Per-family facts the checkpoints do not carry: scheduler configs and working sizes.

The scheduler configs are those of the reference diffusers repositories for SD1.5, SDXL,
FLUX.1 (dev, schnell, Fill) and SD3/3.5; single-file checkpoints get them from here
instead of from the Hub.
"""

from __future__ import annotations

from typing import Any

SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# FLUX.1 dev, Fill and Krea-style fine-tunes: shift by the image's size (its sequence length).
FLUX_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}

# FLUX.1 schnell: timestep-distilled, no shift.
FLUX_SCHNELL_SCHEDULER_CONFIG: dict[str, Any] = {
    **FLUX_SCHEDULER_CONFIG,
    "shift": 1.0,
    "use_dynamic_shifting": False,
}

# SD3 Medium and SD3.5 Large, Large Turbo and Medium: a fixed shift of 3.
SD3_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
}

FLOW_SCHEDULER_CONFIG = {
    "flux": FLUX_SCHEDULER_CONFIG,
    "flux-fill": FLUX_SCHEDULER_CONFIG,
    "flux-schnell": FLUX_SCHNELL_SCHEDULER_CONFIG,
    "sd3": SD3_SCHEDULER_CONFIG,
}

# The flow-matching families: FLUX.1 (dev and its fine-tunes, schnell, Fill) and SD3/3.5.
FLOW_FAMILIES = frozenset(FLOW_SCHEDULER_CONFIG)

# (scaling, shift) of the 16-channel VAEs: model latents = (VAE latents - shift) * scaling.
FLOW_VAE_FACTORS = {"flux": (0.3611, 0.1159), "sd3": (1.5305, 0.0609)}

# Pixels of area the model was trained at: regions are resized to about this much.
WORKING_AREA = {
    "sd15": 512 * 512,
    "sd15-inpaint": 512 * 512,
    "sdxl": 1024 * 1024,
    "sdxl-inpaint": 1024 * 1024,
    "flux": 1024 * 1024,
    "flux-schnell": 1024 * 1024,
    "flux-fill": 1024 * 1024,
    "sd3": 1024 * 1024,
}

VAE_SCALING_FACTOR = {"sd15": 0.18215, "sdxl": 0.13025}


def base_family(family: str) -> str:
    """ "sd15", "sdxl", "flux" or "sd3" for any family name."""
    return family.removesuffix("-inpaint").removesuffix("-fill").removesuffix("-schnell")


def is_flow(family: str) -> bool:
    """Whether the family samples by flow matching (FLUX.1, SD3/3.5)."""
    return family in FLOW_FAMILIES
