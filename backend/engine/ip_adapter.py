"""IP-Adapter: reference images steer SD1.5 and SDXL models, each with a weight.

An IP-Adapter file (h94's ``ip-adapter_sd15.safetensors``, ``ip-adapter-plus_sdxl_vit-h.bin``, ...:
``image_proj.*`` and ``ip_adapter.N.to_k_ip/to_v_ip``) adds an image projection and, beside each
cross-attention, a key/value projection of the image's tokens. Its image encoder is a CLIP vision
model (transformers' layout, as ComfyUI's ``models/clip_vision`` holds them; or a diffusers
``image_encoder`` folder); the one whose output fits the adapter's projection is taken (plain
adapters read the encoder's projected embedding, "plus" ones its penultimate hidden states).

Folders (addons.py): ComfyUI's ``models/ipadapter`` and ``models/clip_vision``, Automatic1111's
``models/ControlNet`` (files named ip-adapter...) and its extension's ``clip_vision`` downloads,
and those given with ``--ip-adapter-dir`` (adapters and encoders both). Built in:
``builtin:tiny-ip-adapter-sd15`` and ``-sdxl`` with a tiny CLIP vision encoder, for the built-in
tiny models.

A job installs its adapters' attention processors in the UNet and every job without references
puts the UNet's own back (the very objects it had), so a model after an IP-Adapter job is the
model before it. A reference of weight 0 is left out. Weights stay loaded: the next job with the
same adapters loads nothing.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .addons import AddonFinder, AddonInfo, AddonKind, Shapes, fits
from .errors import InvalidRequest, UnknownModel
from .loras import CONTEXT_FAMILIES
from .tiny import BUILTIN_PREFIX, SEED

IP_ADAPTER_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
BUILTIN_IP_ADAPTERS = {"tiny-ip-adapter-sd15": "sd15", "tiny-ip-adapter-sdxl": "sdxl"}
BUILTIN_IP_ADAPTERS_FAMILIES = frozenset(BUILTIN_IP_ADAPTERS.values())  # the families they work with
# CLIP's image preprocessing (transformers' CLIPImageProcessor for these encoders).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_TOKENS = 4
# Attention heads of the CLIP vision encoders IP-Adapters use, by width (ViT-L, ViT-H, ViT-bigG);
# the shapes do not say. Others (the tiny one): 64 channels a head, at least one head.
_HEADS = {1024: 16, 1280: 16, 1664: 16}


@dataclass(frozen=True)
class ReferenceImage:
    """One reference image of a job: float32 HxWx3 or HxWx4 RGB(A) in [0, 1], any size.

    weight: how much it steers (0: not at all); model: an IP-Adapter name, None: the first
    found that fits the model's family."""

    image: np.ndarray
    weight: float = 0.6
    model: str | None = None


# -- reading files -------------------------------------------------------------------


def read_tensors(path: Path, shapes_only: bool = False) -> dict[str, Any]:
    """A file's tensors by flat name ("image_proj.proj.weight"): .safetensors as they are,
    pickled ones (.bin, .pth) loaded safely and their nested dicts flattened."""
    from .checkpoints import read_shapes, read_state_dict

    if path.suffix.lower() == ".safetensors":
        return read_shapes(path) if shapes_only else read_state_dict(path)
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        elif isinstance(value, torch.Tensor):
            flat[prefix[:-1]] = tuple(value.shape) if shapes_only else value

    walk("", state)
    return flat


def _file_shapes(path: Path) -> Shapes:
    try:
        return read_tensors(path, shapes_only=True)
    except Exception as exc:  # the unpickler's errors: damaged files, or code in the pickle
        raise ValueError(str(exc)) from exc


def ip_adapter_family(shapes: Shapes) -> str | None:
    """The family an IP-Adapter's shapes fit, by the width its image keys read (768: SD1.5,
    2048: SDXL); None when they are not an IP-Adapter."""
    keys = [k for k in shapes if k.startswith("ip_adapter.") and k.endswith(".to_k_ip.weight")]
    if not keys or not any(k.startswith("image_proj.") for k in shapes):
        return None
    return CONTEXT_FAMILIES.get(shapes[keys[0]][1], "unknown")


def encoder_signature(shapes: Shapes) -> str | None:
    """A CLIP vision encoder's "PROJECTION:HIDDEN" widths, None when the file is not one."""
    patch = shapes.get("vision_model.embeddings.patch_embedding.weight")
    projection = shapes.get("visual_projection.weight")
    if patch is None or projection is None:
        return None
    return f"{projection[0]}:{patch[0]}"


