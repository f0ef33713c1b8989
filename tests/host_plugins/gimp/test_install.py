"""The GIMP installer's layout — GIMP skips a wrong one silently — checked on the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from differential_inpaint.backend.cli import main as cli_main
from differential_inpaint.host_plugins.install import gimp as gimp_installer


def test_layout(installed_plugin: Path) -> None:
    assert installed_plugin.name == "differential-inpaint"
    entry = installed_plugin / "differential-inpaint.py"
    assert entry.is_file() and os.access(entry, os.X_OK)
    assert entry.read_text().startswith("#!/usr/bin/env python3\n")
    package = installed_plugin / "differential_inpaint_gimp"
    for name in (
        "formats.py",
        "gimp_io.py",
        "plugin.py",
        "protocol/region.py",
        "client/__init__.py",
        "_vendor/msgpack/fallback.py",
        "_vendor/websockets/sync/client.py",
    ):
        assert (package / name).is_file(), name
    files = [p for p in installed_plugin.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".so", ".pyd", ".pyc")]
    # Nothing but the entry point and the package: GIMP looks at the folder.
    assert sorted(p.name for p in installed_plugin.iterdir()) == [
        "differential-inpaint.py",
        "differential_inpaint_gimp",
    ]
    assert not list(installed_plugin.parent.glob(".*"))  # no staging folder left behind
    assert gimp_installer.check(installed_plugin) == []


def test_reinstall_replaces_old_files(tmp_path: Path) -> None:
    folder = gimp_installer.install(tmp_path)
    stale = folder / "differential_inpaint_gimp" / "stale_module.py"
    stale.write_text("raise SystemExit")
    assert gimp_installer.install(tmp_path) == folder
    assert not stale.exists()
    assert gimp_installer.check(folder) == []


def test_check_names_the_mistakes_gimp_would_hide(tmp_path: Path) -> None:
    folder = gimp_installer.install(tmp_path)
    (folder / "differential-inpaint.py").chmod(0o644)
    assert any("not executable" in problem for problem in gimp_installer.check(folder))
    renamed = folder.rename(tmp_path / "differential_inpaint")
    assert "GIMP needs 'differential-inpaint'" in gimp_installer.check(renamed)[0]
    (renamed / "differential-inpaint.py").unlink()
    assert "missing" in gimp_installer.check(renamed, staged=True)[0]


def test_plugin_runs_on_a_bare_python(installed_plugin: Path) -> None:
    """GIMP's bundled Python has no msgpack or websockets: the copies must be enough."""
    code = (
        "import sys, os; d = sys.argv[1]; "
        "sys.path[:0] = [os.path.join(d, 'differential_inpaint_gimp', '_vendor'), d]; "
        "from differential_inpaint_gimp import formats; from differential_inpaint_gimp.client import flow; "
        "import msgpack, websockets; "
        "assert msgpack.__file__.startswith(d) and websockets.__file__.startswith(d); "
        "print(formats.depth_for_precision('U8_LINEAR').wire.value, flow.layer_name(' a  b '))"
    )
    # -S: no site-packages, so nothing from the venv can stand in for the copies.
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, str(installed_plugin)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rgba8", "a", "b"]


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux", "HOME/.config/GIMP/3.0/plug-ins"),
        ("darwin", "HOME/Library/Application Support/GIMP/3.0/plug-ins"),
        ("win32", "APPDATA/GIMP/3.0/plug-ins"),
    ],
)
def test_default_dest(platform: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setenv("HOME", str(tmp_path / "HOME"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "APPDATA"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert gimp_installer.default_dest() == tmp_path / expected


def test_default_dest_follows_xdg_and_flatpak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert gimp_installer.default_dest() == tmp_path / "xdg/GIMP/3.0/plug-ins"
    flatpak = tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    flatpak.mkdir(parents=True)
    assert gimp_installer.default_dest() == flatpak / "plug-ins"  # only the Flatpak GIMP ran here
    (tmp_path / "xdg/GIMP/3.0").mkdir(parents=True)
    assert gimp_installer.default_dest() == tmp_path / "xdg/GIMP/3.0/plug-ins"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["install-plugin", "gimp", "--dest", str(tmp_path)]) == 0
    assert "differential-inpaint" in capsys.readouterr().out
    assert gimp_installer.check(tmp_path / "differential-inpaint") == []
