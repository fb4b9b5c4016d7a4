"""search_replay.py's ``--tie-break loss`` (design note 77): a replay that orders a rung's tie of
validation accuracies by validation loss, to measure it against the live rule (keep the tie whole),
and the backfill that gives kept curves their loss from the work directory."""

from __future__ import annotations

import json

from support.study_scripts import study_script

from vista.selection.search import ReplayOracle, successive_halving

KEY = "client_val_accuracy_mean"


def _script():
    return study_script("search_replay")


def _round(acc: float, loss: float, test: float | None = None) -> dict:
    r = {KEY: acc, "val_loss": loss, "forward_passes": 10, "backward_passes": 8}
    return r if test is None else {**r, "test_accuracy": test}


# "late" ties "calm" at the majority rate in round 1 with the higher loss, then leaves it
CURVES = {"late": [_round(0.5, 2.0), _round(0.9, 0.4, 0.88)],
          "calm": [_round(0.5, 0.7), _round(0.5, 0.69, 0.5)]}


def test_the_loss_orders_a_tie_and_never_two_different_accuracies():
    sr = _script()
    broken = sr.ties_broken_by_loss({"validation_key": KEY, "curves": CURVES})
    waited = successive_halving(list(CURVES), ReplayOracle(CURVES, KEY), 1, 2, 2)
    by_loss = successive_halving(list(CURVES), ReplayOracle(broken["curves"], KEY), 1, 2, 2)
    assert waited.chosen == "late" and waited.rounds_trained == {"late": 2, "calm": 2}
    # the calibrated majority-rate model wins the tie on loss, and the one that learns is cut
    assert by_loss.chosen == "calm" and by_loss.rounds_trained == {"late": 1, "calm": 2}
    assert by_loss.cost.forward_passes < waited.cost.forward_passes
    # a loss as large as any fine-tune reports does not reorder accuracies one text apart
    apart = {"a": [_round(0.50, 1e3)], "b": [_round(0.49, 0.0)]}
    apart = sr.ties_broken_by_loss({"validation_key": KEY, "curves": apart})["curves"]
    assert apart["a"][0][KEY] > apart["b"][0][KEY]
    assert CURVES["late"][0][KEY] == 0.5  # the kept curves are not changed
    no_loss = {c: [{k: v for k, v in r.items() if k != "val_loss"} for r in h] for c, h in CURVES.items()}
    assert sr.ties_broken_by_loss({"validation_key": KEY, "curves": no_loss}) is None


def test_curves_kept_without_the_loss_get_it_from_the_work_directory(tmp_path):
    sr = _script()
    truth = {"late": 0.88, "calm": 0.5}
    curves = {c: [{k: v for k, v in r.items() if k != "val_loss"} for r in h] for c, h in CURVES.items()}
    result = {"data": "toy", "partition": "iid", "seed": 0, "validation_key": KEY, "truth": truth, "curves": curves}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    assert sr.backfill(path, result, None) and "val_loss" not in result["curves"]["late"][0]  # no work: as kept
    work = tmp_path / "work"
    bf = work / "toy" / "iid" / "seed0" / "brute_force"
    bf.mkdir(parents=True)
    histories = {c: [{**r, "train_loss": 1.0, "round": i + 1} for i, r in enumerate(h)] for c, h in CURVES.items()}
    (bf / "selection.json").write_text(json.dumps({"histories": histories}))
    assert sr.backfill(path, result, work)
    kept = json.loads(path.read_text())
    assert kept["curves"]["late"][0]["val_loss"] == 2.0 and "train_loss" not in kept["curves"]["late"][0]
    assert sr.ties_broken_by_loss(kept) is not None
