"""`differential-inpaint serve` as a real process: what it prints, a job, the token, SIGTERM."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from differential_inpaint import protocol as p
from differential_inpaint.client import DaemonConnection, InpaintError, run_job
from tests.support.daemon import DaemonProcess, daemon_command, running_daemon

from .conftest import RawClient, make_submit

pytestmark = pytest.mark.slow  # real model: seconds each (deselect with -m "not slow")

JOB_TIMEOUT = 180.0


def test_serve_prints_where_it_listens_runs_a_job_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with running_daemon(config_dir=tmp_path) as daemon:
        assert daemon.port > 0 and daemon.url == f"ws://127.0.0.1:{daemon.port}"
        out = daemon.output
        assert "Differential Inpaint daemon listening on ws://127.0.0.1:" in out
        assert "builtin:tiny-sd15" in out and "(default)" in out
        if "No checkpoint was found" in out:  # on a machine without real checkpoints
            assert "paint noise" in out and "--model-dir" in out

        result = run_job(make_submit("one", 64, 64, steps=2), server=daemon.url, timeout=JOB_TIMEOUT)
        assert result.model == "builtin:tiny-sd15" and result.image.width == 64
        log_line = daemon.wait_for_output(r"job one .*done in [\d.]+ s \([\d.]+ s/step\)")
        assert "64x64 region" in log_line

        # A long job, stopped by SIGTERM while it samples: its client is told, exit 0.
        with RawClient(daemon.url) as client:
            client.send(make_submit("long", 64, 64, steps=150))
            client.until(lambda m: isinstance(m, p.Progress) and m.stage == "sampling", JOB_TIMEOUT)
            daemon.signal(signal.SIGTERM)
            error = client.final("long", JOB_TIMEOUT)
            assert isinstance(error, p.Error) and error.code is p.ErrorCode.SHUTTING_DOWN
            assert "stopped" in error.message and "nothing was changed" in error.message
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(JOB_TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert daemon.process.wait(JOB_TIMEOUT) == 0
    assert "SIGTERM received" in daemon.output and "Traceback" not in daemon.output


def test_token_file_requires_the_token_and_never_prints_it(tmp_path: Path) -> None:
    token_file = tmp_path / "secret" / "token"
    with running_daemon("--token-file", str(token_file)) as daemon:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token not in daemon.output
        assert "A token is required (newly generated)" in daemon.output
        assert f"cat {token_file}" in daemon.output
        with pytest.raises(InpaintError) as refused:
            DaemonConnection(daemon.url)
        assert refused.value.code == "unauthorized"
        with pytest.raises(InpaintError):
            DaemonConnection(daemon.url, token=token + "x")
        with DaemonConnection(daemon.url, token=token) as conn:
            assert conn.welcome.default_model == "builtin:tiny-sd15"
        assert daemon.stop() == 0
    assert token not in daemon.output


def test_a_busy_port_and_bad_options_are_explained() -> None:
    with running_daemon() as first:
        second = DaemonProcess(daemon_command(port=first.port))
        assert second.process.wait(JOB_TIMEOUT) == 1
        second.stop()
        assert f"cannot listen on 127.0.0.1:{first.port}" in second.output
        assert "another daemon" in second.output
    bad = subprocess.run(
        daemon_command(model="builtin:no-such-model"), capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert bad.returncode == 2 and "Unknown built-in model" in bad.stdout


def test_serve_help_documents_the_defaults_and_imports_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "differential_inpaint.backend.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for option in (
        "--host",
        "--port",
        "--model",
        "--model-dir",
        "--device",
        "--allow-origin",
        "--token-file",
    ):
        assert option in out
    assert str(p.DEFAULT_PORT) in out and "127.0.0.1" in out
    probe = (
        "import argparse, sys\n"
        "from differential_inpaint.backend.daemon import cli\n"
        "cli.add_arguments(argparse.ArgumentParser())\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'numpy', 'websockets') if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