def _named_ip_adapter(path: Path, source: str) -> bool:
    # Automatic1111 keeps IP-Adapters among its ControlNets: only files that say what they are.
    if source != "automatic1111":
        return True
    name = path.name.lower()
    return "ip-adapter" in name or "ip_adapter" in name


IP_ADAPTER = AddonKind(
    what="IP-Adapter",
    option="--ip-adapter-dir",
    app_folders=(
        ("models/ipadapter", "comfyui"),
        ("models/ControlNet", "automatic1111"),
        ("extensions/sd-webui-controlnet/models", "automatic1111"),
    ),
    suffixes=IP_ADAPTER_SUFFIXES,
    family=ip_adapter_family,
    wanted=_named_ip_adapter,
    shapes=_file_shapes,
)
IMAGE_ENCODER = AddonKind(
    what="image encoder",
    option="--ip-adapter-dir",
    app_folders=(
        ("models/clip_vision", "comfyui"),
        ("extensions/sd-webui-controlnet/annotator/downloads/clip_vision", "automatic1111"),
        ("models/ControlNetPreprocessor/clip_vision", "automatic1111"),
    ),
    suffixes=IP_ADAPTER_SUFFIXES,
    family=encoder_signature,
    shapes=_file_shapes,
)


# -- what an adapter needs -----------------------------------------------------------


def encoder_input(image_proj: dict[str, Any]) -> tuple[str, int]:
    """("embeds", width): a plain adapter projects the encoder's image embedding; ("hidden",
    width): "plus" and full-face ones read its penultimate hidden states."""
    if "proj.weight" in image_proj:
        return "embeds", int(image_proj["proj.weight"].shape[1])
    if "norm.weight" in image_proj and "proj.0.weight" in image_proj:
        raise InvalidRequest("IP-Adapter FaceID models need a face encoder, which this engine does not have.")
    for key in ("proj_in.weight", "proj.0.weight"):
        if key in image_proj:
            return "hidden", int(image_proj[key].shape[1])
    raise InvalidRequest("This IP-Adapter's image projection is of a kind this engine does not know.")


def vision_config(shapes: Shapes, folder: Path | None = None) -> Any:
    """A CLIPVisionConfig for a CLIP vision encoder's tensors (its config.json beside it, when
    there is one: a diffusers image_encoder folder)."""
    from transformers import CLIPVisionConfig

    if folder is not None and (folder / "config.json").is_file():
        return CLIPVisionConfig.from_pretrained(folder)
    hidden, _, patch, _ = shapes["vision_model.embeddings.patch_embedding.weight"]
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
    layers = 1 + max(int(k.split(".")[3]) for k in shapes if k.startswith("vision_model.encoder.layers."))
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=layers,
        num_attention_heads=_HEADS.get(hidden, max(1, hidden // 64)),
        image_size=round((positions - 1) ** 0.5) * patch,
        patch_size=patch,
        projection_dim=shapes["visual_projection.weight"][0],
        hidden_act="quick_gelu" if hidden == 1024 else "gelu",
    )


# -- built-in tiny adapters ----------------------------------------------------------


def tiny_vision_config() -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=32,
        patch_size=8,
        projection_dim=32,
        hidden_act="gelu",
    )


@functools.cache
def build_tiny_image_encoder() -> Any:
    """The built-in tiny CLIP vision encoder, random but the same in every process."""
    import torch
    from transformers import CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 11)
        return CLIPVisionModelWithProjection(tiny_vision_config()).eval().requires_grad_(False)


