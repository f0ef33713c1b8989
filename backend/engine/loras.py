"""LoRAs: found where painters keep them, loaded into a model once, switched on per job.

Files: kohya / Automatic1111 (``lora_unet_...lora_down.weight``, LyCORIS LoCon too) and diffusers
/ PEFT (``unet....lora_A.weight``) ``.safetensors``, for SD1.5 and SDXL, and FLUX.1 and SD3 ones
in the layouts diffusers reads (``transformer....lora_A.weight``, kohya's, ComfyUI's). Folders:
ComfyUI's ``models/loras``, Automatic1111's ``models/Lora`` (and ``models/LyCORIS``), and those
given with ``--lora-dir`` (addons.py). A file's family comes from its keys and widths: SD's from
its cross-attention's (768: SD1.5, 2048: SDXL), FLUX.1's from its single blocks or 3072.

A model keeps the LoRAs it was given as PEFT adapters beside its own weights, never merged
into them: a job switches on its own LoRAs at their weights and every other one off, so a job
without LoRAs runs the model's own layers alone, bit for bit as before any was loaded. A LoRA
of weight 0 is not switched on at all. Loaded adapters stay (the last `MAX_KEPT` per model):
the next job with the same LoRAs loads nothing.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...protocol import Lora
from .addons import AddonFinder, AddonInfo, AddonKind, Shapes, fits
from .errors import InvalidRequest
from .tiny import BUILTIN_PREFIX, SEED

LORA_SUFFIXES = (".safetensors",)
# LoRA adapters a model keeps loaded; a job names at most the protocol's max_loras (8).
MAX_KEPT = 8
TINY_RANK = 4
# name (without the prefix) -> family; each matches the built-in tiny model of its family.
BUILTIN_LORAS = {"tiny-lora-sd15": "sd15", "tiny-lora-sdxl": "sdxl"}
# The width a LoRA's cross-attention keys read (SD: the text encoders' width) -> the family it
# was made for; 32 and 64 are the built-in tiny models' (tiny.py).
CONTEXT_FAMILIES = {768: "sd15", 1024: "sd2", 2048: "sdxl", 32: "sd15", 64: "sdxl"}
# A text encoder's width, for LoRAs of the text encoder alone.
TEXT_FAMILIES = {768: "sd15", 1024: "sd2"}
FLUX_WIDTH = 3072
_DOWN = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight")


def lora_family(shapes: Shapes) -> str | None:
    """The family a LoRA's tensors fit ("unknown" when they do not say), None when they are
    not a LoRA (LoHa and LoKr files, which diffusers cannot load, are not)."""
    downs = {k: s for k, s in shapes.items() if k.endswith(_DOWN)}
    if not downs:
        return None
    keys = list(downs)
    if any("double_blocks" in k or "single_blocks" in k or "single_transformer_blocks" in k for k in keys):
        return "flux"
    if any("joint_blocks" in k for k in keys):
        return "sd3"
    joint = [s for k, s in downs.items() if k.startswith("transformer.transformer_blocks.")]
    if joint:  # diffusers' layout, double blocks only: FLUX.1's are 3072 wide, SD3's narrower
        return "flux" if joint[0][-1] == FLUX_WIDTH else "sd3"
    for key, shape in downs.items():
        if "attn2" in key and "to_k" in key and len(shape) == 2:
            return CONTEXT_FAMILIES.get(shape[1], "unknown")
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    for key, shape in downs.items():
        if key.startswith(("lora_te_", "lora_te1_", "text_encoder.")) and len(shape) == 2:
            return TEXT_FAMILIES.get(shape[1], "unknown")
    return "unknown"


LORA = AddonKind(
    what="LoRA",
    option="--lora-dir",
    app_folders=(
        ("models/loras", "comfyui"),
        ("models/Lora", "automatic1111"),
        ("models/LyCORIS", "automatic1111"),
    ),
    suffixes=LORA_SUFFIXES,
    family=lora_family,
)


class LoraLibrary:
    """The LoRAs found (`finder`) and the adapters each loaded model keeps. Thread-safe.

    `loads` counts the LoRA files (or built-ins) loaded into a model so far.
    """

    def __init__(
        self,
        dirs: Sequence[Path | str] = (),
        model_dirs: Sequence[Path] = (),
        *,
        scan_default_locations: bool = True,
        allow_paths: bool = True,
    ) -> None:
        self.finder = AddonFinder(
            LORA,
            dirs,
            model_dirs,
            scan_default_locations=scan_default_locations,
            builtins=BUILTIN_LORAS,
            allow_paths=allow_paths,
        )
        self.loads = 0
        self._lock = threading.Lock()
        # pipeline -> (LoRA key -> adapter name), least recently used first; a pipeline
        # dropped from the model cache takes its adapters with it.
        self._adapters: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, ...], str]] = (
            weakref.WeakKeyDictionary()
        )
        self._serial = 0

    def find(self) -> list[AddonInfo]:
        """Every LoRA found now, the built-ins last."""
        return self.finder.find()

    def resolve(self, loras: Sequence[Lora], model: str, family: str) -> list[tuple[AddonInfo, float]]:
        """A job's LoRAs as (LoRA, weight), each named once (weights of one named twice add up).

        UnknownModel for a name that is not found; InvalidRequest for one made for another
        family than the model's."""
        chosen: dict[str, tuple[AddonInfo, float]] = {}
        for lora in loras:
            info = self.finder.resolve(lora.name)
            if not fits(info.family, family):
                made_for = "an unknown model family" if info.family == "unknown" else info.family
                raise InvalidRequest(
                    f"The LoRA '{info.name}' was made for {made_for}; the model '{model}' is {family}. "
                    "Pick a LoRA of the model's family."
                )
            weight = chosen[info.name][1] + lora.weight if info.name in chosen else lora.weight
            chosen[info.name] = (info, float(weight))
        return list(chosen.values())

    def apply(self, pipe: Any, chosen: Sequence[tuple[AddonInfo, float]], model: str) -> None:
        """Switch on exactly `chosen` at their weights in `pipe` (loading those it lacks) and
        every other adapter off; weight 0 counts as absent."""
        active = [(info, weight) for info, weight in chosen if weight != 0.0]
        with self._lock:
            adapters = self._adapters.setdefault(pipe, OrderedDict())
            names = [self._adapter(pipe, adapters, info, model) for info, _ in active]
            self._evict(pipe, adapters, keep=set(names))
            if names:
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=[weight for _, weight in active])
            elif adapters:
                pipe.disable_lora()

    def _adapter(
        self, pipe: Any, adapters: OrderedDict[tuple[str, ...], str], info: AddonInfo, model: str
    ) -> str:
        """The adapter name of `info` in `pipe`, loaded now if it is not there yet."""
        key = _file_key(info)
        if key in adapters:
            adapters.move_to_end(key)
            return adapters[key]
        self._serial += 1
        name = f"lora{self._serial}"  # PEFT adapter names become module keys: no dots
        state = _state_dict(info)
        try:
            with _quiet_loading():
                pipe.load_lora_weights(state, adapter_name=name)
        except Exception as exc:
            _forget(pipe, name)
            raise InvalidRequest(
                f"The LoRA '{info.name}' does not fit the model '{model}' ({_first_line(exc)})."
            ) from exc
        self.loads += 1
        adapters[key] = name
        return name

    def _evict(self, pipe: Any, adapters: OrderedDict[tuple[str, ...], str], keep: set[str]) -> None:
        while len(adapters) > MAX_KEPT:
            old = next((k for k, n in adapters.items() if n not in keep), None)
            if old is None:
                return
            _forget(pipe, adapters.pop(old))


