"""Runs inside real GIMP 3 (gimp-console's python-fu-eval), not under pytest.

Reads a JSON spec (path in the global SPEC set by the -b code), builds each
scenario's image, drives `python-fu-differential-inpaint` NONINTERACTIVE and
writes a JSON verdict per scenario for the host-side test to judge. Nothing
here asserts: the host decides, so one broken scenario cannot hide the rest.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from array import array
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GObject  # noqa: E402

PROCEDURE = "python-fu-differential-inpaint"
MAP_PROCEDURE = "python-fu-differential-inpaint-strength-map"
PROBE = "python-fu-di-dialog-probe"
SOURCE_PARASITE = "differential-inpaint-source"
spec_dir = SPEC.rsplit("/", 1)[0]  # noqa: F821 - SPEC is set by the -b code
PRECISIONS = {
    "u8": (Gimp.Precision.U8_NON_LINEAR, "R'G'B'A u8"),
    "u16": (Gimp.Precision.U16_NON_LINEAR, "R'G'B'A u16"),
    "half": (Gimp.Precision.HALF_NON_LINEAR, "R'G'B'A half"),
    "float": (Gimp.Precision.FLOAT_NON_LINEAR, "R'G'B'A float"),
}


def read(drawable: Gimp.Drawable, x: int, y: int, width: int, height: int, babl: str) -> bytes:
    rect = Gegl.Rectangle.new(x, y, width, height)
    return bytes(drawable.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fill(layer: Gimp.Layer, alpha: bool) -> None:
    """A pattern with detail below 8 bits, so lost precision shows in the hashes."""
    width, height = layer.get_width(), layer.get_height()
    data = array("H")
    for y in range(height):
        row = array("H", [0, 0, 0, 0]) * width
        row[0::4] = array("H", ((x * 521 + y * 37) % 65536 for x in range(width)))
        row[1::4] = array("H", ((x * 13 + y * 1031) % 65536 for x in range(width)))
        row[2::4] = array("H", ((x * y * 7 + 12345) % 65536 for x in range(width)))
        if alpha:
            row[3::4] = array("H", (65535 - (x * y) % 20000 for x in range(width)))
        else:
            row[3::4] = array("H", [65535]) * width
        data.extend(row)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), "R'G'B'A u16", data.tobytes())
    buffer.flush()


def pattern8(ix: int, iy: int) -> int:
    """A map's 8-bit value at image pixel (ix, iy); test_in_gimp.pattern8 knows it too.
    128 and up: gray (Y') that a linear 8-bit layer mask stores exactly."""
    return 128 + (ix * 3 + iy * 7) % 128


def pattern16(ix: int, iy: int) -> int:
    """Light grays with detail below 8 bits (a linear 16-bit channel keeps them within 1)."""
    return 40000 + (ix * 521 + iy * 37) % 25000


def fill_map(drawable: Gimp.Drawable, deep: bool, zero_left: int = 0, gradient: bool = False) -> None:
    """The test pattern by image coordinates, written in the drawable's own encoding (so it
    is stored exactly): gray for channels and masks (16-bit with `deep`), for a layer
    R'G'B'A u8 with gray from the pattern and alpha (ix + iy) % 128 + 128. Columns left of
    image x `zero_left` are 0 (a map's keep area). `gradient`: black to white, left to right
    instead (what a painter might paint; for screenshots)."""
    _, ox, oy = drawable.get_offsets()
    width, height = drawable.get_width(), drawable.get_height()
    if gradient:
        row = bytes(0 if x + ox < zero_left else x * 255 // max(1, width - 1) for x in range(width))
        buffer = drawable.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, width, height), "Y' u8", row * height)
        buffer.flush()
        return
    if isinstance(drawable, Gimp.Channel):  # written as the plug-in reads it: gray as seen
        babl = "Y' u16" if deep else "Y' u8"
        if deep:
            data = array(
                "H",
                (
                    0 if x + ox < zero_left else pattern16(x + ox, y + oy)
                    for y in range(height)
                    for x in range(width)
                ),
            )
            raw = data.tobytes()
        else:
            raw = bytes(
                0 if x + ox < zero_left else pattern8(x + ox, y + oy)
                for y in range(height)
                for x in range(width)
            )
    else:
        babl = "R'G'B'A u8"
        raw = bytes(
            0
            if x + ox < zero_left
            else (pattern8(x + ox, y + oy) if c < 3 else (x + ox + y + oy) % 128 + 128)
            for y in range(height)
            for x in range(width)
            for c in range(4)
        )
    buffer = drawable.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), babl, raw)
    buffer.flush()


