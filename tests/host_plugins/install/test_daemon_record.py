"""install-plugin records how to start this installation's daemon in the plugin
(client/daemon.json), and the plugin's default address follows the recorded port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from differential_inpaint.backend.cli import main as cli
from differential_inpaint.client import launcher
from differential_inpaint.host_plugins.install import gimp as gimp_installer
from differential_inpaint.host_plugins.install import krita as krita_installer
from differential_inpaint.host_plugins.install.daemon_record import (
    IDLE_OPTION,
    SERVE_MODULE,
    ServeArgsError,
    start_command,
)
from differential_inpaint.host_plugins.install.payload import check_payload

GIMP_CLIENT = Path("differential-inpaint") / gimp_installer.PACKAGE / "client"
KRITA_CLIENT = Path(krita_installer.NAME) / "client"

# The installed GIMP package, imported as GIMP's Python would: no site-packages.
DEFAULT_SERVER = (
    "import sys, os; d = sys.argv[1]; "
    "sys.path[:0] = [os.path.join(d, 'differential_inpaint_gimp', '_vendor'), d]; "
    "from differential_inpaint_gimp.client import DEFAULT_SERVER, launcher; "
    "print(DEFAULT_SERVER, launcher.can_start(''))"
)


def installed_default(plugin: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-S", "-c", DEFAULT_SERVER, str(plugin)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def record_in(client: Path) -> dict:
    return json.loads((client / launcher.RECORD_NAME).read_text(encoding="utf-8"))


def test_install_plugin_records_the_start_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "my models"
    models.mkdir()
    monkeypatch.chdir(tmp_path)  # a relative --model-dir is made absolute
    args = ["--dest", str(tmp_path / "plug-ins"), "--serve-args", "--model builtin:tiny-sd15 --port 7901"]
    assert cli(["install-plugin", "gimp", *args[:2], args[2], args[3] + ' --model-dir "my models"']) == 0
    out = capsys.readouterr().out
    assert "When a run finds no daemon at ws://127.0.0.1:7901" in out and "daemon-7901.log" in out
    plugin = tmp_path / "plug-ins" / "differential-inpaint"
    record = record_in(tmp_path / "plug-ins" / GIMP_CLIENT)
    expected = [
        "--model",
        "builtin:tiny-sd15",
        "--port",
        "7901",
        "--model-dir",
        str(models),
        IDLE_OPTION,
        "1800",
    ]
    assert record["command"] == [sys.executable, "-m", SERVE_MODULE, "serve", *expected]
    assert record["server"] == "ws://127.0.0.1:7901"
    assert record["idle_exit"] == 1800
    assert gimp_installer.check(plugin) == []
    # The plug-in's default address follows the recorded port, and it can start that daemon.
    assert installed_default(plugin) == ["ws://127.0.0.1:7901", "True"]
    # The recorded command runs this installation's daemon (asked only for its help here).
    done = subprocess.run(record["command"] + ["--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--model-dir" in done.stdout, done.stderr


def test_the_default_and_no_start(tmp_path: Path) -> None:
    assert cli(["install-plugin", "krita", "--dest", str(tmp_path / "pykrita")]) == 0
    record = record_in(tmp_path / "pykrita" / KRITA_CLIENT)
    assert record["server"] == "ws://127.0.0.1:7865"
    assert record["command"][1:4] == ["-m", SERVE_MODULE, "serve"]
    assert krita_installer.check_layout(tmp_path / "pykrita") == []

    assert cli(["install-plugin", "gimp", "--dest", str(tmp_path / "plug-ins"), "--no-start"]) == 0
    assert not (tmp_path / "plug-ins" / GIMP_CLIENT / launcher.RECORD_NAME).exists()
    assert installed_default(tmp_path / "plug-ins" / "differential-inpaint") == [
        "ws://127.0.0.1:7865",
        "False",
    ]


def test_a_reinstall_replaces_the_record(tmp_path: Path) -> None:
    dest = ["--dest", str(tmp_path / "pykrita")]
    assert cli(["install-plugin", "krita", *dest, "--serve-args", "--port 7902 --device cpu"]) == 0
    assert record_in(tmp_path / "pykrita" / KRITA_CLIENT)["server"] == "ws://127.0.0.1:7902"
    assert cli(["install-plugin", "krita", *dest, "--no-start"]) == 0
    assert not (tmp_path / "pykrita" / KRITA_CLIENT / launcher.RECORD_NAME).exists()


def test_the_zip_records_nothing(tmp_path: Path) -> None:
    """A zip may go to another machine: it carries no path of this one."""
    written = krita_installer.package(tmp_path / "di.zip")
    with zipfile.ZipFile(written) as archive:
        assert not [n for n in archive.namelist() if n.endswith(launcher.RECORD_NAME)]


@pytest.mark.parametrize(
    ("serve_args", "complaint"),
    [
        ("--port 0", "--port 0 picks a different port"),
        ("--port 70000", "--port must be 1-65535"),
        ("--bogus 1", "unrecognized arguments: --bogus"),
        ("--port x", "invalid int value: 'x'"),
        ("--host 0.0.0.0", "would let other machines reach"),
        ("--help", "--help is not an option to record"),
        ('--model "unclosed', "No closing quotation"),
    ],
)
def test_bad_serve_args_are_refused_at_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serve_args: str, complaint: str
) -> None:
    if complaint.startswith("No closing"):
        with pytest.raises(ValueError, match=complaint):
            start_command(serve_args)
        return
    assert cli(["install-plugin", "gimp", "--dest", str(tmp_path), f"--serve-args={serve_args}"]) == 2
    assert complaint in capsys.readouterr().err
    assert not (tmp_path / "differential-inpaint").exists()  # nothing installed


def test_start_command_details(tmp_path: Path) -> None:
    command = start_command(["--model", str(tmp_path), "--model=builtin:tiny-sd15", "--token-file=t"])
    assert command.serve_args == [
        "--model",
        str(tmp_path),
        "--model=builtin:tiny-sd15",
        f"--token-file={Path('t').resolve()}",
    ]
    assert start_command("--host localhost --port 7903").server == "ws://127.0.0.1:7903"
    assert start_command("--host ::1").server == "ws://[::1]:7865"
    assert start_command("--host 0.0.0.0", allow_remote=True).server == "ws://127.0.0.1:7865"
    with pytest.raises(ServeArgsError):
        start_command("--host 192.168.1.5")
    assert IDLE_OPTION not in start_command("", idle_exit=None).argv


def test_a_damaged_record_is_a_payload_problem(tmp_path: Path) -> None:
    plugin = krita_installer.install(tmp_path / "pykrita", daemon=start_command("--port 7904"))
    assert check_payload(plugin) == []
    (plugin / "client" / launcher.RECORD_NAME).write_text('{"command": "python serve"}')
    assert any(launcher.RECORD_NAME in problem for problem in check_payload(plugin))
