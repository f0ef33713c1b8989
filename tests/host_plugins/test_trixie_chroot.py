"""The chroot helper: the mirror comes from apt's own sources, and bind mounts
never outlive a command — not when it fails, not when it hangs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import trixie_chroot as chroot
from tests.support.hosts import require_host


def test_mirror_from_deb822_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DI_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert chroot.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DI_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg] http://other.example/debian bookworm main\n"
    )
    assert chroot.debian_mirror(tmp_path) == "http://other.example/debian"
    monkeypatch.setenv("DI_DEBIAN_MIRROR", "http://override.example/debian")
    assert chroot.debian_mirror(tmp_path) == "http://override.example/debian"


@pytest.fixture
def ready_root() -> Path:
    require_host(*chroot.ready("gimp"))
    return chroot.root()


def test_mounts_are_undone_after_a_failing_command(ready_root: Path) -> None:
    done = chroot.run(["sh", "-c", "test -e /proc/self/status && ls /dev/null && exit 3"])
    assert done.returncode == 3  # /proc and /dev were there while it ran
    assert chroot._mounts_under(ready_root) == []


def test_mounts_are_undone_after_a_hang(ready_root: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        chroot.run(["sh", "-c", "sleep 300 & sleep 300"], timeout=1)
    assert chroot._mounts_under(ready_root) == []


def test_stale_mounts_are_cleaned_before_the_next_run(ready_root: Path) -> None:
    # As if an earlier run had been killed between mount and unmount.
    subprocess.run(["mount", "--bind", "/proc", str(ready_root / "proc")], check=True)
    try:
        assert chroot.run(["true"]).returncode == 0
        assert chroot._mounts_under(ready_root) == []
    finally:
        chroot.unmount_all(ready_root)
