"""Differential Inpaint protocol v1: messages, validation, limits, region maths.

Sans-IO and pure Python (msgpack and the standard library only), with relative
imports only, so this folder is copied unchanged into the Krita and GIMP
plugins. See README.md beside this file for the wire reference.
"""

from .errors import ErrorCode, ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .messages import (
    ALL_MESSAGES,
    CLIENT_MESSAGES,
    FRAGMENT_BYTES,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    SUPPORTED_VERSIONS,
    Accepted,
    Cancel,
    Cancelled,
    Error,
    GetStatus,
    Hello,
    Image,
    JobParams,
    ListModels,
    Mask,
    ModelInfo,
    Models,
    Preview,
    Progress,
    Result,
    Stage,
    Status,
    Submit,
    Welcome,
    decode,
    encode,
    encode_parts,
    fragments,
)
from .pixels import ColorEncoding, PixelFormat
from .region import Rect, context_region, crop, mask_bounds, to_document, to_region

DEFAULT_PORT = 7865

__all__ = [
    "ALL_MESSAGES",
    "CLIENT_MESSAGES",
    "DEFAULT_LIMITS",
    "DEFAULT_PORT",
    "FRAGMENT_BYTES",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGES",
    "SUPPORTED_VERSIONS",
    "Accepted",
    "Cancel",
    "Cancelled",
    "ColorEncoding",
    "Error",
    "ErrorCode",
    "GetStatus",
    "Hello",
    "Image",
    "JobParams",
    "Limits",
    "ListModels",
    "Mask",
    "ModelInfo",
    "Models",
    "PixelFormat",
    "Preview",
    "Progress",
    "ProtocolError",
    "Rect",
    "Result",
    "Stage",
    "Status",
    "Submit",
    "Welcome",
    "context_region",
    "crop",
    "decode",
    "encode",
    "encode_parts",
    "fragments",
    "mask_bounds",
    "to_document",
    "to_region",
]
