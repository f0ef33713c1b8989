"""`differential-inpaint run` and `differential-inpaint models`, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from differential_inpaint.backend.cli import main

from .ldm_export import save_single_file


def _files(tmp_path: Path, array: np.ndarray, mask: np.ndarray) -> tuple[Path, Path]:
    image_path, mask_path = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray(array).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def _mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return mask


def _run(tmp_path: Path, image: Path, mask: Path, *extra: str) -> list[str]:
    return [
        "run", "--model", "builtin:tiny-sd15", "--image", str(image), "--mask", str(mask),
        "--prompt", "a red door", "--steps", "3", "--out", str(tmp_path / "out.png"), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "shape", "dtype"),
    [
        ("RGB", (40, 56, 3), np.uint8),
        ("RGBA", (40, 56, 4), np.uint8),
        ("L", (40, 56), np.uint8),
        ("I;16", (40, 56), np.uint16),
    ],
)
def test_run_writes_the_input_size_and_mode_and_keeps_mask_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, shape: tuple[int, ...], dtype: type
) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    mask = _mask(40, 56)
    image_path, mask_path = _files(tmp_path, array, np.stack([mask] * 3, axis=-1))  # an RGB mask
    assert Image.open(image_path).mode == mode
    assert main(_run(tmp_path, image_path, mask_path, "--seed", "5")) == 0
    out = Image.open(tmp_path / "out.png")
    assert out.mode == mode and out.size == (56, 40)
    pixels = np.asarray(out)
    assert np.array_equal(pixels[mask == 0], array[mask == 0])  # kept, bit for bit
    assert not np.array_equal(pixels[mask == 255], array[mask == 255])
    captured = capsys.readouterr()
    assert "seed: 5" in captured.out
    assert "sampling" in captured.err  # the progress bar


def test_run_reports_the_random_seed_it_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    image_path, mask_path = _files(tmp_path, array, _mask(32, 32))
    assert main([*_run(tmp_path, image_path, mask_path), "--quiet"]) == 0
    seed = int(capsys.readouterr().out.split("seed: ")[1].split()[0])
    first = np.asarray(Image.open(tmp_path / "out.png"))
    assert main([*_run(tmp_path, image_path, mask_path), "--quiet", "--seed", str(seed)]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), first)


@pytest.mark.parametrize(
    ("change", "message", "code"),
    [
        ("small_mask", "the mask is 32x20 pixels but the image is 32x32", 2),
        ("unreadable", "cannot read the image", 2),
        ("missing_mask", "cannot read the mask", 2),
        ("strength", "Strength must be in (0, 1]", 2),
        ("nan_strength", "Strength must be a finite number", 2),
        ("steps", "Steps must be between 1", 2),
        ("scheduler", "Unknown scheduler 'fast'", 2),
        ("heun", "Scheduler 'heun' is not supported by differential sampling", 2),
        ("model", "Unknown model 'no-such-model'", 3),
    ],
)
def test_run_errors_are_one_clear_line_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, message: str, code: int
) -> None:
    array = np.zeros((32, 32, 3), np.uint8)
    image_path, mask_path = _files(tmp_path, array, _mask(32, 32))
    argv = _run(tmp_path, image_path, mask_path)
    if change == "small_mask":
        Image.fromarray(_mask(20, 32)).save(mask_path)
    elif change == "unreadable":
        image_path.write_bytes(b"this is not a png")
    elif change == "missing_mask":
        mask_path.unlink()
    elif change == "strength":
        argv += ["--strength", "1.5"]
    elif change == "nan_strength":
        argv += ["--strength", "nan"]
    elif change == "heun":
        argv += ["--scheduler", "heun"]
    elif change == "steps":
        argv += ["--steps", "0"]
    elif change == "scheduler":
        argv += ["--scheduler", "fast"]
    elif change == "model":
        argv[argv.index("--model") + 1] = "no-such-model"
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_the_installed_command_fails_without_a_traceback(tmp_path: Path) -> None:
    image_path, mask_path = _files(tmp_path, np.zeros((16, 16, 3), np.uint8), _mask(8, 16))
    process = subprocess.run(
        [sys.executable, "-m", "differential_inpaint.backend.cli", *_run(tmp_path, image_path, mask_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2
    assert "the mask is 16x8 pixels but the image is 16x16" in process.stderr
    assert "Traceback" not in process.stderr


def test_models_lists_what_it_found_and_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from differential_inpaint.backend.engine.tiny import build_tiny_pipeline

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_single_file(build_tiny_pipeline("tiny-sdxl"), folder / "my_xl.safetensors")
    assert main(["models", "--model-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("my_xl.safetensors"))
    assert line.split()[1:] == ["sdxl", "folder"]
    assert "builtin:tiny-sd15" in out
    assert str(folder) in out.split("Searched:")[1]
