"""`differential-inpaint run` and `differential-inpaint models`, end to end."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from differential_inpaint import protocol
from differential_inpaint.backend.cli import main
from differential_inpaint.backend.engine import SCHEDULERS, cli_run

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


def _exit_code(argv: list[str]) -> int:
    """main's exit code, including argparse's own refusals (SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


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


def test_count_writes_numbered_files_each_made_again_by_its_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    array = np.random.default_rng(2).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    image_path, mask_path = _files(tmp_path, array, _mask(32, 40))
    grid = tmp_path / "grid.png"
    argv = [*_run(tmp_path, image_path, mask_path), "--quiet", "--seed", "5", "--count", "3"]
    assert main([*argv, "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    for k in range(3):
        assert f"seed: {5 + k} -> {tmp_path / f'out-{k + 1}.png'}" in out
    assert not (tmp_path / "out.png").exists()
    made = [np.asarray(Image.open(tmp_path / f"out-{k + 1}.png")) for k in range(3)]
    assert main([*_run(tmp_path, image_path, mask_path), "--quiet", "--seed", "6"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), made[1])
    # The grid: the results side by side, a labelled band under them.
    with Image.open(grid) as picture:
        assert picture.width > 3 * 40 and picture.height > 32
        tiles = np.asarray(picture.convert("RGB"))
    gap = (picture.width - 3 * 40) // 2
    for k in range(3):
        assert np.array_equal(tiles[:32, k * (40 + gap) : k * (40 + gap) + 40], made[k])
    band = tiles[32:]
    assert (band < 128).any() and (band == 255).any()  # text written on white


def test_fan_writes_one_file_per_strength_and_prints_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    array = np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    image_path, mask_path = _files(tmp_path, array, _mask(32, 32))
    assert main([*_run(tmp_path, image_path, mask_path), "--quiet", "--seed", "9", "--fan", "0.4,70%,1"]) == 0
    out = capsys.readouterr().out
    for k, strength in enumerate((0.4, 0.7, 1)):
        assert f"strength {strength:g}, seed 9 -> {tmp_path / f'out-{k + 1}.png'}" in out
    changed = [
        np.abs(np.asarray(Image.open(tmp_path / f"out-{k}.png")).astype(int) - array).sum() for k in (1, 2, 3)
    ]
    assert changed[0] < changed[1] < changed[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "0"], "field 'count' is 0, below the minimum 1"),
        (["--count", "9"], "field 'count' is 9, above the maximum 8"),
        (["--fan", "0.5,0"], "field 'fan[1]' is 0.0, must be above 0"),
        (["--fan", "1.5"], "field 'fan[0]' is 1.5, must be at most 1"),
        (["--fan", "0.5", "--count", "2"], "'count' and 'fan' cannot be used together"),
    ],
)
def test_bad_counts_and_fans_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    files = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    assert _exit_code(["run", *files, "--out", str(tmp_path / "o.png"), *argv]) == cli_run.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_a_fan_that_is_not_numbers_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["run", "--image", "i", "--mask", "m", "--out", "o", "--fan", "0.3,half"]) == 2
    assert "'half' is not a number; give numbers separated by commas" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message", "code"),
    [
        ("small_mask", "the mask is 32x20 pixels but the image is 32x32", 2),
        ("unreadable", "cannot read the image", 2),
        ("missing_mask", "cannot read the mask", 2),
        ("strength", "field 'strength' is 1.5, must be at most 1", 2),
        ("nan_strength", "field 'strength' must be a finite number", 2),
        ("steps", "field 'steps' is 0, below the minimum 1", 2),
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
    assert _exit_code(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


# The options `run` has besides the job's parameters.
MACHINE_OPTIONS = {"--help", "--image", "--mask", "--out", "--device", "--model-dir", "--quiet"}
MACHINE_OPTIONS |= {"--vae-tiling", "--offload", "--cpu-offload", "--grid", "--text-encoder", "--vae"}
MACHINE_OPTIONS |= {"--blend-mask", "--context", "--show-map"}
MACHINE_OPTIONS |= {"--lora", "--lora-dir", "--ip-adapter", "--ip-adapter-model", "--ip-adapter-dir"}
MACHINE_OPTIONS |= {"--control", "--preprocess", "--controlnet-dir"}  # cli_control.py
# The spec's `loras` is `--lora NAME:WEIGHT` (cli_addons.py), not an option of its own.
CLI_PARAMS = tuple(p for p in protocol.shown_on("cli") if p.name != "loras")


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run")
    cli_run.add_arguments(parser)
    return parser


def test_the_job_options_are_the_specs_parameters_with_its_defaults() -> None:
    parser = _run_parser()
    offered = {o for action in parser._actions for o in action.option_strings if o.startswith("--")}
    negations = {f"--no-{p.option}" for p in CLI_PARAMS if p.kind is bool}  # --smooth / --no-smooth
    assert offered - MACHINE_OPTIONS == {f"--{p.option}" for p in CLI_PARAMS} | negations
    assert {p.name for p in CLI_PARAMS} >= {"prompt", "strength", "steps", "scheduler", "snap", "model"}
    for p in CLI_PARAMS:
        assert parser.get_default(p.name) == p.default, p.name
        action = next(a for a in parser._actions if f"--{p.option}" in a.option_strings)
        assert p.help in action.help and p.describe_range() in action.help
    scheduler = next(a for a in parser._actions if "--scheduler" in a.option_strings)
    assert tuple(scheduler.choices) == SCHEDULERS
    named = parser.parse_args(["--image", "i", "--mask", "m", "--out", "o", "--scheduler", "DPM++ 2M"])
    assert named.scheduler == "dpmpp_2m"  # the engine's canonical name
    defaults = cli_run.job_params(parser.parse_args(["--image", "i", "--mask", "m", "--out", "o"]))
    assert defaults == protocol.JobParams()  # nothing given: the spec's defaults, snap included


def _just_outside_and_inside(p: protocol.Param) -> list[Any]:
    """For each numeric bound of `p`: a value just outside it and one just inside."""
    cases = []
    for side, bound, is_open, outward in [
        ("lo", p.bounds()[0], p.lo_open, -1),
        ("hi", p.bounds()[1], p.hi_open, 1),
    ]:
        if bound is None:
            continue
        if p.kind is int:
            outside, inside = (bound, bound - outward) if is_open else (bound + outward, bound)
        else:
            away, back = math.nextafter(bound, outward * math.inf), math.nextafter(bound, -outward * math.inf)
            outside, inside = (bound, back) if is_open else (away, bound)
        if p.kind is tuple:  # a list of one value: "--fan=0.5"
            cases.append(pytest.param(p, float(outside), (float(inside),), id=f"{p.name}-{side}"))
        else:
            cases.append(pytest.param(p, p.kind(outside), p.kind(inside), id=f"{p.name}-{side}"))
    return cases


@pytest.mark.parametrize(
    ("param", "outside", "inside"), [case for p in CLI_PARAMS for case in _just_outside_and_inside(p)]
)
def test_a_value_just_outside_a_bound_is_refused_and_one_just_inside_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], param: protocol.Param, outside: Any, inside: Any
) -> None:
    files = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    files += ["--out", str(tmp_path / "out.png")]
    # Refused before any file is read or any model loaded: these files do not even exist.
    assert _exit_code(["run", *files, f"--{param.option}={outside!r}"]) == cli_run.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"'{param.name}" in err and "Traceback" not in err  # 'fan[0]' for a list
    given = ",".join(map(repr, inside)) if isinstance(inside, tuple) else repr(inside)
    taken = cli_run.job_params(_run_parser().parse_args([*files, f"--{param.option}={given}"]))
    assert getattr(taken, param.name) == inside


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
    from differential_inpaint.backend.engine.depth import build_tiny_depth_model
    from differential_inpaint.backend.engine.tiny import build_tiny_pipeline

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_single_file(build_tiny_pipeline("tiny-sdxl"), folder / "my_xl.safetensors")
    build_tiny_depth_model().save_pretrained(folder / "depth-v2")
    assert main(["models", "--model-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("my_xl.safetensors"))
    assert line.split()[1:] == ["sdxl", "folder"]
    assert "builtin:tiny-sd15" in out
    assert str(folder) in out.split("Searched:")[1]
    depth = out.split("Depth models:")[1].split("\n\n")[0].split()
    assert depth == ["depth-v2", "[folder]", "builtin:tiny-depth", "[builtin]"]


def test_whole_files_may_be_bigger_than_a_region_on_the_wire() -> None:
    """The command line reads whole photos: only the side limit holds, not the wire's pixel cap."""
    import numpy as np

    from differential_inpaint.backend.engine import InvalidRequest
    from differential_inpaint.backend.engine.cli_run import FILE_LIMITS
    from differential_inpaint.backend.engine.job import check_pixels
    from differential_inpaint.protocol import DEFAULT_LIMITS

    image, mask = np.zeros((4200, 4200, 4), np.float32), np.zeros((4200, 4200), np.uint8)
    with pytest.raises(InvalidRequest):
        check_pixels(image, mask, DEFAULT_LIMITS)
    assert check_pixels(image, mask, FILE_LIMITS)[0].shape == (4200, 4200, 4)
    assert FILE_LIMITS.max_side == DEFAULT_LIMITS.max_side


# --- maps: levels, depth, the blend map, the context, --show-map ------------------------


def _photo(tmp_path: Path, height: int = 40, width: int = 56) -> tuple[np.ndarray, Path]:
    array = np.random.default_rng(11).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    return array, path


def _ramp_file(tmp_path: Path, height: int = 40, width: int = 56) -> Path:
    ramp = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    return path


def test_show_map_equals_the_map_the_sampler_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from differential_inpaint.backend.engine import job

    _, photo = _photo(tmp_path)
    levels = ["--mask-black", "0.2", "--mask-white", "0.9", "--mask-gamma", "1.6", "--strength", "0.7"]
    levels += ["--feather", "3", "--invert-mask"]
    argv = _run(tmp_path, photo, _ramp_file(tmp_path), *levels)
    shown_path = tmp_path / "map.png"
    assert main([*argv, "--show-map", str(shown_path)]) == 0
    assert "wrote" in capsys.readouterr().out and not (tmp_path / "out.png").exists()  # no sampling
    shown = Image.open(shown_path)
    assert shown.mode == "L" and shown.size == (56, 40)
    given: list[np.ndarray] = []
    pixel_strength = job.pixel_strength
    monkeypatch.setattr(job, "pixel_strength", lambda m, s: given.append(pixel_strength(m, s)) or given[-1])
    assert main(argv) == 0
    assert given and given[0].shape == (40, 56)
    np.testing.assert_array_equal(np.asarray(shown), cli_run.strength_image(given[0]))
    assert np.asarray(shown).max() == round(0.7 * 255) and np.asarray(shown)[:, -1].max() == 0


def test_a_ramp_with_black_point_one_half_leaves_its_left_half_unchanged(tmp_path: Path) -> None:
    array, photo = _photo(tmp_path)
    assert main(_run(tmp_path, photo, _ramp_file(tmp_path), "--mask-black", "0.5", "--seed", "3")) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(out[:, :28], array[:, :28])
    assert np.abs(out[:, -10:].astype(int) - array[:, -10:]).mean() > 2


def test_depth_far_without_a_mask_repaints_the_background(tmp_path: Path) -> None:
    array, photo = _photo(tmp_path)
    depth = ["--depth", "far", "--depth-model", "builtin:tiny-depth", "--mask-black", "0.3"]
    common = ["run", "--model", "builtin:tiny-sd15", "--image", str(photo), "--steps", "3", *depth]
    assert main([*common, "--show-map", str(tmp_path / "map.png")]) == 0
    assert main([*common, "--out", str(tmp_path / "out.png"), "--seed", "2"]) == 0
    kept = np.asarray(Image.open(tmp_path / "map.png")) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert kept.any() and (~kept).any()
    assert np.array_equal(out[kept], array[kept])  # the near part, bit for bit
    assert np.abs(out[~kept].astype(int) - array[~kept]).mean() > 1


def test_a_blend_mask_is_the_results_opacity(tmp_path: Path) -> None:
    array, photo = _photo(tmp_path)
    full, blend = np.full((40, 56), 255, np.uint8), np.full((40, 56), 255, np.uint8)
    blend[:, :20] = 0
    Image.fromarray(full).save(tmp_path / "full.png")
    Image.fromarray(blend).save(tmp_path / "blend.png")
    argv = _run(tmp_path, photo, tmp_path / "full.png", "--seed", "4")
    assert main([*argv, "--blend-mask", str(tmp_path / "blend.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(out[:, :20], array[:, :20])  # transparent there: the photo shows
    assert np.abs(out[:, 24:].astype(int) - array[:, 24:]).mean() > 2


def test_a_context_rectangle_is_all_that_changes(tmp_path: Path) -> None:
    array, photo = _photo(tmp_path)
    Image.fromarray(np.full((40, 56), 255, np.uint8)).save(tmp_path / "full.png")
    assert main(_run(tmp_path, photo, tmp_path / "full.png", "--context", "8,4,30,20", "--seed", "6")) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    inside = np.zeros((40, 56), bool)
    inside[4:24, 8:38] = True
    assert np.array_equal(out[~inside], array[~inside])  # the map is white there, yet kept
    assert np.abs(out[inside].astype(int) - array[inside]).mean() > 2


def test_a_mask_context_shows_the_model_the_maps_bounds_only(tmp_path: Path) -> None:
    array, photo = _photo(tmp_path)
    box = np.zeros((40, 56), np.uint8)
    box[10:20, 12:30] = 255
    Image.fromarray(box).save(tmp_path / "box.png")
    results = {}
    for context in ("image", "mask"):
        assert main(_run(tmp_path, photo, tmp_path / "box.png", "--context", context, "--seed", "6")) == 0
        results[context] = np.asarray(Image.open(tmp_path / "out.png"))
        assert np.array_equal(results[context][box == 0], array[box == 0])
    # The same job, seen whole or cropped to the box: the model painted the box differently.
    assert not np.array_equal(results["image"][box > 0], results["mask"][box > 0])


def test_a_context_outside_the_image_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, photo = _photo(tmp_path)
    argv = _run(tmp_path, photo, _ramp_file(tmp_path), "--context", "100,100,10,10")
    assert _exit_code(argv) == cli_run.EXIT_BAD_INPUT
    assert "The context 100,100,10,10 lies outside the 56x40 image" in capsys.readouterr().err
    assert _exit_code([*argv[:-2], "--context", "left"]) == 2  # argparse: not a word nor X,Y,W,H
    assert "X,Y,W,H" in capsys.readouterr().err


def test_sixteen_bit_and_transparent_map_files(tmp_path: Path) -> None:
    deep = np.zeros((8, 8), np.uint16)
    deep[:, 4:] = 100  # 0 in 8 bits
    Image.fromarray(deep).save(tmp_path / "deep.png")
    read = cli_run.read_mask(tmp_path / "deep.png")
    assert read.dtype == np.uint16 and np.array_equal(read, deep)
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[..., :3], layer[..., 3] = 255, 64  # white, a quarter opaque
    Image.fromarray(layer).save(tmp_path / "layer.png")
    np.testing.assert_allclose(cli_run.read_mask(tmp_path / "layer.png"), 64 / 255)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mask-gamma", "0"], "field 'mask_gamma' is 0"),
        (
            ["--mask-black", "0.6", "--mask-white", "0.4"],
            "'mask_black' (0.6) must be below 'mask_white' (0.4)",
        ),
        (["--blend-mask", "SMALL"], "the blend mask is 20x32 pixels but the image is 56x40"),
        (
            ["--depth", "far", "--depth-model", "NOT_A_MODEL"],
            "Cannot use 'depth_anything_v2_vits.pth' as a depth",
        ),
        (["--depth", "far"], "No depth model was found: put a Depth Anything V2 model"),
        (["NO_MASK"], "give --mask FILE (white = change, black = keep), or --depth near|far"),
    ],
)
def test_bad_maps_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    _, photo = _photo(tmp_path)
    Image.fromarray(np.zeros((32, 20), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "depth_anything_v2_vits.pth").write_bytes(b"PK not a model")
    full = _run(tmp_path, photo, _ramp_file(tmp_path))
    if argv == ["NO_MASK"]:
        at = full.index("--mask")
        full, argv = full[:at] + full[at + 2 :], []
    argv = [
        str(tmp_path / "small.png")
        if a == "SMALL"
        else str(tmp_path / "depth_anything_v2_vits.pth")
        if a == "NOT_A_MODEL"
        else a
        for a in argv
    ]
    assert _exit_code([*full, *argv]) == cli_run.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_depth_options_show_their_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "--depth none|near|far" in text and "--depth-combine multiply|min|max" in text
    assert "--show-map OUT.png" in text and "--context auto|image|mask|X,Y,W,H" in text
