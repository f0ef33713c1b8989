"""Every job parameter, declared once.

A parameter is one field of `JobParams` below: its name, type and default, and
in its `param(...)` call the bounds, unit, one-line help, label, the hosts
that show it and the model families that take it (`families=`, with
`family_defaults=` where a family has its own default; see `applies_to`).
Everything else is derived from these declarations, never written again: the
wire (`JobParams.to_wire`/`from_wire`), the engine's validation
(`JobParams.validated`), the `differential-inpaint run` options, the GIMP
procedure's arguments, the Krita form's widgets and its kritarc keys.

Adding a numeric parameter is one line here plus the engine code that uses it
(CONTRIBUTING.md shows it).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ._fields import read_bool, read_enum, read_float, read_int, read_list, read_map, read_str
from .errors import ErrorCode, ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .pixels import PixelFormat

# Where a parameter may appear. "cli" is `differential-inpaint run`; a parameter
# with no host travels on the wire only (the host sets it itself).
KRITA, GIMP, CLI = "krita", "gimp", "cli"
ALL_HOSTS = frozenset((KRITA, GIMP, CLI))

# Seeds are unsigned 63-bit: every host language holds them in a signed 64-bit int.
MAX_SEED = 2**63 - 1

# The model families a daemon reports (`ModelInfo.family`). A parameter's `families`
# names those that take it; a family not listed here (a newer daemon's) takes every one.
SD_FAMILIES = frozenset({"sd15", "sdxl", "sd15-inpaint", "sdxl-inpaint"})
FLUX_FAMILIES = frozenset({"flux", "flux-schnell", "flux-fill"})
FAMILIES = SD_FAMILIES | FLUX_FAMILIES | {"sd3"}
# How the plugins name a model's family to the painter.
FAMILY_LABELS = {
    "sd15": "SD 1.5",
    "sdxl": "SDXL",
    "sd15-inpaint": "SD 1.5 Inpainting",
    "sdxl-inpaint": "SDXL Inpainting",
    "flux": "FLUX dev",
    "flux-schnell": "FLUX schnell",
    "flux-fill": "FLUX Fill",
    "sd3": "SD3",
}


def family_label(family: str) -> str:
    """A model family as the painter reads it ("flux-fill": "FLUX Fill"); one this version
    does not know (a newer daemon's) as the daemon wrote it."""
    return FAMILY_LABELS.get(family, family)


# The families whose models may take their text encoders and VAE from files of their own, and
# the roles of those text encoders (the daemon lists each file with its role).
FLOW_PART_FAMILIES = FLUX_FAMILIES | {"sd3"}
TEXT_ENCODER_ROLES = ("clip_l", "clip_g", "t5")


@dataclass(frozen=True)
class Lora:
    """One LoRA of a job: a name the daemon lists and its weight (the parameter's bounds)."""

    name: str
    weight: float = 1.0

    def text(self) -> str:
        return f"{self.name}:{self.weight:g}"

    @classmethod
    def parse(cls, text: str) -> Lora:
        """ "name:0.8" -> Lora("name", 0.8) (see `split_weight`); no weight: 1."""
        name, weight = split_weight(text)
        return cls(name, 1.0 if weight is None else weight)


def split_weight(text: str) -> tuple[str, float | None]:
    """("name", 0.8) from "name:0.8": the weight is what follows the last colon when that is
    a number, so names with colons ("builtin:tiny-lora-sd15") need none; else (text, None)."""
    head, colon, tail = text.strip().rpartition(":")
    if colon:
        try:
            return head.strip(), float(tail)
        except ValueError:
            pass
    return text.strip(), None


@dataclass(frozen=True)
class Param:
    """One declared parameter. Bounds given as a string name a `Limits` field, so
    that the limits the daemon announces and these bounds are one number."""

    name: str  # the field name: wire key, kritarc key; "-" for "_" in CLI options and GIMP
    kind: type  # str, int, float, bool, an Enum, or tuple (a list of `item`)
    default: Any
    label: str  # what a form shows beside the widget
    help: str  # one line, for tooltips, --help and GIMP's blurb
    optional: bool = False  # None is a value: "let the daemon choose"
    lo: float | None = None
    hi: float | str | None = None
    lo_open: bool = False  # lo itself is refused
    hi_open: bool = False  # hi itself is refused
    min_len: int = 0
    max_len: int | str = 256  # characters of a str, items of a tuple
    item: type | None = None  # a tuple's item kind (float, str or Lora); lo/hi bound each number
    unit: str = ""  # "px": shown after the value
    step: float | None = None  # a form's single step for numbers
    multiline: bool = False
    secret: bool = False  # shown as dots
    percent: bool = False  # a fraction that forms show as a percentage
    advanced: bool = False  # forms may fold it away under "Advanced"
    choices: str | None = None  # the list of the daemon's `welcome` that holds the names: "models", ...
    hosts: frozenset[str] = ALL_HOSTS
    gimp_name: str | None = None  # GIMP's argument name, where it predates this spec
    families: frozenset[str] | None = None  # the model families that take it; None: every one
    family_defaults: tuple[tuple[str, Any], ...] = ()  # (family, default) where it differs

    @property
    def option(self) -> str:
        """The name with dashes: the CLI option (after `--`) and GIMP's argument."""
        return self.name.replace("_", "-")

    @property
    def gimp_argument(self) -> str:
        return self.gimp_name or self.option

    def default_for(self, family: str | None) -> Any:
        """The default for a model of `family` (None or "": not known)."""
        return dict(self.family_defaults).get(family or "", self.default)

    def bounds(self, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Any]:
        """(lo, hi) with limit names resolved; None where unbounded."""
        hi = getattr(limits, self.hi) if isinstance(self.hi, str) else self.hi
        return self.lo, hi

    def max_chars(self, limits: Limits = DEFAULT_LIMITS) -> int:
        return int(getattr(limits, self.max_len) if isinstance(self.max_len, str) else self.max_len)

    def read(self, d: Mapping[str, Any], where: str, limits: Limits = DEFAULT_LIMITS) -> Any:
        """The value of this parameter in the map `d` (its default when absent), or
        ProtocolError naming it. The one check used by the wire and the engine."""
        lo, hi = self.bounds(limits)
        if self.kind is str:
            max_len = self.max_chars(limits)
            return read_str(
                d,
                where,
                self.name,
                self.default,
                max_len=max_len,
                min_len=self.min_len,
                optional=self.optional,
            )
        if self.kind is bool:
            return read_bool(d, where, self.name, self.default)
        if self.kind is tuple:
            return self._read_items(d, where, limits)
        if self.kind is int:
            return read_int(d, where, self.name, self.default, lo=lo, hi=hi, optional=self.optional)
        if self.kind is float:
            return read_float(
                d, where, self.name, self.default, lo=lo, hi=hi, lo_open=self.lo_open, hi_open=self.hi_open
            )
        if issubclass(self.kind, Enum):
            if self.optional and d.get(self.name, self.default) is None:
                return None
            return read_enum(d, where, self.name, self.kind, self.default)
        raise TypeError(f"parameter {self.name}: unsupported kind {self.kind}")  # a bad declaration

    def _read_items(self, d: Mapping[str, Any], where: str, limits: Limits) -> tuple[Any, ...]:
        items = read_list(d, where, self.name, list(self.default))
        most = self.max_chars(limits)
        if len(items) > most:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"{where}: field '{self.name}' has {len(items)} values, over {most}",
            )
        lo, hi = self.bounds(limits)
        bounds = {"lo": lo, "hi": hi, "lo_open": self.lo_open, "hi_open": self.hi_open}
        indexed = {f"{self.name}[{i}]": v for i, v in enumerate(items)}
        if self.item is Lora:
            # Values built in code (a plugin's settings) are read as their wire maps.
            indexed = {k: self.to_wire((v,))[0] if isinstance(v, Lora) else v for k, v in indexed.items()}
            return tuple(
                Lora(
                    read_str(entry, f"{where}.{key}", "name", min_len=1, max_len=512),
                    read_float(entry, f"{where}.{key}", "weight", 1.0, **bounds),
                )
                for key in indexed
                for entry in [read_map(indexed, where, key)]
            )
        if self.item is str:  # names: each as a str parameter of this one's bounds
            return tuple(read_str(indexed, where, key, min_len=1, max_len=512) for key in indexed)
        return tuple(read_float(indexed, where, key, **bounds) for key in indexed)

    def to_wire(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Enum):
            return value.value
        if self.kind is tuple and self.item is Lora:
            return [{"name": v.name, "weight": float(v.weight)} for v in value]
        if self.kind is tuple:
            return [v if self.item is str else float(v) for v in value]
        return float(value) if self.kind is float else value

    def parse_text(self, text: str) -> tuple[Any, ...]:
        """A list parameter typed by a painter: "0.3, 0.5" or "30%, 50%" (a number with "%"
        is a percentage); LoRAs as "name:0.8, other:-0.5" (see `Lora.parse`). ValueError
        in words when a part is not a number; bounds are `read`'s business."""
        values: list[Any] = []
        for part in text.replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if self.item in (Lora, str):
                values.append(Lora.parse(part) if self.item is Lora else part)
                continue
            try:
                value = float(part.rstrip("%").strip())
            except ValueError:
                raise ValueError(f"'{part}' is not a number") from None
            values.append(value / 100.0 if part.endswith("%") else value)
        return tuple(values)

    def format_text(self, values: tuple[Any, ...]) -> str:
        """The inverse of `parse_text`: "30%, 50%" for a percent list, else "0.3, 0.5"."""
        if self.item is Lora:
            return ", ".join(v.text() for v in values)
        if self.item is str:
            return ", ".join(values)
        if self.percent:
            return ", ".join(f"{round(v * 100, 2):g}%" for v in values)
        return ", ".join(f"{v:g}" for v in values)

    def describe_range(self, limits: Limits = DEFAULT_LIMITS) -> str:
        """The allowed values in words, for messages and help texts: "between 0 and 1024 px"."""
        lo, hi = self.bounds(limits)
        if lo is None or hi is None:
            return ""
        unit = f" {self.unit}" if self.unit else ""
        if not (self.lo_open or self.hi_open):
            return f"between {_number(lo)} and {_number(hi)}{unit}"
        low = f"above {_number(lo)}" if self.lo_open else f"at least {_number(lo)}"
        high = f"below {_number(hi)}" if self.hi_open else f"at most {_number(hi)}"
        return f"{low} and {high}{unit}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def param(default: Any, label: str, help: str, **spec: Any) -> Any:  # noqa: A002 - the spec's word
    """Declare a dataclass field as a parameter (see `Param` for the keywords;
    `family_defaults` is given as a mapping, family -> default)."""
    if "family_defaults" in spec:
        spec["family_defaults"] = tuple(sorted(dict(spec["family_defaults"]).items()))
    if spec.get("families") is not None:
        spec["families"] = frozenset(spec["families"])
    return field(default=default, metadata={"param": {"label": label, "help": help, **spec}})


