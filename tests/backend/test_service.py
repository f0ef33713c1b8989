"""`differential-inpaint service install|remove|status`: what each platform's file says,
and the commands where no user service manager runs (this container, CI).

No test here enables a real service: the manager is either absent or replaced."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from differential_inpaint.backend import service
from differential_inpaint.backend.cli import main as cli
from differential_inpaint.host_plugins.install.daemon_record import SERVE_MODULE

LOG = Path("/home/painter/.cache/differential-inpaint/daemon-7865.log")
ARGV = [sys.executable, "-m", SERVE_MODULE, "serve", "--model-dir", "/models/50% off/$HOME", "--port", "7865"]


@pytest.fixture
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    # Never the developer's own user manager.
    monkeypatch.setattr(service.Systemd, "manager_running", lambda self: False)
    return tmp_path


def test_the_systemd_unit() -> None:
    unit = service.systemd_unit(ARGV, "ws://127.0.0.1:7865", LOG)
    lines = unit.splitlines()
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    # %, $ and spaces are systemd's; the argument reaches the daemon unchanged.
    assert exec_start == (
        f"ExecStart={sys.executable} -m {SERVE_MODULE} serve --model-dir "
        '"/models/50%% off/$$HOME" --port 7865'
    )
    assert f"StandardOutput=append:{LOG}" in lines and "StandardError=inherit" in lines
    assert "Restart=on-failure" in lines and "WantedBy=default.target" in lines
    assert "Type=simple" in lines and "[Install]" in lines


def test_the_launchd_agent() -> None:
    text = service.launchd_plist(ARGV, "ws://127.0.0.1:7865", LOG)
    agent = plistlib.loads(text.encode())
    assert agent["Label"] == service.LABEL and agent["ProgramArguments"] == ARGV
    assert agent["StandardOutPath"] == agent["StandardErrorPath"] == str(LOG)
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}


def test_the_windows_startup_script() -> None:
    argv = [r"C:\Users\A Painter\di\.venv\Scripts\python.exe", "-m", SERVE_MODULE, "serve", "--port", "7865"]
    log = Path(r"C:\Users\A Painter\AppData\Local\differential-inpaint\daemon-7865.log")
    script = service.startup_script(argv, "ws://127.0.0.1:7865", log)
    run_line = next(line for line in script.splitlines() if line.startswith("shell.Run "))
    # VBScript doubles quotes inside a string; cmd /c "..." strips the outer pair.
    inner = run_line[len("shell.Run ") : run_line.rindex(", 0, False")]
    assert inner.startswith('"') and inner.endswith('"')
    command = inner[1:-1].replace('""', '"')
    assert command == (
        rf'cmd /c ""C:\Users\A Painter\di\.venv\Scripts\python.exe" -m {SERVE_MODULE} serve --port 7865 >> '
        rf'"{log}" 2>&1"'
    )


@pytest.mark.parametrize("render", [service.systemd_unit, service.launchd_plist, service.startup_script])
def test_each_file_names_its_address_and_log(render, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "service-file"
    path.write_text(render(ARGV, "ws://127.0.0.1:7866", LOG))
    assert service.read_marker(path) == {"server": "ws://127.0.0.1:7866", "log": str(LOG)}


def test_install_status_remove_without_a_service_manager(
    user_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = user_dirs / "config" / "systemd" / "user" / service.UNIT
    log = user_dirs / "cache" / "differential-inpaint" / "daemon-7907.log"
    assert cli(["service", "install", "--serve-args", "--model builtin:tiny-sd15 --port 7907"]) == 0
    out = capsys.readouterr().out
    assert f"Wrote the systemd user unit {unit}" in out
    assert "No user service manager runs here" in out
    assert f"systemctl --user enable --now {service.UNIT}" in out  # how to enable it
    assert service.read_marker(unit) == {"server": "ws://127.0.0.1:7907", "log": str(log)}
    assert "--model builtin:tiny-sd15 --port 7907\n" in unit.read_text()
    assert log.parent.is_dir()  # the manager opens the log; its folder must exist

    assert cli(["service", "status"]) == 0
    out = capsys.readouterr().out
    assert f"Installed: systemd user unit {unit}" in out
    assert "nothing answers at ws://127.0.0.1:7907" in out
    assert f"Log: {log} (not written yet)" in out

    assert cli(["service", "remove"]) == 0
    assert not unit.exists() and f"Removed {unit}" in capsys.readouterr().out
    assert cli(["service", "remove"]) == 0
    assert "No systemd user unit to remove" in capsys.readouterr().out
    assert cli(["service", "status"]) == 0
    assert "Not installed" in capsys.readouterr().out


def test_install_no_enable_and_bad_args(user_dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["service", "install", "--no-enable"]) == 0
    out = capsys.readouterr().out
    assert "To enable it: systemctl --user daemon-reload" in out
    assert service.read_marker(user_dirs / "config/systemd/user" / service.UNIT)["server"].endswith(":7865")
    assert cli(["service", "install", "--serve-args=--port 0"]) == 2
    assert "--port 0" in capsys.readouterr().err


def test_with_a_service_manager_it_enables_the_unit(
    user_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(service.Systemd, "manager_running", lambda self: True)
    monkeypatch.setattr(service, "_run", fake_run)
    assert cli(["service", "install"]) == 0
    assert calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", service.UNIT],
    ]
    assert "Enabled and started" in capsys.readouterr().out
    calls.clear()
    assert cli(["service", "remove"]) == 0
    assert ["systemctl", "--user", "disable", "--now", service.UNIT] in calls


def test_systemd_analyze_accepts_the_unit(user_dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: the systemd package)")
    assert (
        cli(["service", "install", "--no-enable", "--serve-args", "--model-dir '/a b/50%' --port 7908"]) == 0
    )
    unit = user_dirs / "config" / "systemd" / "user" / service.UNIT
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check is real: a unit it cannot run is refused.
    broken = user_dirs / "broken.service"
    broken.write_text(unit.read_text().replace(f"ExecStart={sys.executable}", "ExecStart=relative/python"))
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
