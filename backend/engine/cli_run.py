"""`differential-inpaint run`: inpaint one image offline, without the daemon.

The output has the input's size and mode: RGB stays RGB, RGBA stays RGBA, grayscale
stays grayscale, 16-bit grayscale PNGs stay 16-bit. Palette and other modes are written
as RGB (RGBA when they had transparency). Pixels where the effective change map is 0
are copied from the input file unchanged.

Map files (--mask, --blend-mask): grayscale as is (16-bit PNGs at 16 bits), colour as its
luminance, and with transparency times its alpha (a painted strength layer exported
as a PNG). --show-map writes the effective strength map and samples nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

from ...protocol import DEFAULT_LIMITS, Depth, JobParams, Param, ProtocolError, shown_on
from .cli_addons import add_addon_arguments, reference_images
from .cli_control import add_control_arguments
from .errors import EngineError, InvalidRequest, JobCancelled, UnknownModel
from .schedulers import SCHEDULERS, check_scheduler_name

EXIT_BAD_INPUT = 2
EXIT_UNKNOWN_MODEL = 3
EXIT_FAILED = 1
EXIT_CANCELLED = 130
# Whole files, not regions on the wire: no message size applies, only the side limit
# (the engine works at the model's size whatever the file's).
FILE_LIMITS = replace(DEFAULT_LIMITS, max_pixels=DEFAULT_LIMITS.max_side**2)


# The job's options are the spec's parameters shown on the command line: their names,
# types, defaults, bounds and help are declared once, in protocol/spec.py.
# `loras` is the repeatable --lora NAME:WEIGHT instead (cli_addons.py): one option for one thing.
JOB_OPTIONS: tuple[Param, ...] = tuple(p for p in shown_on("cli") if p.name != "loras")

# The daemon offers only the models it lists; the command line takes any spec catalog.py reads.
MODEL_HELP = "; here also builtin:NAME, hf:ORG/NAME, or a checkpoint file or diffusers folder path"
# depth.py's spec grammar, in a line.
DEPTH_MODEL_HELP = (
    "; a name from `differential-inpaint models`, hf:ORG/NAME in the Hugging Face cache, "
    "builtin:tiny-depth (random, for tests), or a Depth Anything file or folder path"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, type=Path, help="the image to change (PNG, JPEG, ...)")
    parser.add_argument(
        "--mask",
        type=Path,
        default=None,
        metavar="FILE",
        help="the change map: white = change fully, black = keep, gray between (16-bit PNGs are read "
        "at 16 bits; transparency counts as black); optional with --depth (then the depth alone)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the result; several (--count, --fan): OUT-1, OUT-2, ... before the extension",
    )
    parser.add_argument(
        "--blend-mask",
        type=Path,
        default=None,
        metavar="FILE",
        help="the result's opacity instead of the one made from the change map (which still decides "
        "what the sampler changes); read like --mask",
    )
    parser.add_argument(
        "--context",
        type=_context,
        default="auto",
        metavar="auto|image|mask|X,Y,W,H",
        help="the part of the image the model sees: auto and image = the whole image, mask = the "
        "effective map's bounds only, or a rectangle in pixels; outside it nothing changes "
        "(default auto)",
    )
    parser.add_argument(
        "--show-map",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="write the effective strength map (after levels, depth, grow, feather and x strength) "
        "as 8-bit grayscale and exit without sampling",
    )
    parser.add_argument(
        "--grid",
        type=Path,
        default=None,
        help="also write every result side by side in this file, its seed or strength under each",
    )
    for param in JOB_OPTIONS:
        parser.add_argument(f"--{param.option}", **_argument(param))
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
    parser.add_argument(
        "--model-dir", action="append", default=[], type=Path, help="also search this folder (repeatable)"
    )
    add_model_part_arguments(parser)
    add_control_arguments(parser)
    add_addon_arguments(parser)
    parser.add_argument("--vae-tiling", action="store_true", help="run the VAE in tiles (less GPU memory)")
    add_offload_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_offload_argument(parser: argparse.ArgumentParser) -> None:
    """--offload MODE, and --cpu-offload for `--offload model` (`run` and `serve`)."""
    from .memory import OFFLOAD_MODES

    parser.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="auto",
        help="where model weights live on a GPU: none (on the GPU), model (in CPU memory, each "
        "component moved to the GPU while it runs), sequential (each block moved while it runs: "
        "the least GPU memory, the slowest), auto (default: chosen per model from its size and "
        "the GPU's free memory, and logged)",
    )
    parser.add_argument(
        "--cpu-offload",
        dest="offload",
        action="store_const",
        const="model",
        help="the same as --offload model",
    )


def add_model_part_arguments(parser: argparse.ArgumentParser) -> None:
    """--text-encoder and --vae: the parts a FLUX.1 / SD3 model file may lack (`run` and `serve`)."""
    parser.add_argument(
        "--text-encoder",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a text encoder file (clip_l, clip_g, t5xxl) for FLUX.1 / SD3 models that lack it, "
        "or to choose among several found (repeatable)",
    )
    parser.add_argument(
        "--vae",
        type=Path,
        default=None,
        metavar="FILE",
        help="the VAE file (ae.safetensors) for FLUX.1 / SD3 models",
    )


def add_depth_model_argument(parser: argparse.ArgumentParser) -> None:
    """`serve --depth-model`: the depth model of jobs that name none (on `run` the option is
    the job's own parameter, from the spec)."""
    parser.add_argument(
        "--depth-model",
        default=None,
        metavar="SPEC",
        help="the depth model for jobs that ask for a depth map and name none (default: the first "
        "found)" + DEPTH_MODEL_HELP,
    )


def _argument(param: Param) -> dict[str, Any]:
    """`add_argument`'s keywords for one spec parameter."""
    if param.kind is bool:
        return {"action": argparse.BooleanOptionalAction, "default": param.default, "help": _help(param)}
    if param.kind is tuple:
        return {"type": _list_of(param), "default": param.default, "help": _help(param), "metavar": "A,B,..."}
    if isinstance(param.kind, type) and issubclass(param.kind, Enum):
        names = [member.value for member in param.kind]
        return {
            "type": param.kind,
            "default": param.default,
            "choices": list(param.kind),
            "metavar": "|".join(names),
            "help": _help(param),
        }
    if param.kind not in (str, int, float):
        raise TypeError(f"parameter {param.name}: no command-line form for {param.kind}")
    options: dict[str, Any] = {"type": param.kind, "default": param.default, "help": _help(param)}
    if param.choices == "schedulers":
        options.update(type=_scheduler_name, choices=SCHEDULERS)
    return options


def _list_of(param: Param) -> Any:
    """argparse's type for a list parameter: "0.3,0.5,0.7" (the spec's `parse_text`)."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            return param.parse_text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{exc}; give numbers separated by commas: 0.3,0.5,0.7"
            ) from None

    parse.__name__ = param.option  # argparse names the type in its errors
    return parse


def _help(param: Param) -> str:
    """The spec's help, then its range and default: "Sampling steps (between 1 and 200; default 20)"."""
    details = [param.describe_range() + (" each" if param.kind is tuple and param.describe_range() else "")]
    if param.default not in (None, "", ()):
        default = param.default.value if isinstance(param.default, Enum) else param.default
        details.append(f"default {default:g}" if isinstance(default, float) else f"default {default}")
    text = param.help + {"model": MODEL_HELP, "depth_model": DEPTH_MODEL_HELP}.get(param.name, "")
    said = "; ".join(d for d in details if d)
    return (f"{text} ({said})" if said else text).replace("%", "%%")  # argparse formats help with %


def _context(text: str) -> Any:
    """--context: a word, or "X,Y,W,H" as a tuple of ints."""
    from .regions import CONTEXT_WORDS

    word = text.strip().lower()
    if word in CONTEXT_WORDS:
        return word
    try:
        x, y, w, h = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not one of {', '.join(CONTEXT_WORDS)} or X,Y,W,H in whole pixels (10,20,256,128)"
        ) from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': the width and height must be above 0")
    return (x, y, w, h)


