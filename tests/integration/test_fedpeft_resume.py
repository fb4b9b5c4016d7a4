"""Stopping a FedPEFT run and continuing it from its checkpoint equals one uninterrupted run
(budgeted model search relies on this to train survivors on instead of from scratch)."""

from __future__ import annotations

import dataclasses
import json

import torch
from support.experiments import tiny_parts

from vista.drivers.fedpeft import run_fedpeft_session


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted_run(tiny_hub, tiny_data, tmp_path, one_torch_thread):
    parts3 = tiny_parts(tiny_hub, *tiny_data, rounds=3)
    parts1 = dataclasses.replace(parts3, fl=dataclasses.replace(parts3.fl, rounds=1))
    full, full_ck = run_fedpeft_session(parts3, tmp_path / "full")
    first, ck = run_fedpeft_session(parts1, tmp_path / "first")
    assert ck.round == 1 and first["rounds"] == 1
    rest, rest_ck = run_fedpeft_session(parts3, tmp_path / "rest", resume=ck)
    assert rest_ck.round == 3

    assert [r["round"] for r in _rows(tmp_path / "rest")] == [2, 3]
    full_rows, split_rows = _rows(tmp_path / "full"), _rows(tmp_path / "first") + _rows(tmp_path / "rest")
    for a, b in zip(full_rows, split_rows, strict=True):
        assert a["clients"] == b["clients"]
        for key in ("test_accuracy", "test_loss", "train_loss", "bytes_up_total", "forward_passes_total",
                    "backward_passes_total"):
            assert a[key] == b[key], key
    for k, t in full_ck.global_state.items():
        assert torch.equal(t, rest_ck.global_state[k]), k
    assert rest["test_accuracy"] == full["test_accuracy"]
    assert rest["best_test_accuracy"] == full["best_test_accuracy"]
    assert rest["backward_passes_total"] == full["backward_passes_total"] > 0
    # passes: every train example once per local epoch (forward + backward); eval adds forward passes
    row = full_rows[0]
    assert row["backward_passes"] == row["train_examples"]
    assert row["forward_passes"] > row["backward_passes"]
