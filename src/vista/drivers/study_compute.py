"""What a selection method costs in the study, as a fraction of brute force's compute.

Compute is counted in forward equivalents (backward = 2 forward) of the candidates' texts,
less the test-split predictions (the ground truth's measurement, which no selection needs).
A statistics round at a shorter ``max_seq_len`` than the study's encodes fewer tokens a text;
its entry carries ``token_share`` (:func:`corpus_token_counts`) and its compute is scaled by it,
so that a method's ratio counts tokens, not texts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vista.data.fednlp import FedNLPData
from vista.models.hub import ModelSpec, load_tokenizer
from vista.selection.search import Cost

__all__ = ["corpus_token_counts", "rounds_compute", "selection_compute", "test_passes"]


def test_passes(result: dict[str, Any], trained: dict[str, int]) -> int:
    """Forward passes spent predicting the test splits while training each candidate its
    ``trained`` rounds: the ground truth's measurement, which no selection needs (a search ranks
    on validation). Counted from the curves (a round with ``test_accuracy`` predicted them);
    a result without curves was written when every round did. A result without ``test_texts``
    (the first, thin study's) is not corrected: 0."""
    n = result.get("test_texts", 0)
    curves = result.get("curves")
    tested = sum(trained.values()) if curves is None else \
        sum(1 for c, k in trained.items() for r in curves[c][:k] if "test_accuracy" in r)
    return n * tested


def selection_compute(result: dict[str, Any], method: str, cost: dict[str, Any] | None = None,
                      trained: dict[str, int] | None = None) -> float:
    """``method``'s compute spent on choosing, in forward equivalents (backward = 2 forward): its
    recorded cost less its test-split predictions (:func:`test_passes`). ``cost`` and ``trained``
    (rounds per candidate) default to the method's entry in ``result`` (brute force: every
    candidate to the budget's rounds; a statistics score: none). The entry's own cost is scaled
    by its ``token_share`` when it has one (a round at a shorter length than the study's)."""
    entry = result["methods"].get(method, {})
    share = entry.get("token_share", 1.0) if cost is None else 1.0
    cost = entry["cost"] if cost is None else cost
    if trained is None:
        search = entry.get("search")
        rounds = cost["rounds"] // max(len(result["truth"]), 1)  # brute force: every candidate, all rounds
        trained = search["rounds_trained"] if search else \
            dict.fromkeys(result["truth"], rounds) if method == "brute_force" else {}
    return Cost(**cost).forward_equivalents * share - test_passes(result, trained)


def rounds_compute(result: dict[str, Any], candidate: str, rounds: int) -> float:
    """The first ``rounds`` rounds of ``candidate``'s fine-tune from brute force's kept curves, in
    forward equivalents, less their test-split predictions: what a replayed search spent on it."""
    done = sum(Cost(r.get("forward_passes", 0), r.get("backward_passes", 0)).forward_equivalents
               for r in result["curves"][candidate][:rounds])
    return done - test_passes(result, {candidate: rounds})


def corpus_token_counts(candidates: Sequence[ModelSpec], data_file: Path) -> list[int]:
    """Every training text of the corpus tokenised, untruncated, by every candidate: the counts
    that :func:`~vista.selection.sampling.token_share` turns into a shorter round's share of the
    tokens, the candidates weighted alike as the forward-pass count weighs them. A capped round
    encodes a uniform draw of these texts, so the share over all of them is its expectation."""
    corpus = FedNLPData(data_file)
    try:
        texts = corpus.texts(corpus.train_indices if corpus.train_indices is not None else [])
    finally:
        corpus.close()
    return [len(ids) for c in candidates for ids in load_tokenizer(c.resolve())(texts, truncation=False)["input_ids"]]