def _scheduler_name(name: str) -> str:
    """The canonical name ("DPM++ 2M" is dpmpp_2m), or the engine's reason for refusing it."""
    try:
        return check_scheduler_name(name)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def job_params(args: argparse.Namespace) -> JobParams:
    """The job's parameters from the parsed options, checked by the spec (ProtocolError naming
    the first bad value)."""
    values = {param.name: getattr(args, param.name) for param in JOB_OPTIONS}
    return JobParams(**values, loras=tuple(getattr(args, "lora", ()))).validated()


def _error(message: str, code: int) -> int:
    print(f"differential-inpaint run: error: {message}", file=sys.stderr)
    return code


def read_image(path: Path) -> tuple[Any, Any, str]:
    """(float32 HxWx4 RGBA in [0, 1], the pixel array as read, output mode)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as opened:
        opened.load()
        image = opened
        mode = image.mode
        if mode in ("I;16", "I;16L", "I;16B", "I"):
            # "I" is 32-bit: 16-bit PNGs in older Pillow, or a TIFF beyond 16 bits (clipped).
            raw = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            gray = raw.astype(np.float32) / 65535.0
            rgba = np.stack([gray, gray, gray, np.ones_like(gray)], axis=-1)
            return rgba.astype(np.float32), raw, "I;16"
        if mode not in ("RGB", "RGBA", "L", "LA"):
            has_alpha = "transparency" in image.info or mode in ("PA", "RGBa", "La")
            image = image.convert("RGBA" if has_alpha else "RGB")
            mode = image.mode
        raw = np.asarray(image)
    values = raw.astype(np.float32) / 255.0
    if mode == "L":
        values = np.stack([values] * 3 + [np.ones_like(values)], axis=-1)
    elif mode == "LA":
        values = np.stack([values[..., 0]] * 3 + [values[..., 1]], axis=-1)
    elif mode == "RGB":
        values = np.concatenate([values, np.ones_like(values[..., :1])], axis=-1)
    return np.ascontiguousarray(values, dtype=np.float32), raw, mode


def read_mask(path: Path) -> Any:
    """A map file as the engine takes it: uint8 HxW for 8-bit grayscale and colour (its
    luminance), uint16 for 16-bit grayscale, float64 in [0, 1] when it has transparency
    (luminance times alpha: a painted layer exported as a PNG)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16L", "I;16B", "I"):
            # "I" is 32-bit: 16-bit PNGs in older Pillow, or a TIFF beyond 16 bits (clipped).
            return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        if image.mode in ("LA", "RGBA", "PA", "La", "RGBa") or "transparency" in image.info:
            gray, alpha = image.convert("RGBA").convert("LA").split()
            return (np.asarray(gray) / 255.0) * (np.asarray(alpha) / 255.0)
        return np.asarray(image.convert("L")).copy()


