"""`run --lora NAME:WEIGHT --ip-adapter FILE:WEIGHT` and `models` listing LoRAs and IP-Adapters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from differential_inpaint.backend.cli import main
from differential_inpaint.backend.engine.cli_addons import parse_lora, parse_reference
from differential_inpaint.backend.engine.loras import build_tiny_lora
from differential_inpaint.protocol import Lora


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:40] = 255
    reference = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    paths = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "ref.png"
    for path, pixels in zip(paths, (image, mask, reference), strict=True):
        Image.fromarray(pixels).save(path)
    return paths


def _run(tmp_path: Path, out: str, *extra: str) -> list[str]:
    image, mask, _ = _files(tmp_path)
    return [
        "run", "--model", "builtin:tiny-sd15", "--image", str(image), "--mask", str(mask),
        "--prompt", "a red door", "--steps", "3", "--seed", "4", "--quiet",
        "--out", str(tmp_path / out), *extra,
    ]  # fmt: skip


def test_the_weight_is_read_from_the_end() -> None:
    assert parse_lora("watercolor:0.8") == Lora("watercolor", 0.8)
    assert parse_lora("builtin:tiny-lora-sd15") == Lora("builtin:tiny-lora-sd15", 1.0)
    assert parse_lora("builtin:tiny-lora-sd15:-0.5") == Lora("builtin:tiny-lora-sd15", -0.5)
    assert parse_lora(r"C:\loras\ink.safetensors") == Lora(r"C:\loras\ink.safetensors", 1.0)
    assert parse_reference("style.png:1.5").weight == 1.5
    assert parse_reference("style.png").weight == 0.6  # the spec's default
    with pytest.raises(argparse.ArgumentTypeError):
        parse_reference("style.png:3")


def test_run_with_a_lora_and_a_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, mask_path, reference = _files(tmp_path)
    assert main(_run(tmp_path, "plain.png")) == 0
    lora = ["--lora", "builtin:tiny-lora-sd15:0.9"]
    assert main(_run(tmp_path, "lora.png", *lora)) == 0
    steer = ["--ip-adapter", f"{reference}:0.8", "--ip-adapter-model", "builtin:tiny-ip-adapter-sd15"]
    assert main(_run(tmp_path, "both.png", *lora, *steer)) == 0
    plain, with_lora, both = (
        np.asarray(Image.open(tmp_path / n)) for n in ("plain.png", "lora.png", "both.png")
    )
    keep = np.asarray(Image.open(mask_path)) == 0
    assert with_lora[keep].tobytes() == plain[keep].tobytes() == both[keep].tobytes()
    assert not np.array_equal(plain, with_lora) and not np.array_equal(with_lora, both)
    assert main(_run(tmp_path, "zero.png", "--lora", "builtin:tiny-lora-sd15:0")) == 0
    assert np.asarray(Image.open(tmp_path / "zero.png")).tobytes() == plain.tobytes()


def test_run_refuses_unknown_and_wrong_family_loras(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_run(tmp_path, "out.png", "--lora", "nope:0.5")) == 3
    assert "Unknown LoRA 'nope'" in capsys.readouterr().err
    assert main(_run(tmp_path, "out.png", "--lora", "builtin:tiny-lora-sdxl")) == 2
    assert "made for sdxl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_run(tmp_path, "out.png", "--loras", "a:1"))  # one option for one thing: --lora
    assert not (tmp_path / "out.png").exists()


def test_models_lists_loras_and_ip_adapters_with_their_families(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    save_file(dict(build_tiny_lora("tiny-lora-sdxl")), folder / "detail-xl.safetensors")
    assert main(["models", "--lora-dir", str(folder), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"name": "detail-xl", "family": "sdxl", "source": "folder"} in listed["loras"]
    assert {"name": "builtin:tiny-ip-adapter-sd15", "family": "sd15", "source": "builtin"} in listed[
        "ip_adapters"
    ]
    assert main(["models", "--lora-dir", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "LoRAs:\n  detail-xl  [sdxl] [folder]" in text
    assert "IP-Adapters:" in text and f"{folder}  [folder, loras]" in text
