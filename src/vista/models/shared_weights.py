"""One copy of the frozen weights per host: parameters as views of the memory-mapped weight file.

A parameter that is a view of the memory-mapped weight file costs a worker no private memory:
every worker on the host reads the same page-cache pages. transformers 5 already loads
safetensors that way when the file's dtype is the one loaded (measured: 103 of MiniLM's 105
tensors lie in its ``rw-p`` mapping of ``model.safetensors``); older versions, and other paths,
copy every tensor into the process's own memory. After loading, :func:`share_weights` checks
each parameter and buffer: one already inside a mapping of the model's files is shared as is;
one whose bytes lie unchanged in a ``*.safetensors`` file is pointed at a view of that file,
mapped copy-on-write (``MAP_PRIVATE``), and its private copy is freed. A worker that writes to such a tensor
(a full fine-tune's optimizer step, residual folding) gets private copies of the pages it
writes, so results never change; only frozen tensors stay shared. What is shared: tensors of
the file's dtype (Vista trains in float32, so a float32 file), 4-byte aligned in the file, and
equal to the loaded parameter (checked, so a renamed or converted tensor stays private).
On CUDA the parameters are copied to the device afterwards: the host copy is shared here, and
the device copy once per GPU by :mod:`vista.models.device_weights` (CUDA IPC from the parent).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32}


@dataclass(frozen=True)
class SharedReport:
    """What :func:`share_weights` did: tensors and bytes now views of the file, and left private."""

    shared_tensors: int
    shared_bytes: int
    private_tensors: int
    private_bytes: int

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def _file_views(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a view of one copy-on-write mapping of the file."""
    start, header = _header(path)
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    views = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            continue
        size = torch.empty((), dtype=dtype).element_size()
        begin, end = info["data_offsets"]
        offset = start + begin
        shape = tuple(info["shape"])
        if offset % size or (end - begin) != size * int(torch.Size(shape).numel()):
            continue  # unaligned (or inconsistent): cannot be a typed view
        views[name] = torch.empty(0, dtype=dtype).set_(storage, offset // size, shape)
    return views


def _file_mappings(files: list[Path]) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ``files`` (Linux /proc; else none)."""
    names = {str(f.resolve()) for f in files}
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() in names:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
    except OSError:
        return []
    return ranges


def _inside(tensor: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    ptr = tensor.data_ptr()
    end = ptr + tensor.numel() * tensor.element_size()
    return any(lo <= ptr and end <= hi for lo, hi in ranges)


def _candidates(name: str, prefix: str) -> list[str]:
    """File keys a model parameter may have been loaded from (with or without the base prefix)."""
    out = [name]
    if prefix and name.startswith(prefix + "."):
        out.append(name[len(prefix) + 1:])
    elif prefix:
        out.append(f"{prefix}.{name}")
    return out


def share_weights(model: torch.nn.Module, model_dir: Path) -> SharedReport:
    """Point ``model``'s CPU parameters and buffers at views of the model directory's
    safetensors files where their bytes are there unchanged (see the module docstring)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    mapped = _file_mappings(files)
    views: dict[str, torch.Tensor] | None = None  # the files' own mapping, made when first needed
    prefix = getattr(model, "base_model_prefix", "") or ""
    shared = private = shared_bytes = private_bytes = 0
    seen: set[int] = set()
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    with torch.no_grad():
        for name, tensor in tensors:
            if id(tensor) in seen:  # tied weights: one tensor, one swap
                continue
            seen.add(id(tensor))
            nbytes = tensor.numel() * tensor.element_size()
            if tensor.device.type == "cpu" and _inside(tensor, mapped):  # the loader mapped it already
                shared, shared_bytes = shared + 1, shared_bytes + nbytes
                continue
            if views is None:
                views = {k: v for f in files for k, v in _file_views(f).items()}
            view = next((views[k] for k in _candidates(name, prefix) if k in views), None)
            if (view is None or tensor.device.type != "cpu" or view.dtype != tensor.dtype
                    or view.shape != tensor.shape or not torch.equal(view, tensor)):
                private, private_bytes = private + 1, private_bytes + nbytes
                continue
            tensor.data = view
            shared, shared_bytes = shared + 1, shared_bytes + nbytes
    report = SharedReport(shared, shared_bytes, private, private_bytes)
    log.info("weights shared with the host's other workers: %d tensors, %.1f MB (%d private, %.1f MB)",
             shared, shared_bytes / 2**20, private, private_bytes / 2**20)
    return report
