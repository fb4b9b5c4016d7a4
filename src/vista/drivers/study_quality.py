"""How the study judges a method: its scores against a setting's truth (the rank measures of
:func:`~vista.selection.ranking.selection_quality`, a missing score ranked last as a live run ranks
it), and ``random`` as its expectation over seeded draws rather than one draw."""

from __future__ import annotations

from typing import Any

from vista.selection.ranking import missing_last, random_expectation, selection_quality


def quality_of(truth: dict[str, float], scores: dict[str, float | None], tie_tol: float = 0.0) -> dict[str, Any]:
    """A score's agreement with the truth, every candidate counted: one the score could not
    rank (``None``/NaN) ranks last, exactly as ``rank_by`` puts it in a live run. Empty when
    no candidate has a score (a live run stops with an error there). ``tie_tol``: truth
    accuracies this close tie in the rank measures (:func:`~vista.selection.ranking.selection_quality`)."""
    ranked = missing_last(scores)
    return selection_quality(truth, ranked, tie_tol) if len(set(ranked) & set(truth)) >= 2 else {}


# methods the study reports as an expectation over seeded draws, not as the one draw of a live run
EXPECTED = ("random",)


def method_quality(method: str, truth: dict[str, float], scores: dict[str, float | None],
                   tie_tol: float = 0.0) -> dict[str, Any]:
    """What the study reports for ``method``: for ``random`` its expectation over many seeded
    rankings, with the live run's one draw under ``draw`` (one draw is luck, not a baseline);
    for every other method :func:`quality_of` its scores."""
    if method in EXPECTED and len(truth) >= 2:
        return {**random_expectation(truth, tie_tol=tie_tol), "draw": quality_of(truth, scores, tie_tol)}
    return quality_of(truth, scores, tie_tol)