def applies_to(q: Param, family: str | None) -> bool:
    """Whether a model of `family` takes the parameter `q`. An unknown family (None, "",
    or one this spec does not list) takes every parameter: the daemon decides."""
    return q.families is None or not family or family not in FAMILIES or family in q.families


def params_of(cls: type) -> tuple[Param, ...]:
    """The `Param` of every field of a dataclass declared with `param(...)`."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    declared = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
        item = None
        if typing.get_origin(hint) is tuple:  # tuple[float, ...]
            kinds, item = [tuple], typing.get_args(hint)[0]
        declared.append(
            Param(
                name=f.name,
                kind=kinds[0],
                item=item,
                default=f.default,
                optional=type(None) in typing.get_args(hints[f.name]),
                **f.metadata["param"],
            )
        )
    return tuple(declared)


class Depth(str, Enum):
    """Whether the daemon's depth estimate of the region is the map, and which end changes."""

    NONE = "none"
    NEAR = "near"  # near things change most
    FAR = "far"  # the far background changes most


class Combine(str, Enum):
    """How the depth map and the sent map (the selection) make one map."""

    MULTIPLY = "multiply"
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True)
class JobParams:
    """One job's parameters: every field is a declared `Param` (see `JOB_PARAMS`)."""

    prompt: str = param(
        "", "Prompt", "What to paint where the mask is white", max_len="max_prompt_chars", multiline=True
    )
    negative_prompt: str = param(
        "",
        "Negative prompt",
        "What to keep out of it",
        max_len="max_prompt_chars",
        advanced=True,
        families=SD_FAMILIES | {"sd3"},  # FLUX has no unconditional pass to steer away with
    )
    strength: float = param(
        1.0,
        "Strength",
        "Scales the whole mask: at 1 white pixels change fully, gray ones partly",
        lo=0.0,
        hi=1.0,
        lo_open=True,
        step=0.05,
        percent=True,
    )
    steps: int = param(20, "Steps", "Sampling steps", lo=1, hi="max_steps", advanced=True)
    guidance: float = param(
        7.0,
        "Guidance",
        "How closely to follow the prompt (CFG scale, 1 or less turns it off; FLUX dev: its "
        "distilled guidance)",
        lo=0.0,
        hi=100.0,
        step=0.5,
        advanced=True,
        families=FAMILIES - {"flux-schnell"},  # schnell is distilled to run without guidance
        family_defaults={"flux": 3.5, "flux-fill": 30.0},  # diffusers' FluxPipeline, FluxFillPipeline
    )
    seed: int | None = param(
        None,
        "Seed",
        "Repeats a result with the same settings; empty: a new one each time",
        lo=0,
        hi=MAX_SEED,
        advanced=True,
    )
    model: str | None = param(
        None,
        "Model",
        "A model the daemon lists; empty: the daemon's default",
        min_len=1,
        max_len=512,
        choices="models",
    )
    scheduler: str = param(
        "euler",
        "Scheduler",
        "The sampler",
        min_len=1,
        max_len=64,
        choices="schedulers",
        hosts=frozenset({CLI}),
    )
    grow: float = param(
        0.0,
        "Mask grow",
        "Grow the mask by this many pixels first",
        lo=0.0,
        hi=1024.0,
        unit="px",
        advanced=True,
    )
    feather: float = param(
        0.0,
        "Mask feather",
        "Soften the mask's edge over this many pixels",
        lo=0.0,
        hi=1024.0,
        unit="px",
        advanced=True,
    )
    snap: float = param(
        0.03,
        "Mask snap",
        "Mask values this close to 0 or 1 become 0 or 1 (JPEG ringing); 0 turns it off",
        lo=0.0,
        hi=0.5,
        hi_open=True,
        hosts=frozenset({CLI}),
    )
    invert_mask: bool = param(
        False, "Invert map", "Swap what changes and what is kept: the map's white is kept, its black changes"
    )
    mask_black: float = param(
        0.0,
        "Map black point",
        "Map values at or below this change nothing (levels, applied after invert)",
        lo=0.0,
        hi=1.0,
        hi_open=True,
        step=0.05,
        percent=True,
        advanced=True,
    )
    mask_white: float = param(
        1.0,
        "Map white point",
        "Map values at or above this change fully (levels)",
        lo=0.0,
        hi=1.0,
        lo_open=True,
        step=0.05,
        percent=True,
        advanced=True,
    )
    mask_gamma: float = param(
        1.0,
        "Map gamma",
        "Above 1 the map's grays change more, below 1 less (levels: value ** (1 / gamma))",
        lo=0.0,
        hi=10.0,
        lo_open=True,
        step=0.1,
        advanced=True,
    )
    depth: Depth = param(
        Depth.NONE,
        "Depth map",
        "The daemon estimates the region's depth and uses it as the map: near or far things change "
        "most; levels apply to it, then it is combined with the selection",
    )
    depth_model: str | None = param(
        None,
        "Depth model",
        "A Depth Anything model the daemon finds (file, folder or name); empty: the first found",
        min_len=1,
        max_len=512,
        advanced=True,
    )
    depth_combine: Combine = param(
        Combine.MULTIPLY,
        "Depth with selection",
        "How the depth map and the selection make the map: multiply, the lower (min) or the higher (max)",
        advanced=True,
    )
    smooth: bool = param(
        True,
        "Smooth strength",
        "The change follows the mask's gray continuously, even at few steps; off: the paper's "
        "rule, one band of strength per step",
        advanced=True,
    )
    color_match: bool = param(
        False,
        "Colour match",
        "Match the colours of partly changed areas to the original: against halos and colour drift",
        advanced=True,
    )
    keep_threshold: float = param(
        0.0,
        "Keep unchanged",
        "Pixels the sampler changed by less than this keep their original value exactly; 0: off",
        lo=0.0,
        hi=0.25,
        step=0.005,
        percent=True,
        advanced=True,
    )
    count: int = param(
        1,
        "Variations",
        "How many results, with consecutive seeds (seed, seed+1, ...): each can be made again alone",
        lo=1,
        hi="max_results",
    )
    fan: tuple[float, ...] = param(
        (),
        "Strength fan",
        "Several strengths, one result each with the same seed and noise (0.3,0.5,0.7); "
        "replaces Strength; empty: off",
        lo=0.0,
        hi=1.0,
        lo_open=True,
        max_len="max_results",
        percent=True,
        advanced=True,
    )
    loras: tuple[Lora, ...] = param(
        (),
        "LoRAs",
        "LoRAs the daemon lists, each with a weight: name:0.8, other:-0.5",
        lo=-2.0,
        hi=2.0,
        max_len="max_loras",
    )
    # FLUX.1 / SD3 transformers kept alone (ComfyUI's split files) take their text encoders and
    # VAE from files beside them; the CLI names those files itself (`--text-encoder`, `--vae`).
    text_encoders: tuple[str, ...] = param(
        (),
        "Text encoders",
        "Text encoders the daemon lists (CLIP-L, CLIP-G, T5-XXL) for a FLUX.1 or SD3 model kept "
        "alone: clip_l.safetensors, t5xxl_fp16.safetensors; empty: those the daemon matches",
        max_len=len(TEXT_ENCODER_ROLES),
        choices="text_encoders",
        advanced=True,
        hosts=frozenset({KRITA, GIMP}),
        families=FLOW_PART_FAMILIES,
    )
    vae: str | None = param(
        None,
        "VAE",
        "A VAE the daemon lists, for a FLUX.1 or SD3 model kept alone; empty: the one the daemon matches",
        min_len=1,
        max_len=512,
        choices="vaes",
        advanced=True,
        hosts=frozenset({KRITA, GIMP}),
        families=FLOW_PART_FAMILIES,
    )
    output_format: PixelFormat | None = param(
        None, "Output format", "The result's pixel format; empty: the input's", hosts=frozenset()
    )
    preview: bool = param(True, "Previews", "Send previews while sampling", hosts=frozenset())

    def to_wire(self) -> dict[str, Any]:
        return {p.name: p.to_wire(getattr(self, p.name)) for p in JOB_PARAMS}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits = DEFAULT_LIMITS) -> JobParams:
        params = cls(**{p.name: p.read(d, where, limits) for p in JOB_PARAMS})
        conflicts = params.conflicts()
        if conflicts:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: " + "; ".join(w for w, _ in conflicts))
        return params

    def conflicts(self) -> list[tuple[str, str]]:
        """Values that are each allowed but not together: (in the wire's words, in a
        painter's), for the daemon's errors and the plugins' alike."""
        found = []
        if self.count > 1 and self.fan:
            found.append(
                (
                    "fields 'count' and 'fan' cannot be used together: a fan gives one result per "
                    "strength, all with one seed",
                    "Variations and Strength fan cannot be used together (a fan gives one result per "
                    "strength, all with one seed): set Variations to 1 or clear the fan",
                )
            )
        twice = sorted({name for name in self.text_encoders if self.text_encoders.count(name) > 1})
        if twice:
            found.append(
                (
                    f"field 'text_encoders' names '{twice[0]}' twice",
                    f"Text encoders name '{twice[0]}' twice",
                )
            )
        if self.mask_black >= self.mask_white:
            found.append(
                (
                    f"field 'mask_black' ({self.mask_black:g}) must be below 'mask_white' "
                    f"({self.mask_white:g})",
                    "Map black point must be below Map white point",
                )
            )
        return found

    def validated(self, limits: Limits = DEFAULT_LIMITS) -> JobParams:
        """A copy with numbers normalised, or ProtocolError naming the first bad value:
        the same checks as the wire, for callers that build JobParams in code."""
        return JobParams.from_wire(vars(self), "params", limits)

    def replace(self, **changes: Any) -> JobParams:
        return dataclasses.replace(self, **changes)

    # --- the results of one job ---

    @property
    def results(self) -> int:
        """How many results the job gives: one per fan strength, else `count`."""
        return len(self.fan) or self.count

    def result_strength(self, index: int) -> float:
        return self.fan[index] if self.fan else self.strength

    def result_seed(self, seed: int, index: int) -> int:
        """Result `index`'s seed when the job's is `seed`: consecutive for variations (wrapping
        past MAX_SEED), one seed for a whole fan."""
        return seed if self.fan else (seed + index) % (MAX_SEED + 1)


