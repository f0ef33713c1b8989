"""Differential Inpaint protocol v1: messages, validation, limits, region maths.

Sans-IO and pure Python (msgpack and the standard library only), with relative
imports only, so this folder is copied unchanged into the Krita and GIMP
plugins. See README.md beside this file for the wire reference.
"""

from .codec import FRAGMENT_BYTES, decode, encode, encode_parts, fragments
from .errors import ErrorCode, ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .messages import (
    ALL_MESSAGES,
    CLIENT_MESSAGES,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    SUPPORTED_VERSIONS,
    Accepted,
    Cancel,
    Cancelled,
    Error,
    GetStatus,
    Hello,
    ListModels,
    Message,
    Models,
    Preview,
    Progress,
    Result,
    Stage,
    Status,
    StrengthMap,
    StrengthMapRequest,
    Submit,
    Welcome,
)
from .payloads import Image, Mask, ModelInfo
from .pixels import ColorEncoding, MaskFormat, PixelFormat
from .region import (
    DEFAULT_MIN_SIZE,
    DEFAULT_PADDING,
    Rect,
    context_region,
    crop,
    mask_bounds,
    to_document,
    to_region,
)
from .session import ClientSession, ServerSession, SessionState, Unexpected
from .spec import JOB_PARAMS, MAX_SEED, Combine, Depth, JobParams, Param, param, params_of, shown_on

DEFAULT_PORT = 7865

__all__ = [
    "ALL_MESSAGES",
    "CLIENT_MESSAGES",
    "DEFAULT_LIMITS",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_PADDING",
    "DEFAULT_PORT",
    "FRAGMENT_BYTES",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGES",
    "SUPPORTED_VERSIONS",
    "Accepted",
    "Cancel",
    "Cancelled",
    "ClientSession",
    "ColorEncoding",
    "Combine",
    "Depth",
    "Error",
    "ErrorCode",
    "GetStatus",
    "Hello",
    "Image",
    "JOB_PARAMS",
    "JobParams",
    "MAX_SEED",
    "Message",
    "Param",
    "Limits",
    "ListModels",
    "Mask",
    "MaskFormat",
    "ModelInfo",
    "Models",
    "PixelFormat",
    "Preview",
    "Progress",
    "ProtocolError",
    "Rect",
    "Result",
    "ServerSession",
    "SessionState",
    "Stage",
    "Status",
    "StrengthMap",
    "StrengthMapRequest",
    "Submit",
    "Unexpected",
    "Welcome",
    "context_region",
    "crop",
    "decode",
    "encode",
    "encode_parts",
    "fragments",
    "mask_bounds",
    "param",
    "params_of",
    "shown_on",
    "to_document",
    "to_region",
]
