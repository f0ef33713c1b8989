"""Two real workers on the tiny model (CPU): `serve --device cpu --device cpu` (two local
worker processes standing in for two GPUs) and `serve --ray ADDRESS --workers 2` on a
Ray cluster the test starts on 127.0.0.1 (two CPU worker actors).

For each: 8 clients x 3 jobs all arrive, each to its own client, spread over both
workers; a job goes to the worker holding its model; a worker killed mid-job (its
process, SIGKILL) has its job run again on the other, and the client gets exactly one
result, then the lost worker comes back; with both killed, the waiting jobs fail with
the clear error, the daemon keeps answering `status`, and takes jobs again once its
workers are back. The queue's rules themselves are tested fast in test_workers.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from differential_inpaint import protocol as p
from tests.support.daemon import DaemonProcess, running_daemon
from tests.support.ray_cluster import LocalRayCluster, local_ray_cluster, ray_available

from .conftest import RawClient, make_submit

pytestmark = pytest.mark.slow  # worker processes and a Ray cluster on 2 shared cores: a minute or more

SD15, INPAINT = "builtin:tiny-sd15", "builtin:tiny-sd15-inpaint"
JOB_TIMEOUT = 180.0
LONG_STEPS = 80  # long enough to be killed mid-job: seconds on the tiny model
WORKER_LINE = re.compile(r"worker (\S+): process (\d+)")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalRayCluster]:
    if not ray_available():
        pytest.skip("Ray is not installed (pip install -e '.[cluster]')")
    with local_ray_cluster(num_cpus=2) as cluster:
        yield cluster


@pytest.fixture(params=["local", "ray"])
def start_daemon(request: pytest.FixtureRequest) -> Callable[[], AbstractContextManager[DaemonProcess]]:
    """Starts a daemon with two workers of this kind (in a `with`)."""
    options = ("--preview-interval", "0.2")
    models = (INPAINT,)
    if request.param == "local":
        return lambda: running_daemon(
            "--device", "cpu", "--device", "cpu", *options, models=models, env=_one_thread()
        )
    cluster: LocalRayCluster = request.getfixturevalue("ray_cluster")
    return lambda: running_daemon(
        "--ray", cluster.address, "--workers", "2", *options, models=models, env=cluster.env
    )


def _one_thread() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def seeded(job_id: str, seed: int, width: int = 32, height: int = 24, **params: Any) -> p.Submit:
    """A job with this sampling seed (make_submit's `seed` is its pixels')."""
    submit = make_submit(job_id, width, height, seed=seed, **params)
    return dataclasses.replace(submit, params=dataclasses.replace(submit.params, seed=seed))


def status(client: RawClient) -> p.Status:
    client.send(p.GetStatus())
    return client.until_type(p.Status)


def wait_for_workers(url: str, count: int, timeout: float = JOB_TIMEOUT) -> p.Status:
    with RawClient(url) as client:
        deadline = time.monotonic() + timeout
        while True:
            now = status(client)
            if len(now.workers) == count:
                return now
            assert time.monotonic() < deadline, f"{count} workers never ready: {now}"
            time.sleep(0.25)


def is_last_word(message: Any) -> bool:
    return isinstance(message, (p.Error, p.Cancelled)) or (isinstance(message, p.Result) and message.is_last)


def last_words(client: RawClient, job_ids: list[str]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    while len(got) < len(job_ids):
        message = client.until(lambda m: is_last_word(m) and m.job_id in job_ids, JOB_TIMEOUT)
        assert message.job_id not in got, f"two last words for {message.job_id}"
        got[message.job_id] = message
    return got


def worker_pid(daemon: DaemonProcess, name: str) -> int:
    """The process of worker `name`, from the daemon's log (its latest start)."""
    pids = [int(m[2]) for m in WORKER_LINE.finditer(daemon.output) if m[1] == name]
    assert pids, f"no process logged for worker {name}:\n{daemon.output[-3000:]}"
    return pids[-1]


def wait_sampling(client: RawClient, job_ids: list[str]) -> None:
    waiting = set(job_ids)
    while waiting:
        message = client.until(
            lambda m: isinstance(m, p.Progress) and m.stage == p.Stage.SAMPLING and m.job_id in waiting,
            JOB_TIMEOUT,
        )
        waiting.discard(message.job_id)


