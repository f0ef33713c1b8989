"""Install the Krita plugin into a pykrita folder, or build its zip.

What Krita loads (and what Tools > Scripts > Import Python Plugin from File
unpacks, placing the .action file in the `actions` folder beside `pykrita`):

    pykrita/differential_inpaint.desktop   says "a Python plugin named differential_inpaint"
    pykrita/differential_inpaint/          the plugin (host_plugins/krita/differential_inpaint)
        protocol/ client/ _vendor/         the shared payload (payload.py)
    actions/differential_inpaint.action    the menu entry's text and tooltip

Krita enables user plugins only once the painter ticks them in Settings >
Configure Krita > Python Plugin Manager and restarts; `ENABLE_HINT` says so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .daemon_record import StartCommand
from .payload import check_payload, write_payload

NAME = "differential_inpaint"
ENABLE_HINT = (
    "In Krita: Settings > Configure Krita > Python Plugin Manager, tick 'Differential Inpaint', "
    "restart Krita; then Tools > Scripts > Differential Inpaint."
)
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def plugin_source() -> Path:
    """host_plugins/krita in this checkout or installed package."""
    spec = importlib.util.find_spec("differential_inpaint.host_plugins")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot find the plugin sources (differential_inpaint.host_plugins)")
    source = Path(next(iter(spec.submodule_search_locations))) / "krita"
    if not (source / NAME / "__init__.py").is_file():
        raise RuntimeError(f"the Krita plugin sources are missing from {source}")
    return source


def default_pykrita_dir() -> Path:
    """The current user's pykrita folder, where Krita looks for Python plugins."""
    home = Path.home()
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        return (Path(appdata) if appdata else home / "AppData" / "Roaming") / "krita" / "pykrita"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "krita" / "pykrita"
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    flatpak = home / ".var" / "app" / "org.kde.krita" / "data"
    if not (data / "krita").exists() and (flatpak / "krita").exists():
        data = flatpak  # Krita installed from Flathub keeps its resources here
    return data / "krita" / "pykrita"


def check_layout(pykrita: Path) -> list[str]:
    """Problems with an installed plugin, as sentences; empty when Krita can load it.

    Every module of the plugin's sources must be there, whatever their names.
    """
    package = pykrita / NAME
    modules = sorted(path.name for path in (plugin_source() / NAME).glob("*.py"))
    problems = [
        f"{path} is missing"
        for path in (
            pykrita / f"{NAME}.desktop",
            *(package / name for name in modules),
            pykrita.parent / "actions" / f"{NAME}.action",
        )
        if not path.is_file()
    ]
    desktop = pykrita / f"{NAME}.desktop"
    if desktop.is_file() and f"X-KDE-Library={NAME}" not in desktop.read_text(encoding="utf-8"):
        problems.append(f"{desktop} does not name the module {NAME}")
    return problems + check_payload(package)


def install(dest: Path | None = None, *, daemon: StartCommand | None = None) -> Path:
    """Install (or update) the plugin into `dest` (a pykrita folder); returns the package folder.

    `daemon`: the command the plugin runs to start the daemon when none answers
    (none: the plugin only connects)."""
    pykrita = Path(dest).expanduser() if dest is not None else default_pykrita_dir()
    source = plugin_source()
    pykrita.mkdir(parents=True, exist_ok=True)
    actions = pykrita.parent / "actions"
    actions.mkdir(parents=True, exist_ok=True)

    # Build the new copy beside the old one, then swap, so a failed copy never
    # leaves a half-installed plugin behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=pykrita))
    try:
        package = staging / NAME
        shutil.copytree(source / NAME, package, ignore=_SKIP)
        write_payload(package, daemon)
        target = pykrita / NAME
        old = staging / "old"
        if target.exists():
            target.rename(old)
        package.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.copyfile(source / f"{NAME}.desktop", pykrita / f"{NAME}.desktop")
    shutil.copyfile(source / f"{NAME}.action", actions / f"{NAME}.action")

    problems = check_layout(pykrita)
    if problems:
        raise RuntimeError("the installed plugin is incomplete: " + "; ".join(problems))
    return pykrita / NAME


def package(out: Path) -> Path:
    """Write the zip that Krita's Import Python Plugin from File takes; returns its path."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pykrita = Path(tmp) / "pykrita"
        install(pykrita)
        entries = [(pykrita / f"{NAME}.desktop", f"{NAME}.desktop")]
        entries.append((Path(tmp) / "actions" / f"{NAME}.action", f"{NAME}.action"))
        partial = out.with_name(out.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, name in entries:
                archive.write(path, name)
            # Krita's importer finds the module by its folder entry ("differential_inpaint/"),
            # so folders are written as entries of their own.
            for path in sorted([pykrita / NAME, *(pykrita / NAME).rglob("*")]):
                name = path.relative_to(pykrita).as_posix()
                if path.is_dir():
                    archive.writestr(zipfile.ZipInfo(name + "/", time.localtime()[:6]), b"")
                else:
                    archive.write(path, name)
        partial.replace(out)
    return out
