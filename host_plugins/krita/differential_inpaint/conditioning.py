"""Control layers (ControlNet) and reference layers (IP-Adapter): which layers of the
image steer a job besides the prompt, and how, in the one plain form that the docker,
kritarc and `inpaint_layer` share:

    {"layer": "Lines", "kind": "canny", "strength": 0.8, "start": 0, "end": 0.6}
    {"layer": "Photo", "weight": 0.5}

every key but "layer" being a field of the protocol's `ControlParams` or
`ReferenceParams` (checked by them, so the bounds are the spec's). The shared flow reads
the pixels (`client.flow.ControlInput`, `ReferenceInput`). No Qt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import protocol as p
from .client import InpaintError, flow
from .krita_io import stack_order

CONTROL_KINDS = p.CONTROL_KINDS


@dataclass(frozen=True)
class ControlLayer:
    """A control layer by name (a name keeps across sessions, a node does not)."""

    layer: str
    params: p.ControlParams = field(default_factory=p.ControlParams)


@dataclass(frozen=True)
class ReferenceLayer:
    layer: str
    params: p.ReferenceParams = field(default_factory=p.ReferenceParams)


@dataclass(frozen=True)
class Conditioning:
    """The docker's control and reference layers (LoRAs are a job setting: `loras`)."""

    controls: tuple[ControlLayer, ...] = ()
    references: tuple[ReferenceLayer, ...] = ()

    def to_text(self) -> str:
        """The kritarc form: JSON of the plain dicts."""
        return json.dumps(
            {
                "controls": [{"layer": c.layer, **c.params.to_wire()} for c in self.controls],
                "references": [{"layer": r.layer, **r.params.to_wire()} for r in self.references],
            }
        )

    @classmethod
    def from_text(cls, text: str) -> Conditioning:
        """The inverse of `to_text`; a hand-edited or stale entry is dropped, never fatal."""
        try:
            saved = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(saved, dict):
            return cls()
        controls, references = [], []
        for given in saved.get("controls") or ():
            try:
                controls.append(ControlLayer(str(given["layer"]), _control_params(given, 1)))
            except (InpaintError, KeyError, TypeError):
                continue
        for given in saved.get("references") or ():
            try:
                references.append(ReferenceLayer(str(given["layer"]), _reference_params(given, 1)))
            except (InpaintError, KeyError, TypeError):
                continue
        return cls(tuple(controls), tuple(references))

    def inputs(self, document: Any) -> flow.Maps:
        """The flow's inputs, each layer looked up in `document` (an InpaintError naming a
        missing one); rows without a layer are left out."""
        return conditioning_maps(
            document,
            [{"layer": c.layer, **c.params.to_wire()} for c in self.controls if c.layer],
            [{"layer": r.layer, **r.params.to_wire()} for r in self.references if r.layer],
        )


def conditioning_maps(
    document: Any, controls: Iterable[Any] | None, references: Iterable[Any] | None
) -> flow.Maps:
    """`flow.Maps` with the control and reference inputs given the plain way: each a dict
    as above, a node, a layer's name (the defaults), or the flow's own input."""
    found_controls = tuple(
        _control_input(document, given, i) for i, given in enumerate(_as_list(controls, "controls"), 1)
    )
    found_references = tuple(
        _reference_input(document, given, i) for i, given in enumerate(_as_list(references, "references"), 1)
    )
    return flow.Maps(controls=found_controls, references=found_references)


def _as_list(given: Iterable[Any] | None, what: str) -> list[Any]:
    if given is None:
        return []
    if isinstance(given, (str, Mapping)) or not isinstance(given, Iterable):
        given = [given]  # one control alone is fine too
    return list(given)


def _control_input(document: Any, given: Any, index: int) -> flow.ControlInput:
    if isinstance(given, flow.ControlInput):
        return flow.ControlInput(_node(document, given.layer, "control", index), given.params)
    if isinstance(given, Mapping):
        return flow.ControlInput(
            _node(document, _layer_of(given, "control", index), "control", index),
            _control_params(given, index),
        )
    return flow.ControlInput(_node(document, given, "control", index))


