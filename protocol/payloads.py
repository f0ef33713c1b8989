"""The values messages carry: pixels, masks, model descriptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fields import read_bool, read_bytes, read_enum, read_int, read_list, read_map, read_str
from .errors import ErrorCode, ProtocolError
from .limits import Limits
from .pixels import ColorEncoding, MaskFormat, PixelFormat, map_bytes_per_pixel, map_format
from .spec import ControlParams, ReferenceParams


def _check_size(where: str, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{where}: {width}x{height} is {width * height} pixels, over the limit of "
            f"{limits.max_pixels}; select a smaller area",
        )


@dataclass(frozen=True)
class Image:
    """A rectangle of pixels in one of the wire formats."""

    width: int
    height: int
    format: PixelFormat
    data: bytes = field(repr=False)
    color: ColorEncoding = ColorEncoding.SRGB

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", PixelFormat(self.format))
        object.__setattr__(self, "color", ColorEncoding(self.color))

    @property
    def expected_bytes(self) -> int:
        return self.width * self.height * self.format.bytes_per_pixel

    def to_wire(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format.value,
            "color": self.color.value,
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits) -> Image:
        width = read_int(d, where, "width", lo=1, hi=limits.max_side)
        height = read_int(d, where, "height", lo=1, hi=limits.max_side)
        _check_size(where, width, height, limits)
        fmt = read_enum(d, where, "format", PixelFormat)
        color = read_enum(d, where, "color", ColorEncoding, ColorEncoding.SRGB.value)
        data = read_bytes(d, where, "data")
        image = cls(width, height, fmt, data, color)
        if len(data) != image.expected_bytes:
            raise ProtocolError(
                ErrorCode.SIZE_MISMATCH,
                f"{where}: {width}x{height} {fmt.value} needs {image.expected_bytes} bytes, got {len(data)}",
            )
        return image


@dataclass(frozen=True)
class Mask:
    """A per-pixel map: 0 keep, full scale change fully, between: partly.

    `gray8` (the default, one byte a pixel: the selection's own convention) or `gray16`;
    or a layer's pixels in a `PixelFormat`, whose luminance times alpha is the map
    (`color` says how those pixels encode light, as for an `Image`).
    """

    width: int
    height: int
    data: bytes = field(repr=False)
    format: MaskFormat | PixelFormat = MaskFormat.GRAY8
    color: ColorEncoding = ColorEncoding.SRGB

    def __post_init__(self) -> None:
        fmt = self.format
        object.__setattr__(self, "format", fmt if isinstance(fmt, PixelFormat) else map_format(fmt))
        object.__setattr__(self, "color", ColorEncoding(self.color))

    @property
    def expected_bytes(self) -> int:
        return self.width * self.height * map_bytes_per_pixel(self.format)

    def to_wire(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format.value,
            "color": self.color.value,
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits) -> Mask:
        width = read_int(d, where, "width", lo=1, hi=limits.max_side)
        height = read_int(d, where, "height", lo=1, hi=limits.max_side)
        _check_size(where, width, height, limits)
        name = read_str(d, where, "format", MaskFormat.GRAY8.value, max_len=32)
        try:
            fmt = map_format(name)
        except ValueError:
            known = [f.value for f in MaskFormat] + [f.value for f in PixelFormat]
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"{where}: field 'format' is '{name}'; a map is one of {', '.join(known)}",
            ) from None
        color = read_enum(d, where, "color", ColorEncoding, ColorEncoding.SRGB.value)
        data = read_bytes(d, where, "data")
        mask = cls(width, height, data, fmt, color)
        if len(data) != mask.expected_bytes:
            raise ProtocolError(
                ErrorCode.SIZE_MISMATCH,
                f"{where}: a {width}x{height} {fmt.value} map needs {mask.expected_bytes} bytes, "
                f"got {len(data)}",
            )
        return mask


@dataclass(frozen=True)
class Control:
    """One control image of a job (the region's size) and how it steers (ControlNet)."""

    image: Image
    params: ControlParams = field(default_factory=ControlParams)

    def to_wire(self) -> dict[str, Any]:
        return {"image": self.image.to_wire(), **self.params.to_wire()}

    @classmethod
    def from_wire(cls, d: Any, where: str, limits: Limits) -> Control:
        d = _item_map(d, where)
        image = Image.from_wire(read_map(d, where, "image"), f"{where}.image", limits)
        return cls(image, ControlParams.from_wire(d, where, limits))


@dataclass(frozen=True)
class Reference:
    """One reference image of a job (any size) and its weight (IP-Adapter)."""

    image: Image
    params: ReferenceParams = field(default_factory=ReferenceParams)

    def to_wire(self) -> dict[str, Any]:
        return {"image": self.image.to_wire(), **self.params.to_wire()}

    @classmethod
    def from_wire(cls, d: Any, where: str, limits: Limits) -> Reference:
        d = _item_map(d, where)
        image = Image.from_wire(read_map(d, where, "image"), f"{where}.image", limits)
        return cls(image, ReferenceParams.from_wire(d, where, limits))


def _item_map(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: must be a map")
    return d


@dataclass(frozen=True)
class ModelInfo:
    name: str  # what a client puts in JobParams.model
    family: str  # "sd15", "sdxl", "sd15-inpaint", "sdxl-inpaint", "flux", "flux-schnell", "flux-fill", "sd3"
    # The parts a FLUX.1 / SD3 transformer kept alone has not in its own file ("vae", "clip_l",
    # "clip_g", "t5"): a job may choose them (`text_encoders`, `vae`); sent only when some.
    lacks: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name, "family": self.family}
        if self.lacks:
            wire["lacks"] = list(self.lacks)
        return wire

    @classmethod
    def from_wire(cls, d: Any, where: str) -> ModelInfo:
        if not isinstance(d, Mapping):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: each model must be a map")
        return cls(
            read_str(d, where, "name", max_len=512),
            read_str(d, where, "family", max_len=64),
            tuple(str_list(d, where, "lacks")),
        )


@dataclass(frozen=True)
class PartInfo:
    """A text encoder or VAE a job may name (`JobParams.text_encoders`, `vae`) for a FLUX.1 or
    SD3 model kept alone, with its role and the model families it may serve."""

    name: str
    role: str  # "clip_l", "clip_g", "t5" (text encoders) or "vae"
    families: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "families": list(self.families)}

    @classmethod
    def from_wire(cls, d: Any, where: str) -> PartInfo:
        if not isinstance(d, Mapping):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: each text encoder or VAE must be a map")
        return cls(
            read_str(d, where, "name", max_len=512),
            read_str(d, where, "role", max_len=32),
            tuple(str_list(d, where, "families")),
        )

    def fits(self, family: str | None) -> bool:
        """Whether it may serve a model of `family` (None or "": not known, so it may)."""
        return not family or family in self.families


def parts_from_wire(d: Mapping[str, Any], where: str, key: str) -> list[PartInfo]:
    """The text encoders or VAEs listed under `key`; absent: none (an older daemon)."""
    return [PartInfo.from_wire(item, where) for item in read_list(d, where, key, [])]


@dataclass(frozen=True)
class WorkerInfo:
    """One of a daemon's workers (a GPU, a process, a cluster actor) as `status` lists it."""

    name: str  # e.g. "cuda:1" or "ray-2 (gpu-node-3)"
    device: str = ""
    model: str | None = None  # the model it holds loaded, if any
    busy: bool = False  # running a job now
    jobs: int = 0  # jobs it has finished since it joined
    # Where the model's weights live: "none" (on the device), "model" or "sequential" (in CPU
    # memory, moved per component or per block while it runs); "" = not said (no model, or a
    # daemon older than the field). `offload_reason` says why, in words, for people.
    offload: str = ""
    offload_reason: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "model": self.model,
            "busy": self.busy,
            "jobs": self.jobs,
            "offload": self.offload,
            "offload_reason": self.offload_reason,
        }

    @classmethod
    def from_wire(cls, d: Any, where: str) -> WorkerInfo:
        if not isinstance(d, Mapping):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: each worker must be a map")
        return cls(
            name=read_str(d, where, "name", max_len=256),
            device=read_str(d, where, "device", "", max_len=256),
            model=read_str(d, where, "model", None, max_len=512, optional=True),
            busy=read_bool(d, where, "busy", False),
            jobs=read_int(d, where, "jobs", 0, lo=0),
            offload=read_str(d, where, "offload", "", max_len=32),
            offload_reason=read_str(d, where, "offload_reason", "", max_len=1024),
        )


def models_from_wire(d: Mapping[str, Any], where: str, key: str = "models") -> list[ModelInfo]:
    """The list under `key`; only `models` itself is required."""
    items = read_list(d, where, key) if key == "models" else read_list(d, where, key, [])
    return [ModelInfo.from_wire(m, where) for m in items]


def str_list(d: Mapping[str, Any], where: str, key: str) -> list[str]:
    items = read_list(d, where, key, [])
    if not all(isinstance(item, str) for item in items):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: field '{key}' must list strings")
    return items