def add_maps(image: Gimp.Image, layer: Gimp.Layer, specs: list[dict[str, Any]], deep: bool) -> dict[str, Any]:
    """The drawables a scenario picks as maps, by key: {"key", "kind": channel | mask |
    layer | other-image, "name", "rect" (a layer's [x, y, w, h]), "zero_left", "gradient"}."""
    made: dict[str, Any] = {}
    for item in specs:
        kind, name = item["kind"], item.get("name", item["key"])
        if kind == "channel" or kind == "other-image":
            owner = image
            if kind == "other-image":
                owner = Gimp.Image.new(image.get_width(), image.get_height(), Gimp.ImageBaseType.RGB)
            drawable = Gimp.Channel.new(
                owner, name, owner.get_width(), owner.get_height(), 100.0, Gegl.Color.new("black")
            )
            owner.insert_channel(drawable, None, 0)
        elif kind == "mask":
            drawable = layer.create_mask(Gimp.AddMaskType.WHITE)
            layer.add_mask(drawable)
        else:
            x, y, w, h = item["rect"]
            drawable = Gimp.Layer.new(
                image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
            )
            image.insert_layer(drawable, None, 0)
            drawable.set_offsets(x, y)
        fill_map(drawable, deep, item.get("zero_left", 0), item.get("gradient", False))
        made[item["key"]] = drawable
    return made


