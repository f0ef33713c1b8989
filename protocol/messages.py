"""Protocol v1 messages and their msgpack encoding.

Every message is one msgpack map with a `type` key; pixel and mask bytes are
msgpack `bin`. `decode` turns untrusted bytes into a message object or raises
`ProtocolError`, checking sizes against `Limits` before anything is built.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from ._fields import (
    read_bool,
    read_bytes,
    read_enum,
    read_float,
    read_int,
    read_list,
    read_map,
    read_str,
)
from .errors import ErrorCode, ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .pixels import MASK_BYTES_PER_PIXEL, ColorEncoding, PixelFormat

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Client-chosen job ids: short, printable, safe to log.
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_SEED = 2**63 - 1
_MAX_COORD = 1 << 24  # document offsets; far beyond any canvas a host allows


class Stage:
    """Job stages reported by `progress`, in the order they happen."""

    QUEUED = "queued"
    LOADING = "loading"  # loading the model into memory
    ENCODING = "encoding"  # prompt and image into latents
    SAMPLING = "sampling"
    DECODING = "decoding"

    ALL = (QUEUED, LOADING, ENCODING, SAMPLING, DECODING)


def _job_id(d: Mapping[str, Any], where: str) -> str:
    job_id = read_str(d, where, "job_id", max_len=64, min_len=1)
    if not _JOB_ID.fullmatch(job_id):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{where}: field 'job_id' must be 1-64 letters, digits, '_', '.', ':' or '-'",
        )
    return job_id


def _check_size(where: str, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{where}: {width}x{height} is {width * height} pixels, over the limit of "
            f"{limits.max_pixels}; select a smaller area",
        )


# --- payloads -----------------------------------------------------------------


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
    """8-bit grayscale, one byte a pixel: 0 keep, 255 change fully, between: partly."""

    width: int
    height: int
    data: bytes = field(repr=False)

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "data": self.data}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits) -> Mask:
        width = read_int(d, where, "width", lo=1, hi=limits.max_side)
        height = read_int(d, where, "height", lo=1, hi=limits.max_side)
        _check_size(where, width, height, limits)
        data = read_bytes(d, where, "data")
        if len(data) != width * height * MASK_BYTES_PER_PIXEL:
            raise ProtocolError(
                ErrorCode.SIZE_MISMATCH,
                f"{where}: a {width}x{height} mask needs {width * height} bytes, got {len(data)}",
            )
        return cls(width, height, data)


@dataclass(frozen=True)
class JobParams:
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0  # scales every mask value: pixel strength = mask x strength
    steps: int = 20
    guidance: float = 7.0
    seed: int | None = None  # None: the daemon draws one and reports it
    model: str | None = None  # None: the daemon's default model
    scheduler: str = "euler"
    grow: float = 0.0  # px to dilate the mask before sampling
    feather: float = 0.0  # px of blur on the mask edge before sampling
    output_format: PixelFormat | None = None  # None: same as the input
    preview: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "strength": float(self.strength),
            "steps": self.steps,
            "guidance": float(self.guidance),
            "seed": self.seed,
            "model": self.model,
            "scheduler": self.scheduler,
            "grow": float(self.grow),
            "feather": float(self.feather),
            "output_format": None if self.output_format is None else PixelFormat(self.output_format).value,
            "preview": self.preview,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], where: str, limits: Limits) -> JobParams:
        output_format = d.get("output_format")
        return cls(
            prompt=read_str(d, where, "prompt", "", max_len=limits.max_prompt_chars),
            negative_prompt=read_str(d, where, "negative_prompt", "", max_len=limits.max_prompt_chars),
            strength=read_float(d, where, "strength", 1.0, lo=0.0, hi=1.0, lo_open=True),
            steps=read_int(d, where, "steps", 20, lo=1, hi=limits.max_steps),
            guidance=read_float(d, where, "guidance", 7.0, lo=0.0, hi=100.0),
            seed=read_int(d, where, "seed", None, lo=0, hi=_MAX_SEED, optional=True),
            model=read_str(d, where, "model", None, max_len=512, min_len=1, optional=True),
            scheduler=read_str(d, where, "scheduler", "euler", max_len=64, min_len=1),
            grow=read_float(d, where, "grow", 0.0, lo=0.0, hi=1024.0),
            feather=read_float(d, where, "feather", 0.0, lo=0.0, hi=1024.0),
            output_format=None
            if output_format is None
            else read_enum(d, where, "output_format", PixelFormat),
            preview=read_bool(d, where, "preview", True),
        )


@dataclass(frozen=True)
class ModelInfo:
    name: str  # what a client puts in JobParams.model
    family: str  # "sd15", "sdxl", "sd15-inpaint", "sdxl-inpaint"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family}

    @classmethod
    def from_wire(cls, d: Any, where: str) -> ModelInfo:
        if not isinstance(d, Mapping):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: each model must be a map")
        return cls(read_str(d, where, "name", max_len=512), read_str(d, where, "family", max_len=64))


def _models_from_wire(d: Mapping[str, Any], where: str) -> list[ModelInfo]:
    return [ModelInfo.from_wire(m, where) for m in read_list(d, where, "models")]


def _str_list(d: Mapping[str, Any], where: str, key: str) -> list[str]:
    items = read_list(d, where, key, [])
    if not all(isinstance(item, str) for item in items):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: field '{key}' must list strings")
    return items


# --- messages -----------------------------------------------------------------


class _Message:
    TYPE: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Hello(_Message):
    """Client -> server, first message on every connection."""

    TYPE: ClassVar[str] = "hello"
    client: str
    client_version: str = ""
    protocol: int = PROTOCOL_VERSION
    token: str | None = field(default=None, repr=False)

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "protocol": self.protocol,
            "client": self.client,
            "client_version": self.client_version,
        }
        if self.token is not None:
            wire["token"] = self.token
        return wire

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Hello:
        return cls(
            protocol=read_int(d, "hello", "protocol", lo=0, hi=2**31),
            client=read_str(d, "hello", "client", max_len=128),
            client_version=read_str(d, "hello", "client_version", "", max_len=64),
            token=read_str(d, "hello", "token", None, max_len=256, optional=True),
        )


@dataclass(frozen=True)
class Welcome(_Message):
    """Server -> client, the answer to a good `hello`."""

    TYPE: ClassVar[str] = "welcome"
    server: str
    server_version: str
    models: list[ModelInfo]
    default_model: str | None
    limits: Limits = DEFAULT_LIMITS
    schedulers: list[str] = field(default_factory=list)
    pixel_formats: list[str] = field(default_factory=lambda: [f.value for f in PixelFormat])
    capabilities: list[str] = field(default_factory=list)  # e.g. "preview", "cancel"
    device: str = ""
    protocol: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "server": self.server,
            "server_version": self.server_version,
            "models": [m.to_wire() for m in self.models],
            "default_model": self.default_model,
            "limits": self.limits.to_wire(),
            "schedulers": list(self.schedulers),
            "pixel_formats": list(self.pixel_formats),
            "capabilities": list(self.capabilities),
            "device": self.device,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Welcome:
        w = "welcome"
        raw_limits = read_map(d, w, "limits")
        known = {k: read_int(raw_limits, w, k, lo=0) for k in Limits.__dataclass_fields__ if k in raw_limits}
        return cls(
            protocol=read_int(d, w, "protocol", lo=0),
            server=read_str(d, w, "server"),
            server_version=read_str(d, w, "server_version", max_len=64),
            models=_models_from_wire(d, w),
            default_model=read_str(d, w, "default_model", None, max_len=512, optional=True),
            limits=Limits(**known),
            schedulers=_str_list(d, w, "schedulers"),
            pixel_formats=_str_list(d, w, "pixel_formats"),
            capabilities=_str_list(d, w, "capabilities"),
            device=read_str(d, w, "device", ""),
        )


@dataclass(frozen=True)
class Submit(_Message):
    """Client -> server: one inpainting job on one region of a document."""

    TYPE: ClassVar[str] = "submit"
    job_id: str
    image: Image
    mask: Mask
    params: JobParams = field(default_factory=JobParams)
    x: int = 0  # the region's offset in the document, returned untouched in `result`
    y: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "x": self.x,
            "y": self.y,
            "image": self.image.to_wire(),
            "mask": self.mask.to_wire(),
            "params": self.params.to_wire(),
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Submit:
        job_id = _job_id(d, "submit")
        try:
            image = Image.from_wire(read_map(d, "submit", "image"), "submit.image", limits)
            mask = Mask.from_wire(read_map(d, "submit", "mask"), "submit.mask", limits)
            if (mask.width, mask.height) != (image.width, image.height):
                raise ProtocolError(
                    ErrorCode.SIZE_MISMATCH,
                    f"submit: the mask is {mask.width}x{mask.height} but the image is "
                    f"{image.width}x{image.height}",
                )
            return cls(
                job_id=job_id,
                image=image,
                mask=mask,
                params=JobParams.from_wire(read_map(d, "submit", "params", {}), "submit.params", limits),
                x=read_int(d, "submit", "x", 0, lo=-_MAX_COORD, hi=_MAX_COORD),
                y=read_int(d, "submit", "y", 0, lo=-_MAX_COORD, hi=_MAX_COORD),
            )
        except ProtocolError as exc:
            # Errors about a job name the job, so the client can fail the right one.
            raise ProtocolError(exc.code, exc.message, job_id) from None


@dataclass(frozen=True)
class Cancel(_Message):
    TYPE: ClassVar[str] = "cancel"
    job_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Cancel:
        return cls(_job_id(d, "cancel"))


@dataclass(frozen=True)
class ListModels(_Message):
    """Client -> server: ask again for the models (answered with `models`)."""

    TYPE: ClassVar[str] = "list_models"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> ListModels:
        return cls()


@dataclass(frozen=True)
class Models(_Message):
    TYPE: ClassVar[str] = "models"
    models: list[ModelInfo]
    default_model: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"models": [m.to_wire() for m in self.models], "default_model": self.default_model}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Models:
        return cls(
            _models_from_wire(d, "models"),
            read_str(d, "models", "default_model", None, max_len=512, optional=True),
        )


@dataclass(frozen=True)
class GetStatus(_Message):
    """Client -> server: how busy is the daemon (answered with `status`)."""

    TYPE: ClassVar[str] = "get_status"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> GetStatus:
        return cls()


@dataclass(frozen=True)
class Status(_Message):
    TYPE: ClassVar[str] = "status"
    queued: int  # jobs waiting, all clients together
    running: bool  # a job is sampling now
    loaded_model: str | None = None
    device: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "running": self.running,
            "loaded_model": self.loaded_model,
            "device": self.device,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Status:
        return cls(
            queued=read_int(d, "status", "queued", lo=0),
            running=read_bool(d, "status", "running"),
            loaded_model=read_str(d, "status", "loaded_model", None, max_len=512, optional=True),
            device=read_str(d, "status", "device", ""),
        )


@dataclass(frozen=True)
class Accepted(_Message):
    TYPE: ClassVar[str] = "accepted"
    job_id: str
    position: int  # jobs ahead of this one; 0 = next to run

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "position": self.position}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Accepted:
        return cls(_job_id(d, "accepted"), read_int(d, "accepted", "position", lo=0))


@dataclass(frozen=True)
class Progress(_Message):
    TYPE: ClassVar[str] = "progress"
    job_id: str
    stage: str  # one of Stage.ALL
    step: int = 0
    steps: int = 0
    position: int = 0  # while queued: jobs ahead

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "stage": self.stage,
            "step": self.step,
            "steps": self.steps,
            "position": self.position,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Progress:
        w = "progress"
        stage = read_str(d, w, "stage", max_len=32)
        if stage not in Stage.ALL:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"progress: unknown stage '{stage}'")
        return cls(
            _job_id(d, w),
            stage,
            read_int(d, w, "step", 0, lo=0),
            read_int(d, w, "steps", 0, lo=0),
            read_int(d, w, "position", 0, lo=0),
        )


@dataclass(frozen=True)
class Preview(_Message):
    """A small image of the job so far; the server drops, never queues, stale ones."""

    TYPE: ClassVar[str] = "preview"
    job_id: str
    step: int
    image: Image

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "step": self.step, "image": self.image.to_wire()}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Preview:
        return cls(
            _job_id(d, "preview"),
            read_int(d, "preview", "step", lo=0),
            Image.from_wire(read_map(d, "preview", "image"), "preview.image", limits),
        )


@dataclass(frozen=True)
class Result(_Message):
    """The finished region: same size and offset as submitted; alpha is the composite mask."""

    TYPE: ClassVar[str] = "result"
    job_id: str
    image: Image
    x: int
    y: int
    seed: int
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds by stage

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "image": self.image.to_wire(),
            "x": self.x,
            "y": self.y,
            "seed": self.seed,
            "model": self.model,
            "timings": {k: float(v) for k, v in self.timings.items()},
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Result:
        w = "result"
        raw_timings = read_map(d, w, "timings", {})
        return cls(
            job_id=_job_id(d, w),
            image=Image.from_wire(read_map(d, w, "image"), "result.image", limits),
            x=read_int(d, w, "x", lo=-_MAX_COORD, hi=_MAX_COORD),
            y=read_int(d, w, "y", lo=-_MAX_COORD, hi=_MAX_COORD),
            seed=read_int(d, w, "seed", lo=0, hi=_MAX_SEED),
            model=read_str(d, w, "model", "", max_len=512),
            timings={k: read_float(raw_timings, w + ".timings", k) for k in raw_timings},
        )


@dataclass(frozen=True)
class Cancelled(_Message):
    TYPE: ClassVar[str] = "cancelled"
    job_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Cancelled:
        return cls(_job_id(d, "cancelled"))


@dataclass(frozen=True)
class Error(_Message):
    TYPE: ClassVar[str] = "error"
    code: ErrorCode
    message: str
    job_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", ErrorCode(self.code))

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "job_id": self.job_id}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Error:
        job_id = d.get("job_id")
        return cls(
            code=read_enum(d, "error", "code", ErrorCode),
            message=read_str(d, "error", "message", max_len=8192),
            job_id=None if job_id is None else _job_id(d, "error"),
        )

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> Error:
        return cls(exc.code, exc.message, exc.job_id)


ClientMessage = Hello | Submit | Cancel | ListModels | GetStatus
ServerMessage = Welcome | Accepted | Progress | Preview | Result | Cancelled | Error | Models | Status
Message = ClientMessage | ServerMessage

CLIENT_MESSAGES: dict[str, type] = {m.TYPE: m for m in (Hello, Submit, Cancel, ListModels, GetStatus)}
SERVER_MESSAGES: dict[str, type] = {
    m.TYPE: m for m in (Welcome, Accepted, Progress, Preview, Result, Cancelled, Error, Models, Status)
}
ALL_MESSAGES: dict[str, type] = {**CLIENT_MESSAGES, **SERVER_MESSAGES}


# --- encoding -----------------------------------------------------------------


def _wire(message: _Message) -> dict[str, Any]:
    wire = message.to_wire()
    wire["type"] = message.TYPE
    return wire


def encode(message: _Message) -> bytes:
    """One message as the bytes of one binary websocket message."""
    return msgpack.packb(_wire(message), use_bin_type=True)


# Byte payloads this big travel as views of the message's own bytes; smaller ones
# are copied in with the msgpack around them, where a copy is cheaper than a part.
ZERO_COPY_MIN_BYTES = 64 * 1024
# Loopback websockets are fastest with 1-4 MiB fragments (measured: see README.md here).
FRAGMENT_BYTES = 2 * 1024 * 1024


def encode_parts(message: _Message) -> list[bytes | memoryview]:
    """`encode(message)` without copying its pixels: pieces whose concatenation is
    exactly `encode(message)`.

    Maps, arrays, keys and small values are packed by msgpack itself, one call
    each, and runs of them joined into one `bytes`; every byte payload of at
    least `ZERO_COPY_MIN_BYTES` becomes a msgpack `bin` header (0xc4/0xc5/0xc6 +
    big-endian length) followed by a memoryview of the payload, not a copy. The
    views share the message's buffers: do not change those until it is sent.
    Send the parts as one websocket message, cut with `fragments`.
    """
    packer = msgpack.Packer(use_bin_type=True)  # autoreset: each call returns its bytes
    pieces: list[bytes | memoryview] = []
    _pack_parts(_wire(message), packer, pieces)
    parts: list[bytes | memoryview] = []
    run: list[bytes] = []
    for piece in pieces:
        if isinstance(piece, memoryview):
            if run:
                parts.append(b"".join(run))
                run = []
            parts.append(piece)
        else:
            run.append(piece)
    if run:
        parts.append(b"".join(run))
    return parts


def _pack_parts(value: Any, packer: msgpack.Packer, out: list[bytes | memoryview]) -> None:
    # The same walk as msgpack's own packer (dicts in insertion order, lists and
    # tuples as arrays), stopping short of big byte payloads.
    if isinstance(value, dict):
        out.append(packer.pack_map_header(len(value)))
        for key, item in value.items():
            out.append(packer.pack(key))
            _pack_parts(item, packer, out)
    elif isinstance(value, (list, tuple)):
        out.append(packer.pack_array_header(len(value)))
        for item in value:
            _pack_parts(item, packer, out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        view = _byte_view(value)
        if view.nbytes < ZERO_COPY_MIN_BYTES:
            out.append(packer.pack(value))
        else:
            out.append(_bin_header(view.nbytes))
            out.append(view)
    else:
        out.append(packer.pack(value))


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A flat view of unsigned bytes, so that len() is the byte count."""
    view = memoryview(data)
    return view if view.ndim == 1 and view.format in ("B", "b", "c") else view.cast("B")


