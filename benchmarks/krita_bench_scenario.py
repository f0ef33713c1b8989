"""Run by bench_krita.py inside Krita (kritarunner); not a test.

    kritarunner -s krita_bench_scenario -f main CONFIG.json

For each document size it paints a full opaque layer, selects a feathered
256x256 square in the middle and times `inpaint_layer` end to end (read the
region, send, daemon, receive, insert, wait for Krita), alternating the sizes
so that drift in machine load hits both alike. Writes its figures to the JSON
file CONFIG names. Krita's own Python: standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

SELECTION = 256
FEATHER = 16


def painted_document(krita: Any, size: int) -> tuple[Any, Any]:
    doc = krita.createDocument(size, size, f"bench-{size}", "RGBA", "U8", "", 72.0)
    layer = doc.createNode("Painted", "paintlayer")
    doc.rootNode().addChildNode(layer, None)
    # A horizontal gradient, written in strips of up to 512 rows (bounded memory).
    row = bytes(v for x in range(size) for v in (x % 256, (x // 7) % 256, 200, 255))
    strip = min(size, 512)
    for top in range(0, size, strip):
        rows = min(strip, size - top)
        layer.setPixelData(row * rows, 0, top, size, rows)
    doc.waitForDone()
    return doc, layer


def select_middle(doc: Any, size: int) -> None:
    from krita import Selection

    selection = Selection()
    start = (size - SELECTION) // 2
    selection.select(start, start, SELECTION, SELECTION, 255)
    selection.feather(FEATHER)
    doc.setSelection(selection)
    doc.waitForDone()


def one_run(plugin: Any, doc: Any, layer: Any, config: dict[str, Any]) -> dict[str, Any]:
    """One `inpaint_layer` call, timed; the new layer is removed afterwards so that
    every run starts from the same document. `read` times the reading part alone
    (a separate `prepare_job` call, outside `total`); `daemon` is the daemon's own
    time for the job, from the result it sent."""
    results = []
    run_blocking = plugin.jobs.run_blocking

    def recording(*args: Any, **kwargs: Any) -> Any:
        results.append(run_blocking(*args, **kwargs))
        return results[-1]

    plugin.jobs.run_blocking = recording  # inpaint_layer looks it up at call time
    try:
        t0 = time.perf_counter()
        new = plugin.inpaint_layer(
            doc, layer, prompt="benchmark", steps=config["steps"], seed=1, server=config["server"]
        )
        total = time.perf_counter() - t0
    finally:
        plugin.jobs.run_blocking = run_blocking
    new.remove()
    doc.waitForDone()
    t1 = time.perf_counter()
    job = plugin.core.prepare_job(doc, layer, plugin.InpaintSettings(prompt="benchmark"))
    read = time.perf_counter() - t1
    # Krita's own cost of adding a layer (the same undoable command, which
    # refreshes the whole image), for comparison: the floor any result pays.
    t2 = time.perf_counter()
    empty = doc.createNode("empty", "paintlayer")
    layer.parentNode().addChildNode(empty, layer)
    doc.waitForDone()
    add_layer = time.perf_counter() - t2
    empty.remove()
    doc.waitForDone()
    timings = results[0].timings
    return {
        "total": total,
        "daemon": float(timings.get("daemon", timings.get("total", 0.0))),
        "read": read,
        "add_layer": add_layer,
        "region": f"{job.region.width}x{job.region.height}",
    }


def main(args: list[str]) -> None:
    with open(args[0], encoding="utf-8") as f:
        config = json.load(f)
    out: dict[str, Any] = {"runs": {}, "error": None}
    try:
        from krita import Krita

        import differential_inpaint as plugin

        krita = Krita.instance()
        out["krita"] = krita.version()
        docs = {}
        for size in config["sizes"]:
            started = time.perf_counter()
            docs[size] = painted_document(krita, size)
            select_middle(docs[size][0], size)
            out.setdefault("setup_seconds", {})[str(size)] = round(time.perf_counter() - started, 2)
        # Warm up: the daemon loads the model on its first job.
        smallest = min(config["sizes"])
        one_run(plugin, *docs[smallest], config)
        for _ in range(config["repeats"]):
            for size in config["sizes"]:
                run = one_run(plugin, *docs[size], config)
                out["runs"].setdefault(str(size), []).append(run)
    except Exception:
        out["error"] = traceback.format_exc()
    with open(config["out"], "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    sys.stdout.flush()
    os._exit(0)  # skip Krita's teardown: the figures are written
