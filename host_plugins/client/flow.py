"""The host-neutral steps of one job, shared by both plugins."""

from __future__ import annotations

import uuid


def layer_name(prompt: str, limit: int = 60) -> str:
    """The result layer's name in both hosts: the prompt on one line, shortened."""
    name = " ".join(prompt.split())
    if len(name) > limit:
        name = name[: limit - 1].rstrip() + "\u2026"
    return name or "Differential Inpaint"


def new_job_id() -> str:
    return uuid.uuid4().hex
