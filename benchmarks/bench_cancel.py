"""Cancel latency: how soon a running job's client hears that it stopped.

Against `differential-inpaint serve --model builtin:tiny-sd15` on the CPU: a 256x256
job of 200 steps without previews; once progress says step 6, the client sends
`cancel` (one daemon for every try), or the daemon gets SIGTERM (a fresh daemon for
each try). Timed from the request (cancel sent, signal sent) to the job's last word
(`cancelled`, `error` `shutting_down`) arriving. The step time is the median time
between two progress messages of the same try.

    .venv/bin/python benchmarks/bench_cancel.py [--tries 20] [--only cancel|sigterm]

Run it on a quiet machine: the daemon keeps torch's default threads, which on a busy
2-core machine wait for each other at every operation and make steps erratic.

Goal (issue "Daemon under attack and under load", point 1): the answer within one
step + 50 ms of the request, for cancel and for SIGTERM.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for the tests' launcher and client

from tests.backend.daemon.test_cancel_latency import StopTiming, time_cancel, time_sigterm  # noqa: E402
from tests.support.daemon import running_daemon  # noqa: E402

AT_STEP = 6
DAEMON_ARGS = ("--device", "cpu")
GOAL = 0.050  # seconds after one step


def cancel_tries(tries: int) -> list[StopTiming]:
    with running_daemon(*DAEMON_ARGS) as daemon:
        time_cancel(daemon.url, "warm-up", at_step=AT_STEP)  # loads the model: not counted
        return [time_cancel(daemon.url, f"cancel-{n}", at_step=AT_STEP) for n in range(tries)]


def sigterm_tries(tries: int) -> list[StopTiming]:
    return [time_sigterm(f"stopped-{n}", *DAEMON_ARGS, at_step=AT_STEP) for n in range(tries)]


def report(name: str, timings: list[StopTiming]) -> None:
    def ms(seconds: list[float]) -> str:
        return f"median {statistics.median(seconds) * 1000:4.0f} ms, worst {max(seconds) * 1000:4.0f} ms"

    on_goal = sum(1 for t in timings if t.late_by <= GOAL)
    print(
        f"{name:7} ({len(timings)} tries)  latency {ms([t.latency for t in timings])}"
        f"  |  step {ms([t.step for t in timings])}"
        f"  |  latency - step {ms([t.late_by for t in timings])}"
        f"  |  within one step + {GOAL * 1000:.0f} ms: {on_goal}/{len(timings)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--only", choices=["cancel", "sigterm"], help="time one of the two")
    args = parser.parse_args()
    if args.only in (None, "cancel"):
        report("cancel", cancel_tries(args.tries))
    if args.only in (None, "sigterm"):
        report("SIGTERM", sigterm_tries(args.tries))


if __name__ == "__main__":
    main()
