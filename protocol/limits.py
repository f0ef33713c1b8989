"""Limits the daemon announces in `welcome` and enforces before allocating anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # One 4096x4096 region: far above what a model works on, since plugins
    # send only the region around the selection.
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    # Room for the largest region in the deepest format (RGBA float32) with every map a
    # submit may carry (a layer map and a blend map as deep, the 8-bit selection) and
    # control and reference images of 16 bytes a pixel in all (four 8-bit ones, one float).
    max_message_bytes: int = 4096 * 4096 * (16 * 3 + 1 + 16) + 1 * MiB
    max_steps: int = 200
    max_prompt_chars: int = 4000
    max_queued_jobs: int = 16
    # Results of one job: `count` variations or the strengths of a `fan`.
    max_results: int = 8
    # Conditioning of one job: LoRAs, control images (ControlNet), reference images (IP-Adapter).
    max_loras: int = 8
    max_controls: int = 4
    max_ip_adapters: int = 2

    def fits(self, width: int, height: int) -> bool:
        """Whether a region of this size is within the pixel and side limits."""
        return width * height <= self.max_pixels and max(width, height) <= self.max_side

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_LIMITS = Limits()
