"""The plugin's core against the stand-in `krita` module: what is read, what is
sent, what is inserted, and what happens on every failure. No Qt, no Krita."""

from __future__ import annotations

import ast
import gc
import importlib
import struct
import threading
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.fake_daemon import FAIL_MESSAGE, WRONG_TOKEN, FakeDaemon, expected_result

from . import fake_krita

SEL_X, SEL_Y, SEL_W, SEL_H = 100, 60, 40, 30


def pattern(w: int, h: int, bpp: int, salt: int = 0) -> bytes:
    """Distinct bytes per position, so a wrong offset or order shows."""
    return bytes((i * 7 + salt) % 251 for i in range(w * h * bpp))


def new_document(
    krita: fake_krita.Krita, w: int = 256, h: int = 192, depth: str = "U8", model: str = "RGBA"
) -> tuple[fake_krita.Document, fake_krita.Node]:
    doc = krita.createDocument(w, h, "test", model, depth, "", 72.0)
    layer = doc.topLevelNodes()[0]
    layer.paint(pattern(w, h, layer.bpp), 0, 0, w, h)
    doc.setActiveNode(layer)
    return doc, layer


def feathered_selection(doc: fake_krita.Document, x: int, y: int, w: int, h: int) -> fake_krita.Selection:
    """A box whose edge ramps 0 -> 255 over 8 px, as Krita's feather gives."""
    data = bytearray(doc.w * doc.h)
    for row in range(y, y + h):
        for col in range(x, x + w):
            edge = min(row - y, y + h - 1 - row, col - x, x + w - 1 - col)
            data[row * doc.w + col] = min(255, 32 * (edge + 1))
    selection = fake_krita.Selection(doc.w, doc.h, bytes(data))
    doc.setSelection(selection)
    return selection


def settings(plugin: ModuleType, **changes: object) -> object:
    values = {"prompt": "a red door", "steps": 3, **changes}
    return plugin.Settings.from_values(values)


def prepare(plugin: ModuleType, doc: object, node: object, chosen: object) -> object:
    """What the dialog, the docker and `inpaint_layer` do first: read Krita, build the submit."""
    return plugin.client.flow.prepare(plugin.krita_io.KritaDocument(doc, node), chosen)


# --- reading and planning ------------------------------------------------------------


def test_feathered_selection_sends_only_the_region_with_a_soft_mask(plugin, krita):
    doc, layer = new_document(krita)
    selection = feathered_selection(doc, SEL_X, SEL_Y, SEL_W, SEL_H)
    job = prepare(plugin, doc, None, settings(plugin, padding=16))
    p = plugin.protocol
    expected = p.context_region(p.Rect(SEL_X, SEL_Y, SEL_W, SEL_H), p.Rect(0, 0, 256, 192), padding=16)
    assert job.region == expected
    region = (expected.x, expected.y, expected.width, expected.height)
    # Only the region's bytes are read, of the layer and of the selection.
    assert [(e.kind, e.rect) for e in doc.events] == [("read", region)]
    assert selection.reads == [region]
    submit = job.submit
    assert (submit.x, submit.y) == (expected.x, expected.y)
    assert submit.image.format is p.PixelFormat.BGRA8
    assert submit.image.color is p.ColorEncoding.SRGB
    assert submit.image.data == layer.pixelData(*region)
    assert submit.mask.data == selection.pixelData(*region)
    assert len(set(submit.mask.data)) > 3  # soft stays soft
    assert submit.params.output_format is p.PixelFormat.BGRA8
    assert submit.params.prompt == "a red door"
    assert submit.params.steps == 3


def test_no_selection_means_the_whole_layer_at_full_mask(plugin, krita):
    doc, layer = new_document(krita, 200, 120)
    layer.paint(pattern(50, 40, 4), 30, 20, 50, 40)  # painted area only
    job = prepare(plugin, doc, layer, settings(plugin, strength=0.4))
    region = job.region
    assert region.contains(plugin.protocol.Rect(30, 20, 50, 40))
    assert region.width % 8 == 0 and region.height % 8 == 0
    mask = job.submit.mask.data
    for row in range(region.height):
        for col in range(region.width):
            inside = 30 <= region.x + col < 80 and 20 <= region.y + row < 60
            assert mask[row * region.width + col] == (255 if inside else 0)
    assert job.submit.params.strength == pytest.approx(0.4)
    assert job.whole_layer


