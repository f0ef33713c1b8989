"""Style and types, checked by the test suite so that CI fails on them.

ruff over the whole tree (pyproject.toml's [tool.ruff]); mypy over the code that
runs outside the hosts' own Pythons: protocol/, host_plugins/client/,
host_plugins/install/ and backend/. The source folders carry other names than
the installed package (protocol/ is differential_inpaint.protocol, see
[tool.setuptools]), so mypy reads them through a tree of links with the installed
names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# installed name under differential_inpaint -> source folder
PACKAGES = {"protocol": "protocol", "client": "host_plugins/client", "backend": "backend"}
CHECKED = ["protocol", "client", "backend", "host_plugins.install"]


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return str(found)


def run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **options)  # type: ignore[call-overload]


def test_ruff_check() -> None:
    done = run([tool("ruff"), "check", "--output-format", "concise", str(ROOT)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = run([tool("ruff"), "format", "--check", str(ROOT)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy(tmp_path: Path) -> None:
    tree = tmp_path / "differential_inpaint"
    tree.mkdir()
    for name, source in {**PACKAGES, "host_plugins": "host_plugins"}.items():
        (tree / name).symlink_to(ROOT / source, target_is_directory=True)
    packages = [arg for name in CHECKED for arg in ("-p", f"differential_inpaint.{name}")]
    done = run(
        [
            tool("mypy"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            *packages,
        ],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues found" in done.stdout
