"""The payload both plugins carry: one version, from the package metadata."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import differential_inpaint.backend as backend
from differential_inpaint.backend.cli import main as cli_main
from differential_inpaint.host_plugins.install.payload import check_payload, write_payload

PACKAGE_VERSION = importlib.metadata.version("differential-inpaint")
SOURCE_VERSION_PY = Path(__file__).parents[3] / "host_plugins" / "client" / "version.py"

# Run as inside a host: no site-packages, so no package metadata to fall back on.
READ_VERSION = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("version_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.VERSION)
"""


def test_installed_payload_carries_the_package_version(tmp_path: Path) -> None:
    package = tmp_path / "plugin"
    write_payload(package)
    assert check_payload(package) == []
    assert (package / "client" / "VERSION").read_text(encoding="utf-8").strip() == PACKAGE_VERSION
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", READ_VERSION, str(package / "client" / "version.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PACKAGE_VERSION


def test_installed_payload_without_version_file_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "plugin"
    write_payload(package)
    (package / "client" / "VERSION").unlink()
    assert any("client/VERSION is missing" in problem for problem in check_payload(package))


def test_source_tree_version_falls_back_to_the_package_metadata(tmp_path: Path) -> None:
    # A copy without VERSION beside it, as in a fresh checkout.
    copy = tmp_path / "version.py"
    copy.write_bytes(SOURCE_VERSION_PY.read_bytes())
    spec = importlib.util.spec_from_file_location("version_from_source", copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VERSION == PACKAGE_VERSION


def test_backend_and_command_report_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert backend.__version__ == PACKAGE_VERSION
    with pytest.raises(SystemExit) as exited:
        cli_main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"differential-inpaint {PACKAGE_VERSION}"
