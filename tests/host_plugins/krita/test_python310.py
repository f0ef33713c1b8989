"""The installed plugin run by a real Python 3.10 (Krita 5.2 bundles 3.10): the core,
the job thread, the shared client and protocol and the vendored msgpack and
websockets, end to end against the stand-in daemon, with only the standard library
and the plugin's own folder on the path (`python -I`). The syntax check in
test_core.py cannot see a newer standard-library call; this run can.

Skips where no Python 3.10 is installed (pyenv's or the system's).
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.fake_daemon import FakeDaemon

HERE = Path(__file__).resolve().parent

SCRIPT = """
import sys
pykrita, stand_in, server = sys.argv[1:4]
sys.path[:0] = [pykrita, stand_in]
import krita
import differential_inpaint as di
assert sys.version_info[:2] == (3, 10), sys.version
krita.Krita._instance = krita.Krita()
doc = krita.Krita._instance.createDocument(128, 96, "t", "RGBA", "U16", "", 72.0)
layer = doc.topLevelNodes()[0]
layer.paint(bytes((i * 7) % 251 for i in range(128 * 96 * 8)), 0, 0, 128, 96)
doc.setActiveNode(layer)
new = di.inpaint_layer(doc, prompt="Zürich 3.10", steps=3, server=server, token="t")
print("inserted", new.name(), new.px, new.py, new.pw, new.ph)
try:
    di.inpaint_layer(doc, prompt="fail: on purpose", server=server)
except di.InpaintError as exc:
    print("failed", exc.code)
"""


def python310() -> str | None:
    """A working Python 3.10: pyenv's own build first (its `python3.10` shim refuses
    to run unless 3.10 is selected), then one on PATH."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10*/bin/python3.10")))
    on_path = shutil.which("python3.10")
    for candidate in [*reversed(candidates), *([on_path] if on_path else [])]:
        check = subprocess.run([candidate, "-I", "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                               capture_output=True, timeout=30)  # fmt: skip
        if check.returncode == 0:
            return candidate
    return None


def test_the_plugin_runs_on_python_3_10(installed_pykrita: Path, daemon: FakeDaemon, tmp_path: Path):
    interpreter = python310()
    if interpreter is None:
        pytest.skip("no Python 3.10 here (pyenv install 3.10 brings one)")
    shutil.copyfile(HERE / "fake_krita.py", tmp_path / "krita.py")
    done = subprocess.run(
        [interpreter, "-I", "-c", SCRIPT, str(installed_pykrita), str(tmp_path), daemon.url],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines == ["inserted Zürich 3.10 \u00b7 4242 0 0 128 96", "failed job_failed"], (lines, done.stderr)
    assert daemon.submits[-2].params.prompt == "Zürich 3.10" and daemon.tokens[-2] == "t"
