"""Run records compared across runs (resume, backends): everything but the timings."""

from __future__ import annotations

from typing import Any

TIMING = frozenset({"round_seconds", "seconds", "wall_seconds", "mean_round_seconds"})


def strip_timing(x: Any, drop: frozenset[str] | set[str] = TIMING) -> Any:
    """``x`` (parsed JSON) without the keys in ``drop``, at any depth."""
    if isinstance(x, dict):
        return {k: strip_timing(v, drop) for k, v in x.items() if k not in drop}
    if isinstance(x, list):
        return [strip_timing(v, drop) for v in x]
    return x