JOB_PARAMS: tuple[Param, ...] = params_of(JobParams)


# What a control image commonly shows, as hosts offer it; the wire takes any word, the
# daemon says which its ControlNets take.
CONTROL_KINDS = ("canny", "depth", "lineart", "scribble", "pose", "tile", "inpaint")


@dataclass(frozen=True)
class ControlParams:
    """How one control image of a job steers it (ControlNet); the image travels beside them
    (`payloads.Control`)."""

    kind: str = param(
        "canny",
        "Type",
        f"What the control image shows: {', '.join(CONTROL_KINDS)}, ...",
        min_len=1,
        max_len=32,
    )
    model: str | None = param(
        None,
        "ControlNet",
        "A ControlNet the daemon lists; empty: the first that takes this type and the model's family",
        min_len=1,
        max_len=512,
        choices="controlnets",
    )
    strength: float = param(1.0, "Control strength", "How strongly it steers; 0: not at all", lo=0.0, hi=2.0)
    start: float = param(
        0.0, "Start", "The fraction of the steps where it starts", lo=0.0, hi=1.0, hi_open=True, percent=True
    )
    end: float = param(
        1.0, "End", "The fraction of the steps where it stops", lo=0.0, hi=1.0, lo_open=True, percent=True
    )
    preprocess: bool = param(
        False,
        "From a photo",
        "The image is a photo: the daemon makes the control image for the type (canny edges or depth)",
    )

    def to_wire(self) -> dict[str, Any]:
        return {q.name: q.to_wire(getattr(self, q.name)) for q in CONTROL_PARAMS}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits = DEFAULT_LIMITS) -> ControlParams:
        params = cls(**{q.name: q.read(d, where, limits) for q in CONTROL_PARAMS})
        if params.start >= params.end:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"{where}: field 'start' ({params.start:g}) must be below 'end' ({params.end:g})",
            )
        return params