def test_a_moved_layer_is_read_where_it_now_lies(plugin, krita):
    doc, layer = new_document(krita, 200, 120)
    layer.paint(pattern(40, 40, 4, salt=3), 0, 0, 40, 40)
    layer.move(120, 64)  # as Node.move: the pixels now start at 120,64
    job = prepare(plugin, doc, layer, settings(plugin))
    assert job.region.contains(plugin.protocol.Rect(120, 64, 40, 40))
    r = job.region
    assert job.submit.image.data == layer.pixelData(r.x, r.y, r.width, r.height)
    # The layer's top-left pixel sits at its offset inside the region.
    at = ((64 - r.y) * r.width + (120 - r.x)) * 4
    assert job.submit.image.data[at : at + 4] == pattern(40, 40, 4, salt=3)[:4]


@pytest.mark.parametrize(
    ("depth", "fmt", "color"),
    [
        ("U8", "bgra8", "srgb"),
        ("U16", "bgra16", "linear"),
        ("F16", "rgbaf16", "linear"),
        ("F32", "rgbaf32", "linear"),
    ],
)
def test_each_depth_is_sent_natively_and_asked_back_in_kind(plugin, krita, depth, fmt, color):
    doc, layer = new_document(krita, 64, 64, depth=depth)
    feathered_selection(doc, 8, 8, 20, 20)
    job = prepare(plugin, doc, None, settings(plugin, padding=8))
    image = job.submit.image
    assert image.format.value == fmt
    assert image.color.value == color  # Krita's default deep profiles are linear (…-g10)
    assert len(image.data) == image.width * image.height * image.format.bytes_per_pixel
    assert job.submit.params.output_format.value == fmt


def test_srgb_profile_on_a_deep_document_is_sent_as_srgb(plugin, krita):
    doc = fake_krita.Document(32, 32, depth="U16", profile="sRGB-elle-V2-srgbtrc.icc")
    krita.docs.append(doc)
    layer = doc.add_layer("L")
    layer.paint(pattern(32, 32, 8), 0, 0, 32, 32)
    job = prepare(plugin, doc, layer, settings(plugin))
    assert job.submit.image.color is plugin.protocol.ColorEncoding.SRGB


def test_a_group_sends_its_projection(plugin, krita):
    doc, _ = new_document(krita, 64, 64)
    group = doc.add_layer("group", "grouplayer")
    group.projection = pattern(64, 64, 4, salt=9)
    job = prepare(plugin, doc, group, settings(plugin))
    assert [e.kind for e in doc.events] == ["projection"]
    assert job.submit.image.data == pattern(64, 64, 4, salt=9)


@pytest.mark.parametrize("model", ["GRAYA", "CMYKA", "LABA"])
def test_other_colour_models_are_refused_clearly(plugin, krita, model):
    doc, layer = new_document(krita, 32, 32, model=model)
    with pytest.raises(plugin.InpaintError) as caught:
        prepare(plugin, doc, layer, settings(plugin))
    assert caught.value.code == "unsupported_color_model"
    assert model in caught.value.message and "RGB/Alpha" in caught.value.message
    assert doc.events == []


def test_a_layer_in_another_colour_space_than_the_image_is_refused(plugin, krita):
    doc, layer = new_document(krita, 32, 32)
    layer.depth = "U16"
    with pytest.raises(plugin.InpaintError, match="Convert Layer Color Space"):
        prepare(plugin, doc, layer, settings(plugin))


def test_an_empty_or_off_canvas_selection_is_refused(plugin, krita):
    doc, layer = new_document(krita, 64, 64)
    doc.setSelection(fake_krita.Selection(64, 64))  # exists, selects nothing
    job = prepare(plugin, doc, layer, settings(plugin))  # = no selection: whole layer
    assert job.whole_layer

    class OffCanvas(fake_krita.Selection):
        def x(self) -> int:
            return 500

        def y(self) -> int:
            return 500

        def width(self) -> int:
            return 10

        def height(self) -> int:
            return 10

    doc.setSelection(OffCanvas(64, 64))
    with pytest.raises(plugin.InpaintError, match="does not touch the layer"):
        prepare(plugin, doc, layer, settings(plugin))


def test_no_layer_or_a_mask_is_refused(plugin, krita):
    doc, _ = new_document(krita, 32, 32)
    doc.setActiveNode(None)
    with pytest.raises(plugin.InpaintError, match="Select the layer"):
        prepare(plugin, doc, None, settings(plugin))
    mask = doc.add_layer("sel", "transparencymask")
    with pytest.raises(plugin.InpaintError, match="is a mask"):
        prepare(plugin, doc, mask, settings(plugin))
    with pytest.raises(plugin.InpaintError, match="Open an image"):
        prepare(plugin, None, None, settings(plugin))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"steps": 0}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"seed": -3}, "seed"),
        ({"feather": -1.0}, "feather"),
        ({"padding": -8}, "padding"),
    ],
)
def test_bad_settings_are_refused_before_reading(plugin, krita, change, words):
    doc, layer = new_document(krita, 32, 32)
    with pytest.raises(plugin.InpaintError, match=f"(?i){words}"):
        prepare(plugin, doc, layer, settings(plugin, **change))
    assert doc.events == []


