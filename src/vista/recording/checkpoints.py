"""Durable checkpoints: a tree of plain values and tensors, written atomically.

A checkpoint is a directory ``<run_dir>/checkpoints/round_000012/`` holding
``tensors.safetensors`` (every tensor of the tree, flattened by path) and ``state.json`` (the
tree with each tensor replaced by a reference). It is written as ``.round_000012.tmp/``, each
file flushed and fsynced, then renamed into place and the parent fsynced: a directory named
``round_*`` is complete, whatever killed the writer. The newest complete one is what a run
continues from; only the ``keep`` newest are kept. Nothing is unpickled on load (safetensors
and JSON only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vista.checks import at_least

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^round_(\d{6})$")
_TENSOR = "__tensor__"


@dataclass(frozen=True)
class CheckpointSpec:
    """``checkpoint.*``: every ``every`` rounds (and after the last) the run's state is written to
    ``<run_dir>/checkpoints/`` (0: never); the ``keep`` newest are kept."""

    every: int = 1
    keep: int = 2

    def __post_init__(self) -> None:
        at_least(self, "every", 0)
        at_least(self, "keep", 1)

    def due(self, round: int, last: int) -> bool:
        return self.every > 0 and (round % self.every == 0 or round == last)


@dataclass(frozen=True)
class Saved:
    path: Path
    round: int
    bytes: int
    seconds: float


def flatten(tree: Any, path: str = "") -> tuple[Any, dict[str, Any]]:
    """(the tree with every tensor replaced by ``{"__tensor__": key}``, key -> tensor). A tensor
    the tree holds twice (the best round's state is often the global one) is stored once."""
    import torch

    tensors: dict[str, Any] = {}
    seen: dict[int, str] = {}

    def walk(x: Any, at: str) -> Any:
        if isinstance(x, torch.Tensor):
            if id(x) not in seen:
                seen[id(x)] = at
                tensors[at] = x.detach().cpu().contiguous()
            return {_TENSOR: seen[id(x)]}
        if isinstance(x, dict):
            if any(not isinstance(k, str) for k in x):
                raise TypeError(f"checkpoint: dict keys must be strings at {at or '/'}: {list(x)[:3]}")
            return {k: walk(v, f"{at}/{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{at}/{i}") for i, v in enumerate(x)]
        if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # numpy / torch scalars
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"checkpoint: cannot store {type(x).__name__} at {at or '/'}")

    return walk(tree, path), tensors


def unflatten(tree: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR}:
            return tensors[tree[_TENSOR]]
        return {k: unflatten(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    return tree


def save_tensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """safetensors with a deterministic header (keys sorted): the same tensors and metadata give
    the same bytes. (safetensors orders its JSON header by a hash map: the same adapter saved
    twice could differ byte for byte.)"""
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n :])
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.dir = Path(run_dir) / CHECKPOINTS
        self.keep = keep

    def rounds(self) -> list[int]:
        """Rounds with a complete checkpoint, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(int(m[1]) for p in self.dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name)))

    def save(self, round: int, tree: Any) -> Saved:
        t0 = time.perf_counter()
        skeleton, tensors = flatten(tree)
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"round_{round:06d}"
        tmp = self.dir / f".round_{round:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_tensors(tmp / "tensors.safetensors", tensors)
        _write_json(tmp / "state.json", skeleton)
        _fsync_dir(tmp)
        if final.exists():  # the same round saved again (a resumed run re-saving it): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.dir)
        for old in self.rounds()[: -self.keep] if self.keep > 0 else []:
            shutil.rmtree(self.dir / f"round_{old:06d}", ignore_errors=True)
        size = sum(p.stat().st_size for p in final.iterdir())
        return Saved(final, round, size, time.perf_counter() - t0)

    def load(self, round: int | None = None) -> tuple[int, Any]:
        """(round, tree) of the newest complete checkpoint (or of ``round``)."""
        from safetensors.torch import load_file

        done = self.rounds()
        if not done:
            raise FileNotFoundError(f"no complete checkpoint in {self.dir}")
        r = done[-1] if round is None else round
        where = self.dir / f"round_{r:06d}"
        tensors = load_file(str(where / "tensors.safetensors"))
        return r, unflatten(json.loads((where / "state.json").read_text()), tensors)
