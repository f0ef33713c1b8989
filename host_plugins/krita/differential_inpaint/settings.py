"""The painter's settings, kept in Krita's own settings file (kritarc).

One key per setting Krita shows (`SETTINGS_PARAMS` with the "krita" host),
named as the setting. Krita stores strings only: each value is written as text
and read back through the setting's own check, so a hand-edited or stale
kritarc falls back to the default for that value and never stops the plugin.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Any

from . import protocol as p
from .client import SETTINGS_PARAMS, Settings
from .conditioning import Conditioning
from .protocol.spec import KRITA

GROUP = "differential_inpaint"
SHOWN = p.shown_on(KRITA, SETTINGS_PARAMS)
# Before seeds were optional, "Random" was its own key; it still wins when set.
_LEGACY_RANDOM_SEED = "random_seed"


def _krita() -> Any:
    from krita import Krita

    return Krita.instance()


def to_text(value: Any, param: p.Param | None = None) -> str:
    if param is not None and param.kind is tuple:
        return param.format_text(tuple(value))  # "30%, 60%": as the painter typed it
    if isinstance(value, Enum):
        return str(value.value)  # "far", not "Depth.FAR"
    return "" if value is None else str(value)


def from_text(param: p.Param, text: str) -> Any:
    """The value `text` stands for; ValueError when it is not one `param` allows."""
    if param.kind is tuple:
        value: Any = list(param.parse_text(text))
    elif text == "" and (param.optional or param.kind is not str):
        if not param.optional:
            raise ValueError("empty")
        return None
    elif param.kind is bool:
        value = {"true": True, "false": False}[text.lower()]
    elif param.kind is str:
        value = text
    else:
        value = param.kind(text)
    try:
        return param.read({param.name: value}, "kritarc")
    except p.ProtocolError as exc:
        raise ValueError(exc.message) from None


def load(krita: Any | None = None) -> Settings:
    krita = krita or _krita()
    values = {}
    for param in SHOWN:
        text = krita.readSetting(GROUP, param.name, "\0")
        if text == "\0":
            continue  # never saved: the default
        with contextlib.suppress(ValueError, KeyError):  # a bad value keeps the default
            values[param.name] = from_text(param, text)
    if krita.readSetting(GROUP, _LEGACY_RANDOM_SEED, "").lower() == "true":
        values["seed"] = None
    return Settings.from_values(values)


_FAMILY = "model_family"  # the family the family-dependent values were set for (ui.SettingsStore)


def load_family(krita: Any | None = None) -> str:
    return str((krita or _krita()).readSetting(GROUP, _FAMILY, "") or "")


def save_family(family: str, krita: Any | None = None) -> None:
    (krita or _krita()).writeSetting(GROUP, _FAMILY, family)


_CONDITIONING = "conditioning"  # the control and reference layers, as `Conditioning.to_text`


def load_conditioning(krita: Any | None = None) -> Conditioning:
    return Conditioning.from_text(str((krita or _krita()).readSetting(GROUP, _CONDITIONING, "") or ""))


def save_conditioning(conditioning: Conditioning, krita: Any | None = None) -> None:
    (krita or _krita()).writeSetting(GROUP, _CONDITIONING, conditioning.to_text())


def save(settings: Settings, krita: Any | None = None) -> None:
    krita = krita or _krita()
    values = settings.values()
    for param in SHOWN:
        krita.writeSetting(GROUP, param.name, to_text(values[param.name], param))
    krita.writeSetting(GROUP, _LEGACY_RANDOM_SEED, "")
