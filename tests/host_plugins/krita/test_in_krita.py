"""The plugin inside real Krita (kritarunner, offscreen), installed as it ships.

Kritarunner launches, each running a batch of scenarios from
krita_scenarios.py (Krita's startup is paid once per batch), in this machine's
Krita (5.1 on Debian 12):
  - byte-exact: against a stand-in daemon whose answers are known to the byte
    (all depths, offsets, groups, failures, the dialog/menu path, the zip);
  - end to end: against the real daemon (`serve --model builtin:tiny-sd15 --model
    builtin:tiny-flux`, -schnell and -fill, on an ephemeral port);
  - started on demand: the plugin installed by `install-plugin krita --serve-args
    "--model builtin:tiny-sd15 --port P"` and no daemon running: the plugin starts it.
and in Krita 5.2 (Python 3.13) inside the Debian trixie chroot (tests/support/trixie_chroot.py):
  - quitting normally after failed, successful and cancelled jobs (also in 5.1);
  - byte-exact, the same batch as in 5.1.
Without Krita these skip on a developer machine and fail in CI (tests/support/hosts.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from differential_inpaint.backend.cli import main as cli
from differential_inpaint.host_plugins.install import krita as krita_installer
from differential_inpaint.host_plugins.install.daemon_record import start_command, write_record
from tests.host_plugins.client import started as started_daemons
from tests.support import trixie_chroot
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
# A batch against the stand-in daemon takes seconds; a hang must not cost CI 15 minutes.
FAKE_DAEMON_TIMEOUT = 300
# The modules of this folder that kritarunner imports.
IN_KRITA = ["krita_scenarios.py", "form_check.py"]


def kritarunner() -> str | None:
    return shutil.which("kritarunner")


def run_in_krita(
    workdir: Path,
    pykrita: Path,
    scenarios: list[str],
    servers: dict[str, str],
    extra: dict[str, Any],
    env_extra: dict[str, str] | None = None,
    *,
    chroot: Path | None = None,
    timeout: float = LAUNCH_TIMEOUT,
) -> dict[str, Any]:
    """One kritarunner launch; returns the verdict (with the launch's output on failure).

    `chroot`: run the Krita inside that root (then `workdir` and `pykrita` lie inside it,
    and paths in `extra` are given as seen from inside); None: this machine's Krita."""
    seen = _seen_from(chroot)
    workdir.mkdir(parents=True, exist_ok=True)
    config_home = workdir / "config"
    config_home.mkdir(exist_ok=True)
    # Without OpenGL, an offscreen Krita can open a main window and views (needed
    # for its undo actions and our menu action).
    (config_home / "kritadisplayrc").write_text("[General]\nOpenGLRenderer=none\n", encoding="utf-8")
    verdict_path = workdir / "verdict.json"
    config = {"verdict": seen(verdict_path), "scenarios": scenarios, **servers, **extra}
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    scenarios_dir = HERE
    extras = dict(env_extra or {})
    if chroot is not None:
        scenarios_dir = workdir / "scenarios"  # the chroot's Krita cannot see this checkout
        scenarios_dir.mkdir(exist_ok=True)
        for name in IN_KRITA:
            shutil.copyfile(HERE / name, scenarios_dir / name)
        # Krita 5.2's kritarunner crashes opening a window without the menu layout that
        # only the krita executable carries (5.1's opens one without): lend it that one.
        rcc = workdir / "kritarunner.rcc"
        rcc.write_bytes(qt_resource("kxmlgui5/krita5.xmlgui", krita_menu_layout(chroot / "usr/bin/krita")))
        extras.setdefault("DI_KRITARUNNER_RESOURCES", seen(rcc))
    env = {
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": os.pathsep.join([seen(scenarios_dir), seen(pykrita)]),
        "XDG_CONFIG_HOME": seen(config_home),  # Krita's settings (and ours) stay in the temp folder
        "XDG_RUNTIME_DIR": seen(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONFAULTHANDLER": "1",  # a crash prints every Python thread's stack into the output
        **extras,
    }
    argv = ["kritarunner", "-s", "krita_scenarios", "-f", "main", seen(config_path)]
    with one_krita_at_a_time():
        started = time.monotonic()
        try:
            if chroot is None:
                proc = _launch([kritarunner() or argv[0], *argv[1:]], {**os.environ, **env}, timeout)
            else:  # the chroot's own HOME and PATH plus ours; this machine's mean nothing there
                proc = trixie_chroot.run(argv, env=env, timeout=timeout)
            output, returncode = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            # A hang (say, a modal dialog nobody closes): report what ran, and the output.
            partial = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
            output, returncode = f"{partial or ''}\n[kritarunner killed after {timeout:.0f} s]", None
        seconds = time.monotonic() - started
    verdict: dict[str, Any] = {"scenarios": {}, "done": False}
    if verdict_path.is_file():
        verdict = json.loads(verdict_path.read_text(encoding="utf-8"))
    verdict["launch_seconds"] = round(seconds, 1)
    verdict["output"] = output[-6000:]
    verdict["returncode"] = returncode
    return verdict


def _seen_from(chroot: Path | None) -> Callable[[Path], str]:
    """How kritarunner names a path of this machine: as is, or relative to its chroot."""
    if chroot is None:
        return str
    return lambda path: "/" + str(path.relative_to(chroot))


def krita_menu_layout(executable: Path) -> bytes:
    """krita5.xmlgui as built into the krita executable (a zlib stream among its Qt resources)."""
    data = executable.read_bytes()
    start = data.find(b"x\x9c")
    while start >= 0:
        with contextlib.suppress(zlib.error):
            if b"<kpartgui" in zlib.decompressobj().decompress(data[start : start + 4096], 256):
                return zlib.decompressobj().decompress(data[start:])
        start = data.find(b"x\x9c", start + 1)
    raise AssertionError(f"no menu layout (<kpartgui>) in {executable}")


def qt_resource(path: str, content: bytes) -> bytes:
    """A Qt binary resource file (rcc format 1, uncompressed) holding `content` at ":/<path>"."""

    def qt_hash(name: str) -> int:  # QResource finds a folder's children by this hash
        h = 0
        for char in name:  # names here are ASCII: one UTF-16 unit each
            h = (h << 4) + ord(char)
            h ^= (h & 0xF0000000) >> 23
            h &= 0x0FFFFFFF
        return h

    parts = path.split("/")
    names, offsets = b"", []
    for part in parts:
        offsets.append(len(names))
        utf16 = part.encode("utf-16-be")
        names += struct.pack(">HI", len(utf16) // 2, qt_hash(part)) + utf16
    # Node 0 is the root, node i a folder holding node i + 1, the last one the file. Each:
    # name offset, flags (2: folder), then child count and first child, or country (any),
    # language (1: C, what rcc writes for files of no language) and data offset.
    tree = struct.pack(">IHII", 0, 2, 1, 1)
    for i, offset in enumerate(offsets[:-1]):
        tree += struct.pack(">IHII", offset, 2, 1, i + 2)
    tree += struct.pack(">IHHHI", offsets[-1], 0, 0, 1, 0)
    payload = struct.pack(">I", len(content)) + content
    header = 20
    return (
        b"qres"
        + struct.pack(">IIII", 1, header, header + len(tree) + len(names), header + len(tree))
        + tree
        + names
        + payload
    )


@contextlib.contextmanager
def one_krita_at_a_time() -> Iterator[None]:
    """Krita locks its resource database (in ~/.local/share/krita): two launches at once,
    from two test runs on one machine, would wait for each other forever. The chroot's
    Krita has its own ~ (and trixie_chroot.run holds the root's lock), but shares /dev/shm,
    IPC and the network with this machine's: one Krita at a time, wherever it runs."""
    with open(Path(tempfile.gettempdir()) / "differential-inpaint-kritarunner.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _launch(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def krita_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_host(kritarunner() is not None, "kritarunner is not installed (apt-get install krita)")
    return _installed(tmp_path_factory.mktemp("in-krita"), str)


@pytest.fixture(scope="module")
def krita52_env() -> Iterator[dict[str, Any]]:
    """The same, for Krita 5.2 in the trixie chroot: the plugin installed into a folder inside it."""
    require_host(*trixie_chroot.ready("krita"))
    root = trixie_chroot.root()
    base = root / "root" / "di-tests" / f"krita-{uuid.uuid4().hex}"
    try:
        yield {**_installed(base, _seen_from(root)), "chroot": root}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _installed(base: Path, seen: Callable[[Path], str]) -> dict[str, Any]:
    """The plugin installed into base/resources/pykrita, and the zip the installer packages."""
    resources = base / "resources"
    krita_installer.install(resources / "pykrita")
    listing = sorted(str(p.relative_to(resources)) for p in resources.rglob("*") if p.is_file())
    zip_path = krita_installer.package(base / "differential_inpaint.zip")
    return {
        "base": base,
        "pykrita": resources / "pykrita",
        "chroot": None,
        "extra": {
            "zip": seen(zip_path),
            "zip_resources": seen(base / "zip-resources"),
            "installed_listing": listing,
        },
    }


def _against_fake_daemon(
    env: dict[str, Any], name: str, scenarios: list[str], **extra: Any
) -> Iterator[dict[str, Any]]:
    """One launch of `scenarios` against the stand-in daemon (on this machine's loopback,
    which the chroot shares) and a port where nothing listens."""
    with fake_daemon() as fake:
        servers = {"fake_daemon": fake.url, "dead_server": f"ws://127.0.0.1:{unused_port()}"}
        yield run_in_krita(
            env["base"] / name,
            env["pykrita"],
            scenarios,
            servers,
            {**env["extra"], **extra},
            chroot=env["chroot"],
            timeout=FAKE_DAEMON_TIMEOUT,
        )


@pytest.fixture(scope="module")
def exact_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from _against_fake_daemon(krita_env, "exact", EXACT)


@pytest.fixture(scope="module")
def exact52_verdict(krita52_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from _against_fake_daemon(krita52_env, "exact", EXACT)


@pytest.fixture(scope="module")
def real_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with running_daemon(
        "--depth-model", "builtin:tiny-depth", models=krita_scenarios.REAL_FLUX_MODELS
    ) as daemon:
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
    "strength_map_controller",  # strength maps through the GUI's job path, one failing
]


@pytest.fixture(scope="module")
def quit_verdict(krita_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from _against_fake_daemon(krita_env, "quit", QUIT_CLEANLY, hard_exit=False)


@pytest.fixture(scope="module")
def quit52_verdict(krita52_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from _against_fake_daemon(krita52_env, "quit", QUIT_CLEANLY, hard_exit=False)


def test_krita_quits_cleanly_after_failed_successful_and_cancelled_jobs(quit_verdict: dict[str, Any]) -> None:
    assert_quit_cleanly(quit_verdict)


def test_krita_52_quits_cleanly_after_failed_successful_and_cancelled_jobs(
    quit52_verdict: dict[str, Any],
) -> None:
    assert_quit_cleanly(quit52_verdict)
    assert quit52_verdict["krita"].startswith("5.2."), quit52_verdict["krita"]
    assert quit52_verdict["python"].startswith("3.13."), quit52_verdict["python"]


def assert_quit_cleanly(verdict: dict[str, Any]) -> None:
    for name in QUIT_CLEANLY:
        assert_scenario(verdict, name)
    assert verdict["returncode"] == 0, f"kritarunner exited with {verdict['returncode']}\n{verdict['output']}"


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


@pytest.mark.parametrize("name", EXACT)
def test_in_krita_52_exact(exact52_verdict: dict[str, Any], name: str) -> None:
    assert_scenario(exact52_verdict, name)


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
