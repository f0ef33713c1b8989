"""Several workers: what a second one buys, what Ray costs, and where the websocket front stops.

Prints figures, asserts nothing about time:

1. Jobs per minute on the tiny model (CPU, 64x64, 8 steps, one torch thread per worker,
   4 clients keeping the queue full): `serve --device cpu` (one worker, a thread of the
   daemon) against `serve --device cpu --device cpu` (two worker processes), and, for
   the record, two engines in two threads of one process (why local workers are
   processes). Goal: 2 workers >= 1.7x on 2 cores.
2. The latency a Ray-dispatched job adds over a local one: submit-to-result of a 2-step
   job, one at a time, median, `serve --ray ADDRESS --workers 1` on a loopback cluster
   started here against `serve --device cpu`. Goal: <= 50 ms. Skipped without Ray.
3. The websocket front's ceiling, workers stubbed out (each job ends at once): MiB/s of
   submits accepted (16 MiB regions from 8 clients), and connections held (opened and
   handshaken, then a status round trip), with the daemon's memory.

Clients and daemon share this machine's cores: the front's figures are lower bounds.

    .venv/bin/python benchmarks/bench_workers.py [--jobs 24] [--rounds 3] [--skip-ray] [--connections 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from differential_inpaint import protocol as p  # noqa: E402
from tests.support.daemon import LISTENING, running_daemon  # noqa: E402
from tests.support.ray_cluster import local_ray_cluster, ray_available  # noqa: E402

TIMEOUT = 300.0
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


# --- a small client -----------------------------------------------------------------------


class Client:
    def __init__(self, url: str) -> None:
        self.ws: ClientConnection = connect(url, compression=None, max_size=None, open_timeout=TIMEOUT)
        self.send(p.Hello(client="bench-workers"))
        assert isinstance(self.recv(), p.Welcome)

    def send(self, message: Any) -> None:
        self.ws.send(p.fragments(p.encode_parts(message)))  # type: ignore[arg-type]

    def recv(self) -> Any:
        return p.decode(self.ws.recv(timeout=TIMEOUT), p.DEFAULT_LIMITS, p.SERVER_MESSAGES)

    def last_word(self, job_id: str) -> Any:
        while True:
            message = self.recv()
            if getattr(message, "job_id", None) != job_id:
                continue
            if isinstance(message, (p.Error, p.Cancelled)) or (
                isinstance(message, p.Result) and message.is_last
            ):
                return message

    def run(self, submit: p.Submit) -> Any:
        self.send(submit)
        return self.last_word(submit.job_id)

    def status(self) -> p.Status:
        self.send(p.GetStatus())
        while not isinstance(message := self.recv(), p.Status):
            pass
        return message

    def close(self) -> None:
        self.ws.close()


def submit(job_id: str, size: int = 64, steps: int = 8, seed: int = 0) -> p.Submit:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    params = p.JobParams(steps=steps, seed=seed, preview=False)
    return p.Submit(
        job_id,
        p.Image(size, size, p.PixelFormat.RGBA8, pixels.tobytes()),
        p.Mask(size, size, mask.tobytes()),
        params,
    )


def wait_for_workers(url: str, count: int) -> None:
    client = Client(url)
    try:
        while len(client.status().workers) < count:
            time.sleep(0.25)
    finally:
        client.close()


# --- 1. jobs per minute ---------------------------------------------------------------------


def warm_up(url: str, workers: int) -> None:
    """Every worker ready and its model loaded (one job each)."""
    wait_for_workers(url, workers)
    warm = [Client(url) for _ in range(workers)]
    for index, client in enumerate(warm):
        client.send(submit(f"warm-{index}"))
    for index, client in enumerate(warm):
        assert isinstance(client.last_word(f"warm-{index}"), p.Result)
        client.close()


class CpuWatch:
    """The machine's CPU during a run: the share other programs took (this machine's cores
    are shared; a second worker cannot be faster than the cores left to it)."""

    def __init__(self, daemon_pid: int) -> None:
        self.daemon_pid = daemon_pid
        self.others = 0.0

    def __enter__(self) -> CpuWatch:
        self._machine, self._ours = _machine_cpu(), self._our_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        (total, idle), (total0, idle0) = _machine_cpu(), self._machine
        busy = (total - total0) - (idle - idle0)
        ours = (self._our_cpu() - self._ours) * os.sysconf("SC_CLK_TCK")
        self.others = max(0.0, busy - ours) / max(1, total - total0)

    def _our_cpu(self) -> float:
        """Seconds of CPU of this process, the daemon and the daemon's descendants."""
        return time.process_time() + sum(_process_cpu(pid) for pid in _tree(self.daemon_pid))


def _machine_cpu() -> tuple[int, int]:
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]  # all but guest time; idle + iowait


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += _tree(int(child))
    return pids


