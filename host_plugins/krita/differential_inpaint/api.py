"""`inpaint_layer`: the blocking entry point for Krita's Scripter and for tests."""

from __future__ import annotations

from typing import Any

from . import core, jobs
from .client import InpaintError


def inpaint_layer(
    document: Any,
    node: Any = None,
    *,
    prompt: str,
    negative_prompt: str = "",
    strength: float = 1.0,
    steps: int = 20,
    guidance: float = 7.0,
    seed: int | None = None,
    model: str | None = None,
    grow: float = 0,
    feather: float = 0,
    server: str | None = None,
    timeout: float | None = None,
    padding: int = 64,
    token: str | None = None,
) -> Any:
    """Inpaint the selection of `node` (default: the active layer) and return the new layer.

    The selection is the mask (soft stays soft; no selection = the whole layer at
    `strength`); only the region around it, plus `padding` px of context, is sent
    to the daemon at `server` (default ws://127.0.0.1:7865). The result becomes a
    new paint layer above `node`, one undo step. Raises `InpaintError` (with a
    message for the painter) on any failure, leaving the document unchanged.

    Call it on Krita's GUI thread (the Scripter does): it waits for the job in a
    worker thread and keeps Krita repainting meanwhile.

        from krita import Krita
        from differential_inpaint import inpaint_layer
        layer = inpaint_layer(Krita.instance().activeDocument(), prompt="a red brick wall")
    """
    settings = core.InpaintSettings(
        prompt=prompt,
        negative_prompt=negative_prompt,
        strength=strength,
        steps=steps,
        guidance=guidance,
        seed=seed,
        model=model,
        grow=grow,
        feather=feather,
        padding=padding,
        server=server or "",
        token=token or "",
    )
    try:
        job = core.prepare_job(document, node, settings)
        result = jobs.run_blocking(
            job.submit, server=settings.server, token=settings.token or None, timeout=timeout
        )
        layer = core.insert_result(job, result)
    except InpaintError:
        raise
    except Exception as exc:  # a Krita call failing: still the one error type callers catch
        raise jobs.as_inpaint_error(exc) from exc
    wait = getattr(document, "waitForDone", None)
    if wait is not None:
        wait()  # the caller sees the finished layer, e.g. in projectionPixelData
    return layer
