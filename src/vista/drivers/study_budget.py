"""A study setting's budget: what decides its runs (the truth's training and every statistics
round), recorded in ``<setting>/budget.json`` so a setting's directory is reused only under the
budget it was run with, and how two budgets differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUDGET_FIELDS = ("clients", "clients_per_round", "rounds", "batch_size", "lr", "max_seq_len", "lora_r",
                 "local_epochs", "val_fraction", "lr_schedule", "truth")
# budget items left out at these values, which every run made before the item existed trained
# under: their budget.json and result.json stay the budget they were run with
UNSAID = {"lr_schedule": "constant", "truth": "last"}


class BudgetMismatch(ValueError):
    """A setting's directory holds runs of another budget than the one asked for."""


def budget_of(cfg: Any) -> dict[str, Any]:
    """The budget items of a :class:`~vista.drivers.study.StudyConfig`, an :data:`UNSAID` item
    only away from its old value."""
    return {k: getattr(cfg, k) for k in BUDGET_FIELDS if k not in UNSAID or getattr(cfg, k) != UNSAID[k]}


def budget_differs(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """The items (but ``ignore``'s) on which two budgets differ, an item one of them leaves out
    included: ``{item: [a's, b's]}``."""
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)}


def check_budget(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Record the budget a setting runs under in ``<out_dir>/budget.json``, or check it against
    the one its finished runs were made with: reusing runs of another budget would mix two
    ground truths in one table without a word. Raises :class:`BudgetMismatch` (one line)."""
    want, path = budget_of(cfg), out_dir / "budget.json"
    if path.is_file():
        diff = budget_differs(json.loads(path.read_text()), want)
        if diff:
            said = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
            raise BudgetMismatch(f"{out_dir} was run with another budget ({said}): move it aside or "
                                 "write the grid elsewhere (--out)")
        return want
    if any((out_dir / d / "selection.json").is_file() for d in ("statistics", "brute_force")):
        raise BudgetMismatch(f"{out_dir} has finished runs but no budget.json: write the budget they "
                             "were run with there, or move the directory aside")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=1))
    return want
