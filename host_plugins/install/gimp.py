"""Install the GIMP 3 plug-in: `differential-inpaint install-plugin gimp [--dest DIR]`.

GIMP 3 runs `plug-ins/<name>/<name>.py` and skips, without a word, a file
whose name differs from its folder or that is not executable. So the
installer writes into a staging folder, checks the layout it wrote, and only
then swaps it in:

    plug-ins/differential-inpaint/
        differential-inpaint.py          the entry point (0755)
        differential_inpaint_gimp/       the adapter modules, plus
            protocol/ client/ _vendor/   the shared payload (see payload.py)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from .daemon_record import StartCommand
from .payload import check_payload, write_payload

PLUGIN_NAME = "differential-inpaint"
ENTRY = f"{PLUGIN_NAME}.py"
PACKAGE = "differential_inpaint_gimp"
GIMP_VERSION_DIR = "3.0"  # GIMP 3.x keeps its profile in a "3.0" folder
ENABLE_HINT = "Restart GIMP; then Filters > Generic > Differential Inpaint..."


def default_dest() -> Path:
    """This user's GIMP 3 plug-ins folder on this system."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP"
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support" / "GIMP"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP"
        # The Flatpak keeps its own profile; use it when only that GIMP has run here.
        flatpak = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP"
        if not (base / GIMP_VERSION_DIR).exists() and (flatpak / GIMP_VERSION_DIR).exists():
            base = flatpak
    return base / GIMP_VERSION_DIR / "plug-ins"


def source_dir() -> Path:
    """The plug-in's sources (host_plugins/gimp), installed as package data."""
    spec = importlib.util.find_spec("differential_inpaint.host_plugins")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot find the differential_inpaint.host_plugins package")
    source = Path(next(iter(spec.submodule_search_locations))) / "gimp"
    if not (source / ENTRY).is_file():
        raise RuntimeError(f"the GIMP plug-in sources are missing from {source}")
    return source


def adapter_modules() -> list[str]:
    """The adapter's module file names, as the sources have them (all are installed)."""
    return sorted(path.name for path in (source_dir() / PACKAGE).glob("*.py"))


def check(folder: Path, *, staged: bool = False) -> list[str]:
    """Problems with an installed plug-in folder, as sentences; empty when GIMP will load it.

    `staged`: the folder is still under its staging name, so skip the name check.
    """
    if not staged and folder.name != PLUGIN_NAME:
        return [f"the folder is named '{folder.name}', GIMP needs '{PLUGIN_NAME}'"]
    entry = folder / ENTRY
    if not entry.is_file():
        return [f"{entry} is missing: GIMP runs the file named like its folder"]
    problems = []
    if sys.platform != "win32" and not os.access(entry, os.X_OK):
        problems.append(f"{entry} is not executable: GIMP would skip it silently")
    if not entry.read_bytes().startswith(b"#!/usr/bin/env python3"):
        problems.append(f"{entry} does not start with '#!/usr/bin/env python3'")
    package = folder / PACKAGE
    problems += [f"{package / n} is missing" for n in adapter_modules() if not (package / n).is_file()]
    problems += check_payload(package)
    for path in [entry, *package.glob("*.py")]:
        try:
            compile(path.read_bytes(), str(path), "exec")
        except SyntaxError as exc:
            problems.append(f"{path} does not compile: {exc}")
    return problems


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def install(dest: Path | None = None, *, daemon: StartCommand | None = None) -> Path:
    """Install into `dest` (a GIMP plug-ins folder; default: this user's) and
    return the plug-in's folder. Raises RuntimeError when the result would not load.

    `daemon`: the command the plug-in runs to start the daemon when none answers
    (none: the plug-in only connects)."""
    plug_ins = Path(dest) if dest is not None else default_dest()
    folder = plug_ins / PLUGIN_NAME
    # Staged beside the target so the final rename stays on one filesystem;
    # the leading dot keeps GIMP from looking at a half-written folder.
    staging = plug_ins / f".{PLUGIN_NAME}.installing"
    source = source_dir()
    plug_ins.mkdir(parents=True, exist_ok=True)
    _remove(staging)
    try:
        package = staging / PACKAGE
        package.mkdir(parents=True)
        for name in adapter_modules():
            shutil.copyfile(source / PACKAGE / name, package / name)
        write_payload(package, daemon)
        shutil.copyfile(source / ENTRY, staging / ENTRY)
        (staging / ENTRY).chmod(0o755)
        problems = check(staging, staged=True)
        if problems:
            raise RuntimeError("the installed plug-in would not load: " + "; ".join(problems))
        _remove(folder)
        staging.rename(folder)
    finally:
        _remove(staging)
    problems = check(folder)
    if problems:
        raise RuntimeError("the installed plug-in would not load: " + "; ".join(problems))
    return folder
