"""The job flow's maps over a stand-in host: a layer as the change map, the selection
that limits it, a blend map, the context choices and the strength-map request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.client import InpaintError, flow
from tests.host_plugins.client.test_flow import StandInHost, chosen
from tests.support.fake_daemon import fake_daemon


@dataclass
class MapLayer:
    """A stand-in map layer: gray `level` over `bounds` (image coordinates)."""

    name: str
    bounds: p.Rect
    level: int = 255


@dataclass
class MapHost(StandInHost):
    layers: list[MapLayer] = field(default_factory=list)
    map_reads: list[tuple[str, p.Rect]] = field(default_factory=list)

    def find_layer(self, name: str) -> Any:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise InpaintError(f"There is no layer '{name}'.", "missing_layer")

    def map_bounds(self, source: Any) -> p.Rect:
        return source.bounds

    def read_layer(self, source: Any, region: p.Rect) -> p.Image:
        self.map_reads.append((source.name, region))
        gray = flow.full_mask(region, source.bounds).replace(b"\xff", bytes([source.level]))
        rgba = bytearray(region.area * 4)
        for c in range(4):
            rgba[c::4] = gray
        return p.Image(region.width, region.height, p.PixelFormat.RGBA8, bytes(rgba))

    def read_map(self, source: Any, region: p.Rect) -> p.Mask:
        self.map_reads.append((source.name, region))
        data = flow.full_mask(region, source.bounds).replace(b"\xff", bytes([source.level]))
        return p.Mask(region.width, region.height, data)


STRENGTH = MapLayer("Strength", p.Rect(600, 500, 100, 80), 200)


def test_a_layer_map_is_sent_as_read_over_the_region_around_its_pixels() -> None:
    host = MapHost(size=(2000, 1500), layers=[STRENGTH])
    job = flow.prepare(host, chosen(mask_layer="Strength"))
    assert job.region.contains(STRENGTH.bounds) and job.region.width == 512  # the shared context rule
    painted = flow.full_mask(job.region, STRENGTH.bounds).replace(b"\xff", bytes([STRENGTH.level]))
    assert job.submit.mask == p.Mask(*_size(job.region), painted)
    assert job.submit.selection is None and job.submit.blend_mask is None
    assert host.map_reads == [("Strength", job.region)] and not job.whole_layer


def test_a_layer_object_wins_over_the_settings_name() -> None:
    other = MapLayer("Other", p.Rect(0, 0, 50, 50))
    host = MapHost(size=(2000, 1500), layers=[STRENGTH, other])
    job = flow.prepare(host, chosen(mask_layer="Strength"), maps=flow.Maps(mask=other))
    assert host.map_reads == [("Other", job.region)]


def test_the_selection_limits_a_layer_map_and_is_sent_beside_it() -> None:
    selection = p.Rect(650, 520, 200, 200)
    host = MapHost(size=(2000, 1500), layers=[STRENGTH], selection_rect=selection, level=255)
    job = flow.prepare(host, chosen(mask_layer="Strength"))
    assert job.region.contains(selection.intersect(STRENGTH.bounds))
    assert job.submit.selection is not None
    assert job.submit.selection.data == flow.full_mask(job.region, selection)
    # Not limited: the map alone, no selection sent.
    unlimited = flow.prepare(host, chosen(mask_layer="Strength", limit_to_selection=False))
    assert unlimited.submit.selection is None


def test_an_inverted_or_depth_map_plans_the_whole_layer() -> None:
    host = MapHost(size=(900, 700), layers=[STRENGTH])
    for settings in (chosen(mask_layer="Strength", invert_mask=True), chosen(depth="far")):
        job = flow.prepare(host, settings)
        assert job.region == p.Rect(0, 0, 900, 700) and job.whole_layer


def test_depth_alone_needs_no_selection_and_sends_a_full_map() -> None:
    job = flow.prepare(MapHost(size=(300, 200)), chosen(depth="near"))
    assert job.submit.params.depth is p.Depth.NEAR
    assert job.submit.mask.data == b"\xff" * 300 * 200


def test_a_blend_map_travels_beside_the_change_map() -> None:
    blend = MapLayer("Blend", p.Rect(0, 0, 150, 200), 128)
    host = MapHost(size=(300, 200), layers=[blend], selection_rect=p.Rect(10, 10, 100, 100))
    job = flow.prepare(host, chosen(blend_layer="Blend"))
    assert job.submit.blend_mask is not None
    assert job.submit.blend_mask.data == flow.full_mask(job.region, blend.bounds).replace(b"\xff", b"\x80")
    assert job.submit.mask.data == flow.full_mask(job.region, p.Rect(10, 10, 100, 100))


SMALL = p.Rect(1000, 900, 40, 30)
CORNER = p.Rect(3950, 2950, 30, 30)


@pytest.mark.parametrize(
    ("selection", "context", "expected"),
    [
        (SMALL, "image", p.Rect(0, 0, 4000, 3000)),
        (SMALL, "mask", p.Rect(1000, 899, 40, 32)),  # the selection's bounds, to multiples of 8
        (SMALL, "900,800,800,600", p.Rect(900, 800, 800, 600)),
        (SMALL, (900, 800, 800, 600), p.Rect(900, 800, 800, 600)),
        (CORNER, "3900,2900,500,500", p.Rect(3900, 2900, 100, 100)),  # clipped to the image
        (p.Rect(620, 520, 10, 10), "layer:Strength", STRENGTH.bounds),
    ],
)
def test_context_choices(selection: p.Rect, context: Any, expected: p.Rect) -> None:
    host = MapHost(size=(4000, 3000), layers=[STRENGTH], selection_rect=selection)
    job = flow.prepare(host, chosen(), maps=flow.Maps(context=context))
    assert job.region == expected
    auto = flow.prepare(host, chosen(context="auto")).region
    assert auto.width == 512 and auto.contains(selection)


def test_a_context_rectangle_is_in_image_coordinates_whatever_the_layers_offset() -> None:
    host = MapHost(size=(1000, 1000), offset=(100, 50), selection_rect=p.Rect(10, 10, 10, 10))
    job = flow.prepare(host, chosen(context="100,50,300,200"))
    assert job.region == p.Rect(0, 0, 300, 200)
    assert (job.submit.x, job.submit.y) == (100, 50)


@pytest.mark.parametrize(
    ("settings", "maps", "code", "words"),
    [
        ({"mask_layer": "Nope"}, flow.Maps(), "missing_layer", "no layer 'Nope'"),
        ({"blend_layer": "Nope"}, flow.Maps(), "missing_layer", "no layer 'Nope'"),
        ({"context": "left half"}, flow.Maps(), "invalid_settings", "not one of auto, image, mask"),
        ({"context": "0,0,0,10"}, flow.Maps(), "invalid_settings", "has no area"),
        ({"context": "5000,5000,10,10"}, flow.Maps(), "invalid_settings", "outside the image"),
        ({"mask_black": 0.6, "mask_white": 0.4}, flow.Maps(), "invalid_settings", "black point must be"),
        ({"mask_gamma": 0.0}, flow.Maps(), "invalid_settings", "Map gamma"),
        (
            {"loras": (p.Lora("a", 3.0),)},
            flow.Maps(),
            "invalid_settings",
            "weights must be between -2 and 2, not a:3",
        ),
        ({"loras": (p.Lora("", 1.0),)}, flow.Maps(), "invalid_settings", "LoRAs needs a name"),
        ({"mask_layer": "Empty"}, flow.Maps(), "empty_selection", "map layer has nothing"),
    ],
)
def test_bad_map_settings_are_refused_before_any_pixel_is_read(
    settings: dict[str, Any], maps: flow.Maps, code: str, words: str
) -> None:
    empty = MapLayer("Empty", p.Rect(5000, 5000, 10, 10))
    host = MapHost(size=(300, 200), layers=[STRENGTH, empty])
    with pytest.raises(InpaintError, match=f"(?i){words}") as raised:
        flow.prepare(host, chosen(**settings), maps=maps)
    assert raised.value.code == code and host.reads == [] and host.map_reads == []


def test_a_context_away_from_the_selection_is_refused() -> None:
    host = MapHost(size=(300, 200), selection_rect=p.Rect(10, 10, 20, 20))
    with pytest.raises(InpaintError, match="does not include any of the area to change"):
        flow.prepare(host, chosen(context="200,100,50,50"))
    assert host.reads == []


def test_the_strength_map_is_requested_and_inserted_as_its_own_layer() -> None:
    host = MapHost(size=(300, 200), layers=[STRENGTH], selection_rect=p.Rect(10, 10, 100, 100))
    with fake_daemon() as daemon:
        settings = chosen(server=daemon.url, mask_black=0.25)
        # Conditioning does not change the map: its layers are not read nor sent.
        maps = flow.Maps(
            controls=(flow.ControlInput("Strength"),), references=(flow.ReferenceInput("Strength"),)
        )
        flow.run(host, settings, client="test", maps=maps, request=p.StrengthMapRequest)
    submitted = daemon.submits[-1]
    assert isinstance(submitted, p.StrengthMapRequest) and submitted.params.mask_black == 0.25
    assert submitted.controls == () and submitted.ip_adapters == () and host.map_reads == []
    [(name, answer)] = host.inserted
    assert name == flow.MAP_LAYER_NAME and isinstance(answer, p.StrengthMap)
    assert (answer.x, answer.y) == (submitted.x, submitted.y)


def test_control_layers_are_read_over_the_jobs_region_and_references_whole() -> None:
    lines = MapLayer("Lines", p.Rect(0, 0, 4000, 3000), 90)
    photo = MapLayer("Photo", p.Rect(100, 100, 300, 200), 40)
    host = MapHost(size=(4000, 3000), layers=[lines, photo], selection_rect=p.Rect(1000, 900, 40, 30))
    canny = p.ControlParams("canny", strength=0.7, end=0.6)
    maps = flow.Maps(
        controls=(flow.ControlInput("Lines", canny), flow.ControlInput(photo)),
        references=(flow.ReferenceInput("Photo", p.ReferenceParams(0.4)),),
    )
    job = flow.prepare(host, chosen(loras=(p.Lora("ink", 0.5),)), maps=maps)
    region = job.region
    assert region.width == 512  # a 256² selection on an 8K canvas still sends only the region
    assert [(c.image.width, c.image.height) for c in job.submit.controls] == [(512, 512)] * 2
    assert [c.params for c in job.submit.controls] == [canny, p.ControlParams()]
    assert job.submit.controls[0].image.data[:4] == bytes([90] * 4)
    [reference] = job.submit.ip_adapters
    assert (reference.image.width, reference.image.height, reference.params.weight) == (300, 200, 0.4)
    assert job.submit.params.loras == (p.Lora("ink", 0.5),)
    assert host.map_reads == [("Lines", region), ("Photo", region), ("Photo", photo.bounds)]


def test_too_many_control_layers_are_refused_before_reading() -> None:
    host = MapHost(size=(300, 200), layers=[STRENGTH])
    maps = flow.Maps(controls=(flow.ControlInput("Strength"),) * 5)
    with pytest.raises(InpaintError, match="at most 4 control layers, not 5"):
        flow.prepare(host, chosen(), maps=maps)
    assert host.reads == [] and host.map_reads == []


def _size(region: p.Rect) -> tuple[int, int]:
    return region.width, region.height
