"""Faults, one at a time: each is one clear error for its job, or one clear line at start-up.

A job's fault — the engine raising while loading, encoding, sampling or decoding, a model
file deleted, truncated or damaged after the daemon listed it — must reach its client as one
`error` with the right code and a message a painter can act on (no traceback, no path), and
the daemon must run the next good job. A start-up fault — the token file unreadable or
unwritable (disk full), the port taken — must be one `error:` line and exit status 2 (the
token) or 1 (listening), as backend/daemon/README.md says.

The job faults run the real engine on the built-in tiny model and on tiny single-file
checkpoints written here, in a daemon started in-process; the start-up faults run
`differential-inpaint serve` as a process, except the disk-full one, which needs a write
that fails and calls the command's start-up in-process.
"""

from __future__ import annotations

import argparse
import errno
import logging
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon import cli, security
from differential_inpaint.backend.daemon.models import build_catalog
from differential_inpaint.backend.daemon.server import DaemonServer, ServerConfig
from differential_inpaint.backend.engine import Engine
from differential_inpaint.backend.engine.errors import EngineError
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
from differential_inpaint.backend.engine.registry import ModelRegistry
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from tests.backend.engine.ldm_export import pipeline_to_ldm
from tests.support.daemon import daemon_command

from .conftest import InProcessDaemon, RawClient, make_submit

pytestmark = pytest.mark.slow  # real model: seconds a job

JOB_TIMEOUT = 180.0  # a loaded 2-core machine runs the tiny model at ~1-3 s a step
DEFAULT = "builtin:tiny-sd15"
SECRET_DIR = "/home/painter/secret-models"  # in the injected errors: must never reach the wire


