"""How much device memory a model and a job need, and where a model's weights live.

One table (`FAMILY_MEMORY`) gives each family's activation figures; `activation_bytes` turns
them into bytes for a working size, used both by the batch estimate (how many samples run
together) and by `choose_offload` (whether a model is kept on the device, moved there one
component at a time, or one block at a time).

Offload modes:
- none: every component stays on the device;
- model: components live in CPU memory and each moves to the device while it runs;
- sequential: weights stay in CPU memory and each block (a transformer or UNet block, a text
  encoder's or VAE's layer) moves to the device only while it runs;
- auto: chosen per model at load from its size and the device's memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EngineError

OFFLOAD_MODES = ("none", "model", "sequential", "auto")
DENOISERS = ("unet", "transformer")  # the component that runs every step

GIB = 1024**3


@dataclass(frozen=True)
class FamilyMemory:
    """One sample's activations at the peak of a family's stages, in a 2-byte dtype.

    patch: pixels per side of one token of the denoiser: 8 for a UNet (a latent pixel), 16 for
        FLUX's packed and SD3's patchified 2x2 latents.
    bytes_per_token: what one token holds at the denoiser's peak (attention runs through SDPA,
        so no tokens x tokens matrix).
    text_tokens: prompt tokens that join the image tokens (the joint attention of FLUX and SD3).
    copies: batches the denoiser runs per sample: 2 with classifier-free guidance.
    """

    patch: int
    bytes_per_token: int
    text_tokens: int = 0
    copies: int = 1


_SD15 = FamilyMemory(patch=8, bytes_per_token=128 * 1024, copies=2)  # 512x512: 1 GiB
_SDXL = FamilyMemory(patch=8, bytes_per_token=96 * 1024, copies=2)  # 1024x1024: 3 GiB
_FLUX = FamilyMemory(patch=16, bytes_per_token=96 * 1024, text_tokens=512)  # 1024x1024: 0.4 GiB

FAMILY_MEMORY: dict[str, FamilyMemory] = {
    "sd15": _SD15,
    "sd15-inpaint": _SD15,
    "sdxl": _SDXL,
    "sdxl-inpaint": _SDXL,
    "flux": _FLUX,
    "flux-fill": _FLUX,
    "flux-schnell": FamilyMemory(patch=16, bytes_per_token=96 * 1024, text_tokens=256),
    "sd3": FamilyMemory(patch=16, bytes_per_token=64 * 1024, text_tokens=77 + 256, copies=2),
}

# The VAE's decoder at full resolution (128-256 channels per pixel, a few tensors alive at
# once): about 2.5 GiB at 1024x1024, the same decoder shape for every family.
VAE_BYTES_PER_PIXEL = 2560


def family_memory(family: str) -> FamilyMemory:
    """The family's figures; a family not in the table takes SD1.5's, the largest per pixel."""
    return FAMILY_MEMORY.get(family, _SD15)


def denoiser_bytes(family: str, pixels: int, element_size: int = 2) -> int:
    """One sample's activations in the denoiser at `pixels` working pixels."""
    figures = family_memory(family)
    tokens = pixels // figures.patch**2 + figures.text_tokens
    return figures.copies * tokens * figures.bytes_per_token * element_size // 2


def vae_bytes(pixels: int, element_size: int = 2) -> int:
    """One sample's activations in the VAE's decoder at `pixels` working pixels."""
    return pixels * VAE_BYTES_PER_PIXEL * element_size // 2


def activation_bytes(family: str, pixels: int, element_size: int = 2) -> int:
    """One sample's activations at the peak of the job (the denoiser and the VAE run one after
    the other, and both on the whole batch)."""
    return max(denoiser_bytes(family, pixels, element_size), vae_bytes(pixels, element_size))


