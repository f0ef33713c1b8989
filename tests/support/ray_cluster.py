"""A throwaway Ray cluster on 127.0.0.1 for tests and benchmarks (needs the `cluster` extra).

    with local_ray_cluster(num_cpus=2) as cluster:
        running_daemon("--ray", cluster.address, "--workers", "2", env=cluster.env)

Kept to loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, see ../shared/design/CLUSTER.md),
with token authentication on and a token of its own (RAY_AUTH_TOKEN: nothing is written
to ~/.ray), in a temporary RAY_TMPDIR. It is stopped by ending the processes it started
(the head's `ray start --block` and its process group, then any process left whose
command line names its temporary folder), never by `ray stop`, which would also stop
every other Ray cluster of this machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT = 120.0


@dataclass
class LocalRayCluster:
    address: str  # 127.0.0.1:PORT of its head
    env: dict[str, str]  # what a process joining it needs (the daemon's environment)
    tmpdir: Path


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray_command() -> list[str]:
    return [str(Path(sys.executable).with_name("ray"))]


@contextmanager
def local_ray_cluster(num_cpus: int = 2) -> Iterator[LocalRayCluster]:
    tmpdir = Path(tempfile.mkdtemp(prefix="di-ray-"))
    env = {
        **os.environ,
        "RAY_TMPDIR": str(tmpdir),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = _ray_command() + [
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--port=0",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    head = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(tmpdir / "ray-start.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    try:
        address_file = tmpdir / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not address_file.exists() or not address_file.read_text().strip():
            if head.poll() is not None or time.monotonic() > deadline:
                log = (tmpdir / "ray-start.log").read_text(errors="replace")
                raise RuntimeError(f"the test's Ray head did not start:\n{log[-3000:]}")
            time.sleep(0.2)
        yield LocalRayCluster(address_file.read_text().strip(), env, tmpdir)
    finally:
        _stop(head, tmpdir)


def _stop(head: subprocess.Popen, tmpdir: Path) -> None:
    """End the head (it stops the processes it started) and anything left of this cluster."""
    head.send_signal(signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        head.wait(30)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(head.pid, signal.SIGKILL)  # its session: the head's processes and workers
    for pid in _pids_naming(tmpdir):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    head.wait()
    shutil.rmtree(tmpdir, ignore_errors=True)


def _pids_naming(tmpdir: Path) -> list[int]:
    """Processes whose command line names this cluster's folder (its raylet, workers...)."""
    mark = str(tmpdir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
