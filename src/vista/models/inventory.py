"""What a model hub holds: name, architecture, parameter count and size of each directory.

Parameter counts come from safetensors headers, so listing a hub of gigabyte checkpoints
reads a few kilobytes per model and loads no weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError

# safetensors dtypes of trainable parameters; integer tensors in old checkpoints are buffers
# (BERT's embeddings.position_ids), not parameters
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"}


@dataclass(frozen=True)
class HubEntry:
    name: str
    model_type: str  # config.json's model_type, "?" when absent
    architecture: str  # config.json's architectures[0], "-" when absent
    parameters: int | None  # None: no safetensors weights to read a count from
    size_bytes: int
    problem: str = ""  # why this directory is not a usable model directory


def count_parameters(model_dir: Path) -> int | None:
    """Elements of the floating-point tensors in ``model_dir``'s safetensors files (shards summed)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                if tensor.get_dtype() in FLOAT_DTYPES:
                    n = 1
                    for dim in tensor.get_shape():
                        n *= dim
                    total += n
    return total


def disk_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def describe(model_dir: Path) -> HubEntry:
    size = disk_size(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        return HubEntry(model_dir.name, "?", "-", None, size, "no config.json")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        return HubEntry(model_dir.name, "?", "-", None, size, f"config.json unreadable: {err}")
    try:
        params = count_parameters(model_dir)
    except (SafetensorError, OSError) as err:  # a truncated or foreign file: report it, list the rest
        return HubEntry(model_dir.name, config.get("model_type", "?"), "-", None, size, f"bad safetensors: {err}")
    archs = config.get("architectures") or ["-"]
    problem = "" if params is not None else "no *.safetensors weights"
    return HubEntry(model_dir.name, config.get("model_type", "?"), archs[0], params, size, problem)


def scan(hub: Path) -> list[HubEntry]:
    """One entry per visible directory in ``hub``, by name (hidden ones are unfinished `add`s)."""
    return [describe(d) for d in sorted(hub.iterdir(), key=lambda p: p.name.lower())
            if d.is_dir() and not d.name.startswith(".")]


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def table(entries: list[HubEntry]) -> str:
    """A plain-text table, columns left-aligned, the exact parameter count in the last column."""
    header = ("NAME", "TYPE", "ARCHITECTURE", "PARAMS", "SIZE", "EXACT PARAMS")
    rows = [header] + [
        (e.name, e.model_type, e.architecture, human_count(e.parameters), human_size(e.size_bytes),
         f"{e.parameters:,}" if e.parameters is not None else f"({e.problem})")
        for e in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