def test_full_mask_matches_a_plain_construction(plugin):
    Rect = plugin.protocol.Rect
    region = Rect(10, 20, 16, 8)
    for extent in (Rect(12, 22, 5, 3), Rect(0, 0, 100, 100), Rect(10, 20, 16, 8), Rect(40, 40, 5, 5)):
        mask = plugin.client.flow.full_mask(region, extent)
        expected = bytes(
            255 if extent.x <= region.x + c < extent.right and extent.y <= region.y + r < extent.bottom else 0
            for r in range(region.height)
            for c in range(region.width)
        )
        assert mask == expected


# --- inserting ---------------------------------------------------------------------


def fake_result(plugin: ModuleType, job: object, **changes: object) -> object:
    p = plugin.protocol
    image = job.submit.image
    data = expected_result(image, job.submit.mask.data)
    fields = {
        "image": p.Image(image.width, image.height, image.format, data),
        "x": job.region.x,
        "y": job.region.y,
        **changes,
    }
    return p.Result(job.submit.job_id, seed=7, **fields)


def test_the_result_becomes_one_new_layer_above_in_one_undo_step(plugin, krita):
    doc, layer = new_document(krita)
    top = doc.add_layer("top")
    feathered_selection(doc, SEL_X, SEL_Y, SEL_W, SEL_H)
    before = layer.data
    job = prepare(plugin, doc, layer, settings(plugin))
    doc.events.clear()
    result = fake_result(plugin, job)
    new = plugin.client.flow.finish(job, [result])
    assert new.name() == "a red door \u00b7 7"
    assert [n.name() for n in doc.topLevelNodes()] == ["Background", "a red door \u00b7 7", "top"]
    # Pixels were set while the layer was outside the image, then one undoable add.
    assert [(e.kind, e.node, e.attached) for e in doc.events] == [
        ("setPixelData", "a red door \u00b7 7", False),
        ("addChildNode", "a red door \u00b7 7", True),
    ]
    assert len(doc.undo_steps) == 1 and doc.writes_to_image == []
    r = job.region
    assert (new.px, new.py, new.pw, new.ph) == (r.x, r.y, r.width, r.height)
    assert new.data == result.image.data  # as it came: never multiplied by the mask again
    assert layer.data == before and top.data == b""


@pytest.mark.parametrize(
    "change",
    [
        {"x": 3},
        {"image": None},  # replaced below by a smaller image
        {"format": "rgba8"},
    ],
)
def test_a_result_that_does_not_fit_is_refused_and_nothing_inserted(plugin, krita, change):
    p = plugin.protocol
    doc, layer = new_document(krita, 64, 64)
    feathered_selection(doc, 8, 8, 16, 16)
    job = prepare(plugin, doc, layer, settings(plugin))
    image = job.submit.image
    if "image" in change:
        change = {"image": p.Image(8, 8, image.format, bytes(8 * 8 * 4))}
    elif "format" in change:
        change = {"image": p.Image(image.width, image.height, p.PixelFormat.RGBA8, image.data)}
    doc.events.clear()
    with pytest.raises(plugin.InpaintError) as caught:
        plugin.client.flow.finish(job, [fake_result(plugin, job, **change)])
    assert caught.value.code == "protocol"
    assert doc.events == [] and len(doc.topLevelNodes()) == 1


def test_a_result_for_a_closed_image_is_dropped(plugin, krita):
    doc, layer = new_document(krita, 64, 64)
    job = prepare(plugin, doc, layer, settings(plugin))
    krita.docs.remove(doc)
    doc.events.clear()
    with pytest.raises(plugin.InpaintError, match="closed"):
        plugin.client.flow.finish(job, [fake_result(plugin, job)])
    assert doc.events == []


# --- maps: a layer or mask as the change map, a blend map, the context ---------------


def strength_layer(doc: fake_krita.Document, name: str = "Strength", **place: int) -> fake_krita.Node:
    """A paint layer painted only over (x, y, w, h), by default 40,30 60x50."""
    x, y, w, h = place.get("x", 40), place.get("y", 30), place.get("w", 60), place.get("h", 50)
    node = doc.add_layer(name)
    node.paint(pattern(w, h, node.bpp, salt=3), x, y, w, h)
    return node


