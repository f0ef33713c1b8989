"""What both plugins share: the connection to the daemon, the job flow, the one error type.

Runs in Krita's and GIMP's own Pythons, copied into each plugin beside the
protocol package; needs only the protocol, msgpack and websockets
(pure-Python copies are fine).
"""

from .connection import DEFAULT_SERVER, DaemonConnection, normalize_server, run_job, server_info
from .errors import DaemonUnavailable, InpaintError, JobCancelled, as_inpaint_error
from .flow import HostDocument, PreparedJob, layer_name, new_job_id
from .settings import HOST_PARAMS, SETTINGS_PARAMS, HostParams, Settings

__all__ = [
    "DEFAULT_SERVER",
    "HOST_PARAMS",
    "SETTINGS_PARAMS",
    "HostDocument",
    "HostParams",
    "PreparedJob",
    "Settings",
    "DaemonConnection",
    "DaemonUnavailable",
    "InpaintError",
    "JobCancelled",
    "as_inpaint_error",
    "layer_name",
    "new_job_id",
    "normalize_server",
    "run_job",
    "server_info",
]
