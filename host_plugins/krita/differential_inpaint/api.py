"""`inpaint_layer` and `strength_map_layer`: the blocking entry points for Krita's
Scripter and for tests."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from . import jobs
from . import protocol as p
from .client import SETTINGS_PARAMS, InpaintError, JobCancelled, Settings, as_inpaint_error, flow
from .conditioning import conditioning_maps, loras_of
from .krita_io import KritaDocument


def inpaint_layer(
    document: Any,
    node: Any = None,
    *,
    timeout: float | None = None,
    mask: Any = None,
    blend_mask: Any = None,
    context: Any = "auto",
    controls: Any = None,
    references: Any = None,
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

    Conditioning: `controls`, a list of control layers (ControlNet), each a dict
    {"layer": "Lines", "kind": "canny", "model": None, "strength": 0.8, "start": 0,
    "end": 0.6, "preprocess": False} (every key but "layer" optional; "layer" a node or a
    name), read over the job's region; `references`, a list of reference layers
    (IP-Adapter), each {"layer": "Photo", "weight": 0.5, "model": None}, read whole;
    `loras` "name:0.8, other:-0.5" or [("name", 0.8), ...] (weights -2..2).
    The other settings, by name: {names}.

    Call it on Krita's GUI thread (the Scripter does): it waits for the job in a
    worker thread and keeps Krita repainting meanwhile.

        from krita import Krita
        from differential_inpaint import inpaint_layer
        doc = Krita.instance().activeDocument()
        layer = inpaint_layer(doc, prompt="a red brick wall")
        group = inpaint_layer(doc, prompt="moss", fan=[0.3, 0.6, 0.9])
        layer = inpaint_layer(doc, prompt="fog", mask="Strength", mask_gamma=2.0)
        layer = inpaint_layer(doc, prompt="a castle", loras="watercolor:0.8",
                              controls=[{"layer": "Lines", "kind": "lineart", "end": 0.6}])
    """
    maps = _Given(mask, blend_mask, context, controls, references)
    return _run(document, node, timeout, maps, settings, p.Submit)


def strength_map_layer(
    document: Any,
    node: Any = None,
    *,
    timeout: float | None = None,
    mask: Any = None,
    blend_mask: Any = None,
    context: Any = "auto",
    controls: Any = None,
    references: Any = None,
    **settings: Any,
) -> Any:
    """Add the layer "Strength map" above `node` and return it: what `inpaint_layer` with
    the same arguments would change, per pixel (the map after levels, depth, the selection,
    grow, feather and times strength; white changes fully), without sampling. One undo
    step; `InpaintError` and the document unchanged on any failure. `controls`,
    `references` and `loras` are accepted (and checked) as there; they change no map.

        from differential_inpaint import strength_map_layer
        strength_map_layer(doc, mask="Strength", mask_black=0.5)
    """
    maps = _Given(mask, blend_mask, context, controls, references)
    return _run(document, node, timeout, maps, settings, p.StrengthMapRequest)


@dataclass(frozen=True)
class _Given:
    """The layers a call names besides its own, as given."""

    mask: Any
    blend: Any
    context: Any
    controls: Any
    references: Any


def _run(
    document: Any,
    node: Any,
    timeout: float | None,
    given: _Given,
    settings: dict[str, Any],
    request: type[p.Submit],
) -> Any:
    try:
        if "loras" in settings:
            settings = {**settings, "loras": loras_of(settings["loras"])}
        chosen = Settings.from_values(settings)
        chosen.check()  # the settings' own words before any layer is looked up
        host = KritaDocument(document, node)
        conditioning = conditioning_maps(document, given.controls, given.references)
        maps = replace(conditioning, mask=given.mask, blend=given.blend, context=given.context)
        if issubclass(request, p.StrengthMapRequest):
            maps = replace(maps, controls=(), references=())  # checked, but they change no map
        job = flow.prepare(host, chosen, maps=maps, request=request)
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