def prepare_maps(plugin: ModuleType, doc: object, node: object, chosen: object, **maps: object) -> object:
    flow = plugin.client.flow
    return flow.prepare(plugin.krita_io.KritaDocument(doc, node), chosen, maps=flow.Maps(**maps))


def test_find_layer_takes_the_first_name_in_layer_stack_order_masks_included(plugin, krita):
    doc, layer = new_document(krita, 64, 64)
    group = doc.add_layer("Group", "grouplayer")
    inner = doc.add_layer("Strength", parent=group)
    mask = doc.add_layer("Mask", "transparencymask", parent=layer)
    top = doc.add_layer("Strength")
    host = plugin.krita_io.KritaDocument(doc, layer)
    assert host.find_layer("Strength") is top  # the topmost, as the Layers docker lists them
    assert host.find_layer("Mask") is mask
    top.setName("Other")
    assert host.find_layer("Strength") is inner
    with pytest.raises(plugin.InpaintError) as caught:
        host.find_layer("Nope")
    assert caught.value.code == "missing_layer" and "'Nope'" in caught.value.message


def test_a_paint_layer_map_sends_its_own_bytes_beside_the_selection(plugin, krita):
    doc, layer = new_document(krita)
    strength = strength_layer(doc)
    selection = feathered_selection(doc, 30, 20, 50, 40)
    job = prepare_maps(plugin, doc, layer, settings(plugin, padding=8), mask="Strength")
    p = plugin.protocol
    target = p.Rect(30, 20, 50, 40).intersect(p.Rect(40, 30, 60, 50))
    assert job.region == p.context_region(target, p.Rect(0, 0, 256, 192), padding=8)
    region = (job.region.x, job.region.y, job.region.width, job.region.height)
    submit = job.submit
    assert submit.mask.format is p.PixelFormat.BGRA8 and submit.mask.color is p.ColorEncoding.SRGB
    assert submit.mask.data == strength.pixelData(*region)
    assert submit.selection is not None and submit.selection.data == selection.pixelData(*region)
    assert submit.blend_mask is None
    # Without the limit the selection is not sent and does not bound the area.
    job = prepare_maps(plugin, doc, layer, settings(plugin, limit_to_selection=False), mask=strength)
    assert job.submit.selection is None and job.region.contains(p.Rect(40, 30, 60, 50))


def test_a_mask_node_is_a_gray8_map_and_a_group_its_projection(plugin, krita):
    doc, layer = new_document(krita, 64, 64)
    mask = doc.add_layer("Mask", "transparencymask", parent=layer)
    mask.paint(bytes(range(64)) * 64, 0, 0, 64, 64)
    group = doc.add_layer("Group", "grouplayer")
    group.projection = pattern(64, 64, 4, salt=5)
    job = prepare_maps(plugin, doc, layer, settings(plugin), mask="Mask", blend="Group", context="image")
    p = plugin.protocol
    assert job.region == p.Rect(0, 0, 64, 64)
    assert job.submit.mask.format is p.MaskFormat.GRAY8 and job.submit.mask.data == bytes(range(64)) * 64
    assert job.submit.blend_mask.format is p.PixelFormat.BGRA8
    assert job.submit.blend_mask.data == pattern(64, 64, 4, salt=5)


def test_a_graya_layer_is_spread_into_rgba_without_per_pixel_python(plugin, krita):
    doc, layer = new_document(krita, 32, 32, depth="U16")
    gray = doc.add_layer("Gray")
    gray.model, gray.profile = "GRAYA", "Gray-D50-elle-V2-g10.icc"
    gray.paint(struct.pack("<4H", 1000, 60000, 2000, 30000) * 512, 0, 0, 32, 32)
    mask = prepare_maps(plugin, doc, layer, settings(plugin), mask=gray).submit.mask
    p = plugin.protocol
    assert mask.format is p.PixelFormat.BGRA16 and mask.color is p.ColorEncoding.LINEAR
    assert mask.data[:16] == struct.pack("<8H", 1000, 1000, 1000, 60000, 2000, 2000, 2000, 30000)
    assert plugin.krita_io.gray_as_rgba(bytes([7, 200]), "B") == bytes([7, 7, 7, 200])


def test_a_map_in_an_unreadable_colour_model_is_refused_and_nothing_sent(plugin, krita):
    doc, layer = new_document(krita, 32, 32)
    cmyk = strength_layer(doc, "Cmyk", x=0, y=0, w=32, h=32)
    cmyk.model = "CMYKA"
    with pytest.raises(plugin.InpaintError) as caught:
        prepare_maps(plugin, doc, layer, settings(plugin), mask="Cmyk")
    assert caught.value.code == "unsupported_color_model" and "Cmyk" in caught.value.message


