"""The schedulers a job may name, built from the model's own scheduler config.

Only schedulers that take exactly one model evaluation per timestep are offered:
the differential step resets kept latents *between* timesteps, which a second-order
solver (Heun, KDPM2) or PNDM's extra Runge-Kutta timesteps would see in the middle of
one step. Those are refused with a clear message instead.
"""

from __future__ import annotations

from typing import Any

from .errors import UnknownScheduler

# name -> (diffusers class name, config overrides)
_OFFERED: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
}

SCHEDULERS: tuple[str, ...] = tuple(_OFFERED)

# Known names that are deliberately not offered, with the reason a painter gets.
_REFUSED: dict[str, str] = {
    "heun": "Heun evaluates the model twice per step",
    "kdpm2": "KDPM2 evaluates the model twice per step",
    "kdpm2_a": "KDPM2 ancestral evaluates the model twice per step",
    "dpm2": "DPM2 evaluates the model twice per step",
    "dpm2_a": "DPM2 ancestral evaluates the model twice per step",
    "pndm": "PNDM inserts extra timesteps between steps",
    "plms": "PLMS inserts extra timesteps between steps",
    "dpmpp_sde": "DPM++ SDE evaluates the model twice per step",
    "dpmpp_2s_a": "DPM++ 2S ancestral evaluates the model twice per step",
    "lms": "LMS needs SciPy, which this engine does not depend on",
}


def check_scheduler_name(name: str) -> str:
    """Return the canonical name, or raise UnknownScheduler saying why it is refused."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_").replace("+", "p")
    if key in _OFFERED:
        return key
    offered = ", ".join(SCHEDULERS)
    if key in _REFUSED:
        raise UnknownScheduler(
            f"Scheduler '{name}' is not supported by differential sampling ({_REFUSED[key]}). "
            f"Choose one of: {offered}."
        )
    raise UnknownScheduler(f"Unknown scheduler '{name}'. Choose one of: {offered}.")


# FLUX and SD3 are trained for flow matching: their one scheduler, with the model's shift.
FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh scheduler of the named kind with the model's betas, offsets and spacing.

    For a flow-matching model (FLUX, SD3: its config names FlowMatchEulerDiscreteScheduler)
    "euler" is flow-matching Euler with the model's shift, and the only one offered.
    """
    import diffusers

    if dict(base_config).get("_class_name") == FLOW_SCHEDULER:
        if check_scheduler_name(name) != "euler":
            raise UnknownScheduler(
                f"Scheduler '{name}' is not available for FLUX and SD3 models: they sample with "
                "flow-matching Euler ('euler')."
            )
        return getattr(diffusers, FLOW_SCHEDULER).from_config(dict(base_config))
    class_name, overrides = _OFFERED[check_scheduler_name(name)]
    scheduler_class = getattr(diffusers, class_name)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    # PNDM-style base configs carry options other schedulers do not know; from_config
    # ignores unknown keys, and the overrides pick the solver variant.
    config.update(overrides)
    return scheduler_class.from_config(config)
