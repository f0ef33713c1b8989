from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from differential_inpaint.host_plugins.install.gimp import PACKAGE, install


@pytest.fixture(scope="session")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plug-in folder as the real installer writes it (into a temp plug-ins folder)."""
    return install(tmp_path_factory.mktemp("plug-ins"))


@pytest.fixture(scope="session")
def plugin_formats(installed_plugin: Path) -> Iterator[ModuleType]:
    """The installed plug-in's GIMP-free `formats` module (it imports its own protocol copy)."""
    sys.path.insert(0, str(installed_plugin))
    try:
        yield importlib.import_module(f"{PACKAGE}.formats")
    finally:
        sys.path.remove(str(installed_plugin))
