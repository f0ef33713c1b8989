"""Fixtures for the Krita plugin's tests.

The plugin is always tested as it ships: installed by `host_plugins/install/krita.py`
into a temporary pykrita folder. The fast tests load that folder under another
module name (inside this venv the name `differential_inpaint` is the project
itself) with the stand-in `krita` module in place of Krita's.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from differential_inpaint.host_plugins.install import krita as krita_installer
from tests.support.fake_daemon import FakeDaemon, fake_daemon

from . import fake_krita

ALIAS = "krita_adapter_under_test"


@pytest.fixture(scope="session")
def installed_pykrita(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pykrita folder holding the installed plugin (resources/pykrita; resources/actions beside it)."""
    pykrita = tmp_path_factory.mktemp("krita-resources") / "pykrita"
    krita_installer.install(pykrita)
    return pykrita


def load_plugin(pykrita: Path) -> ModuleType:
    package = pykrita / krita_installer.NAME
    spec = importlib.util.spec_from_file_location(
        ALIAS, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[ALIAS] = module
    path_before = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path_before  # keep the plugin's _vendor off the rest of the test session
    return module


@pytest.fixture(scope="session")
def plugin(installed_pykrita: Path) -> Iterator[ModuleType]:
    """The installed plugin package, imported against the stand-in `krita` module."""
    saved = sys.modules.get("krita")
    sys.modules["krita"] = fake_krita
    try:
        yield load_plugin(installed_pykrita)
    finally:
        for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
            del sys.modules[name]
        if saved is None:
            sys.modules.pop("krita", None)
        else:
            sys.modules["krita"] = saved


@pytest.fixture
def krita(plugin: ModuleType) -> Iterator[fake_krita.Krita]:
    """A fresh stand-in Krita application (settings, open documents) for each test."""
    fake_krita.Krita._instance = fake_krita.Krita()
    yield fake_krita.Krita._instance
    fake_krita.Krita._instance = None


@pytest.fixture(scope="session")
def daemon() -> Iterator[FakeDaemon]:
    with fake_daemon() as running:
        yield running


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dead_server() -> str:
    return f"ws://127.0.0.1:{unused_port()}"
