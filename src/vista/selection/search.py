"""Budgeted federated model search: successive halving, hybrid and brute force.

The algorithms only talk to an :class:`Oracle`, which fine-tunes a candidate federatedly
up to a number of rounds and reports its validation accuracy and what that cost. The same
search therefore runs live (an oracle that drives FedPEFT) or replayed from the recorded
learning curves of a brute-force run (:class:`ReplayOracle`), which is how many searches
are evaluated for the price of one brute force.

A rung never cuts between candidates of equal validation accuracy (:func:`_cut`), so which one
survives never rests on its name. Where equal accuracies must still be ordered (the final
ranking, when no round separated them), hybrid orders them by its shortlist score, the only
evidence left, and successive halving, which has none, by candidate name
(:func:`vista.selection.ranking.rank_by`), so a search is deterministic given the oracle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from vista.selection.ranking import rank_by

__all__ = [
    "Cost",
    "Oracle",
    "ReplayOracle",
    "Rung",
    "SearchResult",
    "brute_force",
    "hybrid",
    "successive_halving",
]


@dataclass
class Cost:
    """What training cost, summed over clients, rounds and candidates."""

    forward_passes: int = 0
    backward_passes: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    rounds: int = 0  # federated rounds run, summed over candidates
    seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            **{
                f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in dataclasses.fields(self)
            }
        )

    def __radd__(self, other: Any) -> Cost:
        """Lets ``sum(costs)`` start from 0."""
        if other == 0:
            return self
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def forward_equivalents(self) -> float:
        """Client compute in forward passes, a backward pass counted as two forward passes."""
        return self.forward_passes + 2 * self.backward_passes


@runtime_checkable
class Oracle(Protocol):
    """Fine-tunes candidates federatedly, incrementally."""

    def train_to(self, candidate: str, rounds: int) -> tuple[float, Cost]:
        """Continue ``candidate`` until it has ``rounds`` rounds in total.

        Rounds already run are never re-run. Returns the federated validation accuracy
        at that point and the :class:`Cost` of only the rounds just run.
        """
        ...


@dataclass
class Rung:
    """One step of a search: every candidate in ``scores`` was trained to ``rounds``."""

    index: int
    rounds: int
    scores: dict[str, float]
    kept: list[str]  # best first


@dataclass
class SearchResult:
    """Outcome of a search, comparable with the ground truth via ``rank_scores``."""

    method: str
    chosen: str
    ranking: list[str]  # best first
    scores: dict[str, float]  # last accuracy seen per trained candidate
    rank_scores: dict[str, float]  # M-1 for ranking[0] .. 0 for ranking[-1]
    rounds_trained: dict[str, int]
    rungs: list[Rung] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation
def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_candidates(candidates: Sequence[str]) -> list[str]:
    if isinstance(candidates, str):
        raise TypeError(
            f"candidates must be a list of names, not the string {candidates!r}"
        )
    names = list(candidates)
    if not names:
        raise ValueError("candidates is empty: nothing to search")
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ValueError(f"candidates has duplicates: {dupes}")
    return names


def _train(oracle: Oracle, candidate: str, rounds: int) -> tuple[float, Cost]:
    acc, cost = oracle.train_to(candidate, rounds)
    acc = float(acc)
    if not math.isfinite(acc):
        raise ValueError(
            f"oracle returned accuracy {acc!r} for {candidate!r} at {rounds} rounds"
        )
    return acc, cost


def _ranked_result(
    method: str,
    ranking: list[str],
    scores: dict[str, float],
    rounds_trained: dict[str, int],
    rungs: list[Rung],
    cost: Cost,
) -> SearchResult:
    m = len(ranking)
    return SearchResult(
        method=method,
        chosen=ranking[0],
        ranking=ranking,
        scores=scores,
        rank_scores={c: float(m - 1 - i) for i, c in enumerate(ranking)},
        rounds_trained=rounds_trained,
        rungs=rungs,
        cost=cost,
    )


def _cut(order: list[str], scores: Mapping[str, float], n_keep: int) -> int:
    """How many of ``order`` (best first) a rung keeps: ``n_keep``, and every candidate tied
    with the last of them. An exact tie is no evidence of which is better (after one round under
    label skew the candidates often all sit at the majority rate), so the cut waits for a later
    rung that separates them instead of keeping whichever name sorts first."""
    while n_keep < len(order) and scores[order[n_keep]] == scores[order[n_keep - 1]]:
        n_keep += 1
    return n_keep


# --------------------------------------------------------------------------- searches
def _ordered(scores: Mapping[str, float], prior: Sequence[str]) -> list[str]:
    """``scores``' candidates best first, equal scores in ``prior``'s order (then by name)."""
    at = {c: i for i, c in enumerate(prior)}
    return sorted(scores, key=lambda c: (-scores[c], at.get(c, len(at)), c))


def successive_halving(
    candidates: Sequence[str], oracle: Oracle, r0: int, eta: int, max_rounds: int,
    prior: Sequence[str] = (),
) -> SearchResult:
    """Successive halving: train all briefly, keep the best ``1/eta``, train those longer.

    Rung ``k`` trains every survivor to ``min(r0 * eta**k, max_rounds)`` rounds and keeps
    the best ``ceil(n / eta)`` (at least one), and those tied with the last kept one
    (:func:`_cut`: a rung whose survivors all tie cuts nobody). The search stops when a rung reaches
    ``max_rounds`` (all its candidates survive, ranked by score), or when one survivor is
    left: that survivor is then trained on to ``max_rounds`` in a last one-candidate rung,
    so the chosen model is always a finished fine-tune ready to deploy (this costs rounds a
    pure "identify the best" search would not spend).

    ``ranking`` lists the survivors by their last score, then the candidates eliminated
    later before those eliminated earlier, each rung's eliminated by that rung's score. Equal
    scores are ordered by ``prior`` (candidates best first, e.g. a shortlist score's ranking),
    then by name.
    """
    names = _check_candidates(candidates)
    _check_int(r0, "r0", 1)
    _check_int(eta, "eta", 2)
    _check_int(max_rounds, "max_rounds", 1)
    if max_rounds < r0:
        raise ValueError(
            f"max_rounds must be >= r0, got max_rounds={max_rounds} < r0={r0}"
        )

    survivors = names
    scores: dict[str, float] = {}
    rounds_trained = {c: 0 for c in names}
    rungs: list[Rung] = []
    eliminated: list[list[str]] = []  # per rung, best first
    cost = Cost()
    k = 0
    while True:
        rounds = min(r0 * eta**k, max_rounds)
        rung_scores = {}
        for c in survivors:
            rung_scores[c], step = _train(oracle, c, rounds)
            rounds_trained[c] = rounds
            cost = cost + step
        scores.update(rung_scores)
        order = _ordered(rung_scores, prior)
        if rounds >= max_rounds:
            rungs.append(Rung(k, rounds, rung_scores, order))
            survivors = order
            break
        n_keep = _cut(order, rung_scores, max(1, math.ceil(len(order) / eta)))
        survivors, dropped = order[:n_keep], order[n_keep:]
        rungs.append(Rung(k, rounds, rung_scores, survivors))
        eliminated.append(dropped)
        if len(survivors) == 1:
            (last,) = survivors
            acc, step = _train(oracle, last, max_rounds)
            rounds_trained[last] = max_rounds
            scores[last] = acc
            cost = cost + step
            rungs.append(Rung(k + 1, max_rounds, {last: acc}, [last]))
            break
        k += 1

    ranking = list(survivors) + [c for dropped in reversed(eliminated) for c in dropped]
    return _ranked_result(
        "successive_halving", ranking, scores, rounds_trained, rungs, cost
    )


def hybrid(
    metric_scores: Mapping[str, float | None],
    oracle: Oracle,
    k: int,
    r0: int,
    eta: int,
    max_rounds: int,
) -> SearchResult:
    """Shortlist the top ``k`` by a transferability score, then successive-halve them.

    The score is nearly free (one forward round), so it prunes the pool before any
    training. Candidates outside the shortlist rank after every searched one, in score
    order, with 0 rounds trained and no entry in ``scores``; a candidate without a score
    (``None``) comes after the scored ones. ``k`` larger than the pool is clamped to the
    pool size (plain successive halving). Shortlisted candidates that no round separated keep
    the score's order (not their names').
    """
    if not isinstance(metric_scores, Mapping) or not metric_scores:
        raise ValueError("metric_scores must be a non-empty dict of candidate -> score")
    _check_int(k, "k", 1)
    order = rank_by(metric_scores)
    shortlist, rest = order[:k], order[k:]
    sh = successive_halving(shortlist, oracle, r0, eta, max_rounds, prior=shortlist)
    ranking = sh.ranking + rest
    rounds_trained = {**sh.rounds_trained, **{c: 0 for c in rest}}
    return _ranked_result(
        "hybrid", ranking, sh.scores, rounds_trained, sh.rungs, sh.cost
    )


def brute_force(
    candidates: Sequence[str], oracle: Oracle, max_rounds: int
) -> SearchResult:
    """Every candidate trained to ``max_rounds``: the ground truth, at the full price."""
    names = _check_candidates(candidates)
    _check_int(max_rounds, "max_rounds", 1)
    scores: dict[str, float] = {}
    cost = Cost()
    for c in names:
        scores[c], step = _train(oracle, c, max_rounds)
        cost = cost + step
    ranking = rank_by(scores)
    rungs = [Rung(0, max_rounds, dict(scores), list(ranking))]
    rounds_trained = {c: max_rounds for c in names}
    return _ranked_result("brute_force", ranking, scores, rounds_trained, rungs, cost)


# --------------------------------------------------------------------------- replay
def _round_cost(record: Mapping[str, Any]) -> Cost:
    """The Cost of one recorded round (missing cost keys count 0)."""
    return Cost(
        forward_passes=int(record.get("forward_passes", 0)),
        backward_passes=int(record.get("backward_passes", 0)),
        bytes_up=int(record.get("bytes_up", 0)),
        bytes_down=int(record.get("bytes_down", 0)),
        rounds=1,
        seconds=float(record.get("round_seconds", 0.0)),
    )


class ReplayOracle:
    """An :class:`Oracle` that replays recorded per-round learning curves.

    ``histories[candidate]`` holds one dict per round, in round order, with the validation
    accuracy under ``key`` (of the split held out of training, what a live search ranks by)
    and optional per-round cost keys ``forward_passes``, ``backward_passes``, ``bytes_up``,
    ``bytes_down``, ``round_seconds`` (missing ones count 0). Like a live oracle it keeps how
    far each candidate has been trained, and charges only new rounds.
    """

    def __init__(
        self,
        histories: Mapping[str, Sequence[Mapping[str, Any]]],
        key: str = "client_val_accuracy_mean",
    ) -> None:
        if not isinstance(histories, Mapping) or not histories:
            raise ValueError(
                "histories must be a non-empty dict of candidate -> list of rounds"
            )
        for c, rounds in histories.items():
            if not rounds:
                raise ValueError(f"histories[{c!r}] has no rounds recorded")
            missing = [i + 1 for i, r in enumerate(rounds) if key not in r]
            if missing:
                raise ValueError(
                    f"histories[{c!r}] lacks accuracy key {key!r} at round(s) {missing[:5]}"
                    f"{'...' if len(missing) > 5 else ''}; present keys: {sorted(rounds[missing[0] - 1])}"
                )
        self.histories = {c: list(h) for c, h in histories.items()}
        self.key = key
        self.trained: dict[str, int] = {c: 0 for c in self.histories}

    def _history(self, candidate: str) -> list[Mapping[str, Any]]:
        try:
            return self.histories[candidate]
        except KeyError:
            raise ValueError(
                f"candidate {candidate!r} has no recorded history; recorded: {sorted(self.histories)}"
            ) from None

    def train_to(self, candidate: str, rounds: int) -> tuple[float, Cost]:
        history = self._history(candidate)
        _check_int(rounds, "rounds", 1)
        done = self.trained[candidate]
        if rounds < done:
            raise ValueError(
                f"{candidate!r} already has {done} rounds; cannot train it to {rounds} rounds"
            )
        if rounds > len(history):
            raise ValueError(
                f"{candidate!r} asked to {rounds} rounds, but only {len(history)} rounds were recorded"
            )
        cost = sum((_round_cost(r) for r in history[done:rounds]), Cost())
        self.trained[candidate] = rounds
        return float(history[rounds - 1][self.key]), cost

    def ground_truth(self, rounds: int | None = None) -> dict[str, float]:
        """Recorded accuracy of every candidate at ``rounds`` (default: its last round), free."""
        out = {}
        for c, history in self.histories.items():
            r = len(history) if rounds is None else rounds
            if not 1 <= r <= len(history):
                raise ValueError(
                    f"rounds={rounds} out of range for {c!r}: {len(history)} rounds were recorded"
                )
            out[c] = float(history[r - 1][self.key])
        return out
