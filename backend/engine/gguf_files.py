"""GGUF files: the quantised FLUX.1 / SD3 transformers people use with ComfyUI-GGUF
(city96's ``flux1-dev-Q4_K_S.gguf`` and the like, BFL's / Stability's keys).

Read with gguf's own reader; quantised weights become diffusers' GGUFParameters (kept
quantised, dequantised by diffusers' GGUF layers as they run), F32 / F16 / BF16 weights
plain tensors. Shapes are the logical ones (a Q4_K weight's rows and columns, not its bytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoints import UnsupportedCheckpoint, _unreadable

# general.architecture of the files that hold a FLUX.1 or SD3 transformer.
GGUF_ARCHITECTURES = ("flux", "sd3")


def _reader(path: Path) -> Any:
    """gguf's reader of `path`, after checking the architecture and every quantisation type."""
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES, UNQUANTIZED_TYPES
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        field = reader.get_field("general.architecture")
        architecture = field.contents() if field is not None else None
        tensors = [(t.name, t.tensor_type, [int(d) for d in t.shape]) for t in reader.tensors]
    except OSError:
        raise
    except Exception as exc:  # gguf's errors for a bad magic, a truncated or damaged file vary
        raise _unreadable(".gguf", exc) from exc
    if architecture is not None and architecture not in GGUF_ARCHITECTURES:
        raise UnsupportedCheckpoint(
            f"it is a GGUF file of a '{architecture}' model "
            "(GGUF files load FLUX.1 and SD3 transformers only)"
        )
    readable = {*SUPPORTED_GGUF_QUANT_TYPES, *UNQUANTIZED_TYPES}
    for name, kind, _ in tensors:
        if kind not in readable:
            known = ", ".join(sorted(t.name for t in SUPPORTED_GGUF_QUANT_TYPES))
            raise UnsupportedCheckpoint(
                f"its weight {name} is quantised as {kind.name}, which cannot be read ({known} can)"
            )
    return reader


def read_gguf_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> logical shape (GGUF lists dimensions innermost first)."""
    return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in _reader(path).tensors}


def read_gguf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Key -> tensor: diffusers' GGUFParameter (quantised bytes, its quantisation type) for
    quantised weights, a plain tensor of the file's dtype for F32, F16 and BF16 ones."""
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from gguf import GGMLQuantizationType

    state: dict[str, torch.Tensor] = {}
    for tensor in _reader(path).tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))
        try:
            data = torch.from_numpy(tensor.data.copy())
        except (ValueError, OSError) as exc:  # the bytes end before the tensor does
            raise _unreadable(".gguf", exc) from exc
        if tensor.tensor_type == GGMLQuantizationType.BF16:  # numpy has no bfloat16: the reader gives bytes
            state[tensor.name] = data.view(torch.bfloat16).reshape(shape)
        elif tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            state[tensor.name] = data.reshape(shape)
        else:
            state[tensor.name] = GGUFParameter(data, quant_type=tensor.tensor_type)
    return state


def is_quantised(state: dict[str, torch.Tensor]) -> bool:
    from diffusers.quantizers.gguf.utils import GGUFParameter

    return any(isinstance(v, GGUFParameter) for v in state.values())
