"""`inpaint_layer` and `strength_map_layer`: the blocking entry points for Krita's
Scripter and for tests."""

from __future__ import annotations

from typing import Any

from . import jobs
from . import protocol as p
from .client import SETTINGS_PARAMS, InpaintError, JobCancelled, Settings, as_inpaint_error, flow
from .krita_io import KritaDocument


def inpaint_layer(
    document: Any,
    node: Any = None,
    *,
    timeout: float | None = None,
    mask: Any = None,
    blend_mask: Any = None,
    context: Any = "auto",
    **settings: Any,
) -> Any:
    """Inpaint the selection of `node` (default: the active layer) and return the new layer
    (with `count` > 1 or a `fan`: the new layer group, one layer a result).

    The selection is the mask (soft stays soft; no selection = the whole layer at
    `strength`); only the region around it, plus `padding` px of context, is sent
    to the daemon at `server` (default ws://127.0.0.1:7865). The result becomes a
    new paint layer above `node`, one undo step, named "prompt · seed"; several results
    become a group ("prompt · 3 variations", "prompt · strength fan") of layers named
    "prompt · seed" or "prompt · 40%", only the first visible. Raises `InpaintError` (with a
    message for the painter) on any failure, leaving the document unchanged.
    `timeout` bounds the whole job, in seconds.

    The map: `mask`, a node or a node's name (any layer or mask; its gray times its
    opacity; None: the selection), is the change map instead of the selection, which then
    limits it (`limit_to_selection=False`: not); `blend_mask` (a node or name) becomes the
    result's opacity. `invert_mask`, `mask_black`, `mask_white`, `mask_gamma` are levels on
    the map; `depth` "near" or "far" (None: off) makes the daemon's depth estimate the map
    (`depth_model`, `depth_combine` "multiply", "min" or "max" with the selection).
    `context`: "auto", "image", "mask" (the area's bounds), an (x, y, w, h) tuple in
    document pixels, "layer:NAME" or a node, whose bounds are what the model sees.
    The other settings, by name: {names}.

    Call it on Krita's GUI thread (the Scripter does): it waits for the job in a
    worker thread and keeps Krita repainting meanwhile.

        from krita import Krita
        from differential_inpaint import inpaint_layer
        doc = Krita.instance().activeDocument()
        layer = inpaint_layer(doc, prompt="a red brick wall")
        group = inpaint_layer(doc, prompt="moss", fan=[0.3, 0.6, 0.9])
        layer = inpaint_layer(doc, prompt="fog", mask="Strength", mask_gamma=2.0)
    """
    return _run(document, node, timeout, mask, blend_mask, context, settings, p.Submit)


def strength_map_layer(
    document: Any,
    node: Any = None,
    *,
    timeout: float | None = None,
    mask: Any = None,
    blend_mask: Any = None,
    context: Any = "auto",
    **settings: Any,
) -> Any:
    """Add the layer "Strength map" above `node` and return it: what `inpaint_layer` with
    the same arguments would change, per pixel (the map after levels, depth, the selection,
    grow, feather and times strength; white changes fully), without sampling. One undo
    step; `InpaintError` and the document unchanged on any failure.

        from differential_inpaint import strength_map_layer
        strength_map_layer(doc, mask="Strength", mask_black=0.5)
    """
    return _run(document, node, timeout, mask, blend_mask, context, settings, p.StrengthMapRequest)


def _run(
    document: Any,
    node: Any,
    timeout: float | None,
    mask: Any,
    blend_mask: Any,
    context: Any,
    settings: dict[str, Any],
    request: type[p.Submit],
) -> Any:
    try:
        chosen = Settings.from_values(settings)
        maps = flow.Maps(mask=mask, blend=blend_mask, context=context)
        job = flow.prepare(KritaDocument(document, node), chosen, maps=maps, request=request)
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
        "{names}", ", ".join(q.name for q in SETTINGS_PARAMS)
    )