def test_many_clients_jobs_arrive_spread_and_follow_their_model(start_daemon: Any) -> None:
    with start_daemon() as daemon:
        wait_for_workers(daemon.url, 2)
        failures: list[str] = []

        def painter(index: int) -> None:
            height = 64 + 8 * index  # each client's own size: a misrouted result shows
            try:
                with RawClient(daemon.url) as client:
                    for job in range(3):
                        seed = 1000 * index + job
                        result = client.run(seeded(f"job-{job}", seed, 64, height), JOB_TIMEOUT)
                        ok = isinstance(result, p.Result) and result.seed == seed
                        if not ok or result.image.height != height:
                            failures.append(f"client {index} job {job}: {result}")
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(f"client {index}: {exc!r}")

        threads = [threading.Thread(target=painter, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOB_TIMEOUT * 3)
        assert not failures, failures
        with RawClient(daemon.url) as client:
            workers = status(client).workers
            assert sum(w.jobs for w in workers) == 24
            assert all(w.jobs > 0 for w in workers), workers  # both took jobs
            assert all(w.model == SD15 for w in workers)

            # Model affinity, one job at a time (both workers idle at every choice): the
            # other model goes to one worker, then each model's jobs go to its holder.
            assert isinstance(client.run(make_submit("other", model=INPAINT), JOB_TIMEOUT), p.Result)
            before = {w.model: w for w in status(client).workers}
            assert set(before) == {SD15, INPAINT}
            for index in range(3):
                assert isinstance(client.run(make_submit(f"sd15-{index}", model=SD15), JOB_TIMEOUT), p.Result)
            assert isinstance(client.run(make_submit("other-again", model=INPAINT), JOB_TIMEOUT), p.Result)
            after = {w.model: w for w in status(client).workers}
            assert after[SD15].name == before[SD15].name and after[SD15].jobs == before[SD15].jobs + 3
            assert (
                after[INPAINT].name == before[INPAINT].name
                and after[INPAINT].jobs == before[INPAINT].jobs + 1
            )


def test_a_worker_killed_mid_job_its_job_runs_on_the_other_once(start_daemon: Any) -> None:
    with start_daemon() as daemon:
        wait_for_workers(daemon.url, 2)
        with RawClient(daemon.url) as client:
            client.send(seeded("long", 7, steps=LONG_STEPS))
            wait_sampling(client, ["long"])
            busy = [w for w in status(client).workers if w.busy]
            assert len(busy) == 1, busy
            os.kill(worker_pid(daemon, busy[0].name), signal.SIGKILL)
            result = client.final("long", JOB_TIMEOUT)
            assert isinstance(result, p.Result) and result.seed == 7, result
            workers = status(client).workers  # a round trip: anything late would be seen by now
            assert [m for m in client.seen if is_last_word(m) and m.job_id == "long"] == [result]
            assert [w.jobs for w in workers if w.name != busy[0].name] == [1]
        # The lost worker is started again and takes jobs.
        wait_for_workers(daemon.url, 2)
        with RawClient(daemon.url) as client:
            for index in range(2):
                client.send(make_submit(f"after-{index}"))
            assert all(isinstance(m, p.Result) for m in last_words(client, ["after-0", "after-1"]).values())
        assert "its worker was lost; running it again on another" in daemon.output


def test_both_workers_killed_waiting_jobs_fail_clearly_and_the_daemon_answers(start_daemon: Any) -> None:
    with start_daemon() as daemon:
        wait_for_workers(daemon.url, 2)
        with RawClient(daemon.url) as client:
            jobs = ["long-0", "long-1", "queued-0", "queued-1"]
            for job_id in jobs:
                steps = LONG_STEPS if job_id.startswith("long") else 4
                client.send(make_submit(job_id, steps=steps))
            wait_sampling(client, ["long-0", "long-1"])
            busy = [w.name for w in status(client).workers if w.busy]
            assert len(busy) == 2
            for name in busy:
                os.kill(worker_pid(daemon, name), signal.SIGKILL)
            answers = last_words(client, jobs)
            for message in answers.values():
                assert isinstance(message, p.Error) and message.code is p.ErrorCode.JOB_FAILED, message
                assert (
                    "worker" in message.message
                    and "lost" in message.message
                    or "No worker" in message.message
                )
            assert any("The worker running this job was lost" in m.message for m in answers.values())
            now = status(client)  # still answering
            assert now.queued == 0 and not now.running
        wait_for_workers(daemon.url, 2)
        with RawClient(daemon.url) as client:
            assert isinstance(client.run(make_submit("back"), JOB_TIMEOUT), p.Result)