class FaultDaemon(InProcessDaemon):
    """The real DaemonServer and the real engine, offering the built-in model (the default)
    and every checkpoint found in `folder`."""

    def __init__(self, folder: Path) -> None:
        import asyncio
        import threading

        self.engine = Engine(device="cpu", model_dirs=[folder], scan_default_locations=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        catalog = build_catalog(self.engine, [DEFAULT])
        config = ServerConfig(host="127.0.0.1", port=0, preview_interval=0.0, shutdown_grace=JOB_TIMEOUT)
        self.server = DaemonServer(self.engine, catalog, config)
        self.port = self.call(self.server.start())
        self.url = f"ws://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of tiny SD1.5 checkpoints, whole when listed: `gone` (deleted by a test),
    `cut` in both formats (truncated by a test), and `damaged` (one weight missing, which its
    header does not show)."""
    folder = tmp_path_factory.mktemp("models")
    state = pipeline_to_ldm(build_tiny_pipeline("tiny-sd15"))
    save_file(state, str(folder / "gone.safetensors"))
    shutil.copyfile(folder / "gone.safetensors", folder / "cut.safetensors")
    torch.save({"state_dict": state}, folder / "cut.ckpt")
    damaged = dict(state)
    del damaged["first_stage_model.decoder.conv_out.weight"]
    save_file(damaged, str(folder / "damaged.safetensors"))
    return folder


@pytest.fixture(scope="module")
def daemon(models: Path) -> Iterator[FaultDaemon]:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DIFFERENTIAL_INPAINT_MODEL_DIRS", raising=False)
        daemon = FaultDaemon(models)
        try:
            offered = {m.name for m in daemon.server.catalog.models}
            assert {
                "gone.safetensors",
                "cut.safetensors",
                "cut.ckpt",
                "damaged.safetensors",
                DEFAULT,
            } <= offered
            yield daemon
        finally:
            daemon.stop()


def submit(job_id: str, model: str | None = None) -> p.Submit:
    return make_submit(job_id, 32, 32, steps=2, model=model)


def failed_job(daemon: FaultDaemon, job_id: str, model: str | None = None) -> tuple[p.Error, list[str]]:
    """Run a job that must fail: its error, and the stages its progress went through."""
    with RawClient(daemon.url) as client:
        error = client.run(submit(job_id, model), timeout=JOB_TIMEOUT)
        stages = [m.stage for m in client.seen if isinstance(m, p.Progress) and m.job_id == job_id]
        # One last word: nothing more for this job (a status round trip proves the order).
        client.send(p.GetStatus())
        status = client.until_type(p.Status, timeout=JOB_TIMEOUT)
        assert not status.running
        late = client.seen[client.seen.index(error) + 1 : -1]
        assert not [m for m in late if getattr(m, "job_id", None) == job_id], late
    assert isinstance(error, p.Error), error
    assert error.job_id == job_id
    assert_painter_text(error.message)
    return error, stages


def assert_painter_text(text: str) -> None:
    """One line a painter can read: no traceback, no path, not empty, not a wall of text."""
    assert text.strip() and len(text) <= 400, text
    assert "\n" not in text and "Traceback" not in text and 'File "' not in text, text
    assert SECRET_DIR not in text and "/tmp" not in text and "/home" not in text, text


def assert_good_job(daemon: FaultDaemon, job_id: str, model: str = DEFAULT) -> None:
    """The daemon runs the next good job to its result."""
    with RawClient(daemon.url) as client:
        result = client.run(submit(job_id, model), timeout=JOB_TIMEOUT)
    assert isinstance(result, p.Result), result
    assert (result.job_id, result.model, result.x, result.y) == (job_id, model, 10, 20)
    assert (result.image.width, result.image.height) == (32, 32)


def once(original: Callable[..., Any], exc: BaseException) -> Callable[..., Any]:
    """`original`, except that its first call raises `exc` (later calls, the good job's, run)."""
    fired: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            raise exc
        return original(*args, **kwargs)

    return wrapper


# --- the engine raising at each stage ------------------------------------------------------

INTERNAL = RuntimeError(
    f'Expected all tensors to be on the same device\n  File "{SECRET_DIR}/torch/nn/functional.py", '
    f"line 2, in conv2d\nwhile reading {SECRET_DIR}/weights.bin"
)

# stage -> (where the fault is injected, the attribute raising there)
STAGES: dict[str, tuple[Any, str]] = {
    "loading": (ModelRegistry, "load"),
    "encoding": (DifferentialDiffusionPipeline, "encode_image"),
    "sampling": (UNet2DConditionModel, "forward"),
    "decoding": (DifferentialDiffusionPipeline, "decode"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_an_engine_failure_at_each_stage_fails_that_job_only(
    daemon: FaultDaemon, stage: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    owner, name = STAGES[stage]
    monkeypatch.setattr(owner, name, once(getattr(owner, name), INTERNAL))
    with caplog.at_level(logging.INFO, logger="differential_inpaint.daemon"):
        error, stages = failed_job(daemon, f"fails-{stage}")
    assert stages[-1] == stage  # it failed where it was meant to
    assert error.code is p.ErrorCode.JOB_FAILED
    assert "RuntimeError" in error.message and "log" in error.message
    assert "Expected all tensors" in caplog.text  # the details are in the daemon's log
    assert_good_job(daemon, f"after-{stage}")


def test_an_engine_error_naming_a_file_reaches_the_painter_without_the_path(
    daemon: FaultDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = EngineError(f"The VAE could not decode this region; see {SECRET_DIR}/vae.log for details.")
    monkeypatch.setattr(
        DifferentialDiffusionPipeline, "decode", once(DifferentialDiffusionPipeline.decode, fault)
    )
    error, _ = failed_job(daemon, "engine-error")
    assert error.code is p.ErrorCode.JOB_FAILED
    assert error.message == "The VAE could not decode this region; see <path> for details"
    assert_good_job(daemon, "after-engine-error")


def test_running_out_of_memory_while_sampling_is_out_of_memory(
    daemon: FaultDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB. Out of memory")
    monkeypatch.setattr(UNet2DConditionModel, "forward", once(UNet2DConditionModel.forward, fault))
    error, stages = failed_job(daemon, "oom")
    assert stages[-1] == "sampling"
    assert error.code is p.ErrorCode.OUT_OF_MEMORY
    assert "smaller region" in error.message
    assert_good_job(daemon, "after-oom")


# --- model files that changed after the daemon listed them ---------------------------------


def test_a_model_file_deleted_after_listing(daemon: FaultDaemon, models: Path, tmp_path: Path) -> None:
    kept = shutil.copyfile(models / "gone.safetensors", tmp_path / "kept.safetensors")
    (models / "gone.safetensors").unlink()
    error, _ = failed_job(daemon, "gone", model="gone.safetensors")
    assert error.code is p.ErrorCode.UNKNOWN_MODEL
    assert error.message == "Cannot read model 'gone.safetensors': it is no longer there (moved or deleted?)"
    assert_good_job(daemon, "after-gone")
    shutil.copyfile(kept, models / "gone.safetensors")  # put back: it loads again
    assert_good_job(daemon, "back", model="gone.safetensors")


@pytest.mark.parametrize("name", ["cut.safetensors", "cut.ckpt"])
def test_a_model_file_truncated_after_listing(daemon: FaultDaemon, models: Path, name: str) -> None:
    path = models / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # an interrupted copy over the good file
    error, _ = failed_job(daemon, f"truncated-{path.suffix[1:]}", model=name)
    assert error.code is p.ErrorCode.UNKNOWN_MODEL
    assert error.message.startswith(f"Cannot use '{name}' as a model: it is not a readable")
    assert "damaged or incomplete" in error.message
    assert_good_job(daemon, f"after-truncated-{path.suffix[1:]}")


def test_a_model_file_damaged_inside_is_refused_clearly(daemon: FaultDaemon) -> None:
    # Its header lists an SD1.5 model; one of the VAE's weights is missing.
    error, _ = failed_job(daemon, "damaged", model="damaged.safetensors")
    assert error.code is p.ErrorCode.UNKNOWN_MODEL
    assert error.message.startswith("Cannot use 'damaged.safetensors' as a model: its weights do not fit")
    assert "first_stage_model.decoder.conv_out.weight is missing" in error.message
    assert_good_job(daemon, "after-damaged")


# --- start-up ------------------------------------------------------------------------------


def start_up_fails(*args: str, port: int = 0) -> tuple[int, str]:
    """`serve` that must stop at start-up: (exit status, its one `error:` line)."""
    done = subprocess.run(
        daemon_command(*args, port=port), capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "listening on" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stdout.strip().splitlines()[-1] == errors[0], output
    return done.returncode, errors[0]


def test_a_token_file_that_is_a_folder(tmp_path: Path) -> None:
    code, line = start_up_fails("--token-file", str(tmp_path))
    assert code == 2
    assert line == (
        f"error: cannot read the token file {tmp_path}: Is a directory; it must be a file: "
        "remove that folder or give another --token-file"
    )


def test_a_token_file_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("not a folder")
    token_file = tmp_path / "config" / "token"
    code, line = start_up_fails("--token-file", str(token_file))
    assert code == 2
    assert line.startswith(f"error: cannot read the token file {token_file}: Not a directory;")
    assert "give another --token-file" in line


def test_the_port_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        code, line = start_up_fails(port=port)
    assert code == 1
    assert line == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use. "
        "Is another daemon already running? Stop it, or pick another port with --port."
    )


def test_the_disk_full_when_the_token_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "config" / "token"

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(security, "_write_all", disk_full)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    # --verbose: leaves the test process's websockets logger as it is.
    args = parser.parse_args(["--host", "127.0.0.1", "--token-file", str(token_file), "--verbose"])
    assert cli.run(args) == 2
    out = capsys.readouterr()
    assert out.out == f"error: cannot write the token file {token_file}: No space left on device\n"
    assert "Traceback" not in out.err
    # No half-written file is left to be refused at the next start: once there is space, it works.
    assert not token_file.exists()
    monkeypatch.undo()
    token, created = security.load_or_create_token(token_file)
    assert created and token_file.read_text().strip() == token
