"""The host-neutral job flow (`client.flow`) over a stand-in host: region planning,
size checks, the submit, the result checks, settings and progress text. The
same code runs inside Krita and GIMP (tested there by the hosts' own tests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.client import SETTINGS_PARAMS, InpaintError, JobCancelled, Settings, flow
from tests.support.fake_daemon import FakeDaemon, fake_daemon


@dataclass
class StandInHost:
    """A layer of `size` at `offset` in its image; `selection` in layer coordinates,
    over which the mask is `level` (0-255)."""

    size: tuple[int, int] = (300, 200)
    selection_rect: p.Rect | None = None
    level: int = 255
    offset: tuple[int, int] = (0, 0)
    extent: p.Rect | None = None
    open: bool = True
    host_name: str = "Stand-in"
    pixel_format: p.PixelFormat = p.PixelFormat.RGBA8
    color: p.ColorEncoding = p.ColorEncoding.SRGB
    shows_previews: bool = True
    reads: list[p.Rect] = field(default_factory=list)
    inserted: list[tuple[str, p.Result]] = field(default_factory=list)

    def canvas(self) -> p.Rect:
        return p.Rect(0, 0, *self.size)

    def selection(self) -> p.Rect | None:
        return self.selection_rect

    def layer_extent(self) -> p.Rect:
        return self.extent or self.canvas()

    def origin(self) -> tuple[int, int]:
        return self.offset

    def read_selection(self, region: p.Rect) -> bytes:
        assert self.selection_rect is not None
        return flow.full_mask(region, self.selection_rect).replace(b"\xff", bytes([self.level]))

    def read_pixels(self, region: p.Rect) -> bytes:
        self.reads.append(region)
        return bytes(region.area * self.pixel_format.bytes_per_pixel)

    def is_open(self) -> bool:
        return self.open

    groups: list[tuple[str, list[str]]] = field(default_factory=list)

    def insert_layer(self, name: str, result: p.Result) -> Any:
        self.inserted.append((name, result))
        return name

    def insert_group(self, name: str, layers: list[tuple[str, p.Result]]) -> Any:
        self.groups.append((name, [layer for layer, _ in layers]))
        self.inserted.extend(layers)
        return name


def chosen(**values: Any) -> Settings:
    return Settings.from_values({"prompt": "a red barn", "steps": 3, **values})


def test_no_selection_is_the_whole_layer_at_full_mask() -> None:
    host = StandInHost()
    job = flow.prepare(host, chosen())
    assert job.whole_layer and job.region == p.Rect(0, 0, 300, 200)
    assert job.submit.mask.data == b"\xff" * 300 * 200


def test_no_selection_on_a_partly_painted_layer_changes_only_the_painted_part() -> None:
    host = StandInHost(size=(1000, 800), extent=p.Rect(40, 30, 90, 70))
    job = flow.prepare(host, chosen())
    assert job.region.contains(p.Rect(40, 30, 90, 70)) and job.region.width >= 512
    assert job.submit.mask.data == flow.full_mask(job.region, p.Rect(40, 30, 90, 70))


def test_a_selection_sends_its_region_with_context() -> None:
    host = StandInHost(size=(4000, 3000), selection_rect=p.Rect(1000, 900, 40, 30), level=128)
    job = flow.prepare(host, chosen())
    region = job.region
    assert region.contains(p.Rect(1000, 900, 40, 30)) and p.Rect(0, 0, 4000, 3000).contains(region)
    assert region.width % 8 == 0 and region.height % 8 == 0
    assert 512 <= region.width < 1000  # the shared context rule, not the whole canvas
    assert set(job.submit.mask.data) == {0, 128} and host.reads == [region]


def test_the_padding_setting_widens_the_context() -> None:
    selection = p.Rect(1000, 1000, 600, 600)
    narrow = flow.prepare(StandInHost(size=(4000, 4000), selection_rect=selection), chosen(padding=0))
    wide = flow.prepare(StandInHost(size=(4000, 4000), selection_rect=selection), chosen(padding=200))
    assert narrow.region.width == 600 and wide.region.width == 1000


def test_the_region_is_clamped_to_the_layer() -> None:
    job = flow.prepare(StandInHost(selection_rect=p.Rect(-50, -20, 200, 100)), chosen())
    assert p.Rect(0, 0, 300, 200).contains(job.region) and job.region.contains(p.Rect(0, 0, 150, 80))


def test_submit_travels_in_document_coordinates_in_the_layers_format() -> None:
    host = StandInHost(offset=(-10, 100), pixel_format=p.PixelFormat.RGBA16, shows_previews=False)
    job = flow.prepare(host, chosen(seed=7, model="sd15", strength=0.5))
    submit = job.submit
    assert (submit.x, submit.y) == (-10, 100)
    assert submit.image.format is p.PixelFormat.RGBA16
    params = submit.params
    assert (params.output_format, params.preview) == (p.PixelFormat.RGBA16, False)
    assert (params.seed, params.model, params.steps, params.strength) == (7, "sd15", 3, 0.5)
    assert job.layer_name == "a red barn"


@pytest.mark.parametrize(
    ("host", "code", "words"),
    [
        (StandInHost(selection_rect=p.Rect(400, 0, 10, 10)), "empty_selection", "does not touch the layer"),
        (
            StandInHost(selection_rect=p.Rect(10, 10, 10, 10), level=0),
            "empty_selection",
            "Nothing is selected",
        ),
        (StandInHost(size=(5000, 4000)), "too_large", "the whole layer is 5000x4000 pixels.*smaller area"),
        (
            StandInHost(size=(9000, 1000), selection_rect=p.Rect(0, 0, 9000, 500)),
            "too_large",
            "around the selection is 9000x",
        ),
    ],
)
def test_refusals_come_before_any_pixel_is_read(host: StandInHost, code: str, words: str) -> None:
    with pytest.raises(InpaintError, match=f"(?i){words}") as raised:
        flow.prepare(host, chosen())
    assert raised.value.code == code and host.reads == []


def test_a_host_that_gives_the_wrong_byte_count_is_refused() -> None:
    host = StandInHost()
    host.read_pixels = lambda region: b"\0"  # type: ignore[method-assign]
    with pytest.raises(InpaintError, match="Stand-in gave 1 bytes of pixels"):
        flow.prepare(host, chosen())


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        (q.name, q.bounds()[0] - 1, q.bounds()[0])
        for q in SETTINGS_PARAMS
        if q.kind in (int, float) and not q.lo_open
    ]
    + [
        (q.name, q.bounds()[1] + 1, q.bounds()[1])
        for q in SETTINGS_PARAMS
        if q.kind in (int, float) and not q.hi_open
    ]
    + [("strength", 0.0, 0.01), ("snap", 0.5, 0.49)],
)
def test_every_bound_of_every_setting_is_checked_before_reading(name: str, bad: float, good: float) -> None:
    """Walks the spec: just outside each bound is refused with the setting's label, just
    inside is accepted."""
    label = next(q.label for q in SETTINGS_PARAMS if q.name == name)
    host = StandInHost()
    with pytest.raises(InpaintError, match=label) as raised:
        flow.prepare(host, chosen(**{name: bad}))
    assert raised.value.code == "invalid_settings" and host.reads == []
    flow.prepare(host, chosen(**{name: good}))


def test_settings_by_name() -> None:
    values = chosen(seed=None, model=None, server=None).values()
    assert values["seed"] is None and values["model"] is None
    assert values["server"] == "ws://127.0.0.1:7865"  # None for a plain setting: its default
    assert Settings.from_values(values) == chosen()
    assert [q.name for q in SETTINGS_PARAMS] == list(values)
    with pytest.raises(InpaintError, match="Unknown setting 'strenght'"):
        Settings.from_values({"strenght": 0.5})


def result_for(job: flow.PreparedJob, **changes: Any) -> p.Result:
    image = job.submit.image
    fields = {"image": p.Image(image.width, image.height, image.format, image.data), "x": job.submit.x}
    return p.Result(job.submit.job_id, y=job.submit.y, **{"seed": 7, **fields, **changes})


def test_a_result_that_fits_is_inserted_under_the_prompts_name() -> None:
    host = StandInHost(offset=(5, 6))
    job = flow.prepare(host, chosen(prompt="  two\nlines  "))
    assert flow.finish(job, [result_for(job)]) == "two lines \u00b7 7"
    assert [name for name, _ in host.inserted] == ["two lines \u00b7 7"]  # prompt · seed


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"x": 1}, "placed at 1,0"),
        ({"image": p.Image(2, 2, p.PixelFormat.RGBA8, bytes(16))}, "is 2x2 instead of 300x200"),
        ({"image": p.Image(300, 200, p.PixelFormat.BGRA8, bytes(240000))}, "bgra8 instead of rgba8"),
    ],
)
def test_a_result_that_does_not_fit_is_refused_and_nothing_inserted(changes: dict, words: str) -> None:
    host = StandInHost()
    job = flow.prepare(host, chosen())
    with pytest.raises(InpaintError, match=words):
        flow.finish(job, [result_for(job), result_for(job, **changes)])
    assert host.inserted == []


def test_a_result_for_a_closed_image_is_dropped() -> None:
    host = StandInHost()
    job = flow.prepare(host, chosen())
    host.open = False
    with pytest.raises(InpaintError, match="closed") as raised:
        flow.finish(job, [result_for(job)])
    assert raised.value.code == "document_closed" and host.inserted == []


def test_progress_text() -> None:
    text, fraction = flow.progress_text(p.Progress("j", p.Stage.SAMPLING, 3, 20))
    assert text == "Sampling: step 3 of 20" and fraction == 0.15
    text, fraction = flow.progress_text(p.Progress("j", p.Stage.QUEUED, position=2))
    assert text == "Waiting for the daemon (2 jobs ahead)..." and fraction is None
    assert flow.progress_text(p.Progress("j", p.Stage.QUEUED, position=0))[0] == "Waiting for the daemon..."
    assert flow.progress_text(p.Progress("j", p.Stage.LOADING, 0, 1)) == ("Loading the model...", None)
    assert flow.progress_text(p.Progress("j", p.Stage.DECODING))[1] == 1.0


def test_run_end_to_end_against_the_stand_in_daemon() -> None:
    host = StandInHost(selection_rect=p.Rect(10, 10, 20, 20))
    daemon: FakeDaemon
    with fake_daemon() as daemon:
        seen: list[p.Progress] = []
        name = flow.run(host, chosen(server=daemon.url), client="test", on_progress=seen.append)
    assert name == "a red barn \u00b7 4242" and len(host.inserted) == 1 and seen
    assert daemon.submit_by_prompt["a red barn"].params.steps == 3


@pytest.mark.parametrize(
    ("values", "group", "layers"),
    [
        (
            {"count": 3, "seed": 10},
            "a red barn \u00b7 3 variations",
            [f"a red barn \u00b7 1{k}" for k in range(3)],
        ),
        (
            {"fan": (0.4, 0.85)},
            "a red barn \u00b7 strength fan",
            ["a red barn \u00b7 40%", "a red barn \u00b7 85%"],
        ),
    ],
)
def test_a_job_of_several_results_goes_in_as_one_group(values: dict, group: str, layers: list[str]) -> None:
    host = StandInHost(selection_rect=p.Rect(10, 10, 20, 20))
    arrived: list[p.Result] = []
    with fake_daemon() as daemon:
        name = flow.run(host, chosen(server=daemon.url, **values), client="test", on_result=arrived.append)
    assert name == group and host.groups == [(group, layers)]
    assert [r.index for r in arrived] == list(range(len(layers)))


def test_a_batch_cancelled_part_way_keeps_what_was_done() -> None:
    host = StandInHost()
    job = flow.prepare(host, chosen(count=4))
    kept = [result_for(job, index=k, total=4, seed=7 + k) for k in range(2)]
    with pytest.raises(JobCancelled, match="after 2 of its 4 results; those were kept"):
        try:
            raise JobCancelled(kept, 4)
        except JobCancelled as exc:
            flow.finish(job, exc.kept)
            raise
    assert host.groups == [("a red barn \u00b7 4 variations", ["a red barn \u00b7 7", "a red barn \u00b7 8"])]


def test_progress_text_of_a_batch() -> None:
    text, fraction = flow.progress_text(p.Progress("j", p.Stage.SAMPLING, 7, 24), done=1, total=4)
    assert text == "Sampling: step 7 of 24 (1 of 4 results done)" and fraction == 7 / 24
    assert flow.progress_text(p.Progress("j", p.Stage.DECODING), done=3, total=4) == (
        "Decoding... (3 of 4 results done)",
        None,
    )


def test_a_cancel_is_raised_without_a_chained_exception() -> None:
    # A chained exception's traceback would hold the job's frames, and through them the
    # host's document, beyond the job (Krita crashes at exit when its objects outlive it).
    host = StandInHost(selection_rect=p.Rect(10, 10, 20, 20))
    cancel = threading.Event()
    cancel.set()
    with fake_daemon() as daemon:
        job = flow.prepare(host, chosen(server=daemon.url, prompt="slow: a barn"))
        with pytest.raises(JobCancelled) as raised:
            flow.follow(job, chosen(server=daemon.url), client="test", cancel=cancel)
    assert raised.value.__context__ is None and raised.value.__cause__ is None


FLOW_FAMILIES = ("flux", "flux-fill", "flux-schnell", "sd3")
T5S = [
    p.PartInfo("t5xxl_fp16.safetensors", "t5", FLOW_FAMILIES),
    p.PartInfo("t5_fp8.safetensors", "t5", FLOW_FAMILIES),
]
CLIPS = [
    p.PartInfo("clip_l.safetensors", "clip_l", FLOW_FAMILIES),
    p.PartInfo("clip_g.safetensors", "clip_g", ("sd3",)),
]
VAES = [p.PartInfo("ae.safetensors", "vae", FLOW_FAMILIES)]


def test_text_encoders_and_a_vae_are_offered_only_where_the_painter_has_a_choice() -> None:
    lone = p.ModelInfo("flux1-dev.safetensors", "flux", ("vae", "clip_l", "t5"))
    choices = flow.part_choices(lone, [*CLIPS, *T5S], VAES)
    # CLIP-G fits no FLUX model; what the model lacks is offered, even a single fitting file.
    assert choices == {
        "clip_l": ("clip_l.safetensors",),
        "t5": ("t5xxl_fp16.safetensors", "t5_fp8.safetensors"),
        "vae": ("ae.safetensors",),
    }
    assert flow.offered_parts(choices, "text_encoders") == (
        "CLIP-L: clip_l.safetensors; T5-XXL: t5xxl_fp16.safetensors, t5_fp8.safetensors"
    )
    assert flow.offered_parts(choices, "vae") == "VAE: ae.safetensors"
    # A transformer with its own CLIP-L and VAE: only the T5 it lacks, or a role with several.
    t5_only = p.ModelInfo("flux-no-t5.safetensors", "flux", ("t5",))
    assert flow.part_choices(t5_only, [*CLIPS, T5S[0]], VAES) == {"t5": ("t5xxl_fp16.safetensors",)}
    assert flow.part_choices(t5_only, [*CLIPS, *T5S, *CLIPS[:1]], [*VAES, *VAES]) == {
        "clip_l": ("clip_l.safetensors", "clip_l.safetensors"),
        "t5": ("t5xxl_fp16.safetensors", "t5_fp8.safetensors"),
        "vae": ("ae.safetensors", "ae.safetensors"),
    }
    # A model that lacks nothing (a whole checkpoint, an SD model) and none: nothing to offer.
    for model in (p.ModelInfo("flux-all-in-one.safetensors", "flux"), p.ModelInfo("sdxl", "sdxl"), None):
        assert flow.part_choices(model, [*CLIPS, *T5S], VAES) == {}
    assert flow.offered_parts({}, "vae") == ""


def test_text_encoders_typed_twice_are_refused_in_words() -> None:
    with pytest.raises(InpaintError, match="Text encoders name 't5.safetensors' twice"):
        Settings.from_values({"text_encoders": ("t5.safetensors", "t5.safetensors")}).check()
    with pytest.raises(InpaintError, match="each of the Text encoders must be a name the daemon lists"):
        Settings.from_values({"text_encoders": ("t5.safetensors", "")}).check()
    chosen = Settings.from_values({"text_encoders": ["t5.safetensors"], "vae": "ae.safetensors"}).check()
    assert chosen.job.text_encoders == ("t5.safetensors",) and chosen.job.vae == "ae.safetensors"
