"""Budgeted model search for the selection driver: candidates fine-tuned with the FedPEFT
driver in stretches (successive halving, hybrid, brute force), and the chosen one's final run.

Each stretch is a run directory of its own, ``search/<candidate>/rounds_<a>-<b>``, that
continues the candidate's previous stretch from its round state, so no round is trained twice.
A resumed selection run (``vista resume=RUN_DIR``) replays the search: finished stretches are
read back from their directories, an interrupted one continues from its checkpoint.

Every stretch trains on the clients' train splits less the validation split held out of them
(``selection.val_fraction``, as ``fl.val_fraction``) and the search ranks on that split: the test
split, which the results are judged on, decides nothing. So unless the config sets
``fl.test_every``, the stretches score the test splits only in the search's last round (the
chosen model's, and every candidate's under brute force): other rounds predict only the
validation split: a fifth of such a round's compute at the study's budget, a sixth of a
6-round brute force.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vista.drivers.fedpeft import run_fedpeft_session
from vista.drivers.round_state import RoundState, Totals
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.recording.checkpoints import CheckpointStore
from vista.recording.spec import RecorderSpec
from vista.selection.search import (
    Cost,
    SearchResult,
    brute_force,
    hybrid,
    successive_halving,
)
from vista.selection.spec import SelectionSpec


class FedPEFTOracle:
    """Trains candidates with the FedPEFT driver for the search methods, continuing each from
    its checkpoint (never re-training a round). Each stretch is a run directory of its own:
    ``<root>/<candidate>/rounds_<a>-<b>``."""

    def __init__(self, parts: ExperimentParts, candidates: dict[str, ModelSpec], root: Path, key: str,
                 progress_stream: Any = None, reuse: bool = False,
                 before_stretch: Callable[[], None] = lambda: None, val_fraction: float = 0.1,
                 search_rounds: int | None = None) -> None:
        """``reuse``: a resumed selection run: a stretch that finished is read back from its run
        directory, a stretch that was interrupted continues from its newest checkpoint.
        ``val_fraction``: each client's validation split, held out of training, that ``key`` scores.
        ``search_rounds``: the search's last round. Unless the config set ``fl.test_every``, the
        stretches score the test splits only there: the search ranks on validation, so the test
        scores of a stretch that ends sooner would be compute spent on nothing."""
        fl = dataclasses.replace(parts.fl, val_fraction=val_fraction)
        if search_rounds is not None and fl.lr_horizon is None:  # the schedule of one run of the whole search
            fl = dataclasses.replace(fl, lr_horizon=search_rounds)
        self.test_only_at = search_rounds if fl.test_every is None and val_fraction > 0 else None
        self.parts = dataclasses.replace(parts, fl=fl)
        self.candidates, self.root, self.key = candidates, root, key
        self.progress_stream, self.reuse, self.before_stretch = progress_stream, reuse, before_stretch
        self.checkpoints: dict[str, RoundState] = {}
        self.summaries: dict[str, dict[str, Any]] = {}

    def train_to(self, candidate: str, rounds: int) -> tuple[float, Cost]:
        ck = self.checkpoints.get(candidate)
        done = ck.round if ck else 0
        if rounds <= done:
            raise ValueError(f"candidate {candidate!r} already has {done} rounds; asked for {rounds}")
        self.before_stretch()  # a stop asked for between stretches (a signal) raises here
        fl = dataclasses.replace(self.parts.fl, rounds=rounds)
        if self.test_only_at is not None:
            fl = dataclasses.replace(fl, test_every=self.test_only_at, test_last=False)
        p = dataclasses.replace(self.parts, model=self.candidates[candidate], fl=fl,
                                recorder=RecorderSpec())  # local files only: one W&B run per selection
        before = ck.totals if ck else Totals()
        t0 = time.perf_counter()
        summary, new = stretch(p, self.root / candidate / f"rounds_{done + 1}-{rounds}", ck, self.reuse,
                               self.progress_stream)
        seconds = time.perf_counter() - t0
        self.checkpoints[candidate], self.summaries[candidate] = new, summary
        after = new.totals
        cost = Cost(forward_passes=after.forward_passes - before.forward_passes,
                    backward_passes=after.backward_passes - before.backward_passes,
                    bytes_up=after.bytes_up - before.bytes_up, bytes_down=after.bytes_down - before.bytes_down,
                    rounds=rounds - done, seconds=seconds)
        last = new.history[-1]
        if self.key not in last:
            raise KeyError(f"selection.validation_key={self.key!r} is not a FedPEFT metric; some are: "
                           f"{sorted(x for x in last if 'accuracy' in x)}")
        return float(last[self.key]), cost

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        return {c: ck.history for c, ck in self.checkpoints.items()}


def run_search(parts: ExperimentParts, spec: SelectionSpec, run_dir: Path,
               metric_scores: dict[str, float | None] | None,
               progress_stream: Any = None, reuse: bool = False,
               before_stretch: Callable[[], None] = lambda: None) -> tuple[SearchResult, FedPEFTOracle]:
    """The budgeted search. Searches are deterministic, so a resumed one (``reuse``) replays its
    decisions on the stretches already trained and continues in the rung it was in."""
    names = [c.name for c in spec.models]
    max_rounds = spec.max_rounds or parts.fl.rounds
    oracle = FedPEFTOracle(parts, {c.name: c for c in spec.models}, run_dir / "search", spec.validation_key,
                           progress_stream, reuse=reuse, before_stretch=before_stretch,
                           val_fraction=spec.val_fraction, search_rounds=max_rounds)
    if spec.name == "successive_halving":
        result = successive_halving(names, oracle, spec.r0, spec.eta, max_rounds)
    elif spec.name == "hybrid":
        assert metric_scores is not None
        result = hybrid(metric_scores, oracle, spec.top_k, spec.r0, spec.eta, max_rounds)
    else:
        result = brute_force(names, oracle, max_rounds)
    return result, oracle




def finetune(parts: ExperimentParts, spec: SelectionSpec, chosen: str, run_dir: Path,
             oracle: FedPEFTOracle | None, progress_stream: Any, reuse: bool = False) -> dict[str, Any]:
    """FedPEFT of the chosen candidate for ``fl.rounds``. A search has trained it already:
    its run is reused, or continued from its checkpoint when the search stopped earlier (with
    the search's validation split held out still, so the continued run is the search's run)."""
    model = next(c for c in spec.models if c.name == chosen)
    ck = oracle.checkpoints.get(chosen) if oracle is not None else None
    fl = dataclasses.replace(parts.fl, val_fraction=spec.val_fraction) if ck is not None else parts.fl
    p = dataclasses.replace(parts, model=model, fl=fl, recorder=RecorderSpec(), selection=None)
    if ck is not None and ck.round >= parts.fl.rounds:
        return {**oracle.summaries[chosen], "reused_from_search": True}  # type: ignore[union-attr]
    summary, _ = stretch(p, run_dir / "finetune", ck, reuse, progress_stream)
    return {**summary, "continued_from_round": ck.round} if ck is not None else summary


def stretch(parts: ExperimentParts, run_dir: Path, ck: RoundState | None, reuse: bool, progress_stream: Any
            ) -> tuple[dict[str, Any], RoundState]:
    """Train ``parts.fl.rounds`` rounds into ``run_dir``, continuing ``ck``. ``reuse`` (a resumed
    selection): a stretch that finished is read back, one that was interrupted continues from
    its newest checkpoint."""
    if reuse:
        store = CheckpointStore(run_dir)
        done = store.rounds()
        summary_file = run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        if done and done[-1] == parts.fl.rounds and summary.get("status") == "finished":
            return summary, RoundState.from_tree(store.load()[1]["state"])
        if done:
            return run_fedpeft_session(parts, run_dir, progress_stream=progress_stream, from_checkpoint=True)
    return run_fedpeft_session(parts, run_dir, progress_stream=progress_stream, resume=ck)
