"""Workers on a Ray cluster: `serve --ray ADDRESS`.

The daemon stays the one websocket entry the plugins know; Ray runs the engines. Each
worker is a Ray actor holding a `WorkerHost` (workers.py) on one GPU of some node (Ray
places it and sets CUDA_VISIBLE_DEVICES); a job's events come back as the actor's
streaming generator, a cancel is a second call on the same (threaded) actor. Ray is an
optional extra: `pip install 'differential-inpaint[cluster]'`.

How many workers: `--workers N`, else one per GPU the cluster offers, counted again every
few seconds so that GPUs joining (a node started, or back) get workers; on a cluster
without GPUs, one worker per node, each on one CPU core (for trials and tests: the CPU
is slow). An actor that dies (its process, its node) is a lost worker: its job runs once
more on another (see jobs.JobQueue), and the supervisor asks Ray for a replacement, which
Ray starts wherever a GPU is free, or keeps pending until one is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from .jobs import Job, Worker, WorkerLost
from .workers import Event, JobSpec, RemoteWorker, WorkerHost, WorkerStartError, WorkerSupervisor

log = logging.getLogger("differential_inpaint.daemon")

INSTALL_HINT = (
    "--ray needs Ray, which is not installed here: pip install 'differential-inpaint[cluster]' "
    "(the same version of Ray as the cluster's)"
)
NAMESPACE = "differential-inpaint"
PING_TIMEOUT = 30.0  # seconds an idle actor may take to answer the supervisor


class ClusterError(Exception):
    """Cannot use the cluster: Ray missing, or the cluster unreachable; the text says which."""


class EngineActor:
    """The actor's class (made a Ray actor by `connect`): a WorkerHost on one of the
    cluster's GPUs, loading models from its own node's folders."""

    def __init__(self, host_options: dict[str, Any]) -> None:
        # The job lines of the daemon's log, in the actor's own log (Ray keeps it per worker).
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        self.host = WorkerHost(**host_options)

    def describe(self) -> tuple[str, str, int]:
        """(device, node, process id), for the status and the daemon's log."""
        return self.host.device, socket.gethostname(), os.getpid()

    def run(self, spec: JobSpec) -> Any:
        yield from self.host.run(spec)

    def cancel(self, serial: int, stopping: bool) -> None:
        self.host.cancel(serial, stopping)

    def ping(self) -> bool:
        return True


class RayWorker(RemoteWorker):
    """One actor of the cluster, seen from the daemon."""

    def __init__(self, name: str, device: str, ray: Any, actor: Any) -> None:
        super().__init__(name, device)
        self._ray = ray
        self._actor = actor

    def _lost(self, exc: BaseException) -> BaseException:
        """Ray's error as the queue's: the actor (its process, its node) is gone, or a bug."""
        errors = self._ray.exceptions
        if isinstance(exc, errors.RayTaskError) and not isinstance(exc, errors.RayActorError):
            return exc  # WorkerHost.run raised: a bug, the job fails as an internal error
        if isinstance(exc, errors.RayError):
            return WorkerLost(f"Ray: {type(exc).__name__}")
        return exc

    async def _events(self, spec: JobSpec) -> AsyncIterator[Event]:
        try:
            async for ref in self._actor.run.options(num_returns="streaming").remote(spec):
                yield await ref
        except Exception as exc:
            raise self._lost(exc) from exc

    def cancel(self, job: Job) -> None:
        try:
            self._actor.cancel.remote(job.serial, job.stopping)
        except Exception:  # the actor is gone: its job is lost with it, cancelled or not
            log.debug("%s: cancel not sent", self.name, exc_info=True)

    async def check(self) -> None:
        try:
            await asyncio.wait_for(self._actor.ping.remote(), PING_TIMEOUT)
        except asyncio.TimeoutError:
            pass  # busy or slow, not known dead: Ray says when it is
        except Exception as exc:
            raise self._lost(exc) from exc

    async def close(self) -> None:
        try:
            self._ray.kill(self._actor)
        except Exception:  # already gone
            log.debug("%s: kill failed", self.name, exc_info=True)


class RayCluster:
    """The connection to the cluster and how its workers are made."""

    def __init__(self, ray: Any, host_options: dict[str, Any], workers: int | None) -> None:
        self.ray = ray
        self.host_options = host_options
        self.workers = workers
        self.gpus = int(ray.cluster_resources().get("GPU", 0)) > 0
        self._actor_class = ray.remote(EngineActor)

    async def wanted(self) -> int:
        if self.workers:
            return self.workers
        if self.gpus:
            resources = await asyncio.to_thread(self.ray.cluster_resources)
            return int(resources.get("GPU", 0))
        nodes = await asyncio.to_thread(self.ray.nodes)
        return sum(1 for node in nodes if node.get("Alive"))

    async def start_worker(self, slot: int) -> Worker:
        device = "cuda" if self.gpus else "cpu"
        options = {
            **self.host_options,
            "engine_options": {**self.host_options["engine_options"], "device": device},
        }
        actor = self._actor_class.options(
            num_gpus=1 if self.gpus else 0,
            num_cpus=1,
            max_concurrency=4,  # a cancel and a ping while a job runs
            max_restarts=0,  # a lost actor is replaced by the supervisor, with a fresh slot
            max_task_retries=0,  # the queue decides what runs again, once
        ).remote(options)
        name = f"ray-{slot + 1}"
        try:
            device, node, pid = await actor.describe.remote()
        except Exception as exc:
            self.ray.kill(actor)
            raise WorkerStartError(f"worker {name} could not start on the cluster: {exc}") from exc
        log.info("worker %s: process %d on %s, %s", name, pid, node, device)
        return RayWorker(name, f"{device} on {node}", self.ray, actor)

    def supervisor(self) -> WorkerSupervisor:
        # Listening once one worker is ready: the others may wait for a GPU to be free.
        return WorkerSupervisor(self.start_worker, self.wanted, wait_for=1)


def connect(address: str, host_options: dict[str, Any], workers: int | None) -> RayCluster:
    """Join the cluster at `address` (HEAD:PORT, or "auto": the one this machine runs)."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(INSTALL_HINT) from exc
    # Ray clusters check a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token);
    # Ray sends it to an explicit address only in token mode. Never turned off here.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except Exception as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    return RayCluster(ray, host_options, workers)