def test_strength_map_layer_adds_one_gray_layer_from_the_daemons_map(plugin, krita, daemon: FakeDaemon):
    from tests.support.fake_daemon import gray_image, map_bytes

    doc, layer = new_document(krita, 128, 96)
    strength_layer(doc)
    doc.setActiveNode(layer)
    before, nodes = layer.data, doc.topLevelNodes()
    new = plugin.strength_map_layer(
        doc, mask="Strength", mask_gamma=2.0, context=(10, 10, 100, 80), server=daemon.url
    )
    submit = daemon.submits[-1]
    assert type(submit).__name__ == "StrengthMapRequest"  # the daemon side's own protocol class
    assert (submit.x, submit.y, submit.image.width, submit.image.height) == (10, 10, 100, 80)
    assert submit.params.mask_gamma == 2.0
    assert new.name() == "Strength map" and doc.topLevelNodes() == [nodes[0], new, *nodes[1:]]
    assert new.data == gray_image(submit.image, map_bytes(submit.mask)).data
    assert layer.data == before and len(doc.undo_steps) == 1


@pytest.mark.parametrize(
    ("values", "code", "words"),
    [
        ({"mask": "Missing"}, "missing_layer", "'Missing'"),
        ({"mask": "Strength", "mask_gamma": 0.0}, "invalid_settings", "Map gamma"),
        ({"mask": "Strength", "mask_black": 0.6, "mask_white": 0.4}, "invalid_settings", "black point"),
        ({"context": (500, 500, 10, 10)}, "invalid_settings", "outside the image"),
        ({"depth": "sideways"}, "invalid_settings", "Depth map"),
    ],
)
def test_bad_map_input_is_refused_in_words_and_changes_nothing(
    plugin, krita, dead_server, values, code, words
):
    doc, layer = new_document(krita, 64, 64)
    strength_layer(doc, x=0, y=0, w=64, h=64)
    feathered_selection(doc, 8, 8, 32, 32)
    nodes = doc.topLevelNodes()
    for run in (plugin.inpaint_layer, plugin.strength_map_layer):
        with pytest.raises(plugin.InpaintError) as caught:
            run(doc, layer, prompt="x", server=dead_server, **values)
        assert caught.value.code == code and words in caught.value.message, caught.value.message
    assert doc.topLevelNodes() == nodes and doc.undo_steps == [] and doc.writes_to_image == []


# --- the blocking entry point, end to end over a real websocket ----------------------


def test_inpaint_layer_end_to_end(plugin, krita, daemon: FakeDaemon):
    doc, layer = new_document(krita, 128, 96, depth="U16")
    feathered_selection(doc, 30, 20, 40, 30)
    before = layer.data
    new = plugin.inpaint_layer(doc, prompt="moss", steps=4, seed=11, model="fake-xl", server=daemon.url)
    submit = daemon.submits[-1]
    assert submit.params.seed == 11 and submit.params.model == "fake-xl" and submit.params.steps == 4
    assert submit.params.output_format.value == "bgra16"
    assert new.name() == "moss \u00b7 11"
    assert (new.px, new.py, new.pw, new.ph) == (submit.x, submit.y, submit.image.width, submit.image.height)
    alpha = struct.unpack(f"<{len(new.data) // 2}H", new.data)[3::4]
    assert all(a == 0 for a, m in zip(alpha, submit.mask.data, strict=True) if m == 0)
    assert layer.data == before
    assert len(doc.undo_steps) == 1 and doc.writes_to_image == []
    assert doc.activeNode() is layer  # the painting stays active: "run again" works on it


def test_daemon_not_running_gives_the_start_hint_and_changes_nothing(plugin, krita, dead_server):
    doc, layer = new_document(krita, 64, 64)
    feathered_selection(doc, 8, 8, 16, 16)
    nodes_before = doc.topLevelNodes()
    with pytest.raises(plugin.DaemonUnavailable) as caught:
        plugin.inpaint_layer(doc, prompt="x", server=dead_server)
    assert "differential-inpaint serve" in caught.value.message
    assert doc.topLevelNodes() == nodes_before
    assert [e.kind for e in doc.events] == ["read"]  # read the region, wrote nothing


