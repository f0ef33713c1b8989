"""The soak benchmark (benchmarks/soak.py) for 20 seconds, and its clients' checks.

The real soak runs for minutes (`.venv/bin/python benchmarks/soak.py`); here 4 clients
submit, cancel and disconnect at random for 20 s against a real `serve` process on
`builtin:tiny-sd15`. Nothing may be lost or misrouted, no error but the documented
refusals, no traceback in the log, RSS within 5 % of its sample after 5 s (the soak
warms the daemon up first), the fds (less client connections) not growing, and every
connection closed at the end.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from differential_inpaint import protocol as p

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_short_soak_loses_nothing_and_leaks_nothing(soak: ModuleType) -> None:
    lines: list[str] = []
    report = soak.run_soak(clients=4, seconds=20.0, interval=5.0, warmup=5.0, seed=7, say=lines.append)
    soak.print_report(report, lines.append)
    text = "\n".join(lines)
    assert [check.name for check in report.checks] == [
        *("lost", "misrouted", "errors", "rss", "fds", "connections", "log", "exit")
    ]
    assert report.ok, text
    baseline = next(s for s in report.samples if s.elapsed >= 5.0)
    assert report.samples[-1].own_fds <= baseline.own_fds, text
    assert report.tally.completed >= 1 and report.tally.submitted >= 4, text


def test_the_clients_catch_misrouted_late_and_undocumented_messages(soak: ModuleType) -> None:
    """The checks can fail: a checker that never does proves nothing."""
    tally = soak.Tally()
    client = soak.Client(0, "ws://127.0.0.1:1", deadline=0.0, tally=tally, seed=1)
    now = time.monotonic()
    jobs = {
        job_id: soak.Job(job_id, 32, 24, 10, 20, p.PixelFormat.RGBA8, "finish", submitted=now)
        for job_id in ("c0-1", "c0-2", "c0-3", "c0-4")
    }

    def result(job_id: str, x: int, width: int) -> p.Result:
        image = p.Image(width, 24, p.PixelFormat.RGBA8, bytes(width * 24 * 4))
        return p.Result(job_id, image, x, 20, seed=1)

    for job_id in jobs:
        client.take(p.Accepted(job_id, 0), jobs)
    client.take(result("c0-1", 10, 32), jobs)  # right
    client.take(result("c0-2", 11, 32), jobs)  # wrong offset
    client.take(result("c0-3", 10, 40), jobs)  # wrong size
    client.take(p.Progress("c0-1", p.Stage.SAMPLING, 1, 2), jobs)  # after its last word
    client.take(p.Cancelled("c9-9"), jobs)  # a job it never sent
    client.take(p.Error(p.ErrorCode.QUEUE_FULL, "full", "c0-4"), jobs)  # documented
    assert tally.completed == 3 and tally.refused == {"queue_full": 1}
    assert len(tally.problems["misrouted"]) == 4, tally.problems
    assert not tally.problems["errors"]

    late = soak.Job("c0-5", 32, 24, 10, 20, p.PixelFormat.RGBA8, "finish", submitted=now)
    client.take(p.Error(p.ErrorCode.JOB_FAILED, "it broke", "c0-5"), {"c0-5": late})
    assert tally.problems["errors"] == ["c0-5: error job_failed: it broke"]
