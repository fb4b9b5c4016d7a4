"""Federated strategies end to end on a tiny RoBERTa (inline executor): what each client
trains, uploads and downloads, and what the server computes from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.experiments import tiny_parts as parts

from vista.drivers.fedpeft import run_fedpeft
from vista.fl.aggregators import ExactLoRA, FedAdam, FedAvg, FedLC, FedProx, FFALoRA, FlexLoRA
from vista.parts import ExperimentParts
from vista.peft.lora import LoraSpec


def run(tmp_path: Path, name: str, p: ExperimentParts) -> tuple[dict, list[dict], dict[str, torch.Tensor]]:
    d = tmp_path / name
    summary = run_fedpeft(p, d)
    rows = _jsonl(d / "metrics.jsonl")
    for row in rows:  # per-client tables are recorded next to metrics.jsonl, one row per client
        row["per_client"] = [c for c in _jsonl(d / "clients.jsonl") if c["round"] == row["round"]]
        row["client_eval"] = [c for c in _jsonl(d / "client_eval.jsonl") if c["round"] == row["round"]]
    return summary, rows, load_file(str(d / "adapter.safetensors"))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _numel(adapter, keep=lambda k: True):
    return sum(t.numel() for k, t in adapter.items() if keep(k))


def test_fedprox_with_mu_zero_is_fedavg_exactly(tiny_hub, tiny_data, tmp_path):
    s1, r1, a1 = run(tmp_path, "avg", parts(tiny_hub, *tiny_data, FedAvg()))
    s2, r2, a2 = run(tmp_path, "prox", parts(tiny_hub, *tiny_data, FedProx(mu=0.0)))
    assert [r["test_loss"] for r in r1] == [r["test_loss"] for r in r2]
    assert a1.keys() == a2.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)
    _, _, a3 = run(tmp_path, "prox1", parts(tiny_hub, *tiny_data, FedProx(mu=1.0)))
    assert any(not torch.equal(a1[k], a3[k]) for k in a1)


def test_fedlc_with_tau_zero_is_fedavg_exactly_and_calibrates_the_clients_otherwise(tiny_hub, tiny_data, tmp_path):
    s1, r1, a1 = run(tmp_path, "avg", parts(tiny_hub, *tiny_data, FedAvg()))
    _, r2, a2 = run(tmp_path, "lc0", parts(tiny_hub, *tiny_data, FedLC(tau=0.0)))
    assert [r["test_loss"] for r in r1] == [r["test_loss"] for r in r2]
    assert all(torch.equal(a1[k], a2[k]) for k in a1)
    _, r3, a3 = run(tmp_path, "lc1", parts(tiny_hub, *tiny_data, FedLC(tau=1.0)))
    assert any(not torch.equal(a1[k], a3[k]) for k in a1)
    assert [r["bytes_up"] for r in r3] == [r["bytes_up"] for r in r1]  # the same uploads: only the loss differs


def test_bytes_are_the_tensors_sent_and_half_in_float16(tiny_hub, tiny_data, tmp_path):
    s32, r32, adapter = run(tmp_path, "f32", parts(tiny_hub, *tiny_data))
    s16, r16, _ = run(tmp_path, "f16", parts(tiny_hub, *tiny_data, transfer_dtype="float16"))
    n = _numel(adapter)
    assert n == s32["trainable_params"]
    for row in r32:
        assert row["bytes_up"] == row["bytes_down"] == 2 * n * 4  # 2 clients, each way
        assert [c["bytes_up"] for c in row["per_client"]] == [n * 4, n * 4]
    assert s16["bytes_up_total"] * 2 == s32["bytes_up_total"] and s16["bytes_down_total"] * 2 == s32["bytes_down_total"]
    assert s16["transfer_dtype"] == "float16"
    assert abs(s16["test_loss"] - s32["test_loss"]) < 0.05


def test_ffa_lora_freezes_a_and_uploads_only_the_rest(tiny_hub, tiny_data, tmp_path):
    s0, _, init = run(tmp_path, "zero", parts(tiny_hub, *tiny_data, rounds=1, lr=1e-12))  # ~ the initial state
    s, rows, adapter = run(tmp_path, "ffa", parts(tiny_hub, *tiny_data, FFALoRA()))
    a_keys = [k for k in adapter if "lora_A" in k]
    assert a_keys and all(torch.equal(adapter[k], init[k]) for k in a_keys)  # A never moves
    assert any(not torch.equal(adapter[k], init[k]) for k in adapter if "lora_B" in k)
    up_each = (_numel(adapter) - _numel(adapter, lambda k: "lora_A" in k)) * 4
    for row in rows:
        assert [c["bytes_up"] for c in row["per_client"]] == [up_each, up_each]
        assert [c["bytes_down"] for c in row["per_client"]] == [_numel(adapter) * 4] * 2


def test_heterogeneous_ranks_truncate_what_clients_send_and_receive(tiny_hub, tiny_data, tmp_path):
    peft = LoraSpec(r=4, alpha=8, dropout=0.0, client_ranks=[1, 4])  # even clients rank 1, odd rank 4
    for agg in (FedAvg(), FlexLoRA()):
        s, rows, adapter = run(tmp_path, type(agg).__name__, parts(tiny_hub, *tiny_data, agg, peft, clients_per_round=4))
        full = _numel(adapter) * 4
        lora = _numel(adapter, lambda k: "lora_" in k) * 4
        for row in rows:
            for c in row["per_client"]:
                rank = 1 if c["client"] % 2 == 0 else 4
                assert c["rank"] == rank
                expect = full - lora + lora * rank // 4
                assert c["bytes_up"] == c["bytes_down"] == expect
        assert all(adapter[k].shape[0] == 4 for k in adapter if "lora_A" in k)


def test_exact_lora_keeps_the_residual_in_the_global_state(tiny_hub, tiny_data, tmp_path):
    s, rows, adapter = run(tmp_path, "exact", parts(tiny_hub, *tiny_data, ExactLoRA()))
    residuals = {k: v for k, v in adapter.items() if k.startswith("residual:")}
    lora_a = [k for k in adapter if "lora_A" in k]
    assert len(residuals) == len(lora_a) > 0
    assert all(float(v.abs().max()) > 0 for v in residuals.values())  # two clients disagree
    # downlink carries the residuals too; uplink does not
    assert rows[-1]["per_client"][0]["bytes_down"] > rows[-1]["per_client"][0]["bytes_up"]


def test_fedadam_keeps_its_moments_across_rounds(tiny_hub, tiny_data, tmp_path):
    s, rows, _ = run(tmp_path, "adam", parts(tiny_hub, *tiny_data, FedAdam(server_lr=0.01), rounds=3))
    assert len(rows) == 3 and all(np.isfinite(r["test_loss"]) for r in rows)


def test_per_client_evaluation_and_the_best_round(tiny_hub, tiny_data, tmp_path):
    s, rows, _ = run(tmp_path, "eval", parts(tiny_hub, *tiny_data, rounds=3, personal_eval=True))
    for row in rows:
        evals = row["client_eval"]
        assert [e["client"] for e in evals] == [0, 1, 2, 3]
        # the tiny partition splits the test set among clients: their weighted mean is the global accuracy
        n = sum(e["test_examples"] for e in evals)
        assert n == 18
        assert sum(e["test_accuracy"] * e["test_examples"] for e in evals) / n == pytest.approx(row["test_accuracy"])
        assert row["client_test_accuracy_min"] == min(e["test_accuracy"] for e in evals)
        assert all(0 <= c["personal_accuracy"] <= 1 for c in row["per_client"])
    best = max(range(3), key=lambda i: (rows[i]["test_accuracy"], -i))
    assert s["best_round"] == rows[best]["round"]
    assert s["best"]["test_accuracy"] == rows[best]["test_accuracy"]
    assert s["best"]["test_macro_f1"] == pytest.approx(rows[best]["test_macro_f1"])
    best_rows = _jsonl(tmp_path / "eval" / "best_client_eval.jsonl")
    assert best_rows == rows[best]["client_eval"]


def test_the_round_rate_reaches_the_clients_and_is_recorded(tiny_hub, tiny_data, tmp_path):
    _, r1, a1 = run(tmp_path, "const", parts(tiny_hub, *tiny_data))
    _, r2, a2 = run(tmp_path, "decay1", parts(tiny_hub, *tiny_data, lr_schedule="exponential", lr_decay=1.0))
    assert [r["test_loss"] for r in r1] == [r["test_loss"] for r in r2]  # a factor of 1 is the constant rate
    assert all(torch.equal(a1[k], a2[k]) for k in a1)
    assert [r["lr"] for r in r1] == [5e-3, 5e-3]
    _, r3, a3 = run(tmp_path, "halve", parts(tiny_hub, *tiny_data, lr_schedule="exponential", lr_decay=0.5))
    assert [r["lr"] for r in r3] == pytest.approx([5e-3, 2.5e-3])
    assert r3[0]["test_loss"] == r1[0]["test_loss"]  # round 1 trains at fl.lr
    assert r3[1]["test_loss"] != r1[1]["test_loss"]  # round 2 at half of it
    assert any(not torch.equal(a1[k], a3[k]) for k in a1)
