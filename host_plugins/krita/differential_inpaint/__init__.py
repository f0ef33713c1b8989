"""Differential Inpaint for Krita: inpaint the selection with Differential Diffusion.

Tools > Scripts > Differential Inpaint opens the dialog; the docker has the
same controls; `inpaint_layer(document, ...)` is the blocking entry point for
the Scripter. A local daemon (`differential-inpaint serve`) does the work.

This folder carries its own copies of the protocol, the shared job client and
pure-Python msgpack and websockets (in _vendor/), since Krita's Python has
neither library.
"""

from __future__ import annotations

import os
import sys

# Our pure-Python copies win over anything else on Krita's path (an older
# websockets from the system, for instance) and must be in place before the
# client is imported.
_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")
if _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

from .api import inpaint_layer, strength_map_layer  # noqa: E402
from .client import DaemonUnavailable, InpaintError, JobCancelled, Settings  # noqa: E402
from .client.version import VERSION as __version__  # noqa: E402

__all__ = [
    "DaemonUnavailable",
    "InpaintError",
    "JobCancelled",
    "Settings",
    "__version__",
    "inpaint_layer",
    "strength_map_layer",
]


def _register_with_krita() -> None:
    try:
        import krita
    except ImportError:
        return  # imported outside Krita (the core's tests)
    if not hasattr(krita, "Extension"):
        return  # a stand-in `krita` module
    from .extension import register

    register()


_register_with_krita()
