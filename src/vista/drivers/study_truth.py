"""What a study setting's truth reads from each candidate's brute-force curve (``StudyConfig.truth``).

``last``: the test accuracy after the budget's last round, the truth of every run before this
option. ``best_val``: the test accuracy at the round of best validation accuracy (the
``validation_key`` the searches rank on; of equal rounds the later, the more trained), what a
user who keeps the best checkpoint by validation fine-tunes. Under strong label skew a curve
can swing between rounds (MiniLM on r8 alpha = 0.1 at a constant rate: 0.28 between rounds 24
and 25, design note 85), so one fixed round's reading depends on where the swing stands;
``best_val`` needs the test split scored every round (``test_every=1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

History = list[dict[str, Any]]


def last_round(history: History, validation_key: str) -> int:
    return len(history)


def best_validation_round(history: History, validation_key: str) -> int:
    scored = [(float(r[validation_key]), i + 1) for i, r in enumerate(history)
              if validation_key in r and "test_accuracy" in r]
    if not scored:
        raise ValueError(f"no round has both {validation_key!r} and test_accuracy: the best validation round "
                         "needs the test split scored every round (test_every=1) and a validation split")
    return max(scored)[1]


# each rule: (a candidate's brute-force history, the validation key) -> the 1-based round read
TRUTHS: dict[str, Callable[[History, str], int]] = {"last": last_round, "best_val": best_validation_round}
# what each rule needs of the brute-force run's test_every (None: nothing)
NEEDS_TEST_EVERY = {"best_val": 1}


def check_truth(rule: str, test_every: int | None) -> None:
    """One line on a rule the study cannot read (unknown, or without the test scores it needs)."""
    if rule not in TRUTHS:
        raise ValueError(f"truth={rule!r} is not one of {sorted(TRUTHS)}")
    need = NEEDS_TEST_EVERY.get(rule)
    if need is not None and test_every != need:
        raise ValueError(f"truth={rule!r} reads the test split every round: set test_every={need} "
                         f"(run_study.py --test-every {need}), not {test_every}")


def truth_rounds(histories: dict[str, History], rule: str, validation_key: str) -> dict[str, int]:
    """The round each candidate's truth is read at."""
    return {c: TRUTHS[rule](h, validation_key) for c, h in histories.items()}


def truth_of(histories: dict[str, History], rounds: dict[str, int]) -> dict[str, float]:
    return {c: float(histories[c][r - 1]["test_accuracy"]) for c, r in rounds.items()}