@pytest.mark.parametrize(
    ("prompt", "code", "words"),
    [
        ("fail: on purpose", "job_failed", FAIL_MESSAGE),
        ("drop: mid-job", "connection_lost", "lost"),
        ("shift: broken daemon", "protocol", "does not fit"),
    ],
)
def test_job_failures_are_clear_and_change_nothing(plugin, krita, daemon, prompt, code, words):
    doc, layer = new_document(krita, 64, 64)
    feathered_selection(doc, 8, 8, 16, 16)
    with pytest.raises(plugin.InpaintError) as caught:
        plugin.inpaint_layer(doc, prompt=prompt, server=daemon.url)
    assert caught.value.code == code
    assert words in caught.value.message
    assert len(doc.topLevelNodes()) == 1 and doc.undo_steps == []


def test_the_token_reaches_the_daemon_and_a_wrong_one_is_explained(plugin, krita, daemon):
    doc, _ = new_document(krita, 64, 64)
    feathered_selection(doc, 8, 8, 16, 16)
    plugin.inpaint_layer(doc, prompt="with a token", server=daemon.url, token="s3cret")
    assert daemon.submits[-1].params.prompt == "with a token" and daemon.tokens[-1] == "s3cret"
    plugin.inpaint_layer(doc, prompt="without", server=daemon.url)
    assert daemon.tokens[-1] is None
    with pytest.raises(plugin.InpaintError) as caught:
        plugin.inpaint_layer(doc, prompt="x", server=daemon.url, token=WRONG_TOKEN)
    assert caught.value.code == "unauthorized" and "token" in caught.value.message


def test_a_layer_too_big_for_the_daemon_is_refused_before_reading(plugin, krita):
    """No selection on a huge layer: refused up front, not after reading gigabytes."""
    doc = krita.createDocument(4200, 4100, "huge", "RGBA", "U8", "", 72.0)
    layer = doc.topLevelNodes()[0]  # empty: its extent is the whole canvas
    doc.setActiveNode(layer)
    with pytest.raises(plugin.InpaintError) as caught:
        prepare(plugin, doc, layer, settings(plugin))
    assert caught.value.code == "too_large"
    assert "whole layer is 4200x4100" in caught.value.message
    assert "Select a smaller area" in caught.value.message
    assert doc.events == []  # nothing was read
    # A small selection on the same layer is fine: only its region is read.
    feathered_selection(doc, 2000, 2000, 30, 30)
    job = prepare(plugin, doc, layer, settings(plugin))
    assert job.region.width == plugin.protocol.DEFAULT_MIN_SIZE and [e.kind for e in doc.events] == ["read"]


@pytest.mark.parametrize(
    ("batch", "group", "children"),
    [
        (
            {"count": 3, "seed": 40},
            "moss \u00b7 3 variations",
            ["moss \u00b7 40", "moss \u00b7 41", "moss \u00b7 42"],
        ),
        ({"fan": [0.4, 0.8], "seed": 5}, "moss \u00b7 strength fan", ["moss \u00b7 40%", "moss \u00b7 80%"]),
    ],
)
def test_a_job_of_several_results_becomes_one_group_in_one_undo_step(
    plugin, krita, daemon, batch, group, children
):
    doc, layer = new_document(krita, 96, 96)
    top = doc.add_layer("top")
    feathered_selection(doc, 20, 20, 40, 30)
    new = plugin.inpaint_layer(doc, layer, prompt="moss", steps=2, server=daemon.url, **batch)
    assert new.type() == "grouplayer" and new.name() == group
    assert [n.name() for n in doc.topLevelNodes()] == ["Background", group, "top"]
    # Top to bottom as the results came: Krita lists children bottom first.
    assert [n.name() for n in reversed(new.childNodes())] == children
    assert [n.visible() for n in reversed(new.childNodes())] == [True] + [False] * (len(children) - 1)
    assert len(doc.undo_steps) == 1 and doc.writes_to_image == []  # the children went in with setChildNodes
    assert doc.activeNode() is layer and top.data == b""


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"count": 0}, "Variations must be between 1 and 8, not 0"),
        ({"count": 9}, "Variations must be between 1 and 8, not 9"),
        ({"fan": [0.0, 0.5]}, "Strength fan value must be above 0% and at most 100%, not 0%"),
        ({"fan": [1.5]}, "not 150%"),
        ({"count": 3, "fan": [0.4, 0.8]}, "cannot be used together"),
    ],
)
def test_bad_counts_and_fans_are_refused_in_words(plugin, krita, values, words):
    doc, layer = new_document(krita, 32, 32)
    with pytest.raises(plugin.InpaintError, match=words):
        plugin.inpaint_layer(doc, layer, prompt="x", server="ws://127.0.0.1:9", **values)
    assert len(doc.topLevelNodes()) == 1 and doc.events == []


def test_a_bad_address_is_explained(plugin, krita):
    doc, _ = new_document(krita, 32, 32)
    with pytest.raises(plugin.InpaintError, match="not a daemon address"):
        plugin.inpaint_layer(doc, prompt="x", server="ftp://example")


