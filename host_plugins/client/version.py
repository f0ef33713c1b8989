"""The project's version, for code that runs inside Krita or GIMP.

The hosts' Pythons have no package metadata for this project, so the plugin
installer writes the version into a file `VERSION` beside this module, taken
from the installed package's metadata (pyproject.toml's `version`, the only
place it is written down). Run from the source tree, where that file is
absent, the version comes from the package metadata directly.
"""

from __future__ import annotations

from pathlib import Path

_FILE = Path(__file__).with_name("VERSION")


def _read() -> str:
    try:
        text = _FILE.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    from importlib.metadata import version

    return version("differential-inpaint")


VERSION: str = _read()
