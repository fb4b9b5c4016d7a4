"""What crosses the wire between server and clients, and how many bytes it takes.

Floating-point tensors travel in ``fl.transfer_dtype`` (float32, or float16/bfloat16 to
halve the traffic); the server keeps its global state and its arithmetic in full
precision, and clients train in full precision: only the copies in transit are cast.
"""

from __future__ import annotations

import torch

from vista.fl.spec import TransferDtype

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def wire_dtype(name: str | TransferDtype) -> torch.dtype:
    key = name.value if isinstance(name, TransferDtype) else str(name)
    if key not in _TORCH:
        raise ValueError(f"fl.transfer_dtype: unknown dtype {key!r}; known: {sorted(_TORCH)}")
    return _TORCH[key]


def to_wire(state: dict[str, torch.Tensor], dtype: str | TransferDtype) -> dict[str, torch.Tensor]:
    """Floating tensors cast to the transfer dtype (tensors already in it are passed as they are)."""
    target = wire_dtype(dtype)
    return {k: v.to(target) if v.is_floating_point() and v.dtype != target else v for k, v in state.items()}
