"""Golden wire vectors: protocol/vectors/, built from the declarations in this file.

    .venv/bin/python tests/protocol/make_vectors.py           # check: exit 1 on any difference
    .venv/bin/python tests/protocol/make_vectors.py --write   # rewrite the folder

Each vector is the bytes of one binary websocket message. Valid ones are what
`encode` gives for a message (canonical) or bytes another encoder may send that
decode to a message (decode-only); malformed ones are declared here with the
error code the decoder must raise. protocol/README.md ("Wire vectors")
describes the index. tests/protocol/test_vectors.py holds the decoder to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests.support` importable
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from differential_inpaint import protocol as p  # noqa: E402
from differential_inpaint.protocol import ErrorCode  # noqa: E402
from tests.support.wire import DELETE, edited  # noqa: E402

VECTORS_DIR = ROOT / "protocol" / "vectors"
INDEX = "index.json"

CLIENT = "client->server"  # decoded by the daemon: accept = CLIENT_MESSAGES
SERVER = "server->client"  # decoded by a plugin or host: accept = SERVER_MESSAGES
ANY = "any"  # refused the same way in both directions

ACCEPT: dict[str, tuple[Mapping[str, type], ...]] = {
    CLIENT: (p.CLIENT_MESSAGES,),
    SERVER: (p.SERVER_MESSAGES,),
    ANY: (p.CLIENT_MESSAGES, p.SERVER_MESSAGES),
}

ABOUT = (
    "Golden wire vectors of the Differential Inpaint protocol. Each file is the bytes of one binary "
    "websocket message. See protocol/README.md, section 'Wire vectors'."
)
BYTES_IN_JSON = (
    'msgpack bin values appear in "message" as {"$bin": "<lowercase hex>"}; every other value is '
    "the msgpack value itself: numbers written with a '.' are float 64, the others integers; "
    "map keys are in the order they are encoded."
)


@dataclass(frozen=True)
class Vector:
    file: str  # relative to VECTORS_DIR
    description: str
    data: bytes
    direction: str
    type: str | None  # the message type the bytes claim, if any
    message: p.Message | None = None  # valid vectors: what decoding gives
    canonical: bool = True  # valid vectors: data == encode(message)
    error: ErrorCode | None = None  # malformed vectors: the code decoding raises
    error_job_id: str | None = None  # malformed vectors: the job the error names

    @property
    def valid(self) -> bool:
        return self.message is not None


def wire(message: p.Message) -> dict[str, Any]:
    """A message as the map `encode` packs (a fresh copy, safe to edit)."""
    return msgpack.unpackb(p.encode(message), raw=False)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def direction_of(kind: str) -> str:
    return CLIENT if kind in p.CLIENT_MESSAGES else SERVER


def valid(name: str, description: str, message: p.Message) -> Vector:
    return Vector(
        f"valid/{name}.msgpack",
        description,
        p.encode(message),
        direction_of(message.TYPE),
        message.TYPE,
        message,
    )


def decode_only(name: str, description: str, data: bytes, message: p.Message) -> Vector:
    return Vector(
        f"valid/{name}.msgpack",
        description,
        data,
        direction_of(message.TYPE),
        message.TYPE,
        message,
        canonical=False,
    )


def malformed(
    name: str,
    description: str,
    data: bytes | dict[str, Any],
    error: ErrorCode,
    *,
    direction: str | None = None,
    job_id: str | None = None,
) -> Vector:
    if isinstance(data, dict):
        kind = data.get("type")
        data = pack(data)
    else:
        kind = None
        try:
            obj = msgpack.unpackb(data, raw=False)
            if isinstance(obj, dict) and isinstance(obj.get("type"), str):
                kind = obj["type"]
        except Exception:
            pass
    kind = kind if isinstance(kind, str) else None
    if direction is None:
        direction = direction_of(kind) if kind in p.ALL_MESSAGES else ANY
    return Vector(
        f"malformed/{name}.msgpack", description, data, direction, kind, error=error, error_job_id=job_id
    )


# --- pixels: a few recognisable colours in every format, little-endian ---

RED_GREEN_BLUE_WHITE_RGBA8 = bytes([255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 255, 128])
RED_GREEN_BLUE_BGRA8 = bytes([0, 0, 255, 255, 0, 255, 0, 255, 255, 0, 0, 255])
RED_HALF_GREEN_RGBA16 = struct.pack("<8H", 65535, 0, 0, 65535, 0, 32768, 0, 65535)
# A painted strength layer: black, 50% gray, white, transparent white.
STRENGTH_LAYER_RGBA16 = struct.pack(
    "<16H", 0, 0, 0, 65535, 32768, 32768, 32768, 65535, 65535, 65535, 65535, 65535, 65535, 65535, 65535, 0
)
BLUE_CYAN_BGRA16 = struct.pack("<8H", 65535, 0, 0, 65535, 65535, 65535, 0, 4096)
WARM_RGBAF16 = struct.pack("<4e", 1.0, 0.5, 0.25, 1.0)
COOL_RGBAF32 = struct.pack("<4f", 0.125, 0.5, 0.75, 0.5)


def image(fmt: p.PixelFormat, width: int, height: int, data: bytes, linear: bool = False) -> p.Image:
    color = p.ColorEncoding.LINEAR if linear else p.ColorEncoding.SRGB
    return p.Image(width, height, fmt, data, color)


F = p.PixelFormat

SUBMIT_DEFAULTS = p.Submit(
    "job-1",
    image(F.RGBA8, 2, 2, RED_GREEN_BLUE_WHITE_RGBA8),
    p.Mask(2, 2, bytes([0, 64, 192, 255])),
    p.JobParams(),
)


def every_field_set(params: p.JobParams, keep: tuple[str, ...] = ()) -> p.JobParams:
    """`params` with each field still at its default set to another value its
    declaration allows, so a newly declared parameter is in the vectors without
    an edit here (then regenerate them). `keep`: fields another one excludes."""
    changes: dict[str, Any] = {}
    for q in p.JOB_PARAMS:
        if getattr(params, q.name) != q.default or q.name in keep:
            continue
        lo, hi = q.bounds()
        if q.kind is bool:
            changes[q.name] = not q.default
        elif q.kind is str:
            changes[q.name] = f"{q.name}-1"
        elif q.kind is tuple:
            one = {p.Lora: p.Lora(f"{q.name}-1", float(hi or 0)), str: f"{q.name}-1"}.get(
                q.item, float(hi or 0)
            )
            changes[q.name] = (one,)
        elif q.kind in (int, float):
            changes[q.name] = q.kind(hi) if not q.hi_open and hi != q.default else q.kind(lo)
        else:  # an enum
            changes[q.name] = next(member for member in q.kind if member != q.default)
    return params.replace(**changes)


ALL_PARAMS = every_field_set(
    p.JobParams(
        prompt="a red fox in snow",
        negative_prompt="blurry, text",
        strength=0.75,
        steps=30,
        guidance=5.5,
        seed=p.MAX_SEED,
        model="sdxl-base",
        scheduler="ddim",
        grow=4.0,
        feather=2.5,
        snap=0.125,
        mask_black=0.25,  # the bounds alone would give black 0 (its default) and white 0
        mask_white=0.75,
        output_format=F.RGBAF32,
        preview=False,
        fan=(0.25, 0.5, 1.0),
    ),
    keep=("count",),  # a fan excludes variations
)
SUBMIT_ALL_PARAMS = p.Submit(
    "krita:doc-7.layer_2",
    image(F.BGRA8, 3, 1, RED_GREEN_BLUE_BGRA8),
    p.Mask(3, 1, bytes([0, 128, 255])),
    ALL_PARAMS,
    x=-5,
    y=12,
)
WELCOME = p.Welcome(
    server="differential-inpaint",
    server_version="0.1.0",
    models=[p.ModelInfo("builtin:tiny-sd15", "sd15"), p.ModelInfo("sdxl-base", "sdxl")],
    default_model="builtin:tiny-sd15",
    schedulers=["euler", "ddim"],
    capabilities=["preview", "cancel"],
    device="cuda:0 (float16)",
    loras=[p.ModelInfo("watercolor", "sd15"), p.ModelInfo("detail-tweaker-xl", "sdxl")],
    controlnets=[p.ModelInfo("control-canny-sd15", "sd15"), p.ModelInfo("controlnet-union-sdxl", "sdxl")],
    ip_adapters=[p.ModelInfo("ip-adapter_sd15", "sd15")],
)
WELCOME_MODELS = p.Models(
    WELCOME.models, WELCOME.default_model, WELCOME.loras, WELCOME.controlnets, WELCOME.ip_adapters
)
FLOW = ("flux", "flux-fill", "flux-schnell", "sd3")
# A FLUX.1 transformer kept alone (ComfyUI's split files) and the parts a job may choose for it.
MODELS_PARTS = p.Models(
    [p.ModelInfo("flux1-dev.safetensors", "flux", ("vae", "clip_l", "t5")), p.ModelInfo("sdxl-base", "sdxl")],
    "flux1-dev.safetensors",
    text_encoders=[
        p.PartInfo("clip_l.safetensors", "clip_l", FLOW),
        p.PartInfo("t5xxl_fp16.safetensors", "t5", FLOW),
        p.PartInfo("t5xxl_fp8_e4m3fn.safetensors", "t5", FLOW),
        p.PartInfo("clip_g.safetensors", "clip_g", ("sd3",)),
    ],
    vaes=[p.PartInfo("ae.safetensors", "vae", FLOW)],
)


def valid_vectors() -> list[Vector]:
    return [
        valid(
            "hello",
            "hello without a token (a daemon on a loopback address)",
            p.Hello(client="krita", client_version="0.1.0"),
        ),
        valid(
            "hello-token",
            "hello with a token (a daemon on a non-loopback address)",
            p.Hello(client="gimp", client_version="0.1.0", token="s3cret-Token_0123"),
        ),
        valid("welcome", "welcome with two models and the default limits", WELCOME),
        valid(
            "welcome-no-models",
            "welcome from a daemon with no model and smaller limits",
            p.Welcome(
                "differential-inpaint",
                "0.1.0",
                [],
                None,
                limits=p.Limits(max_pixels=1024 * 1024, max_side=2048, max_steps=50),
                schedulers=["euler"],
                device="cpu",
            ),
        ),
        valid(
            "submit-defaults",
            "submit: 2x2 rgba8 (red, green, blue, half-transparent white), every parameter at its default",
            SUBMIT_DEFAULTS,
        ),
        valid(
            "submit-all-params",
            "submit: 3x1 bgra8 (red, green, blue), every parameter set to a "
            "non-default value, negative x, seed 2^63-1",
            SUBMIT_ALL_PARAMS,
        ),
        valid(
            "submit-rgba16",
            "submit: 1x2 rgba16 (red, half green), little-endian",
            p.Submit(
                "gimp-2",
                image(F.RGBA16, 1, 2, RED_HALF_GREEN_RGBA16),
                p.Mask(1, 2, b"\xff\x80"),
                p.JobParams(prompt="sky"),
                x=100,
                y=200,
            ),
        ),
        valid(
            "submit-bgra16",
            "submit: 2x1 bgra16 in linear light (blue, faint cyan)",
            p.Submit(
                "krita-3",
                image(F.BGRA16, 2, 1, BLUE_CYAN_BGRA16, linear=True),
                p.Mask(2, 1, b"\x00\xff"),
                p.JobParams(prompt="sea", steps=8),
            ),
        ),
        valid(
            "submit-rgbaf16",
            "submit: 1x1 rgbaf16 (half floats 1, 0.5, 0.25, 1) in linear light",
            p.Submit(
                "krita-4",
                image(F.RGBAF16, 1, 1, WARM_RGBAF16, linear=True),
                p.Mask(1, 1, b"\xff"),
                p.JobParams(strength=0.5),
            ),
        ),
        valid(
            "submit-rgbaf32",
            "submit: 1x1 rgbaf32 (floats 0.125, 0.5, 0.75, 0.5), offsets beyond 16 bits",
            p.Submit(
                "gimp.5",
                image(F.RGBAF32, 1, 1, COOL_RGBAF32),
                p.Mask(1, 1, b"\x40"),
                p.JobParams(seed=0),
                x=70000,
                y=-70000,
            ),
        ),
        valid(
            "submit-layer-map",
            "submit: a layer picked as the change map (2x2 rgba16, its luminance times alpha is "
            "the map), the selection that limits it, and a gray16 blend map",
            p.Submit(
                "krita-6",
                SUBMIT_DEFAULTS.image,
                p.Mask(2, 2, STRENGTH_LAYER_RGBA16, F.RGBA16),
                p.JobParams(prompt="moss", invert_mask=True, mask_black=0.25, mask_gamma=2.0),
                selection=p.Mask(2, 2, bytes([255, 255, 0, 128])),
                blend_mask=p.Mask(2, 2, bytes([0, 0, 0, 128, 255, 255, 255, 255]), p.MaskFormat.GRAY16),
            ),
        ),
        valid(
            "submit-depth",
            "submit: the daemon's depth estimate as the map, far things changing, min with the selection",
            p.Submit(
                "gimp-7",
                SUBMIT_DEFAULTS.image,
                SUBMIT_DEFAULTS.mask,
                p.JobParams(
                    prompt="fog",
                    depth=p.Depth.FAR,
                    depth_model="depth-anything-v2-small",
                    depth_combine="min",
                ),
            ),
        ),
        valid(
            "strength_map",
            "strength_map: the same fields as submit-layer-map, asking only for the map",
            p.StrengthMapRequest(
                "krita-6-map",
                SUBMIT_DEFAULTS.image,
                p.Mask(2, 2, bytes([0, 0, 0, 0, 0, 128, 0, 255]), p.MaskFormat.GRAY16),
                p.JobParams(mask_black=0.25, strength=0.5, output_format=F.BGRA8),
                x=10,
                y=20,
            ),
        ),
        valid(
            "map",
            "map: the answer to a strength_map, the effective strengths as opaque gray (0, 25%, 50%, 100%)",
            p.StrengthMap(
                "krita-6-map",
                image(
                    F.BGRA8, 2, 2, bytes([0, 0, 0, 255, 64, 64, 64, 255, 128, 128, 128, 255]) + b"\xff" * 4
                ),
                10,
                20,
                timings={"map": 0.01},
            ),
        ),
        valid(
            "submit-conditioning",
            "submit: two LoRAs, a canny control image made from a photo active in the first 60% "
            "of the steps, a depth control image, and a 1x1 reference image (IP-Adapter)",
            p.Submit(
                "krita-8",
                SUBMIT_DEFAULTS.image,
                SUBMIT_DEFAULTS.mask,
                p.JobParams(
                    prompt="castle", loras=(p.Lora("watercolor", 0.8), p.Lora("detail-tweaker", -0.5))
                ),
                controls=(
                    p.Control(
                        image(F.RGBA8, 2, 2, RED_GREEN_BLUE_WHITE_RGBA8),
                        p.ControlParams("canny", "control-canny-sd15", 0.75, 0.0, 0.6, preprocess=True),
                    ),
                    p.Control(image(F.RGBA8, 2, 2, bytes(16)), p.ControlParams("depth")),
                ),
                ip_adapters=(p.Reference(image(F.RGBA8, 1, 1, b"\x10\x20\x30\xff"), p.ReferenceParams(0.5)),),
            ),
        ),
        valid("cancel", "cancel a job", p.Cancel("job-1")),
        valid("list_models", "ask for the models", p.ListModels()),
        valid("get_status", "ask how busy the daemon is", p.GetStatus()),
        valid("models", "the models, with a default", WELCOME_MODELS),
        valid("models-empty", "no models, no default", p.Models([], None)),
        valid(
            "models-parts",
            "a FLUX.1 transformer kept alone (it lacks its VAE and text encoders) and the text "
            "encoders and VAE a job may choose for it, each with its role and families",
            MODELS_PARTS,
        ),
        valid(
            "submit-parts",
            "submit to a FLUX.1 transformer kept alone, naming one of its two T5s and its VAE",
            p.Submit(
                "krita-9",
                SUBMIT_DEFAULTS.image,
                SUBMIT_DEFAULTS.mask,
                p.JobParams(
                    prompt="castle",
                    model="flux1-dev.safetensors",
                    text_encoders=("t5xxl_fp8_e4m3fn.safetensors",),
                    vae="ae.safetensors",
                ),
            ),
        ),
        valid("status-idle", "an idle daemon, no model loaded", p.Status(queued=0, running=False)),
        valid(
            "status-busy",
            "a busy daemon",
            p.Status(queued=3, running=True, loaded_model="sdxl-base", device="cuda:0 (float16)"),
        ),
        valid(
            "status-workers",
            "a daemon with two GPUs: one busy with a model loaded, one idle and empty",
            p.Status(
                queued=1,
                running=True,
                loaded_model="sdxl-base",
                device="2 workers: cuda:0, cuda:1",
                workers=[
                    p.WorkerInfo(
                        "cuda:0",
                        "cuda:0 (float16)",
                        "sdxl-base",
                        busy=True,
                        jobs=12,
                        offload="model",
                        offload_reason="sdxl model 'sdxl-base' (6.5 GB in fp16) on a 8 GB GPU with 7.4 GB "
                        "free: model offload, all of it does not fit but the unet (4.8 GB) with a "
                        "1024x1024 job's activations does",
                    ),
                    p.WorkerInfo("cuda:1", "cuda:1 (float16)"),
                ],
            ),
        ),
        valid("accepted", "a job accepted, next to run", p.Accepted("job-1", 0)),
        valid("accepted-behind", "a job accepted behind 3 others", p.Accepted("krita:doc-7.layer_2", 3)),
        valid(
            "progress-queued",
            "progress: waiting behind 2 jobs",
            p.Progress("job-1", p.Stage.QUEUED, position=2),
        ),
        valid("progress-loading", "progress: loading the model", p.Progress("job-1", p.Stage.LOADING)),
        valid(
            "progress-encoding",
            "progress: encoding prompt and image",
            p.Progress("job-1", p.Stage.ENCODING, 0, 20),
        ),
        valid("progress-sampling", "progress: step 4 of 20", p.Progress("job-1", p.Stage.SAMPLING, 4, 20)),
        valid(
            "progress-decoding",
            "progress: decoding the latents",
            p.Progress("job-1", p.Stage.DECODING, 20, 20),
        ),
        valid(
            "preview",
            "a 2x2 rgba8 preview at step 5",
            p.Preview("job-1", 5, image(F.RGBA8, 2, 2, RED_GREEN_BLUE_WHITE_RGBA8)),
        ),
        valid(
            "result",
            "the result of submit-all-params: 3x1 rgbaf32 (its output_format), x and y echoed",
            p.Result(
                "krita:doc-7.layer_2",
                image(F.RGBAF32, 3, 1, struct.pack("<12f", 0, 0, 0, 0, 0.5, 0.25, 0, 0.5, 0, 0, 1, 1)),
                -5,
                12,
                seed=p.MAX_SEED,
                model="sdxl-base",
                timings={"loading": 0.5, "sampling": 1.75, "total": 2.5},
            ),
        ),
        valid(
            "result-defaults",
            "a 2x2 rgba8 result with a random seed and no timings",
            p.Result(
                "job-1",
                image(F.RGBA8, 2, 2, bytes([0, 0, 0, 0, 9, 8, 7, 64, 1, 2, 3, 192, 4, 5, 6, 255])),
                0,
                0,
                seed=2**40,
                model="builtin:tiny-sd15",
            ),
        ),
        valid(
            "submit-count",
            "valid/submit-defaults asking for 4 variations (seeds 7, 8, 9, 10)",
            p.Submit("job-1", SUBMIT_DEFAULTS.image, SUBMIT_DEFAULTS.mask, p.JobParams(seed=7, count=4)),
        ),
        valid(
            "result-of-several",
            "the third of 4 results (seed 9): not the job's last word",
            p.Result(
                "job-1",
                image(F.RGBA8, 2, 2, bytes([0, 0, 0, 0, 9, 8, 7, 64, 1, 2, 3, 192, 4, 5, 6, 255])),
                0,
                0,
                seed=9,
                model="builtin:tiny-sd15",
                index=2,
                total=4,
                strength=0.5,
            ),
        ),
        valid(
            "preview-of-several",
            "a 2x2 rgba8 preview of the second result at step 3",
            p.Preview("job-1", 3, image(F.RGBA8, 2, 2, RED_GREEN_BLUE_WHITE_RGBA8), index=1),
        ),
        valid("cancelled", "a job cancelled", p.Cancelled("job-1")),
        valid(
            "error-job",
            "an error about one job (job_id set)",
            p.Error(ErrorCode.UNKNOWN_MODEL, "no model 'x'; the daemon has: sdxl-base", "job-1"),
        ),
        valid(
            "error",
            "an error about no job (job_id nil)",
            p.Error(ErrorCode.MALFORMED, "not one msgpack message: 1 trailing byte after the message"),
        ),
        valid(
            "error-unauthorized",
            "the answer to a hello with a wrong token, before the server closes",
            p.Error(ErrorCode.UNAUTHORIZED, "wrong or missing token"),
        ),
        # Bytes another encoder may send: decoding must give the message; encoding it gives other bytes.
        decode_only(
            "hello-minimal",
            "decode-only: hello with only the required fields, 'type' first",
            pack({"type": "hello", "protocol": 1, "client": "web"}),
            p.Hello(client="web"),
        ),
        decode_only(
            "status-without-workers",
            "decode-only: status from a daemon older than the 'workers' field: no workers listed",
            pack({"type": "status", "queued": 0, "running": False, "loaded_model": None, "device": "cpu"}),
            p.Status(queued=0, running=False, device="cpu"),
        ),
        decode_only(
            "status-worker-without-offload",
            "decode-only: a worker from a daemon older than the 'offload' fields: offload not said",
            pack(
                {
                    "type": "status",
                    "queued": 0,
                    "running": False,
                    "loaded_model": "m",
                    "device": "cuda:0 (float16)",
                    "workers": [
                        {"name": "cuda:0", "device": "cuda:0 (float16)", "model": "m", "busy": False}
                    ],
                }
            ),
            p.Status(
                queued=0,
                running=False,
                loaded_model="m",
                device="cuda:0 (float16)",
                workers=[p.WorkerInfo("cuda:0", "cuda:0 (float16)", "m")],
            ),
        ),
        decode_only(
            "submit-minimal",
            "decode-only: submit without params, x, y and image.color: all take their defaults",
            pack(
                {
                    "type": "submit",
                    "job_id": "j",
                    "image": {"width": 1, "height": 1, "format": "rgba8", "data": b"\x01\x02\x03\x04"},
                    "mask": {"width": 1, "height": 1, "data": b"\xff"},
                }
            ),
            p.Submit("j", image(F.RGBA8, 1, 1, b"\x01\x02\x03\x04"), p.Mask(1, 1, b"\xff")),
        ),
        decode_only(
            "submit-extra-fields",
            "decode-only: unknown fields (top level, image, params) are "
            "ignored; integers are accepted where floats are expected",
            pack(
                {
                    "type": "submit",
                    "job_id": "j",
                    "future": [1, 2],
                    "image": {
                        "width": 1,
                        "height": 1,
                        "format": "bgra8",
                        "data": b"\x00\x00\xff\xff",
                        "icc": b"",
                    },
                    "mask": {"width": 1, "height": 1, "data": b"\x80"},
                    "params": {"prompt": "fox", "strength": 1, "guidance": 7, "grow": 3, "new_param": True},
                }
            ),
            p.Submit(
                "j",
                image(F.BGRA8, 1, 1, b"\x00\x00\xff\xff"),
                p.Mask(1, 1, b"\x80"),
                p.JobParams(prompt="fox", grow=3.0),
            ),
        ),
        decode_only(
            "welcome-other-limits",
            "decode-only: an unknown limit is ignored, a missing one takes its default",
            pack(
                {
                    "type": "welcome",
                    "protocol": 1,
                    "server": "s",
                    "server_version": "9",
                    "models": [],
                    "default_model": None,
                    "limits": {"max_pixels": 10, "max_future": 3},
                    "schedulers": [],
                    "pixel_formats": ["rgba8"],
                    "capabilities": [],
                    "device": "",
                }
            ),
            p.Welcome("s", "9", [], None, limits=p.Limits(max_pixels=10), pixel_formats=["rgba8"]),
        ),
        decode_only(
            "error-no-job-id-key",
            "decode-only: an error without the job_id key (job_id nil)",
            pack({"type": "error", "code": "internal", "message": "a bug"}),
            p.Error(ErrorCode.INTERNAL, "a bug"),
        ),
        decode_only(
            "accepted-wide-encodings",
            "decode-only: str 8 and str 16 where fixstr would do, uint 64 where a positive fixint would do",
            bytes([0x83, 0xD9, 4])
            + b"type"
            + bytes([0xD9, 8])
            + b"accepted"
            + bytes([0xD9, 6])
            + b"job_id"
            + bytes([0xDA, 0, 1])
            + b"j"
            + bytes([0xA8])
            + b"position"
            + bytes([0xCF])
            + (5).to_bytes(8, "big"),
            p.Accepted("j", 5),
        ),
    ]


def submit_with(changes: dict[str, Any]) -> dict[str, Any]:
    """The wire map of SUBMIT_DEFAULTS with `changes` ('image.width' names a nested field)."""
    return edited(wire(SUBMIT_DEFAULTS), changes)


def bad_submit(
    name: str, description: str, changes: dict[str, Any], error: ErrorCode, job_id: str | None = "job-1"
) -> Vector:
    """valid/submit-defaults with `changes`; errors found after the job id name the job."""
    description = f"valid/submit-defaults with {description}"
    return malformed(f"submit-{name}", description, submit_with(changes), error, job_id=job_id)


def edit(message: p.Message, changes: dict[str, Any]) -> dict[str, Any]:
    return edited(wire(message), changes)


INVALID, SIZE, TOO_LARGE, MALFORMED, UNKNOWN = (
    ErrorCode.INVALID_FIELD,
    ErrorCode.SIZE_MISMATCH,
    ErrorCode.TOO_LARGE,
    ErrorCode.MALFORMED,
    ErrorCode.UNKNOWN_TYPE,
)


def malformed_vectors() -> list[Vector]:
    return [
        # Refused before the type is known: the same in both directions.
        malformed("empty", "an empty message (0 bytes)", b"", MALFORMED),
        malformed("not-msgpack", "0xc1, a byte msgpack never uses", b"\xc1", MALFORMED),
        malformed(
            "truncated",
            "a map announcing 2 entries that holds 1",
            b"\x82" + pack("type") + pack("get_status"),
            MALFORMED,
        ),
        malformed("not-a-map", "an array, not a map", pack(["hello", 1]), MALFORMED),
        malformed("a-string", "a string, not a map", pack("hello"), MALFORMED),
        malformed(
            "trailing-bytes",
            "a get_status followed by one more byte",
            p.encode(p.GetStatus()) + b"\x00",
            MALFORMED,
        ),
        malformed(
            "non-string-key",
            "a map with an integer key",
            pack({"type": "get_status", 1: 2}),
            MALFORMED,
            direction=ANY,
        ),
        malformed("no-type", "a map without 'type'", pack({"job_id": "job-1"}), MALFORMED),
        malformed("type-not-string", "'type' is an integer", pack({"type": 7}), MALFORMED),
        malformed("type-as-bin", "'type' is msgpack bin, not str", pack({"type": b"get_status"}), MALFORMED),
        malformed(
            "ext-type",
            "a msgpack ext value (never used by the protocol)",
            pack({"type": "get_status", "x": msgpack.ExtType(5, b"1")}),
            MALFORMED,
            direction=ANY,
        ),
        malformed("unknown-type", "a type neither side knows", pack({"type": "launch_missiles"}), UNKNOWN),
        # Client -> server.
        malformed(
            "server-type-to-server",
            "a welcome sent to the daemon",
            p.encode(WELCOME),
            UNKNOWN,
            direction=CLIENT,
        ),
        malformed(
            "hello-no-client", "hello without 'client'", pack({"protocol": 1, "type": "hello"}), INVALID
        ),
        malformed(
            "hello-protocol-string",
            'hello with protocol "1"',
            edit(p.Hello(client="krita"), {"protocol": "1"}),
            INVALID,
        ),
        malformed(
            "hello-token-not-string",
            "hello with an integer token",
            edit(p.Hello(client="krita"), {"token": 1234}),
            INVALID,
        ),
        bad_submit("no-job-id", "job_id removed", {"job_id": DELETE}, INVALID, None),
        bad_submit("job-id-empty", 'job_id ""', {"job_id": ""}, INVALID, None),
        bad_submit("job-id-bad-chars", "job_id with a space and a slash", {"job_id": "a b/c"}, INVALID, None),
        bad_submit("job-id-too-long", "job_id of 65 characters", {"job_id": "j" * 65}, TOO_LARGE, None),
        bad_submit("job-id-not-string", "job_id as an integer", {"job_id": 1}, INVALID, None),
        bad_submit("no-image", "image removed", {"image": DELETE}, INVALID),
        bad_submit("image-not-map", "image as bin", {"image": b"\x00"}, INVALID),
        bad_submit("no-mask", "mask removed", {"mask": DELETE}, INVALID),
        bad_submit("no-image-data", "image.data removed", {"image.data": DELETE}, INVALID),
        bad_submit(
            "image-data-as-text",
            "image.data as msgpack str, not bin",
            {"image.data": RED_GREEN_BLUE_WHITE_RGBA8.decode("latin-1")},
            INVALID,
        ),
        bad_submit(
            "mask-data-as-text", "mask.data as msgpack str, not bin", {"mask.data": "\x00@\xc0\xff"}, INVALID
        ),
        bad_submit("width-string", 'image.width "2"', {"image.width": "2"}, INVALID),
        bad_submit("width-float", "image.width 2.0", {"image.width": 2.0}, INVALID),
        bad_submit("width-bool", "image.width true", {"image.width": True}, INVALID),
        bad_submit("width-zero", "image.width 0", {"image.width": 0}, INVALID),
        bad_submit("height-negative", "image.height -2", {"image.height": -2}, INVALID),
        bad_submit("side-over-max", "image.width 8193, over max_side", {"image.width": 8193}, INVALID),
        bad_submit(
            "pixels-over-max",
            "4097x4097 declared, over max_pixels: refused before the data is looked at",
            {"image.width": 4097, "image.height": 4097},
            TOO_LARGE,
        ),
        bad_submit("unknown-format", 'image.format "cmyk8"', {"image.format": "cmyk8"}, INVALID),
        bad_submit("unknown-color", 'image.color "p3"', {"image.color": "p3"}, INVALID),
        bad_submit("data-short", "2x2 rgba8 with 15 bytes of data", {"image.data": bytes(15)}, SIZE),
        bad_submit("data-long", "2x2 rgba8 with 17 bytes of data", {"image.data": bytes(17)}, SIZE),
        bad_submit(
            "data-wrong-bpp",
            "2x2 declared rgbaf32 (64 bytes) with rgba8's 16 bytes",
            {"image.format": "rgbaf32"},
            SIZE,
        ),
        bad_submit("mask-data-short", "a 2x2 mask with 3 bytes", {"mask.data": b"\x00\x00\x00"}, SIZE),
        bad_submit(
            "mask-other-size", "a 4x1 mask for a 2x2 image", {"mask.width": 4, "mask.height": 1}, SIZE
        ),
        bad_submit("mask-unknown-format", 'mask.format "gray32"', {"mask.format": "gray32"}, INVALID),
        bad_submit("gray16-mask-short", "a 2x2 gray16 mask with 4 bytes", {"mask.format": "gray16"}, SIZE),
        bad_submit(
            "blend-mask-other-size",
            "a 1x1 blend_mask for a 2x2 image",
            {"blend_mask": {"width": 1, "height": 1, "data": b"\xff"}},
            SIZE,
        ),
        bad_submit("selection-not-map", "selection as bin", {"selection": b"\xff\xff\xff\xff"}, INVALID),
        bad_submit(
            "mask-black-above-white",
            "params.mask_black 0.6 and mask_white 0.4",
            {"params.mask_black": 0.6, "params.mask_white": 0.4},
            INVALID,
        ),
        bad_submit("mask-gamma-zero", "params.mask_gamma 0", {"params.mask_gamma": 0.0}, INVALID),
        bad_submit("depth-unknown", 'params.depth "middle"', {"params.depth": "middle"}, INVALID),
        bad_submit(
            "control-other-size",
            "a 1x1 control image for a 2x2 image",
            {"controls": [{"image": {"width": 1, "height": 1, "format": "rgba8", "data": bytes(4)}}]},
            SIZE,
        ),
        bad_submit(
            "control-start-after-end",
            "a control with start 0.8 and end 0.5",
            {"controls": [{"image": SUBMIT_DEFAULTS.image.to_wire(), "start": 0.8, "end": 0.5}]},
            INVALID,
        ),
        bad_submit(
            "five-controls",
            "five control images (max_controls is 4)",
            {"controls": [{"image": SUBMIT_DEFAULTS.image.to_wire()}] * 5},
            INVALID,
        ),
        bad_submit(
            "lora-weight-over",
            "a LoRA of weight 2.5",
            {"params.loras": [{"name": "watercolor", "weight": 2.5}]},
            INVALID,
        ),
        bad_submit("lora-not-map", 'params.loras ["watercolor"]', {"params.loras": ["watercolor"]}, INVALID),
        bad_submit(
            "text-encoders-twice",
            "one text encoder named twice",
            {"params.text_encoders": ["t5xxl_fp16.safetensors", "t5xxl_fp16.safetensors"]},
            INVALID,
        ),
        bad_submit(
            "four-text-encoders",
            "four text encoders (a model takes three at most)",
            {"params.text_encoders": ["a", "b", "c", "d"]},
            INVALID,
        ),
        bad_submit(
            "text-encoder-not-string", "params.text_encoders [5]", {"params.text_encoders": [5]}, INVALID
        ),
        bad_submit("vae-empty", 'params.vae ""', {"params.vae": ""}, INVALID),
        bad_submit("params-not-map", "params as an array", {"params": [1]}, INVALID),
        bad_submit("prompt-not-string", "params.prompt 5", {"params.prompt": 5}, INVALID),
        bad_submit(
            "prompt-too-long",
            "params.prompt of max_prompt_chars + 1 (4001) characters",
            {"params.prompt": "x" * (p.DEFAULT_LIMITS.max_prompt_chars + 1)},
            TOO_LARGE,
        ),
        bad_submit("strength-nan", "params.strength NaN", {"params.strength": math.nan}, INVALID),
        bad_submit("strength-infinite", "params.strength +infinity", {"params.strength": math.inf}, INVALID),
        bad_submit(
            "strength-zero", "params.strength 0 (0 < strength <= 1)", {"params.strength": 0.0}, INVALID
        ),
        bad_submit("strength-over-one", "params.strength 1.5", {"params.strength": 1.5}, INVALID),
        bad_submit("strength-string", 'params.strength "0.5"', {"params.strength": "0.5"}, INVALID),
        bad_submit("steps-zero", "params.steps 0", {"params.steps": 0}, INVALID),
        bad_submit("steps-negative", "params.steps -1", {"params.steps": -1}, INVALID),
        bad_submit(
            "steps-over-max",
            "params.steps max_steps + 1 (201)",
            {"params.steps": p.DEFAULT_LIMITS.max_steps + 1},
            INVALID,
        ),
        bad_submit(
            "steps-float", "params.steps 20.0 (a float, not an integer)", {"params.steps": 20.0}, INVALID
        ),
        bad_submit("guidance-negative", "params.guidance -1", {"params.guidance": -1.0}, INVALID),
        bad_submit("guidance-over-max", "params.guidance 100.5", {"params.guidance": 100.5}, INVALID),
        bad_submit("count-zero", "params.count 0", {"params.count": 0}, INVALID),
        bad_submit("count-nine", "params.count 9 (max_results is 8)", {"params.count": 9}, INVALID),
        bad_submit("fan-strength-zero", "params.fan [0.5, 0]", {"params.fan": [0.5, 0.0]}, INVALID),
        bad_submit("fan-strength-over-one", "params.fan [1.5]", {"params.fan": [1.5]}, INVALID),
        bad_submit("fan-not-a-list", "params.fan 0.5 (a number, not an array)", {"params.fan": 0.5}, INVALID),
        bad_submit("fan-nine", "params.fan of 9 strengths", {"params.fan": [0.5] * 9}, INVALID),
        bad_submit(
            "count-and-fan",
            "params.count 2 with params.fan [0.5]",
            {"params.count": 2, "params.fan": [0.5]},
            INVALID,
        ),
        bad_submit("seed-negative", "params.seed -1", {"params.seed": -1}, INVALID),
        bad_submit("seed-over-max", "params.seed 2^63 (max 2^63-1)", {"params.seed": 2**63}, INVALID),
        bad_submit("seed-float", "params.seed 1.0", {"params.seed": 1.0}, INVALID),
        bad_submit("model-empty", 'params.model "" (nil means the default)', {"params.model": ""}, INVALID),
        bad_submit("scheduler-empty", 'params.scheduler ""', {"params.scheduler": ""}, INVALID),
        bad_submit(
            "scheduler-nil", "params.scheduler nil (not optional)", {"params.scheduler": None}, INVALID
        ),
        bad_submit("grow-negative", "params.grow -1", {"params.grow": -1.0}, INVALID),
        bad_submit("feather-over-max", "params.feather 1025", {"params.feather": 1025.0}, INVALID),
        bad_submit("snap-half", "params.snap 0.5 (0 <= snap < 0.5)", {"params.snap": 0.5}, INVALID),
        bad_submit(
            "output-format-unknown", 'params.output_format "png"', {"params.output_format": "png"}, INVALID
        ),
        bad_submit("preview-int", "params.preview 1 (not a bool)", {"params.preview": 1}, INVALID),
        bad_submit("x-float", "x 1.5", {"x": 1.5}, INVALID),
        bad_submit("y-over-max", "y 2^24 + 1", {"y": 2**24 + 1}, INVALID),
        malformed("cancel-no-job-id", "cancel without job_id", pack({"type": "cancel"}), INVALID),
        malformed(
            "cancel-bad-job-id",
            'cancel with job_id "a/b"',
            pack({"job_id": "a/b", "type": "cancel"}),
            INVALID,
        ),
        # Server -> client.
        malformed(
            "client-type-to-client",
            "a hello sent to a plugin",
            p.encode(p.Hello(client="krita")),
            UNKNOWN,
            direction=SERVER,
        ),
        malformed("welcome-no-limits", "welcome without limits", edit(WELCOME, {"limits": DELETE}), INVALID),
        malformed(
            "welcome-limit-string",
            'welcome with limits.max_pixels "big"',
            edit(WELCOME, {"limits.max_pixels": "big"}),
            INVALID,
        ),
        malformed(
            "models-not-list", "models is a map", edit(WELCOME_MODELS, {"models": {"a": "sd15"}}), INVALID
        ),
        malformed(
            "model-info-not-map", "a model is a string", edit(WELCOME_MODELS, {"models": ["a"]}), INVALID
        ),
        malformed(
            "status-running-int",
            "status with running 1 (not a bool)",
            edit(p.Status(0, False), {"running": 1}),
            INVALID,
        ),
        malformed(
            "status-worker-not-map",
            "status whose workers list holds a string",
            edit(p.Status(0, False), {"workers": ["cuda:0"]}),
            INVALID,
        ),
        malformed(
            "accepted-negative-position",
            "accepted with position -1",
            edit(p.Accepted("job-1", 0), {"position": -1}),
            INVALID,
        ),
        malformed(
            "progress-unknown-stage",
            'progress with stage "painting"',
            edit(p.Progress("job-1", p.Stage.SAMPLING, 4, 20), {"stage": "painting"}),
            INVALID,
        ),
        malformed(
            "preview-no-step",
            "preview without step",
            edit(p.Preview("job-1", 5, image(F.RGBA8, 1, 1, bytes(4))), {"step": DELETE}),
            INVALID,
        ),
        malformed(
            "result-seed-over-max",
            "result with seed 2^63",
            edit(p.Result("job-1", image(F.RGBA8, 1, 1, bytes(4)), 0, 0, 1), {"seed": 2**63}),
            INVALID,
        ),
        malformed(
            "result-data-short",
            "a 1x1 rgbaf16 result with 4 bytes",
            edit(p.Result("job-1", image(F.RGBAF16, 1, 1, bytes(8)), 0, 0, 1), {"image.data": bytes(4)}),
            SIZE,
        ),
        malformed(
            "result-timing-nan",
            "result with a NaN timing",
            edit(p.Result("job-1", image(F.RGBA8, 1, 1, bytes(4)), 0, 0, 1), {"timings": {"t": math.nan}}),
            INVALID,
        ),
        malformed(
            "result-index-past-total",
            "result with index 4 of total 4",
            edit(p.Result("job-1", image(F.RGBA8, 1, 1, bytes(4)), 0, 0, 1), {"index": 4, "total": 4}),
            INVALID,
        ),
        malformed(
            "result-total-over-max",
            "result with total 9, over max_results",
            edit(p.Result("job-1", image(F.RGBA8, 1, 1, bytes(4)), 0, 0, 1), {"total": 9}),
            INVALID,
        ),
        malformed(
            "error-unknown-code",
            "error with a code this version does not know",
            edit(p.Error(ErrorCode.INTERNAL, "m"), {"code": "brand_new"}),
            INVALID,
        ),
        malformed(
            "error-no-message",
            "error without message",
            edit(p.Error(ErrorCode.INTERNAL, "m"), {"message": DELETE}),
            INVALID,
        ),
        malformed(
            "cancelled-bad-job-id",
            'cancelled with job_id "a b"',
            edit(p.Cancelled("j"), {"job_id": "a b"}),
            INVALID,
        ),
    ]


def all_vectors() -> list[Vector]:
    vectors = valid_vectors() + malformed_vectors()
    names = [v.file for v in vectors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate vector names: {duplicates}")
    return vectors


def to_json(value: Any) -> Any:
    """A decoded msgpack value as JSON-able data: bin as {"$bin": hex}."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"$bin": bytes(value).hex()}
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a valid vector holds a non-finite float")
    return value