def _file_key(info: AddonInfo) -> tuple[str, ...]:
    """What a loaded adapter stands for: the built-in, or one version of one file."""
    if info.location is None:
        return (info.name,)
    stat = info.location.stat()
    return (str(info.location.resolve()), str(stat.st_size), str(stat.st_mtime_ns))


def _state_dict(info: AddonInfo) -> dict[str, Any]:
    """A fresh dict of the LoRA's tensors (diffusers' loader pops keys from the one it is given)."""
    if info.location is None:
        return dict(build_tiny_lora(info.name.removeprefix(BUILTIN_PREFIX)))
    from .checkpoints import UnsupportedCheckpoint, read_state_dict

    try:
        return read_state_dict(info.location)
    except (UnsupportedCheckpoint, OSError) as exc:
        raise InvalidRequest(f"Cannot read the LoRA '{info.name}': {exc}.") from exc


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """diffusers warns of every text encoder a LoRA leaves alone ("safe to ignore") and PEFT of
    every adapter after the first (the point here): not for the painter's log."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def _forget(pipe: Any, name: str) -> None:
    """Remove an adapter (loaded or half-loaded) from every component of `pipe`."""
    # A load that failed may have left the adapter nowhere, or in some components only.
    with contextlib.suppress(Exception):
        pipe.delete_adapters([name])


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@functools.cache
def build_tiny_lora(name: str) -> dict[str, Any]:
    """A built-in tiny LoRA in the diffusers / PEFT layout: rank 4 on every attention
    projection of the built-in tiny model of its family, random but the same in every process.

    Its up-projections are not zero (a trained LoRA's are not), so it changes what the model
    paints. Callers must not modify the tensors.
    """
    import torch

    from .tiny import build_tiny_pipeline

    family = BUILTIN_LORAS[name]
    unet = build_tiny_pipeline(f"tiny-{family}").unet
    generator = torch.Generator("cpu").manual_seed(SEED + 7)
    state: dict[str, Any] = {}
    for module_name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if not module_name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_k", "attn2.to_v")):
            continue
        out_features, in_features = module.weight.shape
        down = torch.randn(TINY_RANK, in_features, generator=generator) / in_features**0.5
        up = torch.randn(out_features, TINY_RANK, generator=generator) * 0.5 / TINY_RANK**0.5
        state[f"unet.{module_name}.lora_A.weight"] = down
        state[f"unet.{module_name}.lora_B.weight"] = up
    return state
