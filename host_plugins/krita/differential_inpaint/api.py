"""`inpaint_layer`: the blocking entry point for Krita's Scripter and for tests."""

from __future__ import annotations

from typing import Any

from . import jobs
from .client import SETTINGS_PARAMS, InpaintError, JobCancelled, Settings, as_inpaint_error, flow
from .krita_io import KritaDocument


def inpaint_layer(document: Any, node: Any = None, *, timeout: float | None = None, **settings: Any) -> Any:
    """Inpaint the selection of `node` (default: the active layer) and return the new layer
    (with `count` > 1 or a `fan`: the new layer group, one layer a result).

    The selection is the mask (soft stays soft; no selection = the whole layer at
    `strength`); only the region around it, plus `padding` px of context, is sent
    to the daemon at `server` (default ws://127.0.0.1:7865). The result becomes a
    new paint layer above `node`, one undo step, named "prompt · seed"; several results
    become a group ("prompt · 3 variations", "prompt · strength fan") of layers named
    "prompt · seed" or "prompt · 40%", only the first visible. Raises `InpaintError` (with a
    message for the painter) on any failure, leaving the document unchanged.
    `timeout` bounds the whole job, in seconds. The settings, by name: {names}.

    Call it on Krita's GUI thread (the Scripter does): it waits for the job in a
    worker thread and keeps Krita repainting meanwhile.

        from krita import Krita
        from differential_inpaint import inpaint_layer
        layer = inpaint_layer(Krita.instance().activeDocument(), prompt="a red brick wall")
        group = inpaint_layer(Krita.instance().activeDocument(), prompt="moss", fan=[0.3, 0.6, 0.9])
    """
    try:
        chosen = Settings.from_values(settings)
        job = flow.prepare(KritaDocument(document, node), chosen)
        try:
            results = jobs.run_blocking(job, chosen, timeout=timeout)
        except JobCancelled as exc:
            if exc.kept:  # a batch cancelled part-way keeps what was done
                flow.finish(job, exc.kept)
            raise
        layer = flow.finish(job, results)
    except InpaintError:
        raise
    except Exception as exc:  # a Krita call failing: still the one error type callers catch
        raise as_inpaint_error(exc) from exc
    wait = getattr(document, "waitForDone", None)
    if wait is not None:
        wait()  # the caller sees the finished layer, e.g. in projectionPixelData
    return layer


if inpaint_layer.__doc__:
    inpaint_layer.__doc__ = inpaint_layer.__doc__.replace(
        "{names}", ", ".join(p.name for p in SETTINGS_PARAMS)
    )
