"""A FLUX.1 transformer kept alone (ComfyUI's split files, tiny random weights): the daemon
lists the text encoders and VAEs it finds, a job names them, names it does not list are
refused and the daemon keeps serving."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon.models import build_catalog
from differential_inpaint.backend.daemon.server import DaemonServer, ServerConfig
from differential_inpaint.backend.engine import Engine
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.client import run_job

from ..engine.flow_export import save_comfy_tree
from .conftest import InProcessDaemon, RawClient

pytestmark = pytest.mark.slow  # a real model: seconds

JOB_TIMEOUT = 180.0
SIZE = 64
MODEL = "model.safetensors"


class PartsDaemon(InProcessDaemon):
    def __init__(self, engine: Any) -> None:  # the real engine and catalog, no default model
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = ServerConfig(host="127.0.0.1", port=0, preview_interval=0.0, shutdown_grace=JOB_TIMEOUT)
        self.server = DaemonServer(engine, build_catalog(engine, [MODEL]), config)
        self.port = self.call(self.server.start())
        self.url = f"ws://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComfyUI/models with a lone tiny FLUX transformer, its VAE and text encoders, a second
    T5 (so that matching alone cannot choose) and, given to the daemon, an SD3 CLIP-G."""
    root = tmp_path_factory.mktemp("parts")
    models = root / "ComfyUI" / "models"
    paths = save_comfy_tree(build_tiny_pipeline("tiny-flux"), models)
    shutil.copy(paths["t5"], models / "text_encoders" / "t5_other.safetensors")
    save_comfy_tree(build_tiny_pipeline("tiny-sd3"), root / "sd3")
    return root


@pytest.fixture(scope="module")
def daemon(tree: Path) -> Iterator[PartsDaemon]:
    engine = Engine(
        device="cpu",
        model_dirs=[tree / "ComfyUI"],
        scan_default_locations=False,
        text_encoders=[tree / "sd3" / "text_encoders" / "clip_g.safetensors"],
        part_paths=False,  # as `serve` makes it
    )
    started = PartsDaemon(engine)
    try:
        yield started
    finally:
        started.stop()


def _submit(job_id: str, **params: Any) -> p.Submit:
    rng = np.random.default_rng(3)
    image = p.Image(
        SIZE, SIZE, p.PixelFormat.BGRA8, rng.integers(0, 256, (SIZE, SIZE, 4), np.uint8).tobytes()
    )
    mask = p.Mask(SIZE, SIZE, np.full((SIZE, SIZE), 255, np.uint8).tobytes())
    return p.Submit(job_id, image, mask, p.JobParams(model=MODEL, steps=1, seed=2, **params))


def _listed(parts: list[p.PartInfo]) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {part.name: (part.role, part.families) for part in parts}


def test_the_welcome_and_models_list_the_parts_with_roles_and_families(daemon: PartsDaemon) -> None:
    flow = ("flux", "flux-fill", "flux-schnell", "sd3")
    expected_text = {
        "clip_g.safetensors": ("clip_g", ("sd3",)),  # the file given to the daemon, listed first
        "clip_l.safetensors": ("clip_l", flow),
        "t5_other.safetensors": ("t5", flow),
        "t5xxl_fp16.safetensors": ("t5", flow),
    }
    with RawClient(daemon.url) as client:
        welcome = client.welcome
        client.send(p.ListModels())
        models = client.until_type(p.Models)
    assert welcome is not None
    for listing in (welcome, models):
        assert _listed(listing.text_encoders) == expected_text
        assert list(_listed(listing.text_encoders)) == list(expected_text)
        assert _listed(listing.vaes) == {"ae.safetensors": ("vae", flow)}
        assert {m.name: m.lacks for m in listing.models} == {MODEL: ("vae", "clip_l", "t5")}


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"vae": "other.safetensors"}, p.ErrorCode.UNKNOWN_MODEL, "unknown VAE 'other.safetensors'"),
        # A path is never a name, even of a file the daemon lists.
        ({"vae": "/etc/ae.safetensors"}, p.ErrorCode.UNKNOWN_MODEL, "unknown VAE '/etc/ae.safetensors'"),
        ({"text_encoders": ("ae.safetensors",)}, p.ErrorCode.UNKNOWN_MODEL, "unknown text encoder"),
        # Listed, but of a role a FLUX model has no use for: the engine says so.
        ({"text_encoders": ("clip_g.safetensors",)}, p.ErrorCode.INVALID_FIELD, "CLIP-G text encoder"),
    ],
    ids=["unknown-vae", "path", "vae-as-text-encoder", "clip-g-for-flux"],
)
def test_a_part_the_daemon_cannot_give_is_a_clear_error_and_it_keeps_serving(
    daemon: PartsDaemon, params: dict[str, Any], code: p.ErrorCode, words: str
) -> None:
    with RawClient(daemon.url) as client:
        client.send(_submit("bad", **params))
        error = client.final("bad", JOB_TIMEOUT)
    assert isinstance(error, p.Error) and error.code is code, error
    assert words in error.message
    if code is p.ErrorCode.UNKNOWN_MODEL:  # refused at submit: the names it may use are given
        listed = "ae.safetensors" if "vae" in params else "t5xxl_fp16.safetensors"
        assert listed in error.message


def test_after_those_errors_a_job_names_its_text_encoder_and_vae_and_runs(daemon: PartsDaemon) -> None:
    result = run_job(
        _submit("chosen", text_encoders=("t5_other.safetensors",), vae="ae.safetensors"),
        server=daemon.url,
        timeout=JOB_TIMEOUT,
    )
    assert (result.model, result.image.width, result.image.height) == (MODEL, SIZE, SIZE)
