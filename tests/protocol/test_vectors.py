"""The golden wire vectors in protocol/vectors/: the codec agrees with every file,
the index describes the files truthfully, and the files are what make_vectors.py
generates (so they cannot go stale)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import msgpack.fallback
import pytest

from differential_inpaint import protocol as p
from differential_inpaint.protocol import ErrorCode, ProtocolError, codec

from . import make_vectors as mv

DIR = mv.VECTORS_DIR
INDEX: dict[str, Any] = json.loads((DIR / mv.INDEX).read_text(encoding="ascii"))
ENTRIES: list[dict[str, Any]] = INDEX["vectors"]
VALID = [e for e in ENTRIES if e["valid"]]
CANONICAL = [e for e in VALID if e["canonical"]]
MALFORMED = [e for e in ENTRIES if not e["valid"]]
DECLARED = {v.file: v for v in mv.all_vectors()}


def _data(entry: dict[str, Any]) -> bytes:
    return (DIR / entry["file"]).read_bytes()


def _id(entry: dict[str, Any]) -> str:
    return entry["file"]


def test_files_on_disk_are_what_the_script_generates() -> None:
    assert mv.differences() == [], "protocol/vectors/ is stale: run tests/protocol/make_vectors.py --write"


def test_the_folder_is_small() -> None:
    total = sum(f.stat().st_size for f in DIR.rglob("*") if f.is_file())
    assert total < 200 * 1024


def test_index_lists_every_file_once_with_its_size_and_hash() -> None:
    files = {f.relative_to(DIR).as_posix() for f in DIR.rglob("*.msgpack")}
    assert sorted(_id(e) for e in ENTRIES) == sorted(files)
    for entry in ENTRIES:
        data = _data(entry)
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["direction"] in mv.ACCEPT
        assert entry["file"].startswith("valid/" if entry["valid"] else "malformed/")


@pytest.mark.parametrize("entry", CANONICAL, ids=_id)
def test_canonical_vector_is_exactly_what_encode_gives(entry: dict[str, Any]) -> None:
    data = _data(entry)
    message = DECLARED[entry["file"]].message
    assert message is not None
    assert entry["type"] == message.TYPE
    assert p.encode(message) == data
    assert b"".join(p.encode_parts(message)) == data
    (accept,) = mv.ACCEPT[entry["direction"]]
    decoded = p.decode(data, accept=accept)
    assert decoded == message
    assert p.encode(decoded) == data


@pytest.mark.parametrize("entry", CANONICAL, ids=_id)
def test_canonical_vector_is_what_pure_python_msgpack_gives(entry: dict[str, Any]) -> None:
    """Krita's and GIMP's Pythons may run msgpack's fallback, and with it the protocol's encoder."""
    data = _data(entry)
    message = DECLARED[entry["file"]].message
    assert msgpack.fallback.Packer(use_bin_type=True).pack(mv.wire(message)) == data
    with mock.patch.object(codec, "ZERO_COPY_MIN_BYTES", 0):  # every bin header written by encode_parts
        assert b"".join(p.encode_parts(message)) == data


@pytest.mark.parametrize("entry", VALID, ids=_id)
def test_index_message_packs_to_the_canonical_bytes(entry: dict[str, Any]) -> None:
    """What a host in another language does with the index: "message" with {"$bin": hex}
    turned into bytes, packed in key order, gives the canonical bytes."""
    message = DECLARED[entry["file"]].message
    assert message is not None
    packed = msgpack.packb(mv.from_json(entry["message"]), use_bin_type=True)
    assert packed == p.encode(message)
    assert entry["message"]["type"] == entry["type"]


@pytest.mark.parametrize("entry", [e for e in VALID if not e["canonical"]], ids=_id)
def test_decode_only_vector_decodes_to_its_message(entry: dict[str, Any]) -> None:
    data = _data(entry)
    message = DECLARED[entry["file"]].message
    (accept,) = mv.ACCEPT[entry["direction"]]
    decoded = p.decode(data, accept=accept)
    assert decoded == message
    assert p.encode(decoded) == p.encode(message)  # integers read as floats where floats are due
    assert p.encode(message) != data  # else it belongs with the canonical ones


@pytest.mark.parametrize("entry", MALFORMED, ids=_id)
def test_malformed_vector_raises_its_error_code(entry: dict[str, Any]) -> None:
    data = _data(entry)
    for accept in mv.ACCEPT[entry["direction"]]:
        with pytest.raises(ProtocolError) as err:
            p.decode(data, accept=accept)
        assert err.value.code is ErrorCode(entry["error"]), err.value.message
        assert err.value.job_id == entry["error_job_id"]
        assert err.value.message


@pytest.mark.parametrize("entry", MALFORMED, ids=_id)
def test_malformed_vector_type_is_what_the_bytes_claim(entry: dict[str, Any]) -> None:
    try:
        obj = msgpack.unpackb(_data(entry), raw=False)
    except Exception:
        assert entry["type"] is None
        return
    claimed = obj.get("type") if isinstance(obj, dict) else None
    assert entry["type"] == (claimed if isinstance(claimed, str) else None)


def test_every_message_type_has_a_canonical_vector_in_its_direction() -> None:
    assert {e["type"] for e in CANONICAL} == set(p.ALL_MESSAGES)
    for entry in VALID:
        assert entry["direction"] == (mv.CLIENT if entry["type"] in p.CLIENT_MESSAGES else mv.SERVER)


def _messages(kind: type) -> list[Any]:
    return [DECLARED[e["file"]].message for e in CANONICAL if e["type"] == kind.TYPE]


def test_the_cases_hosts_meet_are_covered() -> None:
    hellos = _messages(p.Hello)
    assert {h.token is None for h in hellos} == {True, False}
    errors = _messages(p.Error)
    assert {e.job_id is None for e in errors} == {True, False}
    assert {m.stage for m in _messages(p.Progress)} == set(p.Stage.ALL)
    submits = _messages(p.Submit)
    assert {s.image.format for s in submits} == set(p.PixelFormat)
    assert {s.image.color for s in submits} == set(p.ColorEncoding)
    assert any(s.params == p.JobParams() for s in submits)
    # Every field away from its default in some submit; count and fan exclude each other.
    defaults = p.JobParams()
    for f in dataclasses.fields(p.JobParams):
        assert any(getattr(s.params, f.name) != getattr(defaults, f.name) for s in submits), f.name
    assert any(
        sum(getattr(s.params, f.name) == getattr(defaults, f.name) for f in dataclasses.fields(p.JobParams))
        == 1
        for s in submits
    ), "no submit sets every JobParams field but count to a non-default value"


def test_every_error_code_of_the_decoder_is_exercised() -> None:
    # The codes a decoder can raise by itself; the others come from the daemon's state.
    raised = {e["error"] for e in MALFORMED}
    assert raised == {c.value for c in (ErrorCode.MALFORMED, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID_FIELD,
                                        ErrorCode.SIZE_MISMATCH, ErrorCode.TOO_LARGE)}  # fmt: skip
    assert {e["direction"] for e in MALFORMED} == set(mv.ACCEPT)


def test_check_mode_reports_every_difference(tmp_path: Path) -> None:
    mv.write(tmp_path)
    assert mv.differences(tmp_path) == []
    (tmp_path / "valid" / "hello.msgpack").write_bytes(b"\x80")
    (tmp_path / "malformed" / "empty.msgpack").unlink()
    (tmp_path / "valid" / "old.msgpack").write_bytes(b"")
    assert mv.differences(tmp_path) == [
        "missing: malformed/empty.msgpack",
        "stale (not generated): valid/old.msgpack",
        "differs: valid/hello.msgpack",
    ]
    assert mv.main(["--dir", str(tmp_path)]) == 1
    assert mv.main(["--dir", str(tmp_path), "--write"]) == 0
    assert mv.differences(tmp_path) == []


def test_the_script_runs_from_anywhere_and_checks_by_default(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(Path(mv.__file__).resolve())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "up to date" in run.stdout
