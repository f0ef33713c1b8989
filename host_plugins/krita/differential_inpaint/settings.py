"""The dialog's last values, kept in Krita's own settings file (kritarc).

Krita stores strings only, so each value is written as text and read back
with a fallback: a hand-edited or stale kritarc never stops the dialog.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Any

from .core import InpaintSettings

GROUP = "differential_inpaint"


@dataclass
class FormValues:
    """Everything the dialog shows, including what is not a job setting."""

    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int = 20
    guidance: float = 7.0
    random_seed: bool = True
    seed: int = 0
    model: str = ""  # "" = the daemon's default
    grow: float = 0.0
    feather: float = 0.0
    padding: int = 64
    server: str = ""  # "" = ws://127.0.0.1:7865
    token: str = ""  # "" = none (a daemon on loopback asks for none)


def _krita() -> Any:
    from krita import Krita

    return Krita.instance()


def _parse(kind: type, text: str) -> Any:
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(text)
    return kind(text)


def load(krita: Any | None = None) -> FormValues:
    krita = krita or _krita()
    values = FormValues()
    for f in fields(FormValues):
        text = krita.readSetting(GROUP, f.name, "")
        if text == "":
            continue
        kind = type(getattr(values, f.name))
        with contextlib.suppress(ValueError):  # a bad value keeps the default
            setattr(values, f.name, _parse(kind, text))
    return values


def save(values: FormValues, krita: Any | None = None) -> None:
    krita = krita or _krita()
    for f in fields(FormValues):
        krita.writeSetting(GROUP, f.name, str(getattr(values, f.name)))


def to_settings(values: FormValues) -> InpaintSettings:
    return InpaintSettings(
        prompt=values.prompt,
        negative_prompt=values.negative_prompt,
        strength=values.strength,
        steps=values.steps,
        guidance=values.guidance,
        seed=None if values.random_seed else values.seed,
        model=values.model or None,
        grow=values.grow,
        feather=values.feather,
        padding=values.padding,
        server=values.server.strip(),
        token=values.token.strip(),
    )
