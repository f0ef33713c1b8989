"""Real GIMP 3 (trixie chroot), the plug-in installed by `install-plugin gimp --serve-args
"--model builtin:tiny-sd15 --port P"` and no daemon running: a run starts the daemon.

The plug-in runs inside the chroot, so the command it starts must run there: the
recorded command is this venv's Python, which lives on the host. For this test the
host folders that command needs (the venv, the Python it was made from, the
project's sources for an editable install) are bind-mounted read-only into the
chroot at the same paths, so the recorded command runs unchanged inside. The
daemon it starts is detached from GIMP; the fixture ends it before unmounting.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from differential_inpaint.backend.cli import main as cli
from differential_inpaint.host_plugins.install.daemon_record import start_command, write_record
from tests.host_plugins.client import started
from tests.support import trixie_chroot as chroot
from tests.support.hosts import require_host

from . import gimp_host

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

HERE = Path(__file__).parent
GIMP_TIMEOUT = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_paths() -> list[Path]:
    """The host folders the recorded command reads: the venv, its base Python, and the
    source folders an editable install points into; nested ones folded into their parent."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    for name in ("protocol", "client", "backend", "host_plugins"):
        spec = importlib.util.find_spec(f"differential_inpaint.{name}")
        if spec is not None and spec.submodule_search_locations:
            paths.add(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
    folded = sorted(paths, key=lambda p: len(p.parts))
    return [p for i, p in enumerate(folded) if not any(p.is_relative_to(q) for q in folded[:i])]


@contextmanager
def mounted_with(root: Path, binds: list[Path]) -> Iterator[None]:
    """The chroot's usual mounts plus `binds`, read-only at the same paths (one user at a time)."""
    with chroot._locked(root), chroot._mounted(root):
        made: list[Path] = []
        for source in binds:
            target = root / source.relative_to("/")
            missing = [target, *target.parents]
            made += [p for p in missing if not p.exists() and p.is_relative_to(root)]
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            subprocess.run(["mount", "--make-private", str(target)], capture_output=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        try:
            yield
        finally:
            chroot.unmount_all(root)  # _mounted does it too; the folders below must be empty first
            for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()


@pytest.fixture(scope="module")
def verdicts() -> Iterator[dict[str, Any]]:
    require_host(*gimp_host.chroot_ready())
    root = chroot.root()
    port, bad_port = free_port(), free_port()
    serve_args = f"--model builtin:tiny-sd15 --port {port}"
    plug_ins = root / "root/.config/GIMP/3.0/plug-ins"
    assert cli(["install-plugin", "gimp", "--dest", str(plug_ins), "--serve-args", serve_args]) == 0
    good, bad = start_command(serve_args), start_command(f"--model nope:missing --port {bad_port}")
    cache = root / "root/.cache/differential-inpaint"  # the launcher's folder inside (HOME=/root)
    shutil.rmtree(cache, ignore_errors=True)
    inside = Path("/root/di-tests") / uuid.uuid4().hex
    work = root / inside.relative_to("/")
    work.mkdir(parents=True)
    write_record(work, bad).rename(work / "bad-daemon.json")
    shutil.copyfile(HERE / "autostart_in_gimp.py", work / "autostart_in_gimp.py")
    spec = {
        "out": str(inside / "verdict.json"),
        "port": port,
        "bad_port": bad_port,
        "bad_record": str(inside / "bad-daemon.json"),
        "plugin_dir": "/root/.config/GIMP/3.0/plug-ins/differential-inpaint",
    }
    (work / "spec.json").write_text(json.dumps(spec))
    code = f'SPEC = "{inside}/spec.json"; exec(open("{inside}/autostart_in_gimp.py").read())'
    argv = ["gimp-console-3.0", "-i", "--batch-interpreter=python-fu-eval", "-b", code, "--quit"]
    try:
        with mounted_with(root, host_paths()):
            try:
                done = chroot._chroot(root, argv, timeout=GIMP_TIMEOUT, capture=True)
            finally:
                # Detached from GIMP, so GIMP's exit leaves them: end them while the binds are there.
                ended = started.end_started([cache], [good.argv, bad.argv])
        results: dict[str, Any] = {}
        if (work / "verdict.json").is_file():
            results = json.loads((work / "verdict.json").read_text())
        log = cache / f"daemon-{port}.log"
        results["_output"] = done.stdout[-6000:]
        results["_daemon_log"] = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        results["_ended"] = ended
        results["_port"] = port
        yield results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verdict(verdicts: dict[str, Any], name: str) -> dict[str, Any]:
    found = verdicts.get(name)
    context = f"\n--- GIMP ---\n{verdicts['_output']}\n--- daemon log ---\n{verdicts['_daemon_log']}"
    assert found is not None, f"GIMP wrote no verdict for {name!r}{context}"
    assert "crashed" not in found, found["crashed"] + context
    return found


def test_the_default_address_follows_the_recorded_port(verdicts: dict[str, Any]) -> None:
    found = verdict(verdicts, "default")
    assert found["server_url_default"] == f"ws://127.0.0.1:{verdicts['_port']}"
    assert found["state_before"][0] == "not running", found


def prompts(names: list[str]) -> list[str]:
    """Layer names without the result's " · seed" (a random seed each run)."""
    return [name.split(" \u00b7 ")[0] for name in names]


def test_a_first_run_starts_the_daemon(verdicts: dict[str, Any]) -> None:
    found = verdict(verdicts, "first")
    assert found["status"] == "success", found["message"]
    assert prompts(found["layers_after"]) == ["started on demand", "source"]
    assert found["state"][:2] == ["ready", "builtin:tiny-sd15"], found
    # Started by the plug-in's process, it outlived it, in a session of its own.
    assert found["pid"] is not None and found["detached"] and found["starts_logged"] == 1


def test_a_second_run_reuses_it(verdicts: dict[str, Any]) -> None:
    first, second = verdict(verdicts, "first"), verdict(verdicts, "second")
    assert second["status"] == "success", second["message"]
    assert second["pid"] == first["pid"] and second["starts_logged"] == 1


def test_two_concurrent_first_runs_start_one_daemon(verdicts: dict[str, Any]) -> None:
    found = verdict(verdicts, "concurrent")
    assert found["stopped"] is True and found["state_after_stop"][0] == "not running"
    assert [prompts(names) for names in found["outcomes"]] == [
        ["concurrent 0", "source"],
        ["concurrent 1", "source"],
    ], found
    assert found["starts_logged"] == 1 and found["pid"] not in (None, verdict(verdicts, "first")["pid"])
    assert found["pid"] in verdicts["_ended"]  # the one daemon the teardown found running


def test_a_failing_start_quotes_the_daemon_and_changes_nothing(verdicts: dict[str, Any]) -> None:
    found = verdict(verdicts, "bad")
    assert found["status"] == "execution-error"
    assert "The daemon did not start" in found["message"]
    assert "Unknown model 'nope:missing'" in found["message"]
    assert found["layers_after"] == found["layers_before"] and found["drawable_unchanged"]
    assert found["bad_pid"] is None


def test_a_remote_address_is_only_connected_to(verdicts: dict[str, Any]) -> None:
    found = verdict(verdicts, "remote")
    assert found["status"] == "execution-error"
    assert "only connects" in found["message"]
    assert found["runtime_unchanged"] and found["layers_after"] == found["layers_before"]
