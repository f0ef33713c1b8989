"""One settings type for both plugins: the job's parameters and where to send them.

The job's parameters are the protocol's `JobParams`; the few settings that never
travel (the daemon's address, its token, the context around the selection)
are declared here the same way, so forms, GIMP arguments and saved settings
are built from one list, `SETTINGS_PARAMS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .. import protocol as p
from ..protocol.spec import GIMP, KRITA
from .connection import DEFAULT_SERVER
from .errors import InpaintError

HOSTS = frozenset({KRITA, GIMP})


@dataclass(frozen=True)
class HostParams:
    """The settings that stay in the plugin."""

    server: str = p.param(
        DEFAULT_SERVER,
        "Daemon address",
        "Where `differential-inpaint serve` listens",
        hosts=HOSTS,
        gimp_name="server-url",
        advanced=True,
    )
    token: str = p.param(
        "",
        "Token",
        "The token a daemon on another machine printed; empty for a daemon on this one",
        secret=True,
        hosts=HOSTS,
        advanced=True,
    )
    padding: int = p.param(
        p.DEFAULT_PADDING,
        "Context padding",
        "Pixels around the selection that the model sees",
        lo=0,
        hi=2048,
        unit="px",
        hosts=frozenset({KRITA}),
        advanced=True,
    )
    mask_layer: str = p.param(
        "",
        "Map layer",
        "A layer, mask or channel whose gray (times its opacity) is the change map, white changing "
        "fully; empty: the selection",
        hosts=frozenset({KRITA}),  # GIMP takes the drawable itself (mask-drawable)
    )
    blend_layer: str = p.param(
        "",
        "Blend layer",
        "A layer, mask or channel whose gray becomes the result layer's opacity; empty: made from "
        "the change map",
        hosts=frozenset({KRITA}),  # GIMP: blend-drawable
        advanced=True,
    )
    limit_to_selection: bool = p.param(
        True,
        "Selection limits the map",
        "With a layer as the map, the selection multiplies it; off: the map alone",
        hosts=HOSTS,
        advanced=True,
    )
    context: str = p.param(
        "auto",
        "Context",
        "What the model sees: auto (around the area to change), image (all of it), mask (the area's "
        "bounds only), X,Y,W,H (a rectangle in image pixels) or layer:NAME (that layer's bounds)",
        min_len=1,
        hosts=HOSTS,
        advanced=True,
    )


HOST_PARAMS: tuple[p.Param, ...] = p.params_of(HostParams)
SETTINGS_PARAMS: tuple[p.Param, ...] = p.JOB_PARAMS + HOST_PARAMS


@dataclass(frozen=True)
class Settings:
    """What the painter chose: the dialog, the docker, GIMP's arguments and the
    scripting API all fill one of these."""

    job: p.JobParams = field(default_factory=p.JobParams)
    host: HostParams = field(default_factory=HostParams)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from values by name (`SETTINGS_PARAMS`); None for a setting that
        cannot be None means its default. Unknown names are an InpaintError."""
        known = {q.name: q for q in SETTINGS_PARAMS}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InpaintError(
                f"Unknown setting {', '.join(map(repr, unknown))}; the settings are: {', '.join(known)}.",
                "invalid_settings",
            )
        kept = {k: v for k, v in values.items() if v is not None or known[k].optional}
        for k, v in kept.items():
            kind = known[k].kind
            if kind is tuple and isinstance(v, list):
                kept[k] = tuple(v)  # `fan=[0.3, 0.6]` from a script: settings stay hashable
            elif isinstance(kind, type) and issubclass(kind, Enum) and v in {m.value for m in kind}:
                kept[k] = kind(v)  # `depth="far"`: the member (others are `check`'s to refuse)
        job = {q.name: kept[q.name] for q in p.JOB_PARAMS if q.name in kept}
        host = {q.name: kept[q.name] for q in HOST_PARAMS if q.name in kept}
        return cls(p.JobParams(**job), HostParams(**host))

    def values(self) -> dict[str, Any]:
        """Every setting by name, the inverse of `from_values`."""
        return {**vars(self.job), **vars(self.host)}

    def check(self) -> Settings:
        """Refuse what the daemon would refuse, before anything is read or sent: an
        InpaintError with every problem in one sentence a painter can act on."""
        values = self.values()
        problems = []
        for q in SETTINGS_PARAMS:
            try:
                q.read(values, "settings")
            except p.ProtocolError:
                problems.append(problem(q, values[q.name]))
        if not problems:  # values of the right kinds: now whether they go together
            problems = [painter for _wire, painter in self.job.conflicts()]
        if problems:
            raise InpaintError("Cannot start: " + "; ".join(problems) + ".", "invalid_settings")
        return self


def problem(q: p.Param, value: Any) -> str:
    """Why `value` is not allowed for `q`, in a painter's words."""
    if q.kind is str:
        if isinstance(value, str) and len(value) > q.max_chars():
            return f"{q.label} is longer than {q.max_chars()} characters"
        return f"{q.label} must be text"
    if q.kind is tuple:  # a list: say which values, as the painter typed them
        most = q.max_chars()
        if isinstance(value, tuple) and len(value) > most:
            return f"{q.label} takes at most {most} values, not {len(value)}"
        lo, hi = q.bounds()
        if q.percent and lo is not None and hi is not None and isinstance(value, tuple):
            low = f"above {lo * 100:g}%" if q.lo_open else f"at least {lo * 100:g}%"
            high = f"below {hi * 100:g}%" if q.hi_open else f"at most {hi * 100:g}%"
            bad = tuple(v for v in value if not isinstance(v, (int, float)) or not lo < v <= hi) or value
            return f"each {q.label} value must be {low} and {high}, not {q.format_text(bad)}"
        if q.item is str and isinstance(value, tuple):  # names: one is empty or not text
            return f"each of the {q.label} must be a name the daemon lists, not {q.format_text(value)!r}"
        if q.item is p.Lora and isinstance(value, tuple) and all(isinstance(v, p.Lora) for v in value):
            if not all(v.name.strip() for v in value):
                return f"each of the {q.label} needs a name: name:weight"
            bad = tuple(v for v in value if not lo <= v.weight <= hi) or value
            return f"each of the {q.label}' weights must be {q.describe_range()}, not {q.format_text(bad)}"
    allowed = q.describe_range()
    return f"{q.label} must be {allowed}, not {value}" if allowed else f"{q.label} cannot be {value!r}"
