"""`install-plugin krita` and `package-plugin krita`: the layout Krita needs.
(Krita's own importer unpacking the zip is checked inside Krita, test_in_krita.py.)"""

from __future__ import annotations

import configparser
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from differential_inpaint.backend.cli import main as cli
from differential_inpaint.host_plugins.install import krita as krita_installer

NAME = "differential_inpaint"


def test_install_writes_what_krita_loads(tmp_path: Path):
    pykrita = tmp_path / "krita" / "pykrita"
    package = krita_installer.install(pykrita)
    assert package == pykrita / NAME
    assert krita_installer.check_layout(pykrita) == []
    desktop = configparser.ConfigParser()
    desktop.read(pykrita / f"{NAME}.desktop", encoding="utf-8")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Service"
    assert entry["ServiceTypes"] == "Krita/PythonPlugin"
    assert entry["X-KDE-Library"] == NAME
    assert entry["X-Python-2-Compatible"] == "false"
    assert entry["Name"] == "Differential Inpaint"
    assert (package / entry["X-Krita-Manual"]).is_file()
    action = ET.parse(tmp_path / "krita" / "actions" / f"{NAME}.action").getroot()
    # The ids createActions uses; all but the dialog come with default shortcuts.
    assignable = [f"{NAME}_run", f"{NAME}_cancel", f"{NAME}_apply", f"{NAME}_discard", f"{NAME}_show_map"]
    names = [a.get("name") for a in action.iter("Action")]
    assert names == [NAME, *assignable]
    shortcuts = {a.get("name"): a.findtext("shortcut") for a in action.iter("Action")}
    assert all(shortcuts[name] for name in assignable)
    assert len({shortcuts[name] for name in assignable}) == len(assignable)
    # None taken by Krita itself (Ctrl+Alt+I is Scale Image To New Size): an ambiguous
    # shortcut does nothing at all.
    krita_actions = Path("/usr/share/krita/actions")
    if krita_actions.is_dir():
        taken = {
            (a.findtext("shortcut") or "").lower(): a.get("name")
            for f in krita_actions.glob("*.action")
            for a in ET.parse(f).getroot().iter("Action")
        }
        clashes = {
            name: taken[shortcuts[name].lower()] for name in assignable if shortcuts[name].lower() in taken
        }
        assert clashes == {}
    for part in ("protocol/messages.py", "client/__init__.py", "_vendor/msgpack/fallback.py", "krita_io.py"):
        assert (package / part).is_file(), part
    assert not list(package.rglob("__pycache__")) and not list(package.rglob("*.so"))
    assert not (package / "protocol" / "vectors").exists()  # test bytes, not for the plugin


def test_reinstalling_replaces_the_old_copy_and_leaves_no_staging(tmp_path: Path):
    pykrita = tmp_path / "pykrita"
    package = krita_installer.install(pykrita)
    (package / "stale_module.py").write_text("raise SystemExit('old copy')\n")
    krita_installer.install(pykrita)
    assert not (package / "stale_module.py").exists()
    assert sorted(p.name for p in pykrita.iterdir()) == [NAME, f"{NAME}.desktop"]


def test_check_layout_names_what_is_missing(tmp_path: Path):
    pykrita = tmp_path / "pykrita"
    krita_installer.install(pykrita)
    (pykrita / f"{NAME}.desktop").unlink()
    (pykrita / NAME / "_vendor" / "websockets" / "sync" / "client.py").unlink()
    problems = krita_installer.check_layout(pykrita)
    assert any(f"{NAME}.desktop is missing" in p for p in problems)
    assert any("websockets/sync/client.py is missing" in p for p in problems)


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_DATA_HOME": "/data"}, "/data/krita/pykrita"),
        ("linux", {}, "HOME/.local/share/krita/pykrita"),
        ("win32", {"APPDATA": "C:/Users/a/AppData/Roaming"}, "C:/Users/a/AppData/Roaming/krita/pykrita"),
        ("darwin", {}, "HOME/Library/Application Support/krita/pykrita"),
    ],
)
def test_default_pykrita_folder_per_os(monkeypatch, tmp_path, platform, env, expected):
    monkeypatch.setattr(krita_installer.sys, "platform", platform)
    monkeypatch.setattr(krita_installer.Path, "home", classmethod(lambda cls: tmp_path))
    for key in ("XDG_DATA_HOME", "APPDATA"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert krita_installer.default_pykrita_dir() == Path(expected.replace("HOME", str(tmp_path)))


def test_flatpak_krita_is_found_when_it_is_the_only_one(monkeypatch, tmp_path):
    monkeypatch.setattr(krita_installer.sys, "platform", "linux")
    monkeypatch.setattr(krita_installer.Path, "home", classmethod(lambda cls: tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    flatpak = tmp_path / ".var" / "app" / "org.kde.krita" / "data" / "krita"
    flatpak.mkdir(parents=True)
    assert krita_installer.default_pykrita_dir() == flatpak / "pykrita"


def test_the_zip_has_what_krita_s_importer_looks_for(tmp_path: Path):
    out = krita_installer.package(tmp_path / "out" / "di.zip")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert f"{NAME}.desktop" in names and f"{NAME}.action" in names
    # The importer finds the module by its folder entry holding an __init__.py.
    assert f"{NAME}/" in names and f"{NAME}/__init__.py" in names
    installed = krita_installer.install(tmp_path / "pykrita")
    shipped = {n for n in names if n.startswith(f"{NAME}/") and not n.endswith("/")}
    assert shipped == {
        f"{NAME}/{p.relative_to(installed).as_posix()}" for p in installed.rglob("*") if p.is_file()
    }
    assert not (tmp_path / "out" / "di.zip.partial").exists()


def test_the_commands(tmp_path: Path, capsys):
    assert cli(["install-plugin", "krita", "--dest", str(tmp_path / "pykrita")]) == 0
    assert "Installed the krita plugin" in capsys.readouterr().out
    assert krita_installer.check_layout(tmp_path / "pykrita") == []
    assert cli(["package-plugin", "krita", "--out", str(tmp_path / "di.zip")]) == 0
    assert zipfile.is_zipfile(tmp_path / "di.zip")