@functools.cache
def build_tiny_ip_adapter(name: str) -> dict[str, Any]:
    """A built-in tiny IP-Adapter in the original layout ({"image_proj": ..., "ip_adapter": ...},
    plain: 4 image tokens from the encoder's embedding) for the tiny model of its family.
    Callers must not modify the tensors."""
    import torch

    from .tiny import build_tiny_pipeline

    unet = build_tiny_pipeline(f"tiny-{BUILTIN_IP_ADAPTERS[name]}").unet
    cross = unet.config.cross_attention_dim
    embed = tiny_vision_config().projection_dim
    generator = torch.Generator("cpu").manual_seed(SEED + 13)

    def rand(*shape: int, scale: float = 1.0) -> Any:
        return torch.randn(*shape, generator=generator) * scale / shape[-1] ** 0.5

    image_proj = {
        "proj.weight": rand(TINY_TOKENS * cross, embed, scale=4.0),
        "proj.bias": torch.zeros(TINY_TOKENS * cross),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter: dict[str, Any] = {}
    key_id = 1  # diffusers' numbering: the processors in order, cross-attention ones odd
    for processor in unet.attn_processors:
        if processor.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(unet, processor)
        ip_adapter[f"{key_id}.to_k_ip.weight"] = rand(hidden, cross, scale=2.0)
        ip_adapter[f"{key_id}.to_v_ip.weight"] = rand(hidden, cross, scale=2.0)
        key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def _hidden_size(unet: Any, processor: str) -> int:
    channels = list(unet.config.block_out_channels)
    if processor.startswith("mid_block"):
        return channels[-1]
    block = int(processor.split(".")[1])
    return list(reversed(channels))[block] if processor.startswith("up_blocks") else channels[block]


# -- the adapters of one engine ------------------------------------------------------


@dataclass
class ReferenceEmbeds:
    """A job's reference images as its UNet takes them: per adapter slot, the image's and the
    unconditional embedding, (1, 1, ...) each."""

    positive: list[Any]
    negative: list[Any]

    def for_batch(self, batch_size: int, cfg: bool) -> list[Any]:
        """`added_cond_kwargs["image_embeds"]` for a batch: the unconditional half first with
        guidance, as the text's."""
        import torch

        def rows(t: Any) -> Any:
            return t.expand(batch_size, *t.shape[1:])

        if cfg:
            return [torch.cat([rows(n), rows(p)]) for p, n in zip(self.positive, self.negative, strict=True)]
        return [rows(p) for p in self.positive]


@dataclass
class _Installed:
    """What a UNet had before an IP-Adapter was installed in it."""

    processors: dict[str, Any]
    hid_proj: Any
    hid_type: Any


class IPAdapters:
    """The IP-Adapters and image encoders found, loaded and installed per job. Thread-safe.

    `loads` counts adapter files (or built-ins) read so far.
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
            IP_ADAPTER,
            dirs,
            model_dirs,
            scan_default_locations=scan_default_locations,
            builtins=BUILTIN_IP_ADAPTERS,
            allow_paths=allow_paths,
        )
        self.encoders = AddonFinder(
            IMAGE_ENCODER,
            dirs,
            model_dirs,
            scan_default_locations=scan_default_locations,
            allow_paths=allow_paths,
        )
        self.loads = 0
        self._lock = threading.Lock()
        self._states: OrderedDict[str, dict[str, Any]] = OrderedDict()  # adapter name -> tensors
        self._encoder: tuple[str, Any] | None = None  # the last encoder used, loaded
        # unet -> its own processors while an adapter is installed, and the built adapters
        # (slots of adapter names -> their processors and image projection).
        self._installed: weakref.WeakKeyDictionary[Any, _Installed] = weakref.WeakKeyDictionary()
        self._built: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, ...], Any]] = (
            weakref.WeakKeyDictionary()
        )

    def find(self) -> list[AddonInfo]:
        """Every IP-Adapter found now, the built-ins last."""
        return self.finder.find()

    def resolve(
        self, references: Sequence[ReferenceImage], model: str, family: str
    ) -> list[tuple[AddonInfo, ReferenceImage]]:
        """Each reference with its IP-Adapter (named, or the first that fits the model's family:
        a built-in for a built-in model); references of weight 0 are left out. UnknownModel or
        InvalidRequest in words."""
        from .configs import base_family

        if references and base_family(family) not in BUILTIN_IP_ADAPTERS_FAMILIES:
            raise InvalidRequest(f"IP-Adapters work with SD1.5 and SDXL models; '{model}' is {family}.")
        chosen = []
        for reference in references:
            if not 0.0 <= reference.weight <= 2.0:
                raise InvalidRequest(f"A reference's weight is {reference.weight:g}; it must be 0 to 2.")
            image = reference.image
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] not in (3, 4):
                raise InvalidRequest("A reference image must be H x W x 3 or 4 (RGB or RGBA) pixels.")
            if reference.model is not None:
                info = self.finder.resolve(reference.model)
            else:
                info = self._first_fitting(model, family)
            if not fits(info.family, family):
                made_for = "an unknown model family" if info.family == "unknown" else info.family
                raise InvalidRequest(
                    f"The IP-Adapter '{info.name}' was made for {made_for}; the model '{model}' is "
                    f"{family}. Pick an IP-Adapter of the model's family."
                )
            if reference.weight > 0.0:
                chosen.append((info, reference))
        return chosen

    def _first_fitting(self, model: str, family: str) -> AddonInfo:
        builtin = model.startswith(BUILTIN_PREFIX)  # random tiny models take the tiny adapters
        for info in self.finder.find():
            if fits(info.family, family) and (info.source == "builtin") == builtin:
                return info
        raise UnknownModel(
            f"No IP-Adapter for {family} models was found; put one (ip-adapter_sd15.safetensors, "
            f"ip-adapter_sdxl.safetensors, ...) in ComfyUI's models/ipadapter with its image "
            f"encoder in models/clip_vision, or add a folder with --ip-adapter-dir "
            f"(looked in: {self.finder.folders_text()})."
        )

    def apply(self, sampler: Any, chosen: Sequence[tuple[AddonInfo, ReferenceImage]], model: str) -> Any:
        """Install the references' adapters in the sampler's UNet at their weights (or the UNet's
        own processors when there are none) and return their embeddings (ReferenceEmbeds, or
        None)."""
        unet = getattr(sampler, "unet", None)
        if unet is None:
            if chosen:
                raise InvalidRequest(f"IP-Adapters work with SD1.5 and SDXL models, not '{model}'.")
            return None
        with self._lock:
            if not chosen:
                self._uninstall(unet)
                return None
            states = [self._state(info) for info, _ in chosen]
            slots = tuple(info.name for info, _ in chosen)
            processors, projection = self._build(unet, slots, states, model)
            weights = [float(reference.weight) for _, reference in chosen]
            for processor in processors.values():
                if hasattr(processor, "to_k_ip"):
                    processor.scale = list(weights)
            self._install(unet, processors, projection)
            return self._embed(sampler, chosen, states)

    # -- loading -----------------------------------------------------------------------

    def _state(self, info: AddonInfo) -> dict[str, Any]:
        """The adapter's tensors as {"image_proj": ..., "ip_adapter": ...} (kept for the next job)."""
        if info.name in self._states:
            self._states.move_to_end(info.name)
            return self._states[info.name]
        state: dict[str, Any]
        if info.location is None:
            state = build_tiny_ip_adapter(info.name.removeprefix(BUILTIN_PREFIX))
        else:
            try:
                flat = read_tensors(info.location)
            except Exception as exc:
                raise InvalidRequest(f"Cannot read the IP-Adapter '{info.name}': {exc}.") from exc
            state = {"image_proj": {}, "ip_adapter": {}}
            for key, tensor in flat.items():
                part, _, rest = key.partition(".")
                if part in state:
                    state[part][rest] = tensor
        self.loads += 1
        self._states[info.name] = state
        while len(self._states) > 2:
            self._states.popitem(last=False)
        return state

    def _build(
        self, unet: Any, slots: tuple[str, ...], states: list[dict[str, Any]], model: str
    ) -> tuple[dict[str, Any], Any]:
        """The IP attention processors and image projection for these adapter slots, built once
        per UNet (diffusers' own conversion of the original layout)."""
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        built = self._built.setdefault(unet, OrderedDict())
        if slots in built:
            built.move_to_end(slots)
            return built[slots]
        installed = self._installed.pop(unet, None)
        if installed is not None:  # diffusers reads the UNet's own processors' classes
            self._restore(unet, installed)
        try:
            processors = unet._convert_ip_adapter_attn_to_diffusers(states, low_cpu_mem_usage=False)
            projection = MultiIPAdapterImageProjection(
                [
                    unet._convert_ip_adapter_image_proj_to_diffusers(s["image_proj"], low_cpu_mem_usage=False)
                    for s in states
                ]
            )
        except (KeyError, RuntimeError, ValueError) as exc:
            names = ", ".join(dict.fromkeys(slots))
            raise InvalidRequest(
                f"The IP-Adapter '{names}' does not fit the model '{model}' ({exc})."
            ) from exc
        import torch

        parameter = next(unet.parameters())
        for processor in processors.values():
            if isinstance(processor, torch.nn.Module):
                processor.to(device=parameter.device, dtype=parameter.dtype)
        projection.to(device=parameter.device, dtype=parameter.dtype)
        built[slots] = (processors, projection)
        while len(built) > 2:
            built.popitem(last=False)
        return processors, projection

    def _install(self, unet: Any, processors: dict[str, Any], projection: Any) -> None:
        if unet not in self._installed:
            self._installed[unet] = _Installed(
                dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
            )
        unet.set_attn_processor(dict(processors))  # it pops from the dict it is given
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"

    def _uninstall(self, unet: Any) -> None:
        installed = self._installed.pop(unet, None)
        if installed is not None:
            self._restore(unet, installed)

    @staticmethod
    def _restore(unet: Any, installed: _Installed) -> None:
        """The UNet's own processor objects and projection back: its forward as before."""
        unet.set_attn_processor(dict(installed.processors))
        unet.encoder_hid_proj = installed.hid_proj
        unet.config.encoder_hid_dim_type = installed.hid_type

    # -- encoding ------------------------------------------------------------------------

    def _embed(
        self, sampler: Any, chosen: Sequence[tuple[AddonInfo, ReferenceImage]], states: list[dict[str, Any]]
    ) -> ReferenceEmbeds:
        import torch

        positive, negative = [], []
        for (info, reference), state in zip(chosen, states, strict=True):
            output, width = encoder_input(state["image_proj"])
            encoder = self._encoder_for(info, output, width)
            parameter = next(encoder.parameters())
            encoder.to(device=sampler.device, dtype=sampler.dtype)
            size = encoder.config.image_size
            pixels = clip_pixels(reference.image, size).to(device=sampler.device, dtype=sampler.dtype)
            with torch.inference_mode():
                if output == "embeds":
                    embeds = encoder(pixels).image_embeds
                    empty = torch.zeros_like(embeds)  # diffusers' unconditional image embedding
                else:
                    embeds = encoder(pixels, output_hidden_states=True).hidden_states[-2]
                    blank = torch.zeros_like(pixels)
                    empty = encoder(blank, output_hidden_states=True).hidden_states[-2]
            if getattr(sampler, "cpu_offload", False):
                encoder.to(device=parameter.device)
            positive.append(embeds[None].to(sampler.dtype))
            negative.append(empty[None].to(sampler.dtype))
        return ReferenceEmbeds(positive, negative)

    def _encoder_for(self, adapter: AddonInfo, output: str, width: int) -> Any:
        """The image encoder whose output fits the adapter, loaded (the last one is kept)."""
        if adapter.location is None:
            # A copy: the engine moves it to its device and dtype, the built one stays as built.
            if self._encoder is None or self._encoder[0] != BUILTIN_PREFIX:
                self._encoder = (BUILTIN_PREFIX, copy.deepcopy(build_tiny_image_encoder()))
            return self._encoder[1]
        candidates = []
        for info in self.encoders.find():
            projection, hidden = (int(v) for v in info.family.split(":"))
            if (projection if output == "embeds" else hidden) == width:
                candidates.append(info)
        if not candidates:
            needs = f"an embedding of {width}" if output == "embeds" else f"hidden states of {width}"
            raise UnknownModel(
                f"The IP-Adapter '{adapter.name}' needs a CLIP vision image encoder with {needs} "
                f"(ViT-H for most SD1.5 and 'vit-h' SDXL adapters, ViT-bigG for ip-adapter_sdxl); "
                f"none was found. Put it in ComfyUI's models/clip_vision or a --ip-adapter-dir "
                f"folder (looked in: {self.encoders.folders_text()})."
            )
        # An encoder beside the adapter (h94's layout: image_encoder/ next to the adapters) first.
        near = [
            c for c in candidates if c.location is not None and adapter.location.parent in c.location.parents
        ]
        info = (near or candidates)[0]
        if self._encoder is not None and self._encoder[0] == str(info.location):
            return self._encoder[1]
        self._encoder = None
        encoder = load_image_encoder(info)
        self._encoder = (str(info.location), encoder)
        return encoder


def load_image_encoder(info: AddonInfo) -> Any:
    """A CLIP vision encoder file as transformers' CLIPVisionModelWithProjection, float32."""
    from transformers import CLIPVisionModelWithProjection

    assert info.location is not None
    try:
        state = read_tensors(info.location)
        config = vision_config({k: tuple(v.shape) for k, v in state.items()}, info.location.parent)
        encoder = CLIPVisionModelWithProjection(config)
        wanted = set(encoder.state_dict())
        missing, unexpected = encoder.load_state_dict(
            {k: v for k, v in state.items() if k in wanted}, strict=False
        )
        missing = [k for k in missing if "position_ids" not in k]
        if missing:
            raise ValueError(f"{len(missing)} of its tensors are missing ({missing[0]}, ...)")
    except Exception as exc:
        raise InvalidRequest(f"Cannot use '{info.name}' as an image encoder: {exc}.") from exc
    return encoder.float().eval().requires_grad_(False)


def clip_pixels(image: np.ndarray, size: int) -> Any:
    """A reference image as CLIP takes it: the shorter side to `size` (bicubic, antialiased), the
    centre `size` x `size`, normalised; (1, 3, size, size) float32."""
    import torch
    import torch.nn.functional as F

    rgb = torch.from_numpy(np.ascontiguousarray(image[..., :3], dtype=np.float32)).permute(2, 0, 1)[None]
    height, width = rgb.shape[-2:]
    scale = size / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))
    rgb = F.interpolate(rgb, size=resized, mode="bicubic", antialias=True, align_corners=False)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    rgb = rgb[..., top : top + size, left : left + size].clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std
