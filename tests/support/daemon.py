"""Start a real `differential-inpaint serve` as a subprocess for tests.

Shared by the daemon's own tests and the Krita/GIMP plugin tests:

    from tests.support.daemon import running_daemon

    with running_daemon() as daemon:          # builtin:tiny-sd15, ephemeral port
        result = run_job(submit, server=daemon.url)

or as a pytest fixture in a conftest.py:

    @pytest.fixture(scope="module")
    def daemon_url():
        with running_daemon() as daemon:
            yield daemon.url

The daemon binds 127.0.0.1 on port 0; the real port is read from the line it
prints (`... listening on ws://HOST:PORT`). Its output is drained all along (so
a chatty daemon never blocks on a full pipe) and kept in `daemon.output` for
failure messages. On exit it gets SIGTERM, then SIGKILL if it does not stop.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LISTENING = re.compile(r"listening on (ws://(\S+?):(\d+))")
DEFAULT_MODEL = "builtin:tiny-sd15"


class DaemonProcess:
    """One daemon subprocess; `url`, `host` and `port` are set once it listens."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.url = ""
        self.host = ""
        self.port = 0
        self._lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="daemon-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line.rstrip("\n"))
            if not self._listening.is_set():
                match = LISTENING.search(line)
                if match:
                    self.url, self.host, self.port = match[1], match[2], int(match[3])
                    self._listening.set()
        self._listening.set()  # the daemon exited: stop waiting

    @property
    def output(self) -> str:
        """Everything the daemon printed so far (stdout and stderr, last 2000 lines)."""
        return "\n".join(self._lines)

    def wait_listening(self, timeout: float) -> str:
        if not self._listening.wait(timeout) or not self.url:
            exited = self.process.poll() is not None
            self.stop()
            state = "it exited" if exited else f"still silent after {timeout:g} s"
            raise RuntimeError(
                f"the daemon never said where it listens ({state}); command: "
                f"{' '.join(self.args)}\n--- its output ---\n{self.output}"
            )
        return self.url

    def wait_for_output(self, pattern: str, timeout: float = 30.0) -> str:
        """The first output line matching the regex `pattern`, waiting for it if needed."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self._lines):
                if regex.search(line):
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no output line matches {pattern!r}\n--- output ---\n{self.output}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(5)
        return code


def daemon_command(
    *extra_args: str,
    model: str | None = DEFAULT_MODEL,
    port: int = 0,
    host: str = "127.0.0.1",
    models: Sequence[str] = (),
) -> list[str]:
    """The argv of `differential-inpaint serve` run by this very Python (the venv's);
    `models` are offered after `model` (the default)."""
    command = [sys.executable, "-m", "differential_inpaint.backend.cli", "serve"]
    command += ["--host", host, "--port", str(port)]
    for spec in ([] if model is None else [model]) + list(models):
        command += ["--model", spec]
    return command + list(extra_args)


@contextmanager
def running_daemon(
    *extra_args: str,
    model: str | None = DEFAULT_MODEL,
    host: str = "127.0.0.1",
    startup_timeout: float = 120.0,
    config_dir: str | Path | None = None,
    env: dict[str, str] | None = None,
    models: Sequence[str] = (),
) -> Iterator[DaemonProcess]:
    """A listening daemon for the `with` block; stopped (SIGTERM) afterwards.

    `extra_args` go to `serve` (e.g. "--preview-interval", "0.1"); `models` are
    offered too, after `model` (the default), e.g. ("builtin:tiny-flux",).
    `config_dir` becomes XDG_CONFIG_HOME, so a token the daemon generates
    lands there instead of the developer's real config folder.
    """
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if config_dir is not None:
        full_env["XDG_CONFIG_HOME"] = str(config_dir)
    daemon = DaemonProcess(daemon_command(*extra_args, model=model, host=host, models=models), env=full_env)
    try:
        daemon.wait_listening(startup_timeout)
        yield daemon
    finally:
        daemon.stop()