def jobs_per_minute(url: str, jobs: int, clients: int = 4) -> float:
    counter = iter(range(jobs))
    lock = threading.Lock()
    failures: list[Any] = []

    def painter() -> None:
        client = Client(url)
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                break
            answer = client.run(submit(f"job-{number}", seed=number))
            if not isinstance(answer, p.Result):
                failures.append(answer)
        client.close()

    threads = [threading.Thread(target=painter) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    assert not failures, failures[:3]
    return jobs / seconds * 60


def threads_in_one_process(jobs: int, rounds: int) -> tuple[float, float]:
    """Jobs per minute of one engine, and of two engines in two threads of one process
    (the best of `rounds` each)."""
    import torch

    torch.set_num_threads(1)
    from differential_inpaint.backend.engine import Engine

    image = np.random.default_rng(0).random((64, 64, 4), dtype=np.float32)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    engines = [Engine(device="cpu", scan_default_locations=False) for _ in range(2)]

    def work(engine: Any, count: int) -> None:
        for seed in range(count):
            engine.inpaint(image, mask, p.JobParams(steps=8, seed=seed), model="builtin:tiny-sd15")

    for engine in engines:
        work(engine, 1)
    ones, twos = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        work(engines[0], jobs // 2)
        ones.append((jobs // 2) / (time.perf_counter() - start) * 60)
        threads = [threading.Thread(target=work, args=(engine, jobs // 4)) for engine in engines]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        twos.append((jobs // 4 * 2) / (time.perf_counter() - start) * 60)
    return max(ones), max(twos)


# --- 2. the latency Ray adds ----------------------------------------------------------------


def round_trips(url: str, count: int) -> list[float]:
    client = Client(url)
    times = []
    for index in range(count):
        start = time.perf_counter()
        answer = client.run(submit(f"rt-{index}", steps=2, seed=index))
        times.append(time.perf_counter() - start)
        assert isinstance(answer, p.Result), answer
    client.close()
    return times


# --- 3. the websocket front, workers stubbed out -----------------------------------------------

STUB_SERVER = """
import asyncio, sys
from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon.jobs import Outcome, Worker, wire_frames
from differential_inpaint.backend.daemon.models import ModelCatalog
from differential_inpaint.backend.daemon.server import DaemonServer, ServerConfig, serve_until
from differential_inpaint.backend.daemon.workers import WorkerSupervisor

class StubWorker(Worker):
    async def run(self, job):  # every job ends at once, its pixels unread
        return Outcome(wire_frames(p.Cancelled(job.job_id)), "cancelled")

async def main():
    async def start(slot):
        return StubWorker(f"stub-{slot}", "none")
    async def slots():
        return 2
    catalog = ModelCatalog((p.ModelInfo("stub", "sd15"),), "stub")
    config = ServerConfig(port=0, max_connections=100000, max_connections_per_address=100000)
    server = DaemonServer(None, catalog, config, supervisor=WorkerSupervisor(start, slots))
    port = await server.start()
    print(f"listening on ws://127.0.0.1:{port}", flush=True)
    await serve_until(server, asyncio.Event())

asyncio.run(main())
"""


@contextmanager
def stub_daemon() -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", STUB_SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        match = LISTENING.search(process.stdout.readline())
        assert match, "the stub daemon did not start"
        yield match[1], process.pid
    finally:
        process.terminate()
        process.wait(30)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def submits_accepted(
    url: str, seconds: float = 10.0, clients: int = 8, size: int = 2048
) -> tuple[float, int]:
    """MiB/s of submits (a `size`-square rgba8 region and its mask) taken in, and how many."""
    job = submit("big", size=size, steps=1)
    job_bytes = len(job.image.data) + len(job.mask.data)
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def painter(index: int) -> None:
        client = Client(url)
        number = 0
        while time.perf_counter() < stop:
            number += 1
            answer = client.run(_renamed(job, number))
            assert isinstance(answer, (p.Cancelled, p.Error)), answer
            done[index] += 1
        client.close()

    threads = [threading.Thread(target=painter, args=(index,)) for index in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return sum(done) * job_bytes / 2**20 / elapsed, sum(done)


def _renamed(job: p.Submit, number: int) -> p.Submit:
    return p.Submit(f"big-{number}", job.image, job.mask, job.params, job.x, job.y)


async def _hold_connections(url: str, count: int, pid: int) -> tuple[int, float, float]:
    """Open `count` connections (handshake and hello each): how many held, the seconds a
    status round trip then takes on one of them, and the daemon's memory (MiB) meanwhile."""
    hello = p.encode(p.Hello(client="bench-hold"))
    held: list[Any] = []
    try:
        for _ in range(count):
            try:
                ws = await async_connect(url, compression=None, open_timeout=30)
                await ws.send(hello)
                await ws.recv()
                held.append(ws)
            except Exception:  # the limit reached: file descriptors, memory
                break
        start = time.perf_counter()
        await held[0].send(p.encode(p.GetStatus()))
        await held[0].recv()
        return len(held), time.perf_counter() - start, rss_mib(pid)
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)


def _rounds(values: list[tuple[float, float]]) -> str:
    return "rounds: " + ", ".join(f"{rate:.1f} (others {others:.0%})" for rate, others in values)


# --- main ---------------------------------------------------------------------------------------


def daemon(*args: str, env: dict[str, str] | None = None) -> AbstractContextManager[Any]:
    return running_daemon(*args, env=env or ONE_THREAD, startup_timeout=TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=24, help="jobs per throughput run (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measure, in turns (default 3)")
    parser.add_argument("--skip-ray", action="store_true", help="leave out the Ray latency")
    parser.add_argument("--connections", type=int, default=8000, help="connections to hold (default 8000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of big submits (default 10)")
    args = parser.parse_args(argv)

    cores = os.cpu_count()
    print(
        f"1. jobs per minute, tiny model, 64x64, 8 steps, one torch thread per worker ({cores} cores; "
        f"best of {args.rounds} rounds, taken in turns, against other load on the machine)"
    )
    singles: list[tuple[float, float]] = []  # (jobs/min, the CPU share other programs took)
    doubles: list[tuple[float, float]] = []
    with daemon("--device", "cpu") as one, daemon("--device", "cpu", "--device", "cpu") as two:
        warm_up(one.url, 1)
        warm_up(two.url, 2)
        for _ in range(args.rounds):
            for process, results in ((one, singles), (two, doubles)):
                with CpuWatch(process.process.pid) as watch:
                    rate = jobs_per_minute(process.url, args.jobs)
                results.append((rate, watch.others))
    single, double = max(rate for rate, _ in singles), max(rate for rate, _ in doubles)
    print(f"   1 worker  (serve --device cpu):              {single:6.1f} jobs/min  ({_rounds(singles)})")
    print(f"   2 workers (serve --device cpu --device cpu): {double:6.1f} jobs/min  ({_rounds(doubles)})")
    print(f"   = {double / single:.2f}x   (others: the machine's CPU other programs took in that round)")
    one_engine, two_threads = threads_in_one_process(args.jobs, args.rounds)
    print(
        f"   for the record, two engines in two threads of one process: {two_threads:.1f} against "
        f"{one_engine:.1f} jobs/min = {two_threads / one_engine:.2f}x (hence processes)"
    )

    if args.skip_ray or not ray_available():
        print("2. Ray: skipped" + ("" if args.skip_ray else " (Ray is not installed)"))
    else:
        print(
            "2. added latency of a Ray-dispatched job, 64x64, 2 steps, one at a time, "
            f"{10 * args.rounds} jobs each"
        )
        local_times: list[float] = []
        process_times: list[float] = []
        ray_times: list[float] = []
        with local_ray_cluster(num_cpus=2) as cluster:
            with (
                daemon("--device", "cpu") as local,
                daemon("--device", "cpu", "--device", "cpu") as process,
                daemon("--ray", cluster.address, "--workers", "1", env=cluster.env) as remote,
            ):
                warm_up(local.url, 1)
                warm_up(process.url, 2)  # one job at a time then: always on one of its processes
                warm_up(remote.url, 1)
                for _ in range(args.rounds):
                    local_times += round_trips(local.url, 10)
                    process_times += round_trips(process.url, 10)
                    ray_times += round_trips(remote.url, 10)
            with daemon("--ray", cluster.address, "--workers", "2", env=cluster.env) as remote:
                warm_up(remote.url, 2)
                ray_double = max(jobs_per_minute(remote.url, args.jobs) for _ in range(args.rounds))
        local_median, ray_median = statistics.median(local_times), statistics.median(ray_times)
        process_median = statistics.median(process_times)
        print(f"   local, a thread of the daemon (serve --device cpu):  median {local_median * 1000:6.1f} ms")
        print(
            f"   local, a worker process (--device cpu --device cpu): median {process_median * 1000:6.1f} ms"
        )
        print(f"   Ray actor (serve --ray ... --workers 1):              median {ray_median * 1000:6.1f} ms")
        print(
            f"   added by Ray: {(ray_median - local_median) * 1000:+.1f} ms over the thread, "
            f"{(ray_median - process_median) * 1000:+.1f} ms over the local process (medians)"
        )
        speedup = ray_double / single
        print(f"   2 Ray workers, tiny model as in 1: {ray_double:.1f} jobs/min = {speedup:.2f}x one local")

    print("3. the websocket front, workers stubbed out (each job ends at once)")
    with stub_daemon() as (url, pid):
        rate, count = submits_accepted(url, args.seconds)
        print(
            f"   submits of 2048x2048 rgba8 (16 MiB + mask) from 8 clients: {rate:.0f} MiB/s "
            f"({count} in {args.seconds:g} s)"
        )
        before = rss_mib(pid)
        held, round_trip, during = asyncio.run(_hold_connections(url, args.connections, pid))
        print(
            f"   connections held: {held} (asked {args.connections}); a status round trip with all "
            f"open: {round_trip * 1000:.1f} ms; daemon memory {before:.0f} MiB, {during:.0f} MiB with them"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