def resolved(args: dict[str, Any], maps: dict[str, Any]) -> dict[str, Any]:
    """Arguments with "@key" values replaced by the map drawables they name."""
    return {k: maps[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in args.items()}


def under(result: Gimp.Layer, other: Gimp.Layer) -> bytes:
    """`other`'s R'G'B'A u8 pixels under `result`'s rectangle."""
    _, x, y = result.get_offsets()
    _, ox, oy = other.get_offsets()
    return read(other, x - ox, y - oy, result.get_width(), result.get_height(), "R'G'B'A u8")


def kept_where_zero(result: Gimp.Layer, source: Gimp.Layer, gray: bytes) -> dict[str, int]:
    """Over the result's rectangle: pixels where `gray` (a strength map or the selection,
    one byte a pixel) is 0 whose RGB differs from the source's (must be none) or whose
    alpha is not 0, and pixels where it is not 0 that changed (some must)."""
    new = read(result, 0, 0, result.get_width(), result.get_height(), "R'G'B'A u8")
    old = under(result, source)
    counts = {"zeros": 0, "zeros_changed": 0, "zeros_alpha": 0, "nonzero": 0, "nonzero_changed": 0}
    for i, g in enumerate(gray):
        changed = new[i * 4 : i * 4 + 3] != old[i * 4 : i * 4 + 3]
        if g == 0:
            counts["zeros"] += 1
            counts["zeros_changed"] += changed
            counts["zeros_alpha"] += new[i * 4 + 3] != 0
        else:
            counts["nonzero"] += 1
            counts["nonzero_changed"] += changed
    return counts


def describe(layer: Gimp.Layer) -> dict[str, Any]:
    _, x, y = layer.get_offsets()
    parent = layer.get_parent()
    return {
        "name": layer.get_name(),
        "x": x,
        "y": y,
        "width": layer.get_width(),
        "height": layer.get_height(),
        "parent": parent.get_name() if parent is not None else None,
        "visible": layer.get_visible(),
        "group": layer.is_group(),
        "marked": layer.get_parasite(SOURCE_PARASITE) is not None,
    }


def run_procedure(
    image: Gimp.Image,
    drawables: list[Gimp.Layer],
    args: dict[str, Any],
    mode: Gimp.RunMode,
    procedure: str = PROCEDURE,
) -> dict[str, Any]:
    """Run the plug-in as a script does; which arguments GIMP refused to set (out of range:
    GObject keeps the old value and prints a warning), its status and message."""
    proc = Gimp.get_pdb().lookup_procedure(procedure)
    config = proc.create_config()
    config.set_property("run-mode", mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    refused = []
    for name, value in args.items():
        config.set_property(name, value)
        if config.get_property(name) != value:
            refused.append(name)
    if refused:  # as a script would stop at GIMP's warning: nothing runs
        return {"refused": refused, "status": None, "message": None}
    result = proc.run(config)
    message = result.index(1) if result.length() > 1 else None
    return {"refused": [], "status": result.index(0).value_nick, "message": message}


def all_layers(image: Gimp.Image) -> list[Gimp.Layer]:
    """Every layer, top to bottom, a group's children right after the group."""
    found: list[Gimp.Layer] = []

    def walk(layers: list[Gimp.Layer]) -> None:
        for layer in layers:
            found.append(layer)
            if layer.is_group():
                walk(layer.get_children())

    walk(image.get_layers())
    return found


def run_directly(spec: dict[str, Any], image: Gimp.Image, layer: Gimp.Layer) -> tuple[str, Any]:
    """The plug-in's job code called in this process (with the installed package), so a
    scenario can act in the middle of a job as a painter would: at the first progress
    message, on this same thread, remove the source layer or close the image."""
    plugin_dir = "/root/.config/GIMP/3.0/plug-ins/differential-inpaint"
    for path in (plugin_dir + "/differential_inpaint_gimp/_vendor", plugin_dir):
        if path not in sys.path:
            sys.path.insert(0, path)
    from differential_inpaint_gimp import gimp_io
    from differential_inpaint_gimp.client import InpaintError, Settings, flow

    args = spec["args"]
    settings = Settings.from_values(
        {"prompt": args["prompt"], "steps": args.get("steps", 20), "server": args["server-url"]}
    )
    acted: list[str] = []
    bar = gimp_io.ProgressBar(gimp_io.action_text(image))

    def act(progress: Any) -> None:
        if not acted:
            acted.append(spec["mid_job"])
            if spec["mid_job"] == "remove-layer":
                image.remove_layer(layer)
            else:
                image.delete()
        bar.progress(progress)

    try:
        flow.run(gimp_io.GimpDocument(image, layer), settings, client="in-gimp-test", on_progress=act)
    except InpaintError as exc:
        return "execution-error", exc.message
    return "success", None


def alpha_stats(layer: Gimp.Layer, selection_mask: bytes) -> dict[str, Any]:
    """Alpha of the new layer against the selection over the same pixels."""
    alpha = array("f", read(layer, 0, 0, layer.get_width(), layer.get_height(), "R'G'B'A float"))[3::4]
    stats = {"outside": 0, "outside_nonzero": 0, "inside": 0, "inside_max": 0.0, "full": 0, "full_zero": 0}
    for a, m in zip(alpha, selection_mask, strict=True):
        if m == 0:
            stats["outside"] += 1
            stats["outside_nonzero"] += a != 0.0
        else:
            stats["inside"] += 1
            stats["inside_max"] = max(stats["inside_max"], a)
            if m == 255:
                stats["full"] += 1
                stats["full_zero"] += a == 0.0
    return stats


def scenario(spec: dict[str, Any]) -> dict[str, Any]:
    precision, babl = PRECISIONS[spec["precision"]]
    width, height = spec["image"]
    image = Gimp.Image.new_with_precision(width, height, Gimp.ImageBaseType.RGB, precision)
    src = spec["layer"]
    kind = Gimp.ImageType.RGBA_IMAGE if src["alpha"] else Gimp.ImageType.RGB_IMAGE
    layer = Gimp.Layer.new(image, "source", src["width"], src["height"], kind, 100.0, Gimp.LayerMode.NORMAL)
    parent = None
    if spec.get("group"):  # the source inside a group, below a sibling
        parent = Gimp.GroupLayer.new(image, "group")
        image.insert_layer(parent, None, 0)
        sibling = Gimp.Layer.new(
            image, "sibling", 8, 8, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
        )
        image.insert_layer(sibling, parent, 0)
    image.insert_layer(layer, parent, 1 if parent is not None else 0)
    layer.set_offsets(src["x"], src["y"])
    fill(layer, src["alpha"])
    if spec.get("layer_above"):
        top = Gimp.Layer.new(image, "above", 16, 16, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(top, None, 0)
    sel = spec.get("selection")
    if sel:
        x, y, w, h = sel["rect"]
        if sel["shape"] == "ellipse":
            image.select_ellipse(Gimp.ChannelOps.REPLACE, x, y, w, h)
        else:
            image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
        if sel.get("feather"):
            Gimp.Selection.feather(image, sel["feather"])
    maps = add_maps(image, layer, spec.get("maps", []), spec["precision"] != "u8")
    ids_before = {item.get_id() for item in all_layers(image)}
    verdict = {
        "precision_read": image.get_precision().value_nick,
        "layers_before": [describe(item) for item in all_layers(image)],
        "drawable_sha_before": sha(read(layer, 0, 0, src["width"], src["height"], babl)),
        "selection_bounds": None,
    }
    if not Gimp.Selection.is_empty(image):
        _, _, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
        verdict["selection_bounds"] = [x1, y1, x2, y2]
        mask = read(image.get_selection(), 0, 0, width, height, "Y u8")
        verdict["selection_levels"] = len(set(mask))

    if spec.get("mid_job"):
        started = time.monotonic()
        verdict["status"], verdict["message"] = run_directly(spec, image, layer)
        verdict["seconds"] = round(time.monotonic() - started, 3)
        verdict["image_valid"] = image.is_valid()
        verdict["source_valid"] = layer.is_valid()
        if not image.is_valid():
            return verdict
        if not layer.is_valid():
            layers = all_layers(image)
            verdict["layers_after"] = [describe(item) for item in layers]
            new = [item for item in layers if item.get_id() not in ids_before]
            verdict["new_layer"] = describe(new[0]) if new else None
            return verdict
    else:
        probe = spec.get("probe")  # answer the real dialog through the test-only probe plug-in
        name = spec.get("procedure", PROCEDURE)
        if probe:  # the probe's twin of the procedure: its name ends the same
            name = PROBE + name[len(PROCEDURE) :]
        proc = Gimp.get_pdb().lookup_procedure(name)
        config = proc.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", image)
        # "run_on": "mask": the painter is editing the layer mask (its thumbnail clicked).
        config.set_core_object_array(
            "drawables", [layer.get_mask() if spec.get("run_on") == "mask" else layer]
        )
        refused = []
        for name, value in resolved({**spec["args"], **(probe or {})}, maps).items():
            config.set_property(name, value)
            if config.get_property(name) != value:
                refused.append(name)
        verdict["refused"] = refused
        if probe:
            config.set_property("verdict", spec_dir + "/dialog-" + spec["name"] + ".json")
        started = time.monotonic()
        if refused:  # as a script would stop at GIMP's warning: nothing runs
            verdict["status"], verdict["message"] = None, None
        else:
            result = proc.run(config)
            verdict["status"] = result.index(0).value_nick
            verdict["message"] = result.index(1) if result.length() > 1 else None
        verdict["seconds"] = round(time.monotonic() - started, 3)

        if probe and not refused:
            with open(spec_dir + "/dialog-" + spec["name"] + ".json") as f:
                verdict["dialog"] = json.load(f)
    layers = all_layers(image)
    verdict["layers_after"] = [describe(item) for item in layers]
    verdict["selected_after"] = [item.get_name() for item in image.get_selected_layers()]
    new_items = [item for item in layers if item.get_id() not in ids_before]
    verdict["new_items"] = [describe(item) for item in new_items]
    then = spec.get("then")
    if then:
        # Ctrl+F (Repeat) and Re-Show Last run on the selected layers; a painter may also
        # have clicked a result (its group, or a layer in it) first.
        if then["select"] == "selected":
            drawables = list(image.get_selected_layers())
        else:
            drawables = [new_items[then["select"]]]
        verdict["then_on"] = [item.get_name() for item in drawables]
        ran = run_procedure(
            image,
            drawables,
            resolved({**spec["args"], **then["args"]}, maps),
            Gimp.RunMode.NONINTERACTIVE,
            then.get("procedure", PROCEDURE),
        )
        verdict["then_status"], verdict["then_message"] = ran["status"], ran["message"]
        later = [item for item in all_layers(image) if item.get_id() not in ids_before]
        verdict["then_new_items"] = [describe(item) for item in later[len(new_items) :]]
        if then.get("kept_where_zero") and new_items and later[len(new_items) :]:
            # The first run added the strength map, the second the result: where the map is 0
            # the result must be the source's pixels, bit for bit.
            result = later[len(new_items)]
            verdict["kept"] = kept_where_zero(result, layer, under(result, new_items[0])[1::4])
        verdict["then_layers_after"] = [describe(item) for item in all_layers(image)]
        verdict["then_selected_after"] = [item.get_name() for item in image.get_selected_layers()]
    verdict["drawable_sha_after"] = sha(read(layer, 0, 0, src["width"], src["height"], babl))
    new = [item for item in layers if item.get_id() not in ids_before]
    verdict["new_layer"] = None
    if new:
        created = new[0]
        info = describe(created)
        dx, dy = src["x"], src["y"]
        region = (info["x"] - dx, info["y"] - dy, info["width"], info["height"])
        if Gimp.Selection.is_empty(image):
            mask = b"\xff" * (info["width"] * info["height"])
        else:
            mask = read(image.get_selection(), info["x"], info["y"], info["width"], info["height"], "Y u8")
        info.update(
            index=image.get_item_position(created),
            source_index=image.get_item_position(layer),
            has_alpha=created.has_alpha(),
            sha=sha(read(created, 0, 0, info["width"], info["height"], babl)),
            source_region_sha=sha(read(layer, *region, babl)),
            mask_sha=sha(mask),
            alpha=alpha_stats(created, mask),
        )
        if spec.get("kept"):  # the selection's zeros, pixel by pixel: only where a test asks
            info["kept"] = kept_where_zero(created, layer, mask)
        verdict["new_layer"] = info
    return verdict


def choices(arg: Any) -> list[str] | None:
    """The values a choice argument takes, or None for another kind."""
    if "Choice" not in GObject.type_name(arg.__gtype__):  # GimpParamChoice
        return None
    return list(Gimp.param_spec_choice_get_choice(arg).list_nicks())


def procedure_info(name: str) -> dict[str, Any]:
    """How GIMP registered the procedure (a wrong registration fails silently in GIMP)."""
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        return {"registered": False}
    return {
        "registered": True,
        "menu_label": proc.get_menu_label(),
        "menu_paths": list(proc.get_menu_paths()),
        "image_types": proc.get_image_types(),
        "arguments": [arg.name for arg in proc.get_arguments()],
        "defaults": {
            name: value
            for name, value in ((arg.name, arg.get_default_value()) for arg in proc.get_arguments())
            if isinstance(value, (str, int, float))
        },
        "ranges": {
            arg.name: [arg.minimum, arg.maximum] for arg in proc.get_arguments() if hasattr(arg, "minimum")
        },
        "blurbs": {arg.name: arg.get_blurb() for arg in proc.get_arguments()},
        "kinds": {arg.name: GObject.type_name(arg.__gtype__) for arg in proc.get_arguments()},
        "choices": {arg.name: choices(arg) for arg in proc.get_arguments() if choices(arg) is not None},
    }


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    verdicts: dict[str, Any] = {}
    for key, name in (("procedure", PROCEDURE), ("map-procedure", MAP_PROCEDURE)):
        try:
            verdicts[key] = procedure_info(name)
        except Exception:
            verdicts[key] = {"crashed": traceback.format_exc()}
    for item in spec["scenarios"]:
        started = time.monotonic()
        try:
            verdicts[item["name"]] = scenario(item)
        except Exception:
            verdicts[item["name"]] = {"crashed": traceback.format_exc()}
        verdicts[item["name"]]["scenario_seconds"] = round(time.monotonic() - started, 3)
        # Written after each scenario, so a crash of GIMP itself still leaves the rest.
        with open(spec["out"], "w") as f:
            json.dump(verdicts, f, indent=1)


main(SPEC)  # noqa: F821 - SPEC is defined by the -b code before this file is exec'd