def module_bytes(module: Any) -> int:
    """The bytes of a module's parameters and buffers, in the dtypes they are held in."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def dtype_name(dtype: Any) -> str:
    """A dtype as people write it: bf16, fp16, fp32."""
    return str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float", "fp")


def parse_offload(value: str) -> str:
    """`value` as an offload mode; EngineError naming the modes for anything else."""
    mode = str(value).strip().lower()
    if mode not in OFFLOAD_MODES:
        raise EngineError(f"Unknown offload mode '{value}': use {', '.join(OFFLOAD_MODES)}.")
    return mode


@dataclass(frozen=True)
class DeviceMemory:
    """What a device holds: `total` bytes, `free` of them now; `kind` names it for people."""

    kind: str  # "GPU" (CUDA) or "Apple GPU" (MPS)
    free: int
    total: int


def device_memory(device: Any) -> DeviceMemory | None:
    """The device's memory now; None for the CPU (a model there is never offloaded)."""
    import torch

    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return DeviceMemory("GPU", int(free), int(total))
    if device.type == "mps":
        # Unified memory: what Metal recommends for one process, less what it holds now.
        total = int(torch.mps.recommended_max_memory())
        return DeviceMemory("Apple GPU", max(0, total - int(torch.mps.driver_allocated_memory())), total)
    return None


def headroom(memory: DeviceMemory) -> int:
    """Free memory kept out of every estimate: the CUDA kernels' workspaces, the allocator's
    fragments and the estimates' own error."""
    return max(GIB // 2, memory.total // 20)


@dataclass(frozen=True)
class OffloadChoice:
    """The mode a model runs in (none, model or sequential) and why, in words."""

    mode: str
    reason: str


def _gb(size: int) -> str:
    return f"{size / GIB:.1f} GB"


def choose_offload(
    sizes: Mapping[str, int],
    family: str,
    pixels: int,
    memory: DeviceMemory | None,
    *,
    label: str,
    dtype_name: str,
    element_size: int = 2,
    asked: str = "auto",
) -> OffloadChoice:
    """The offload mode for a model whose components weigh `sizes` (name -> bytes), for jobs of
    `pixels` working pixels on a device with `memory` (None: the CPU).

    auto: none if every component and a sample's activations fit; model if the largest
    component and the activations of its stage fit; else sequential. `asked`: a mode given by
    the user is kept (the CPU has no offload), with the same figures in its reason.
    `label` names the model and `dtype_name` its dtype in the reason.
    """
    total = sum(sizes.values())
    where = f"{label} ({_gb(total)} in {dtype_name})"
    if memory is None:
        return OffloadChoice("none", f"{where} on the CPU: no offload, the model is in CPU memory already")
    on = f"{where} on a {memory.total / GIB:.0f} GB {memory.kind} with {_gb(memory.free)} free"
    if asked != "auto":
        return OffloadChoice(asked, f"{on}: {asked} offload, as asked")
    usable = memory.free - headroom(memory)
    side = round(pixels**0.5)
    job = f"a {side}x{side} job's activations"

    def stage(name: str) -> int:
        """What a component needs on the device while it runs: its weights and its stage's
        activations (text encoders' are small)."""
        if name in DENOISERS:
            return sizes[name] + denoiser_bytes(family, pixels, element_size)
        return sizes[name] + (vae_bytes(pixels, element_size) if name == "vae" else 0)

    activations = activation_bytes(family, pixels, element_size)
    largest = max(sizes, key=stage) if sizes else "model"
    largest_text = f"the {largest.replace('_', ' ')} ({_gb(sizes.get(largest, 0))})"
    if total + activations <= usable:
        return OffloadChoice("none", f"{on}: no offload, all of it and {job} ({_gb(activations)}) fit")
    if (stage(largest) if sizes else 0) <= usable:
        return OffloadChoice(
            "model",
            f"{on}: model offload, all of it does not fit but {largest_text} with {job} does",
        )
    return OffloadChoice("sequential", f"{on}: sequential offload, {largest_text} with {job} does not fit")
