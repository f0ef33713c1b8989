"""Protocol v1 messages: what each carries and how it is read from a decoded map.

Every message is one msgpack map with a `type` key (see codec.py for the
bytes). `from_wire` reads untrusted maps, raising `ProtocolError` that names
the bad field; sizes are checked against `Limits` before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._fields import read_bool, read_enum, read_float, read_int, read_list, read_map, read_str
from .errors import ErrorCode, ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .payloads import (
    Control,
    Image,
    Mask,
    ModelInfo,
    PartInfo,
    Reference,
    WorkerInfo,
    models_from_wire,
    parts_from_wire,
    str_list,
)
from .pixels import PixelFormat
from .spec import MAX_SEED, JobParams

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Client-chosen job ids: short, printable, safe to log.
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
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


class Message:
    TYPE: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Hello(Message):
    """Client -> server, first message on every connection."""

    TYPE: ClassVar[str] = "hello"
    client: str
    client_version: str = ""  # optional on the wire: a hello without it is welcomed
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
class Welcome(Message):
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
    # What a job's conditioning may name, each with the model family it fits.
    loras: list[ModelInfo] = field(default_factory=list)
    controlnets: list[ModelInfo] = field(default_factory=list)
    ip_adapters: list[ModelInfo] = field(default_factory=list)
    # What a job may name as its text encoders and VAE (FLUX.1 / SD3 models kept alone).
    text_encoders: list[PartInfo] = field(default_factory=list)
    vaes: list[PartInfo] = field(default_factory=list)

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
            **_addons_to_wire(self),
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
            models=models_from_wire(d, w),
            default_model=read_str(d, w, "default_model", None, max_len=512, optional=True),
            limits=Limits(**known),
            schedulers=str_list(d, w, "schedulers"),
            pixel_formats=str_list(d, w, "pixel_formats"),
            capabilities=str_list(d, w, "capabilities"),
            device=read_str(d, w, "device", ""),
            **_addons_from_wire(d, w),
        )


# The add-ons a daemon lists beside its models (`welcome`, `models`); absent: none.
_ADDONS = ("loras", "controlnets", "ip_adapters")
# The text encoders and VAEs it lists likewise; sent only when there are some, so that a
# daemon without them says what it always said.
_PARTS = ("text_encoders", "vaes")


def _addons_to_wire(message: Any) -> dict[str, Any]:
    wire = {key: [m.to_wire() for m in getattr(message, key)] for key in _ADDONS}
    wire.update(
        {key: [p.to_wire() for p in getattr(message, key)] for key in _PARTS if getattr(message, key)}
    )
    return wire


def _addons_from_wire(d: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {
        **{key: models_from_wire(d, where, key) for key in _ADDONS},
        **{key: parts_from_wire(d, where, key) for key in _PARTS},
    }


@dataclass(frozen=True)
class Submit(Message):
    """Client -> server: one inpainting job on one region of a document.

    `mask` is the change map: the selection, or a layer picked as the map. `selection`,
    sent only with a layer map, multiplies the map after its levels; `blend_mask`, when
    sent, is the result's alpha instead of the one made from the change map. All three
    are the image's size, as are `controls`' images (ControlNet); `ip_adapters`' reference
    images may have any size.
    """

    TYPE: ClassVar[str] = "submit"
    job_id: str
    image: Image
    mask: Mask
    params: JobParams = field(default_factory=JobParams)
    x: int = 0  # the region's offset in the document, returned untouched in `result`
    y: int = 0
    selection: Mask | None = None
    blend_mask: Mask | None = None
    controls: tuple[Control, ...] = ()
    ip_adapters: tuple[Reference, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "job_id": self.job_id,
            "x": self.x,
            "y": self.y,
            "image": self.image.to_wire(),
            "mask": self.mask.to_wire(),
            "params": self.params.to_wire(),
        }
        for key in _OPTIONAL_MAPS:
            value = getattr(self, key)
            if value is not None:
                wire[key] = value.to_wire()
        for key in _CONDITIONING:
            if getattr(self, key):
                wire[key] = [item.to_wire() for item in getattr(self, key)]
        return wire

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Submit:
        w = cls.TYPE
        job_id = _job_id(d, w)
        try:
            image = Image.from_wire(read_map(d, w, "image"), f"{w}.image", limits)
            maps = {
                key: Mask.from_wire(read_map(d, w, key), f"{w}.{key}", limits)
                for key in ("mask", *_OPTIONAL_MAPS)
                if key == "mask" or d.get(key) is not None
            }
            controls = _items(d, w, "controls", Control, limits.max_controls, limits)
            sized = {**maps, **{f"controls[{i}] image": c.image for i, c in enumerate(controls)}}
            for key, item in sized.items():
                if (item.width, item.height) != (image.width, image.height):
                    raise ProtocolError(
                        ErrorCode.SIZE_MISMATCH,
                        f"{w}: the {key} is {item.width}x{item.height} but the image is "
                        f"{image.width}x{image.height}",
                    )
            return cls(
                job_id=job_id,
                image=image,
                params=JobParams.from_wire(read_map(d, w, "params", {}), f"{w}.params", limits),
                x=read_int(d, w, "x", 0, lo=-_MAX_COORD, hi=_MAX_COORD),
                y=read_int(d, w, "y", 0, lo=-_MAX_COORD, hi=_MAX_COORD),
                controls=controls,
                ip_adapters=_items(d, w, "ip_adapters", Reference, limits.max_ip_adapters, limits),
                **maps,
            )
        except ProtocolError as exc:
            # Errors about a job name the job, so the client can fail the right one.
            raise ProtocolError(exc.code, exc.message, job_id) from None


_OPTIONAL_MAPS = ("selection", "blend_mask")
_CONDITIONING = ("controls", "ip_adapters")


def _items(
    d: Mapping[str, Any], where: str, key: str, kind: Any, most: int, limits: Limits
) -> tuple[Any, ...]:
    """A list of `kind` (Control, Reference) under `key`, at most `most` of them."""
    items = read_list(d, where, key, [])
    if len(items) > most:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"{where}: field '{key}' has {len(items)} items, over {most}"
        )
    return tuple(kind.from_wire(item, f"{where}.{key}[{i}]", limits) for i, item in enumerate(items))


@dataclass(frozen=True)
class StrengthMapRequest(Submit):
    """Client -> server: what a `submit` with these fields would change, per pixel, without
    sampling; a job of its own, answered with `map` (or `error`)."""

    TYPE: ClassVar[str] = "strength_map"


@dataclass(frozen=True)
class StrengthMap(Message):
    """Server -> client: the effective strength of each pixel (the change map after levels,
    depth, the selection, grow, feather and x strength) as gray in the request's output
    format (or its image's) and colour encoding, opaque: read back as a map it gives the
    same strengths. The request's last word."""

    TYPE: ClassVar[str] = "map"
    is_last: ClassVar[bool] = True  # as a `Result`'s: always its request's last word
    job_id: str
    image: Image
    x: int
    y: int
    timings: dict[str, float] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "image": self.image.to_wire(),
            "x": self.x,
            "y": self.y,
            "timings": {k: float(v) for k, v in self.timings.items()},
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> StrengthMap:
        w = cls.TYPE
        raw_timings = read_map(d, w, "timings", {})
        return cls(
            job_id=_job_id(d, w),
            image=Image.from_wire(read_map(d, w, "image"), f"{w}.image", limits),
            x=read_int(d, w, "x", lo=-_MAX_COORD, hi=_MAX_COORD),
            y=read_int(d, w, "y", lo=-_MAX_COORD, hi=_MAX_COORD),
            timings={k: read_float(raw_timings, w + ".timings", k) for k in raw_timings},
        )


@dataclass(frozen=True)
class Cancel(Message):
    TYPE: ClassVar[str] = "cancel"
    job_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Cancel:
        return cls(_job_id(d, "cancel"))


@dataclass(frozen=True)
class ListModels(Message):
    """Client -> server: ask again for the models (answered with `models`)."""

    TYPE: ClassVar[str] = "list_models"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> ListModels:
        return cls()


@dataclass(frozen=True)
class Models(Message):
    TYPE: ClassVar[str] = "models"
    models: list[ModelInfo]
    default_model: str | None = None
    loras: list[ModelInfo] = field(default_factory=list)
    controlnets: list[ModelInfo] = field(default_factory=list)
    ip_adapters: list[ModelInfo] = field(default_factory=list)
    text_encoders: list[PartInfo] = field(default_factory=list)
    vaes: list[PartInfo] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {
            "models": [m.to_wire() for m in self.models],
            "default_model": self.default_model,
            **_addons_to_wire(self),
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Models:
        return cls(
            models_from_wire(d, "models"),
            read_str(d, "models", "default_model", None, max_len=512, optional=True),
            **_addons_from_wire(d, "models"),
        )


@dataclass(frozen=True)
class GetStatus(Message):
    """Client -> server: how busy is the daemon (answered with `status`)."""

    TYPE: ClassVar[str] = "get_status"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> GetStatus:
        return cls()


@dataclass(frozen=True)
class Status(Message):
    TYPE: ClassVar[str] = "status"
    queued: int  # jobs waiting, all clients together
    running: bool  # a job is sampling now
    loaded_model: str | None = None
    device: str = ""
    # Every worker (a daemon with several GPUs or a cluster has more than one); optional
    # within v1: an older daemon sends none.
    workers: list[WorkerInfo] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "running": self.running,
            "loaded_model": self.loaded_model,
            "device": self.device,
            "workers": [w.to_wire() for w in self.workers],
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Status:
        return cls(
            queued=read_int(d, "status", "queued", lo=0),
            running=read_bool(d, "status", "running"),
            loaded_model=read_str(d, "status", "loaded_model", None, max_len=512, optional=True),
            device=read_str(d, "status", "device", ""),
            workers=[
                WorkerInfo.from_wire(w, "status.workers") for w in read_list(d, "status", "workers", [])
            ],
        )


@dataclass(frozen=True)
class Accepted(Message):
    TYPE: ClassVar[str] = "accepted"
    job_id: str
    position: int  # jobs ahead of this one; 0 = next to run

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "position": self.position}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Accepted:
        return cls(_job_id(d, "accepted"), read_int(d, "accepted", "position", lo=0))


@dataclass(frozen=True)
class Progress(Message):
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
class Preview(Message):
    """A small image of the job so far; the server drops, never queues, stale ones."""

    TYPE: ClassVar[str] = "preview"
    job_id: str
    step: int
    image: Image
    index: int = 0  # the result it previews, in a job of several

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "step": self.step, "image": self.image.to_wire(), "index": self.index}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Preview:
        return cls(
            _job_id(d, "preview"),
            read_int(d, "preview", "step", lo=0),
            Image.from_wire(read_map(d, "preview", "image"), "preview.image", limits),
            read_int(d, "preview", "index", 0, lo=0, hi=limits.max_results - 1),
        )