def _reference_input(document: Any, given: Any, index: int) -> flow.ReferenceInput:
    if isinstance(given, flow.ReferenceInput):
        return flow.ReferenceInput(_node(document, given.layer, "reference", index), given.params)
    if isinstance(given, Mapping):
        layer = _layer_of(given, "reference", index)
        return flow.ReferenceInput(
            _node(document, layer, "reference", index), _reference_params(given, index)
        )
    return flow.ReferenceInput(_node(document, given, "reference", index))


def _layer_of(given: Mapping[str, Any], what: str, index: int) -> Any:
    layer = given.get("layer")
    if layer is None or layer == "":
        raise InpaintError(
            f"{what.capitalize()} layer {index} names no layer: give it as {{'layer': 'Lines', ...}}.",
            "invalid_settings",
        )
    return layer


def _node(document: Any, layer: Any, what: str, index: int) -> Any:
    """A node as it is; a name looked up as the Layers docker lists the image."""
    if not isinstance(layer, str):
        return layer
    found = next((n for n in stack_order(document.rootNode()) if n.name() == layer), None)
    if found is None:
        raise InpaintError(
            f"There is no layer called '{layer}' in this image for {what} layer {index}. Pick it in the "
            f"docker's Conditioning section (or rename the layer to match) and try again.",
            "missing_layer",
        )
    return found


def _control_params(given: Mapping[str, Any], index: int) -> p.ControlParams:
    return _params(given, index, "control", p.CONTROL_PARAMS, p.ControlParams.from_wire)


def _reference_params(given: Mapping[str, Any], index: int) -> p.ReferenceParams:
    return _params(given, index, "reference", p.REFERENCE_PARAMS, p.ReferenceParams.from_wire)


def _params(given: Mapping[str, Any], index: int, what: str, declared: tuple[p.Param, ...], read: Any) -> Any:
    """The spec's own check, its words turned into the painter's (labels, not wire keys)."""
    known = {q.name: q for q in declared}
    unknown = sorted(set(given) - set(known) - {"layer"})
    if unknown:
        raise InpaintError(
            f"{what.capitalize()} layer {index}: unknown key {', '.join(map(repr, unknown))}; the keys are "
            f"layer, {', '.join(known)}.",
            "invalid_settings",
        )
    values = {k: v for k, v in given.items() if k != "layer"}
    if "kind" in values and isinstance(values["kind"], str):
        values["kind"] = values["kind"].strip().lower()
    try:
        return read(values, f"{what} layer {index}")
    except p.ProtocolError as exc:
        words = exc.message
        for q in declared:
            words = words.replace(f"field '{q.name}'", q.label).replace(f"'{q.name}'", q.label)
        raise InpaintError(f"Cannot start: {words}.", "invalid_settings") from None


def loras_of(given: Any) -> tuple[p.Lora, ...]:
    """LoRAs given the plain ways: "name:0.8, other:-0.5", [("name", 0.8), ...], a list of
    "name:0.8" strings or `p.Lora`s (the settings' own check bounds the weights)."""
    param = next(q for q in p.JOB_PARAMS if q.name == "loras")
    if given is None:
        return ()
    if isinstance(given, str):
        given = [given]
    loras: list[p.Lora] = []
    for item in given:
        try:
            if isinstance(item, p.Lora):
                loras.append(item)
            elif isinstance(item, str):
                loras.extend(param.parse_text(item))
            elif isinstance(item, Mapping):
                loras.append(p.Lora(str(item["name"]), float(item.get("weight", 1.0))))
            else:
                name, weight = item
                loras.append(p.Lora(str(name), float(weight)))
        except (ValueError, TypeError, KeyError) as exc:
            raise InpaintError(
                f"LoRAs: {item!r} is not a LoRA ({exc}); give them as 'name:0.8, other:-0.5' or "
                "[('name', 0.8), ...].",
                "invalid_settings",
            ) from None
    return tuple(loras)