def test_the_job_thread_cancels(plugin, krita, daemon):
    doc, layer = new_document(krita, 64, 64)
    job = prepare(plugin, doc, layer, settings(plugin, prompt="slow: until cancelled"))
    outcome: dict[str, object] = {}
    progressed = threading.Event()
    done = threading.Event()

    def finish(key: str, value: object) -> None:
        outcome[key] = value
        done.set()

    worker = plugin.jobs.JobThread(
        job,
        settings(plugin, server=daemon.url),
        on_done=lambda r: finish("result", r),
        on_error=lambda e: finish("error", e),
        on_progress=lambda _: progressed.set(),
    )
    worker.start()
    assert progressed.wait(10)
    worker.cancel()
    assert done.wait(10)
    error = outcome.get("error")
    assert isinstance(error, plugin.JobCancelled)
    # Nothing chained whose frames hold the job (Krita 5.2 crashed at exit on it).
    assert error.__traceback__ is None and error.__context__ is None and error.__cause__ is None


def test_unexpected_errors_still_arrive_as_inpaint_errors(plugin):
    error = plugin.client.as_inpaint_error(MemoryError("boom"))
    assert isinstance(error, plugin.InpaintError) and error.code == "plugin_bug"
    assert "MemoryError" in error.message


# --- settings -------------------------------------------------------------------------


def test_settings_round_trip_and_survive_bad_values(plugin, krita):
    s = importlib.import_module(plugin.__name__ + ".settings")
    chosen = plugin.Settings.from_values(
        {
            "prompt": "p", "strength": 0.3, "seed": 2**40, "model": "fake-xl", "padding": 12, "token": "t",
            "depth": "far", "depth_combine": "max", "mask_layer": "Strength 2", "context": "layer:Sky",
            "mask_gamma": 2.5, "invert_mask": True,
        }
    )  # fmt: skip
    s.save(chosen)
    assert s.load() == chosen
    assert krita.readSetting(s.GROUP, "depth", "?") == "far"  # by name, as the CLI takes it
    krita.writeSetting(s.GROUP, "steps", "many")
    krita.writeSetting(s.GROUP, "strength", "7")  # a number, but out of bounds
    krita.writeSetting(s.GROUP, "seed", "perhaps")
    loaded = s.load()
    defaults = plugin.Settings()
    assert loaded.job.steps == defaults.job.steps  # unreadable: the default
    assert loaded.job.strength == defaults.job.strength
    assert loaded.job.seed is None
    assert loaded.job.prompt == "p" and loaded.host.padding == 12  # the rest still loads
    s.save(plugin.Settings())  # random seed, default model: stored as empty
    assert krita.readSetting(s.GROUP, "seed", "?") == "" and s.load().job.seed is None


def test_settings_from_before_optional_seeds_keep_random(plugin, krita):
    s = importlib.import_module(plugin.__name__ + ".settings")
    krita.writeSetting(s.GROUP, "random_seed", "True")
    krita.writeSetting(s.GROUP, "seed", "0")
    assert s.load().job.seed is None
    s.save(plugin.Settings.from_values({"seed": 5}))
    assert s.load().job.seed == 5


def test_kritarc_keys_are_the_settings_krita_shows(plugin, krita):
    s = importlib.import_module(plugin.__name__ + ".settings")
    s.save(plugin.Settings())
    shown = {q.name for q in plugin.client.SETTINGS_PARAMS if "krita" in q.hosts}
    assert {name for group, name in krita.settings if group == s.GROUP} - {"random_seed"} == shown
    assert shown >= {"prompt", "strength", "steps", "seed", "model", "server", "token", "padding"}


def test_settings_keep_a_fan_in_kritarc_as_the_painter_reads_it(plugin, krita):
    s = importlib.import_module(plugin.__name__ + ".settings")
    s.save(plugin.Settings.from_values({"fan": (0.25, 0.5), "count": 1}))
    assert krita.settings[(s.GROUP, "fan")] == "25%, 50%"
    assert s.load().job.fan == (0.25, 0.5)
    krita.settings[(s.GROUP, "fan")] = "1000%, x"  # hand-edited: the default, never a crash
    krita.settings[(s.GROUP, "count")] = "0"
    assert s.load().job.fan == () and s.load().job.count == 1


