"""budget_probe.py's readings of a probe's truth that one round's swing moves less, and a run
under a learning-rate schedule read as a budget of its own (no hub, no training)."""

from __future__ import annotations

import json

import pytest
import yaml
from support.study_scripts import study_script

bp = study_script("budget_probe")


def rows(tests, vals):
    return [{"test_accuracy": t, "client_val_accuracy_mean": v} for t, v in zip(tests, vals)]


def test_settled_reads_the_last_rounds_mean_and_the_test_at_the_best_validation_round():
    # an oscillating curve: even rounds high, odd rounds low (the eighteenth sitting's r8 alpha = 0.1)
    curve = rows([0.5, 0.6, 0.9, 0.6, 0.95, 0.65, 0.94], [0.5, 0.6, 0.9, 0.7, 0.95, 0.7, 0.95])
    s = bp.settled(curve, last=4, level=0.95, tolerance=0.05)
    assert s["last_mean"] == pytest.approx((0.6 + 0.95 + 0.65 + 0.94) / 4)
    assert s["last_within"] == 2  # 0.95 and 0.94 of the last 4
    assert (s["best_val_round"], s["at_best_val"]) == (7, 0.94)  # rounds 5 and 7 tie: the later
    assert bp.settled(curve, last=10, level=0.95, tolerance=0.05)["last_mean"] is None  # fewer rounds than asked
    no_level = bp.settled(curve, last=2, level=None, tolerance=0.05)
    assert no_level["last_within"] is None and no_level["last_mean"] == pytest.approx(0.795)


def test_rounds_without_a_test_score_are_not_a_settled_reading():
    curve = [{"client_val_accuracy_mean": 0.9}, *rows([0.7, 0.8], [0.6, 0.8])]
    s = bp.settled(curve, last=3, level=0.8, tolerance=0.05)
    assert s["last_mean"] is None and (s["best_val_round"], s["at_best_val"]) == (3, 0.8)


def _run_dir(tmp_path, name, **fl):
    d = tmp_path / name
    d.mkdir()
    cfg = {"seed": 0, "model": {"name": "minilm"}, "peft": {"r": 8}, "dataset": {"name": "r8"},
           "partition": {"kind": "niid_label", "alpha": 0.1, "clients": 8},
           "aggregator": {"_target_": "vista.fl.aggregators.FedAvg"},
           "fl": {"rounds": 2, "clients_per_round": 8, "local_epochs": 1, "batch_size": 16, "lr": 5e-3,
                  "max_seq_len": 128, "val_fraction": 0.1, **fl}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"round": r, "test_accuracy": a, "client_val_accuracy_mean": a,
                                                         "val_loss": 1.0}) + "\n" for r, a in ((1, 0.5), (2, 0.7))))
    return d


def test_a_scheduled_run_names_its_schedule_and_a_constant_one_keeps_the_grids_budget(tmp_path):
    constant = bp.main_run(_run_dir(tmp_path, "constant", lr_schedule="constant"))
    assert "lr_schedule" not in constant["budget"]  # the grid's rate: nothing to tell apart
    cosine = bp.main_run(_run_dir(tmp_path, "cosine", lr_schedule="cosine", lr_min=0.0))
    assert cosine["budget"]["lr_schedule"] == "cosine"  # as run_study.py --lr-schedule cosine names it
    decay = bp.main_run(_run_dir(tmp_path, "decay", lr_schedule="exponential", lr_decay=0.9, lr_min=1e-4))
    assert decay["budget"]["lr_schedule"] == "exponential(lr_decay=0.9, lr_min=0.0001)"
    # against a grid run of the same setting, a scheduled run is not checked as a reproduction
    grid = {**constant, "budget": {k: v for k, v in constant["budget"].items() if k != "aggregator"}}
    assert bp.probe_row(constant, grid, None, "minilm", 0.05)["reproduces_grid"] is True
    row = bp.probe_row(cosine, grid, None, "minilm", 0.05, last=2)
    assert row["reproduces_grid"] is None and row["settled"]["last_mean"] == pytest.approx(0.6)
    assert "lr cosine |" in bp.markdown([row], "minilm", 0.05, last=2)