def _bin_header(size: int) -> bytes:
    """msgpack's `bin` header: the shortest of bin 8, bin 16 and bin 32."""
    if size <= 0xFF:
        return struct.pack(">BB", 0xC4, size)
    if size <= 0xFFFF:
        return struct.pack(">BH", 0xC5, size)
    if size <= 0xFFFFFFFF:
        return struct.pack(">BI", 0xC6, size)
    raise ValueError(f"a byte payload of {size} bytes is too large for msgpack")


def fragments(parts: list[bytes | memoryview], max_bytes: int = FRAGMENT_BYTES) -> list[bytes | memoryview]:
    """The parts of one message (from `encode_parts`) cut into the fragments of one
    websocket message, each at most `max_bytes`: big payloads are sliced as
    views (no copy), runs of small parts joined. A message that fits one
    fragment comes back as a list of one."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    out: list[bytes | memoryview] = []
    run: list[bytes | memoryview] = []
    run_bytes = 0
    for part in parts:
        view = _byte_view(part)
        size = view.nbytes
        if run_bytes + size <= max_bytes:
            run.append(part)
            run_bytes += size
            continue
        if run_bytes:
            out.append(run[0] if len(run) == 1 else b"".join(run))
        run, run_bytes = [], 0
        for start in range(0, size, max_bytes):
            piece = view[start : start + max_bytes]
            if piece.nbytes == max_bytes:
                out.append(piece)
            else:  # the tail starts the next run
                run, run_bytes = [piece], piece.nbytes
    if run_bytes or not out:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def decode(
    data: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    accept: Mapping[str, type] = ALL_MESSAGES,
) -> Any:
    """Bytes from the peer -> a message object, or `ProtocolError`.

    `accept` narrows the message types this side takes: the daemon passes
    CLIENT_MESSAGES, the plugins SERVER_MESSAGES.
    """
    if isinstance(data, str):
        raise ProtocolError(ErrorCode.MALFORMED, "expected a binary message holding msgpack, got text")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(ErrorCode.MALFORMED, f"expected bytes, got {type(data).__name__}")
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"the message is {len(data)} bytes, over the limit of {limits.max_message_bytes}",
        )
    if len(data) == 0:
        raise ProtocolError(ErrorCode.MALFORMED, "empty message")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=limits.max_message_bytes,
            max_str_len=limits.max_message_bytes,
            # Each array or map header preallocates its room, nested up to 1024 deep:
            # small caps keep a few KiB of hostile headers from costing many MiB.
            max_array_len=1024,
            max_map_len=1024,
            max_ext_len=0,
        )
    except Exception as exc:  # any failure of the untrusted bytes, C or pure-Python unpacker
        raise ProtocolError(
            ErrorCode.MALFORMED, f"not a msgpack message ({exc.__class__.__name__})"
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"expected a msgpack map, got {type(obj).__name__}")
    if not all(isinstance(k, str) for k in obj):
        raise ProtocolError(ErrorCode.MALFORMED, "every key of a message must be a string")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.MALFORMED, "the message has no string field 'type'")
    cls = accept.get(kind)
    if cls is None:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type '{shown}'; expected one of: {', '.join(sorted(accept))}",
        )
    return cls.from_wire(obj, limits)