@pytest.mark.parametrize("how", ["inpaint_layer", "job thread"])
def test_a_failed_job_leaves_no_reference_cycle_holding_krita_objects(plugin, krita, dead_server, how):
    """Krita frees what reference cycles hold only after its own objects at exit, and
    crashes on them: nothing that a failed job leaves behind may hold the document or
    the layer in a cycle (seen as a segfault on quit after a failed job)."""
    doc, layer = new_document(krita, 32, 32)  # kept alive by `krita`: only new garbage shows
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        if how == "inpaint_layer":
            with pytest.raises(plugin.DaemonUnavailable):
                plugin.inpaint_layer(doc, layer, prompt="x", server=dead_server)
        else:
            chosen = settings(plugin, server=dead_server)
            job = prepare(plugin, doc, layer, chosen)
            with pytest.raises(plugin.DaemonUnavailable):
                plugin.jobs.run_blocking(job, chosen)
            del job
        gc.collect()
        holders = [o for o in gc.garbage if any(r is doc or r is layer for r in gc.get_referents(o))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert holders == []


# --- what ships -------------------------------------------------------------------------


def test_every_shipped_module_parses_as_python_3_10(installed_pykrita: Path):
    """Krita 5.2 bundles Python 3.10: no newer syntax anywhere in the plugin or its payload."""
    files = sorted((installed_pykrita / "differential_inpaint").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 10))


def test_the_core_needs_no_qt(installed_pykrita: Path):
    """The core, the jobs and the blocking API stay importable without Qt (and testable here)."""
    package = installed_pykrita / "differential_inpaint"
    for name in ("krita_io.py", "jobs.py", "api.py", "settings.py"):
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            module = getattr(node, "module", None) or ""
            names = [a.name for a in node.names]
            assert "qt" not in module and "PyQt" not in module and "qt" not in names, (name, module)


def test_control_and_reference_layers_are_read_as_images_in_their_own_format(plugin, krita):
    """read_layer shares the map's reader: a paint layer's own bytes over the region, a mask
    as opaque gray, Grayscale/Alpha spread into RGBA, other models refused in words."""
    p = plugin.protocol
    doc, layer = new_document(krita, 64, 64)
    lines = strength_layer(doc, "Lines", x=10, y=6, w=30, h=20)
    mask = doc.add_layer("Mask", "transparencymask", parent=layer)
    mask.paint(bytes(range(64)) * 64, 0, 0, 64, 64)
    host = plugin.krita_io.KritaDocument(doc, layer)
    region = p.Rect(4, 4, 40, 30)
    image = host.read_layer(lines, region)
    assert (image.width, image.height, image.format) == (40, 30, p.PixelFormat.BGRA8)
    assert image.data == lines.pixelData(4, 4, 40, 30)
    gray = host.read_layer(mask, p.Rect(0, 0, 4, 1))
    assert gray.format is p.PixelFormat.BGRA8
    assert gray.data == bytes([0, 0, 0, 255, 1, 1, 1, 255, 2, 2, 2, 255, 3, 3, 3, 255])
    lines.model = "CMYKA"
    with pytest.raises(plugin.InpaintError) as caught:
        host.read_layer(lines, region)
    assert caught.value.code == "unsupported_color_model" and "control or reference" in caught.value.message


def test_control_layers_by_name_and_loras_as_text_or_pairs(plugin, krita):
    p = plugin.protocol
    conditioning = importlib.import_module(plugin.__name__ + ".conditioning")
    doc, layer = new_document(krita, 64, 64)
    lines = strength_layer(doc, "Lines", x=0, y=0, w=64, h=64)
    maps = conditioning.conditioning_maps(
        doc, [{"layer": "Lines", "kind": " Canny ", "end": 0.5}], {"layer": lines, "weight": 0.3}
    )
    assert maps.controls[0].layer is lines and maps.controls[0].params == p.ControlParams("canny", end=0.5)
    assert maps.references[0].params == p.ReferenceParams(0.3)
    assert conditioning.loras_of("a:0.5, b") == (p.Lora("a", 0.5), p.Lora("b", 1.0))
    assert conditioning.loras_of([("a", -1), "b:2"]) == (p.Lora("a", -1.0), p.Lora("b", 2.0))
    with pytest.raises(plugin.InpaintError) as caught:
        conditioning.conditioning_maps(doc, [{"layer": "Nope"}], None)
    assert caught.value.code == "missing_layer" and "'Nope'" in caught.value.message
    saved = conditioning.Conditioning(
        (conditioning.ControlLayer("Lines", p.ControlParams("depth", "cn", 0.5, 0.1, 0.9, True)),),
        (conditioning.ReferenceLayer("Photo", p.ReferenceParams(0.4, "ip")),),
    )
    assert conditioning.Conditioning.from_text(saved.to_text()) == saved
    assert conditioning.Conditioning.from_text("not json") == conditioning.Conditioning()