def from_json(value: Any) -> Any:
    """The inverse of `to_json`: what a host's test does with "message" before packing it."""
    if isinstance(value, dict):
        if list(value) == ["$bin"]:
            return bytes.fromhex(value["$bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def index_entry(vector: Vector) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": vector.file,
        "description": vector.description,
        "direction": vector.direction,
        "type": vector.type,
        "valid": vector.valid,
    }
    if vector.message is not None:
        entry["canonical"] = vector.canonical
        entry["message"] = to_json(msgpack.unpackb(p.encode(vector.message), raw=False))
    else:
        entry["error"] = vector.error.value if vector.error else None
        entry["error_job_id"] = vector.error_job_id
    entry["size"] = len(vector.data)
    entry["sha256"] = hashlib.sha256(vector.data).hexdigest()
    return entry


def render(vectors: list[Vector] | None = None) -> dict[str, bytes]:
    """Every file of the folder, by path relative to it."""
    vectors = all_vectors() if vectors is None else vectors
    index = {
        "about": ABOUT,
        "protocol": p.PROTOCOL_VERSION,
        "limits": p.DEFAULT_LIMITS.to_wire(),
        "directions": {
            CLIENT: "decoded by the daemon (accepts: " + ", ".join(p.CLIENT_MESSAGES) + ")",
            SERVER: "decoded by a plugin or host (accepts: " + ", ".join(p.SERVER_MESSAGES) + ")",
            ANY: "malformed before its type is known: refused the same way in both directions",
        },
        "bytes_in_json": BYTES_IN_JSON,
        "vectors": [index_entry(v) for v in vectors],
    }
    text = json.dumps(index, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    files = {v.file: v.data for v in vectors}
    files[INDEX] = text.encode("ascii")
    return files


def on_disk(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {f.relative_to(directory).as_posix(): f.read_bytes() for f in directory.rglob("*") if f.is_file()}


def differences(directory: Path = VECTORS_DIR) -> list[str]:
    """What differs between `directory` and what this script generates; [] when nothing."""
    want, have = render(), on_disk(directory)
    out = [f"missing: {name}" for name in sorted(want.keys() - have.keys())]
    out += [f"stale (not generated): {name}" for name in sorted(have.keys() - want.keys())]
    out += [f"differs: {name}" for name in sorted(want.keys() & have.keys()) if want[name] != have[name]]
    return out


def write(directory: Path = VECTORS_DIR) -> None:
    want = render()
    for name in sorted(on_disk(directory).keys() - want.keys()):
        (directory / name).unlink()
    for name, data in want.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the folder (default: only check it)")
    parser.add_argument("--dir", type=Path, default=VECTORS_DIR, help=f"the folder (default: {VECTORS_DIR})")
    args = parser.parse_args(argv)
    if args.write:
        write(args.dir)
        print(f"wrote {len(render())} files to {args.dir}")
        return 0
    diff = differences(args.dir)
    for line in diff:
        print(line)
    if diff:
        print(f"{len(diff)} difference(s); regenerate with: python {Path(__file__).name} --write")
        return 1
    print(f"{args.dir}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
