"""Per-family facts the checkpoints do not carry: scheduler configs and working sizes.

The scheduler configs are those of the reference diffusers repositories for SD1.5 and
SDXL; single-file checkpoints get them from here instead of from the Hub.
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

# Pixels of area the model was trained at: regions are resized to about this much.
WORKING_AREA = {
    "sd15": 512 * 512,
    "sd15-inpaint": 512 * 512,
    "sdxl": 1024 * 1024,
    "sdxl-inpaint": 1024 * 1024,
}

VAE_SCALING_FACTOR = {"sd15": 0.18215, "sdxl": 0.13025}


def base_family(family: str) -> str:
    """ "sd15" or "sdxl" for any family name."""
    return family.removesuffix("-inpaint")
