"""Benchmark: inpainting a 256x256 feathered selection inside real Krita on an
8192x8192 document against the same on a 512x512 document.

The plugin sends only the region around the selection, so the big document
should cost about what the small one does. Goal: ratio <= 1.25.

    .venv/bin/python benchmarks/bench_krita.py [--steps 8] [--repeats 5] [--server ws://...]

Without --server it starts `differential-inpaint serve --model builtin:tiny-sd15`
on a free port for the run. Needs kritarunner (Debian: apt-get install krita).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support.daemon

from differential_inpaint.host_plugins.install import krita as krita_installer  # noqa: E402
from tests.support.daemon import running_daemon  # noqa: E402

GOAL = 1.25


@contextmanager
def daemon_url(server: str | None, model: str) -> Iterator[str]:
    if server:
        yield server
        return
    with running_daemon(model=model) as daemon:
        yield daemon.url


def run(args: argparse.Namespace) -> dict:
    kritarunner = shutil.which("kritarunner")
    if kritarunner is None:
        raise SystemExit("kritarunner is not installed (Debian: apt-get install krita)")
    with tempfile.TemporaryDirectory(prefix="bench-krita-") as tmp_name:
        tmp = Path(tmp_name)
        pykrita = tmp / "resources" / "pykrita"
        krita_installer.install(pykrita)
        (tmp / "config").mkdir()
        out = tmp / "figures.json"
        with daemon_url(args.server, args.model) as url:
            config = {
                "server": url,
                "sizes": args.sizes,
                "steps": args.steps,
                "repeats": args.repeats,
                "out": str(out),
            }
            (tmp / "bench.json").write_text(json.dumps(config), encoding="utf-8")
            env = dict(os.environ)
            env.update(
                QT_QPA_PLATFORM="offscreen",
                PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent), str(pykrita)]),
                XDG_CONFIG_HOME=str(tmp / "config"),
                XDG_RUNTIME_DIR=str(tmp),
                PYTHONDONTWRITEBYTECODE="1",
            )
            proc = subprocess.run(
                [kritarunner, "-s", "krita_bench_scenario", "-f", "main", str(tmp / "bench.json")],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=args.timeout,
            )
        if not out.is_file():
            raise SystemExit(f"Krita wrote no figures (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        figures = json.loads(out.read_text(encoding="utf-8"))
    if figures.get("error"):
        raise SystemExit(f"the benchmark failed inside Krita:\n{figures['error']}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="sampling steps per job (default 20, as inpaint_layer)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per document size (default 5)")
    parser.add_argument("--server", help="a running daemon's address (default: start one)")
    parser.add_argument("--model", default="builtin:tiny-sd15", help="the model a started daemon serves")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before giving up on Krita")
    args = parser.parse_args(argv)
    args.sizes = [8192, 512]
    figures = run(args)
    medians: dict[int, dict[str, float]] = {}
    print(
        f"Krita {figures.get('krita')}: inpaint_layer end to end, 256x256 selection feathered 16 px, "
        f"{args.steps} steps, median of {args.repeats} runs per size, sizes alternated, after one warm-up job"
    )
    for size in args.sizes:
        runs = figures["runs"][str(size)]
        m = {key: statistics.median(r[key] for r in runs) for key in ("total", "daemon", "read", "add_layer")}
        medians[size] = m
        spread = f"{min(r['total'] for r in runs):.2f}-{max(r['total'] for r in runs):.2f}"
        overhead = statistics.median(r["total"] - r["daemon"] for r in runs)
        print(
            f"  {size:>5}x{size:<5} total {m['total']:7.3f} s (runs {spread} s) = daemon {m['daemon']:.3f} s "
            f"+ plugin and Krita {overhead:.3f} s; region {runs[0]['region']}, "
            f"read in {m['read'] * 1000:.1f} ms"
        )
        print(f"{'':14}Krita's own add-layer step on this document: {m['add_layer']:.3f} s")
    ratio = medians[8192]["total"] / medians[512]["total"]
    verdict = "meets" if ratio <= GOAL else "misses"
    best = {size: min(r["total"] for r in figures["runs"][str(size)]) for size in args.sizes}
    print(f"  ratio 8192/512 of the median totals: {ratio:.3f} ({verdict} the goal <= {GOAL})")
    print(f"  ratio 8192/512 of the best runs:     {best[8192] / best[512]:.3f} (less load-sensitive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