@dataclass(frozen=True)
class ReferenceParams:
    """How one reference image steers a job (IP-Adapter); the image travels beside them."""

    weight: float = param(
        0.6, "Reference weight", "How much the reference steers; 0: not at all", lo=0.0, hi=2.0
    )
    model: str | None = param(
        None,
        "IP-Adapter",
        "An IP-Adapter the daemon lists; empty: the first that fits the model's family",
        min_len=1,
        max_len=512,
        choices="ip_adapters",
    )

    def to_wire(self) -> dict[str, Any]:
        return {q.name: q.to_wire(getattr(self, q.name)) for q in REFERENCE_PARAMS}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits = DEFAULT_LIMITS) -> ReferenceParams:
        return cls(**{q.name: q.read(d, where, limits) for q in REFERENCE_PARAMS})


CONTROL_PARAMS: tuple[Param, ...] = params_of(ControlParams)
REFERENCE_PARAMS: tuple[Param, ...] = params_of(ReferenceParams)
BY_NAME: dict[str, Param] = {p.name: p for p in JOB_PARAMS}


def shown_on(host: str, declared: tuple[Param, ...] = JOB_PARAMS) -> tuple[Param, ...]:
    """The parameters `host` offers, in declaration order."""
    return tuple(p for p in declared if host in p.hosts)
