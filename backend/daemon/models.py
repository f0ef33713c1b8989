"""The models the daemon offers, by name only.

Clients pick a model by a name from this list, never by a path: a message
naming a file would let any client make the daemon load whatever it points
at. Paths are for the command line (`--model PATH`), which the user types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...protocol import ModelInfo, PartInfo

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ModelCatalog:
    models: tuple[ModelInfo, ...]
    default: str | None
    only_builtin: bool = False  # no real checkpoint found: the tiny test models paint noise
    loras: tuple[ModelInfo, ...] = ()  # the LoRAs a job's params may name
    ip_adapters: tuple[ModelInfo, ...] = ()  # the IP-Adapters a job's references may name
    controlnets: tuple[ModelInfo, ...] = ()  # the ControlNets a job's controls may name
    text_encoders: tuple[PartInfo, ...] = ()  # the text encoders a job's params may name
    vaes: tuple[PartInfo, ...] = ()  # the VAEs a job's params may name

    def listed(self) -> dict[str, list[Any]]:
        """What `welcome` and `models` list beside the models, as their fields."""
        keys = ("loras", "ip_adapters", "controlnets", "text_encoders", "vaes")
        return {key: list(getattr(self, key)) for key in keys}

    def unlisted_part(
        self, text_encoders: Sequence[str], vae: str | None
    ) -> tuple[str, str, list[str]] | None:
        """(kind, name, the names listed) of the first text encoder or VAE a job names that this
        daemon does not list; None when it lists them all (the engine checks their fit)."""
        for kind, names, listed in (
            ("text encoder", text_encoders, self.text_encoders),
            ("VAE", () if vae is None else (vae,), self.vaes),
        ):
            known = [p.name for p in listed]
            for name in names:
                if name not in known:
                    return kind, name, known
        return None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def lookup(self, requested: str | None) -> str | None:
        """The model a job runs: the default for None, else the offered name; None if unknown."""
        if requested is None:
            return self.default
        return requested if requested in self.names else None


def build_catalog(engine: Any, requested: Sequence[str] = ()) -> ModelCatalog:
    """Ask the engine what it has; `requested` are `--model` specs (names or paths), first = default.

    Raises the engine's UnknownModel for a `--model` it cannot find.
    """
    chosen = [engine.resolve_model(spec) for spec in requested]
    found = {m.name: m for m in engine.list_models()}  # after resolving: may list more now
    real = [m for m in found.values() if not m.name.startswith(BUILTIN_PREFIX)]
    offered: dict[str, ModelInfo] = {}
    for m in real or list(found.values()):  # builtins only when nothing real exists
        offered[m.name] = ModelInfo(m.name, m.family, tuple(getattr(m, "lacks", ())))
    for name in chosen:
        if name not in offered:
            family = found[name].family if name in found else "unknown"
            offered[name] = ModelInfo(name, family)
    if chosen:
        default = chosen[0]
    else:
        try:
            default = engine.resolve_model(None)
        except Exception:  # no default configured: the first offered one
            default = None
        if default not in offered:
            default = next(iter(offered), None)
    only_builtin = all(name.startswith(BUILTIN_PREFIX) for name in offered)
    controlnets = offered_controlnets(engine, only_builtin)
    text_encoders, vaes = offered_parts(engine)
    return ModelCatalog(
        tuple(offered.values()),
        default,
        only_builtin,
        controlnets=controlnets,
        text_encoders=text_encoders,
        vaes=vaes,
        **offered_addons(engine, only_builtin),
    )


def offered_parts(engine: Any) -> tuple[tuple[PartInfo, ...], tuple[PartInfo, ...]]:
    """(text encoders, VAEs) found for FLUX.1 / SD3 single files (engine/parts.py)."""
    listing = getattr(engine, "list_parts", None)  # None: an engine without them (a stand-in)
    parts = [PartInfo(p.name, p.role, tuple(p.families)) for p in (listing() if listing is not None else ())]
    return tuple(p for p in parts if p.role != "vae"), tuple(p for p in parts if p.role == "vae")


ADDON_LISTINGS = {"loras": "list_loras", "ip_adapters": "list_ip_adapters"}


def offered_addons(engine: Any, only_builtin: bool) -> dict[str, tuple[ModelInfo, ...]]:
    """The LoRAs and IP-Adapters found, with their families, as the catalog's fields; the
    built-in tiny ones (which fit only the tiny models) only when those are all it offers."""
    offered: dict[str, tuple[ModelInfo, ...]] = {}
    for field_name, listing in ADDON_LISTINGS.items():
        found = getattr(engine, listing, None)  # None: an engine without them (a stand-in)
        offered[field_name] = tuple(
            ModelInfo(a.name, a.family)
            for a in (found() if found is not None else ())
            if only_builtin or not a.name.startswith(BUILTIN_PREFIX)
        )
    return offered


def offered_controlnets(engine: Any, only_builtin: bool) -> tuple[ModelInfo, ...]:
    """The ControlNets found, with their families; the built-in tiny ones (which fit only the
    tiny models) only when those are all the daemon offers."""
    listing = getattr(engine, "list_controlnets", None)
    if listing is None:  # an engine without ControlNet
        return ()
    return tuple(
        ModelInfo(c.name, c.family)
        for c in listing()
        if only_builtin or not c.name.startswith(BUILTIN_PREFIX)
    )
