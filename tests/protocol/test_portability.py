"""The protocol as the plugins carry it: copied elsewhere, pure-Python msgpack,
no numpy or torch in reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import differential_inpaint.protocol as protocol

SCRIPT = r"""
import sys

class Refuse:
    # Make numpy and torch unimportable, as in Krita's and GIMP's bundled Pythons.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "torch"):
            raise ImportError(f"{name} is not available here")
        return None

sys.meta_path.insert(0, Refuse())
import hostpkg.protocol as p
import msgpack.fallback
import msgpack

assert msgpack.Unpacker is msgpack.fallback.Unpacker, "the C extension was used"
m = p.Submit("j", p.Image(2, 2, "bgra8", bytes(range(16))), p.Mask(2, 2, b"\x00\x40\x80\xff"),
             p.JobParams(prompt="fox", seed=7), x=3, y=-4)
assert p.decode(p.encode(m)) == m
assert msgpack.Packer is msgpack.fallback.Packer
# Zero-copy sending: the parts are exactly encode()'s bytes, the pixels views.
big = p.Submit("b", p.Image(128, 128, "rgba8", bytes(range(256)) * 256), p.Mask(128, 128, bytes(16384)))
parts = p.encode_parts(big)
assert b"".join(parts) == p.encode(big) and any(isinstance(x, memoryview) for x in parts)
assert b"".join(p.fragments(parts, 1000)) == p.encode(big)
assert p.decode(b"".join(parts)) == big
try:
    p.decode(b"\xc1")
except p.ProtocolError as e:
    assert e.code is p.ErrorCode.MALFORMED
else:
    raise AssertionError("malformed bytes were accepted")
assert p.context_region(p.Rect(5, 5, 2, 2), p.Rect(0, 0, 100, 100), padding=4).contains(p.Rect(5, 5, 2, 2))
assert "numpy" not in sys.modules and "torch" not in sys.modules
print("ok", p.__name__)
"""


def test_copied_protocol_runs_on_pure_python_msgpack_without_numpy_or_torch(tmp_path: Path) -> None:
    package = tmp_path / "hostpkg"
    shutil.copytree(
        Path(protocol.__file__).parent,
        package / "protocol",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (package / "__init__.py").write_text("")
    env = {**os.environ, "MSGPACK_PUREPYTHON": "1", "PYTHONPATH": str(tmp_path)}
    # -I would drop PYTHONPATH; -s keeps user site-packages out. msgpack comes from the venv.
    done = subprocess.run(
        [sys.executable, "-s", "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok hostpkg.protocol"


def test_protocol_imports_nothing_but_msgpack_and_the_standard_library() -> None:
    source_dir = Path(protocol.__file__).parent
    allowed = set(sys.stdlib_module_names) | {"msgpack", "__future__"}
    for source in source_dir.glob("*.py"):
        for line in source.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and not words[1].startswith("."):
                top = words[1].split(".")[0]
                assert top in allowed, f"{source.name} imports {top}"
