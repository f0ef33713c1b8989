"""`differential-inpaint run --control` and `models` listing ControlNets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from differential_inpaint.backend.cli import main
from differential_inpaint.backend.engine.cli_control import parse_control

from .conftest import random_region


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    image = (random_region(40, 56, seed=4)[..., :3] * 255).astype(np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[:, 28:] = 255
    edges = np.zeros((40, 56), np.uint8)
    edges[:, ::6] = 255
    paths = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "edges.png"
    for path, array in zip(paths, (image, mask, edges), strict=True):
        Image.fromarray(array).save(path)
    return paths


def _run(tmp_path: Path, out: str, *extra: str) -> int:
    image, mask, _edges = _files(tmp_path)
    argv = [
        "run", "--model", "builtin:tiny-sd15", "--image", str(image), "--mask", str(mask),
        "--prompt", "a red door", "--steps", "3", "--seed", "4", "--quiet",
        "--out", str(tmp_path / out), *extra,
    ]  # fmt: skip
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_parse_control_reads_numbers_from_the_end_and_models_with_colons(tmp_path: Path) -> None:
    edges = _files(tmp_path)[2]
    plain = parse_control(f"canny:{edges}")
    assert (plain.file, plain.params.kind, plain.params.model, plain.params.strength) == (
        edges,
        "canny",
        None,
        1.0,
    )
    full = parse_control(f"depth:{edges}:builtin:tiny-controlnet-sd15:0.5:0.25:0.75")
    assert full.params.model == "builtin:tiny-controlnet-sd15"
    assert (full.params.strength, full.params.start, full.params.end) == (0.5, 0.25, 0.75)
    assert parse_control(f"canny:{edges}:0.8").params.strength == 0.8
    for bad, why in [
        ("canny", "is not KIND:FILE"),
        (f"canny:{tmp_path / 'missing.png'}", "no control image file"),
        (f"canny:{edges}:0.5:0.25", "STRENGTH alone or STRENGTH:START:END"),
        (f"canny:{edges}:1:0.8:0.2", "must be below 'end'"),
        (f"canny:{edges}:3", "strength"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse_control(bad)


def test_run_with_a_control_steers_free_pixels_only(tmp_path: Path) -> None:
    edges = tmp_path / "edges.png"
    assert _run(tmp_path, "plain.png") == 0
    control = f"canny:{edges}:builtin:tiny-controlnet-sd15:1.0:0:1"
    assert _run(tmp_path, "steered.png", "--control", control) == 0
    assert _run(tmp_path, "photo.png", "--control", control, "--preprocess") == 0
    original = np.asarray(Image.open(tmp_path / "in.png"))
    plain, steered, photo = (
        np.asarray(Image.open(tmp_path / n)) for n in ("plain.png", "steered.png", "photo.png")
    )
    np.testing.assert_array_equal(steered[:, :28], original[:, :28])
    assert not np.array_equal(steered[:, 28:], plain[:, 28:])
    assert not np.array_equal(photo[:, 28:], steered[:, 28:])


def test_run_with_a_wrong_control_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edges = tmp_path / "edges.png"
    assert _run(tmp_path, "x.png", "--control", f"canny:{edges}:no-such-controlnet") == 3
    assert "Unknown ControlNet 'no-such-controlnet'" in capsys.readouterr().err
    assert _run(tmp_path, "x.png", "--control", f"canny:{edges}:builtin:tiny-controlnet-sdxl") == 2
    assert "is for SDXL models" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    assert _run(tmp_path, "x.png", "--control", f"canny:{tmp_path / 'small.png'}") == 2
    assert "the control image" in capsys.readouterr().err


def test_models_lists_controlnets_of_controlnet_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    from differential_inpaint.backend.engine.controlnet import build_tiny_controlnet

    folder = tmp_path / "cn"
    folder.mkdir()
    state = build_tiny_controlnet("tiny-controlnet-sd15").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "my_canny.safetensors"))
    assert main(["models", "--controlnet-dir", str(folder), "--json"]) == 0
    listed = {c["name"]: c["family"] for c in json.loads(capsys.readouterr().out)["controlnets"]}
    assert listed["my_canny.safetensors"] == "sd15"
    assert listed["builtin:tiny-controlnet-sdxl"] == "sdxl"
    assert main(["models", "--controlnet-dir", str(folder)]) == 0
    assert "my_canny.safetensors  [sd15] [folder]" in capsys.readouterr().out
