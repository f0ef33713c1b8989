"""The plugin inside real Krita (kritarunner, offscreen), installed as it ships.

Kritarunner launches, each running a batch of scenarios from
krita_scenarios.py (Krita's startup is paid once per batch):
  - byte-exact: against a stand-in daemon whose answers are known to the byte
    (all depths, offsets, groups, failures, the dialog/menu path, the zip);
  - end to end: against the real daemon (`serve --model builtin:tiny-sd15` on an
    ephemeral port);
  - started on demand: the plugin installed by `install-plugin krita --serve-args
    "--model builtin:tiny-sd15 --port P"` and no daemon running: the plugin starts it.
Without Krita these skip on a developer machine and fail in CI (tests/support/hosts.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from differential_inpaint.backend.cli import main as cli
from differential_inpaint.host_plugins.install import krita as krita_installer
from differential_inpaint.host_plugins.install.daemon_record import start_command, write_record
from tests.host_plugins.client import started as started_daemons
from tests.support.daemon import running_daemon
from tests.support.fake_daemon import fake_daemon
from tests.support.hosts import require_host

from . import krita_scenarios
from .conftest import unused_port

pytestmark = [pytest.mark.krita, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
AUTOSTART = [name for name in krita_scenarios.SCENARIOS if name.startswith("autostart_")]
EXACT = [name for name in krita_scenarios.SCENARIOS if not name.startswith(("real_", "autostart_"))]
REAL = [name for name in krita_scenarios.SCENARIOS if name.startswith("real_")]
LAUNCH_TIMEOUT = 900


def kritarunner() -> str | None:
    return shutil.which("kritarunner")


def run_in_krita(
    workdir: Path,
    pykrita: Path,
    scenarios: list[str],
    servers: dict[str, str],
    extra: dict[str, Any],
    env_extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One kritarunner launch; returns the verdict (with the launch's output on failure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_home = workdir / "config"
    config_home.mkdir(exist_ok=True)
    # Without OpenGL, an offscreen Krita can open a main window and views (needed
    # for its undo actions and our menu action).
    (config_home / "kritadisplayrc").write_text("[General]\nOpenGLRenderer=none\n", encoding="utf-8")
    verdict_path = workdir / "verdict.json"
    config = {"verdict": str(verdict_path), "scenarios": scenarios, **servers, **extra}
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        PYTHONPATH=os.pathsep.join([str(HERE), str(pykrita)]),
        XDG_CONFIG_HOME=str(config_home),  # Krita's settings (and ours) stay in the temp folder
        XDG_RUNTIME_DIR=str(workdir),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(env_extra or {})
    started = time.monotonic()
    with one_krita_at_a_time():
        proc = _launch(config_path, env)
    verdict: dict[str, Any] = {"scenarios": {}, "done": False}
    if verdict_path.is_file():
        verdict = json.loads(verdict_path.read_text(encoding="utf-8"))
    verdict["launch_seconds"] = round(time.monotonic() - started, 1)
    verdict["output"] = proc.stdout[-6000:]
    verdict["returncode"] = proc.returncode
    return verdict


@contextlib.contextmanager
def one_krita_at_a_time() -> Iterator[None]:
    """Krita locks its resource database (in ~/.local/share/krita): two launches at once,
    from two test runs on one machine, would wait for each other forever."""
    with open(Path(tempfile.gettempdir()) / "differential-inpaint-kritarunner.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _launch(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kritarunner() or "kritarunner", "-s", "krita_scenarios", "-f", "main", str(config_path)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=LAUNCH_TIMEOUT,
    )


@pytest.fixture(scope="module")
def krita_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_host(kritarunner() is not None, "kritarunner is not installed (apt-get install krita)")
    base = tmp_path_factory.mktemp("in-krita")
    resources = base / "resources"
    krita_installer.install(resources / "pykrita")
    listing = sorted(str(p.relative_to(resources)) for p in resources.rglob("*") if p.is_file())
    zip_path = krita_installer.package(base / "differential_inpaint.zip")
    return {
        "base": base,
        "pykrita": resources / "pykrita",
        "extra": {
            "zip": str(zip_path),
            "zip_resources": str(base / "zip-resources"),
            "installed_listing": listing,
        },
    }


@pytest.fixture(scope="module")
def exact_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with fake_daemon() as fake:
        servers = {"fake_daemon": fake.url, "dead_server": f"ws://127.0.0.1:{unused_port()}"}
        yield run_in_krita(
            krita_env["base"] / "exact", krita_env["pykrita"], EXACT, servers, krita_env["extra"]
        )


@pytest.fixture(scope="module")
def real_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with running_daemon() as daemon:
        servers = {"real_daemon": daemon.url}
        verdict = run_in_krita(
            krita_env["base"] / "real", krita_env["pykrita"], REAL, servers, krita_env["extra"]
        )
        verdict["daemon_output"] = daemon.output[-4000:]
        yield verdict


# A launch that quits Krita normally: a job that failed, one that worked and one that
# was cancelled must leave nothing that crashes Krita's own teardown.
QUIT_CLEANLY = [
    "daemon_not_running",
    "controller_error",
    "exact_U8",
    "controller_cancel",
    "batch_cancelled",  # a batch cancelled part-way, its finished result kept
    "history_without_window",  # a fan previewed, applied and discarded from the History
]


@pytest.fixture(scope="module")
def quit_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with fake_daemon() as fake:
        servers = {"fake_daemon": fake.url, "dead_server": f"ws://127.0.0.1:{unused_port()}"}
        extra = {**krita_env["extra"], "hard_exit": False}
        yield run_in_krita(krita_env["base"] / "quit", krita_env["pykrita"], QUIT_CLEANLY, servers, extra)


def test_krita_quits_cleanly_after_failed_successful_and_cancelled_jobs(quit_verdict: dict[str, Any]) -> None:
    for name in QUIT_CLEANLY:
        assert_scenario(quit_verdict, name)
    assert quit_verdict["returncode"] == 0, (
        f"kritarunner exited with {quit_verdict['returncode']}\n{quit_verdict['output']}"
    )


def assert_scenario(verdict: dict[str, Any], name: str) -> None:
    if "setup_error" in verdict:
        pytest.fail(f"the scenarios could not start in Krita:\n{verdict['setup_error']}")
    result = verdict["scenarios"].get(name)
    if result is None:
        pytest.fail(
            f"Krita never reported scenario {name!r} (exit {verdict['returncode']}, "
            f"{verdict['launch_seconds']} s)\n--- kritarunner output ---\n{verdict['output']}"
            + (f"\n--- daemon output ---\n{verdict['daemon_output']}" if "daemon_output" in verdict else "")
        )
    failed = {check: detail for check, (ok, detail) in result["checks"].items() if not ok}
    message = f"{name} failed in Krita {verdict.get('krita')}:"
    if result["error"]:
        message += f"\n{result['error']}"
    if failed:
        message += "\n" + "\n".join(f"  - {check}: {detail}" for check, detail in failed.items())
    if not result["checks"] and not result["error"]:
        message += " it made no checks"
    assert result["ok"], message


def test_the_installed_plugin_and_its_vendored_libraries_were_used(exact_verdict: dict[str, Any]) -> None:
    if "setup_error" in exact_verdict:
        pytest.fail(exact_verdict["setup_error"])
    assert "/pykrita/differential_inpaint/" in exact_verdict["plugin"]
    assert all("/differential_inpaint/_vendor/" in path for path in exact_verdict["vendored"])


@pytest.mark.parametrize("name", EXACT)
def test_in_krita_exact(exact_verdict: dict[str, Any], name: str) -> None:
    assert_scenario(exact_verdict, name)


@pytest.mark.parametrize("name", REAL)
def test_in_krita_with_the_real_daemon(real_verdict: dict[str, Any], name: str) -> None:
    assert_scenario(real_verdict, name)


@pytest.fixture(scope="module")
def autostart_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The plugin installed with a start command by the real command line, no daemon running;
    every daemon the plugin starts is ended afterwards (they are detached from Krita)."""
    base = krita_env["base"] / "autostart"
    pykrita = base / "resources" / "pykrita"
    port, bad_port = unused_port(), unused_port()
    serve_args = f"--model builtin:tiny-sd15 --port {port}"
    assert cli(["install-plugin", "krita", "--dest", str(pykrita), "--serve-args", serve_args]) == 0
    good, bad = start_command(serve_args), start_command(f"--model nope:missing --port {bad_port}")
    (base / "bad").mkdir(parents=True)
    bad_record = write_record(base / "bad", bad)
    workdir = base / "run"
    extra = {"autostart_port": port, "bad_port": bad_port, "bad_record": str(bad_record)}
    try:
        verdict = run_in_krita(
            workdir, pykrita, AUTOSTART, {}, extra, env_extra={"XDG_CACHE_HOME": str(workdir / "cache")}
        )
        log = workdir / "cache" / "differential-inpaint" / f"daemon-{port}.log"
        verdict["daemon_output"] = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
        yield verdict
    finally:
        started_daemons.end_started([workdir / "differential-inpaint"], [good.argv, bad.argv])


@pytest.mark.parametrize("name", AUTOSTART)
def test_in_krita_the_daemon_started_on_demand(autostart_verdict: dict[str, Any], name: str) -> None:
    assert_scenario(autostart_verdict, name)