def to_output(composite: Any, raw: Any, mode: str, keep: Any) -> Any:
    """Quantise the float RGBA composite to the input's mode; `keep` pixels are `raw` exactly."""
    import numpy as np

    rgb, alpha = composite[..., :3], composite[..., 3]
    if mode in ("L", "LA", "I;16"):
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        scale, dtype = (65535.0, np.uint16) if mode == "I;16" else (255.0, np.uint8)
        channels = [gray] if mode != "LA" else [gray, alpha]
    else:
        scale, dtype = 255.0, np.uint8
        channels = [rgb[..., 0], rgb[..., 1], rgb[..., 2]] + ([alpha] if mode == "RGBA" else [])
    out = np.stack(channels, axis=-1) if len(channels) > 1 else channels[0]
    out = np.clip(np.round(out * scale), 0, scale).astype(dtype)
    where = keep if out.ndim == 2 else keep[..., None]
    return np.where(where, raw.astype(dtype), out)


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' advice (safety checker, torchvision) off the terminal."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    # Loading a diffusers folder would draw diffusers' own bars under ours.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    try:
        params = job_params(args)
    except ProtocolError as exc:
        return _error(exc.message, EXIT_BAD_INPUT)
    if args.out is None and args.show_map is None:
        return _error(
            "give --out FILE for the result (or --show-map OUT.png for the map alone)", EXIT_BAD_INPUT
        )
    if args.mask is None and params.depth is Depth.NONE:
        return _error(
            "give --mask FILE (white = change, black = keep), or --depth near|far to use the image's "
            "depth as the map",
            EXIT_BAD_INPUT,
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    quiet_libraries()
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .controlnet import ControlInput
    from .job import Engine
    from .preprocess import PREPROCESSED_KINDS
    from .regions import composite_over

    unreadable = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)
    try:
        image, raw, mode = read_image(args.image)
    except unreadable as exc:
        return _error(f"cannot read the image '{args.image}': {exc}", EXIT_BAD_INPUT)
    maps: dict[str, Any] = {}
    for what, path in (("mask", args.mask), ("blend mask", args.blend_mask)):
        if path is None:
            continue
        try:
            maps[what] = read_mask(path)
        except unreadable as exc:
            return _error(f"cannot read the {what} '{path}': {exc}", EXIT_BAD_INPUT)
        if maps[what].shape != image.shape[:2]:
            return _error(
                f"the {what} is {maps[what].shape[1]}x{maps[what].shape[0]} pixels but the "
                f"image is {image.shape[1]}x{image.shape[0]}; they must be the same size",
                EXIT_BAD_INPUT,
            )
    controls = []
    for option in args.control:
        try:
            picture = read_image(option.file)[0]
        except unreadable as exc:
            return _error(f"cannot read the control image '{option.file}': {exc}", EXIT_BAD_INPUT)
        if picture.shape[:2] != image.shape[:2]:
            return _error(
                f"the control image '{option.file}' is {picture.shape[1]}x{picture.shape[0]} pixels but "
                f"the image is {image.shape[1]}x{image.shape[0]}; they must be the same size",
                EXIT_BAD_INPUT,
            )
        preprocess = args.preprocess and option.params.kind in PREPROCESSED_KINDS
        controls.append(ControlInput(picture, replace(option.params, preprocess=preprocess)))
    try:
        references = reference_images(args.ip_adapter, args.ip_adapter_model, lambda f: read_image(f)[0])
    except unreadable as exc:
        return _error(f"cannot read a reference image (--ip-adapter): {exc}", EXIT_BAD_INPUT)
    # Without --mask the depth alone is the map: an all-white mask changes nothing in the
    # combination (multiply, min), while max makes everything change, as it says.
    mask = maps["mask"] if "mask" in maps else np.full(image.shape[:2], 255, np.uint8)
    progress = _ProgressBar(enabled=not args.quiet)
    written: list[tuple[Any, Any]] = []  # (result, pixels as written)

    def write(result: Any) -> None:
        # Each result is written as soon as it is done: an interrupt keeps the finished ones.
        # Where the change map is 0 (or the result is transparent) the file's own pixels stay.
        keep = (result.image[..., 3] == 0) | (result.mask == 0)
        pixels = to_output(composite_over(image, result.image), raw, mode, keep=keep)
        path = output_path(args.out, result.index, params.results)
        Image.fromarray(pixels).save(path)
        written.append((result, pixels))
        progress.close()
        label = f"strength {result.strength:g}, seed {result.seed}" if params.fan else f"seed: {result.seed}"
        print(label if params.results == 1 else f"{label} -> {path}", flush=True)

    code = 0
    try:
        engine = Engine(
            device=args.device,
            model_dirs=args.model_dir,
            vae_tiling=args.vae_tiling,
            offload=args.offload,
            text_encoders=args.text_encoder,
            vae=args.vae,
            limits=FILE_LIMITS,
            lora_dirs=args.lora_dir,
            ip_adapter_dirs=args.ip_adapter_dir,
            controlnet_dirs=args.controlnet_dir,
        )
        if args.show_map is not None:
            strength = engine.strength_map(
                image, mask, params, context=args.context, on_progress=progress.update
            )
            Image.fromarray(strength_image(strength)).save(args.show_map)
            progress.close()
            print(f"wrote {args.show_map} (the strength map, {image.shape[1]}x{image.shape[0]})")
            return 0
        results = engine.inpaint_batch(
            image,
            mask,
            params,
            model=params.model,
            on_progress=progress.update,
            on_result=write,
            blend=maps.get("blend mask"),
            context=args.context,
            references=references,
            controls=controls,
        )
    except (OSError, ValueError, KeyError) as exc:
        target = (
            args.show_map
            if args.show_map is not None
            else output_path(args.out, len(written), params.results)
        )
        code = _error(f"cannot write '{target}': {exc}", EXIT_FAILED)
    except InvalidRequest as exc:
        code = _error(str(exc), EXIT_BAD_INPUT)
    except UnknownModel as exc:
        code = _error(str(exc), EXIT_UNKNOWN_MODEL)
    except JobCancelled as exc:
        code = _error(str(exc), EXIT_CANCELLED)
    except EngineError as exc:
        code = _error(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        code = _error("interrupted", EXIT_CANCELLED)
    finally:
        progress.close()
    # The grid holds what was finished, also when the rest was interrupted or failed.
    grid_error = _write_grid(args.grid, written, fan=bool(params.fan)) if args.grid and written else ""
    if code:
        return code
    if grid_error:
        return _error(grid_error, EXIT_FAILED)
    size = f"{image.shape[1]}x{image.shape[0]}, {mode}"
    seconds = results[-1].timings["total"]
    if len(results) == 1:
        print(f"wrote {args.out} ({size}) in {seconds:.1f} s")
    else:
        print(f"wrote {len(results)} results ({size}) in {seconds:.1f} s")
    if args.grid is not None:
        print(f"wrote {args.grid}")
    return 0


def strength_image(strength: Any) -> Any:
    """The strength map (float in [0, 1]) as 8-bit gray: 0 keep ... 255 change fully."""
    import numpy as np

    return np.clip(np.round(np.asarray(strength) * 255.0), 0, 255).astype(np.uint8)


def output_path(out: Path, index: int, total: int) -> Path:
    """Where result `index` of `total` goes: OUT itself for one, else OUT-1, OUT-2, ..."""
    return out if total == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")


def grid_image(written: list[tuple[Any, Any]], *, fan: bool) -> Any:
    """The results side by side (a gap between), each with its seed or strength written under it."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    tiles = [Image.fromarray(pixels).convert("RGB") for _result, pixels in written]
    width, height = tiles[0].size
    font_size = max(12, min(64, height // 16))
    font = ImageFont.load_default(size=font_size)
    gap, band = max(2, width // 100), font_size * 2
    grid = Image.new("RGB", (len(tiles) * width + (len(tiles) - 1) * gap, height + band), "white")
    draw = ImageDraw.Draw(grid)
    for k, ((result, _pixels), tile) in enumerate(zip(written, tiles, strict=True)):
        left = k * (width + gap)
        grid.paste(tile, (left, 0))
        text = f"strength {result.strength:g}" if fan else f"seed {result.seed}"
        draw.text((left + width / 2, height + band / 2), text, fill="black", font=font, anchor="mm")
    return np.asarray(grid)


def _write_grid(path: Path, written: list[tuple[Any, Any]], *, fan: bool) -> str:
    """Write the grid; the error text, or "" when written."""
    from PIL import Image

    try:
        Image.fromarray(grid_image(written, fan=fan)).save(path)
    except (OSError, ValueError, KeyError) as exc:
        return f"cannot write '{path}': {exc}"
    return ""


class _ProgressBar:
    """One tqdm bar on stderr per stage (loading, encoding, sampling, decoding)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stage = ""

    def update(self, stage: str, step: int, steps: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=steps, desc=stage, file=sys.stderr, leave=stage == "sampling", unit="step")
        self.bar.total = steps
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