@dataclass(frozen=True)
class Result(Message):
    """One finished region: same size and offset as submitted; alpha is the composite mask.

    A job gives `total` results (its `count`, or one per `fan` strength), sent in index
    order as each is done; the one with index `total - 1` is the job's last word.
    """

    TYPE: ClassVar[str] = "result"
    job_id: str
    image: Image
    x: int
    y: int
    seed: int  # this result's own: a job with this seed and count 1 makes it again
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds by stage
    index: int = 0
    total: int = 1
    strength: float = 1.0  # the global strength this result was made with

    @property
    def is_last(self) -> bool:
        return self.index == self.total - 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "image": self.image.to_wire(),
            "x": self.x,
            "y": self.y,
            "seed": self.seed,
            "model": self.model,
            "timings": {k: float(v) for k, v in self.timings.items()},
            "index": self.index,
            "total": self.total,
            "strength": float(self.strength),
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Result:
        w = "result"
        raw_timings = read_map(d, w, "timings", {})
        total = read_int(d, w, "total", 1, lo=1, hi=limits.max_results)
        return cls(
            job_id=_job_id(d, w),
            image=Image.from_wire(read_map(d, w, "image"), "result.image", limits),
            x=read_int(d, w, "x", lo=-_MAX_COORD, hi=_MAX_COORD),
            y=read_int(d, w, "y", lo=-_MAX_COORD, hi=_MAX_COORD),
            seed=read_int(d, w, "seed", lo=0, hi=MAX_SEED),
            model=read_str(d, w, "model", "", max_len=512),
            timings={k: read_float(raw_timings, w + ".timings", k) for k in raw_timings},
            index=read_int(d, w, "index", 0, lo=0, hi=total - 1),
            total=total,
            strength=read_float(d, w, "strength", 1.0, lo=0.0, hi=1.0, lo_open=True),
        )


@dataclass(frozen=True)
class Cancelled(Message):
    TYPE: ClassVar[str] = "cancelled"
    job_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], limits: Limits) -> Cancelled:
        return cls(_job_id(d, "cancelled"))


@dataclass(frozen=True)
class Error(Message):
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


CLIENT_MESSAGES: dict[str, type[Message]] = {
    m.TYPE: m for m in (Hello, Submit, StrengthMapRequest, Cancel, ListModels, GetStatus)
}
SERVER_MESSAGES: dict[str, type[Message]] = {
    m.TYPE: m
    for m in (Welcome, Accepted, Progress, Preview, Result, StrengthMap, Cancelled, Error, Models, Status)
}
ALL_MESSAGES: dict[str, type[Message]] = {**CLIENT_MESSAGES, **SERVER_MESSAGES}
