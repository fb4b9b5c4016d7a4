"""LoRA factor bookkeeping for the server: find the (A, B) pairs in a state dict, bring a
client's rank-``r_c`` factors to the global rank by zero-padding, and cut the global
state down to a client's rank.

peft names a LoRA pair ``<module>.lora_A.<adapter>.weight`` / ``<module>.lora_B.<adapter>.weight``
with A of shape ``(r, in, ...)`` and B of shape ``(out, r, ...)``: the rank is dim 0 of A
and dim 1 of B. Zero rows of A / zero columns of B add nothing to ``B @ A``, so padding
a client's factors changes nothing about the update it trained (HetLoRA, Cho et al. 2024).
"""

from __future__ import annotations

import numbers
import re

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]

_A_KEY = re.compile(r"^(?P<prefix>.+)\.lora_A\.(?P<adapter>[^.]+)\.weight$")
_B_KEY = re.compile(r"^(?P<prefix>.+)\.lora_B\.(?P<adapter>[^.]+)\.weight$")

#: Which dimension of a factor holds the rank.
A_RANK_DIM, B_RANK_DIM = 0, 1


def is_lora_a(key: str) -> bool:
    return _A_KEY.match(key) is not None


def is_lora_b(key: str) -> bool:
    return _B_KEY.match(key) is not None


def rank_dim(key: str) -> int | None:
    """The rank dimension of a LoRA factor key, or None for any other tensor."""
    if is_lora_a(key):
        return A_RANK_DIM
    if is_lora_b(key):
        return B_RANK_DIM
    return None


def lora_pairs(state: State | dict[str, object]) -> dict[str, tuple[str, str]]:
    """``module prefix -> (A key, B key)`` for every LoRA module in ``state``, in key order.

    The prefix is the A key without ``.lora_A.<adapter>.weight``. An A without its B (or the
    reverse) is an error: callers pass a whole state (e.g. the global one), not an upload
    that left a frozen factor out.
    """
    pairs: dict[str, tuple[str, str]] = {}
    b_keys = {k for k in state if is_lora_b(k)}
    for key in state:
        m = _A_KEY.match(key)
        if m is None:
            continue
        prefix, adapter = m["prefix"], m["adapter"]
        b_key = f"{prefix}.lora_B.{adapter}.weight"
        if b_key not in state:
            raise KeyError(f"LoRA factor {key!r} has no matching {b_key!r} in the state")
        if prefix in pairs:
            raise ValueError(f"two LoRA adapters on module {prefix!r} ({pairs[prefix][0]!r}, {key!r}); "
                             "the server handles one adapter per module")
        pairs[prefix] = (key, b_key)
        b_keys.discard(b_key)
    if b_keys:
        raise KeyError(f"LoRA factors without a matching lora_A: {sorted(b_keys)[:5]}")
    return pairs


def rank_of(state: State, a_key: str) -> int:
    """The rank of the pair whose A factor is ``a_key``."""
    return int(state[a_key].shape[A_RANK_DIM])


def pad_to_global(state: State, global_state: State) -> State:
    """``state`` restricted to the global keys, every LoRA factor zero-padded to the global rank.

    Keys the client did not upload stay absent (the aggregators read them as "unchanged").
    Tensors are not copied unless padded. Any shape that cannot be padded into the global one
    is an error naming the key and both shapes.
    """
    out: State = {}
    for key, t in state.items():
        if key not in global_state:
            continue
        ref = global_state[key]
        if t.shape == ref.shape:
            out[key] = t
            continue
        dim = rank_dim(key)
        other_dims_match = t.dim() == ref.dim() and all(
            a == b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != dim)
        if dim is None or not other_dims_match or t.shape[dim] > ref.shape[dim]:
            what = "a LoRA factor of a higher rank" if dim is not None and other_dims_match else "a different shape"
            raise ValueError(f"update tensor {key!r} has shape {tuple(t.shape)} but the global one is "
                             f"{tuple(ref.shape)}: {what}, which zero-padding cannot reconcile")
        out[key] = _zero_pad(t, dim, int(ref.shape[dim]))
    return out


def _zero_pad(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    # F.pad lists (left, right) pairs from the last dimension backwards.
    pad = [0, 0] * (t.dim() - 1 - dim) + [0, size - int(t.shape[dim])]
    return F.pad(t, pad)


def truncate_to_rank(state: State, r: int) -> State:
    """What the server sends a client of rank ``r`` (and what it uploads): ``A[:r]`` and ``B[:, :r]``.

    Works key by key, so a state with one factor of a pair left out (FFA-LoRA's frozen A)
    is fine. Cut factors are copies (a view would drag the whole global storage through
    ``torch.save``); every other tensor is passed through as the same object, not copied.
    """
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise ValueError(f"truncate_to_rank: rank must be a positive int, got {r!r}")
    r = int(r)
    out = dict(state)
    for key, t in state.items():
        dim = rank_dim(key)
        if dim is None:
            continue
        if t.dim() <= dim or r > t.shape[dim]:
            raise ValueError(f"truncate_to_rank: asked for rank {r} but {key!r} has shape {tuple(t.shape)} "
                             f"(rank dimension {dim})")
        out[key] = t.narrow(dim, 0, r).clone()
    return out


def as_matrix(key: str, t: torch.Tensor) -> torch.Tensor:
    """A 2-D LoRA factor (a Linear layer's); conv/embedding factors are refused loudly."""
    if t.dim() != 2:
        raise ValueError(f"{key!r} has shape {tuple(t.shape)}: only 2-D (Linear) LoRA factors can be "
                         "multiplied out by this aggregator")
    return t
