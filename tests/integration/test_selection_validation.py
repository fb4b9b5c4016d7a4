"""The searches rank on a validation split held out of the clients' training data: what a
client trains on, what is validated and what is tested are disjoint, and the test split
decides nothing (tiny models, inline executor)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import h5py
import numpy as np
import pytest
from support.experiments import tiny_parts

from vista.data.fednlp import FederatedData
from vista.data.holdout import hold_out
from vista.drivers.fedpeft import run_fedpeft_session
from vista.drivers.selection import run_selection
from vista.fl.runtime import FedPEFTRuntime
from vista.models.hub import ModelSpec
from vista.selection.search import ReplayOracle, successive_halving
from vista.selection.spec import SelectionSpec

NAMES = ("bert", "roberta", "gpt2")


def test_fedpeft_trains_on_the_rest_and_validates_on_the_held_out_split(tiny_hub, tiny_data, tmp_path, monkeypatch,
                                                                        one_torch_thread):
    """Every client in one round (12 train texts each, val_fraction 0.25: 3 held out): the indices
    each client actually encoded for training, its validation split and every test split are
    disjoint, and the validation split is the seeded draw of vista.data.holdout."""
    trained: dict[int, np.ndarray] = {}
    real_client_data, real_encode = FedPEFTRuntime._client_data, FedPEFTRuntime._encode

    def client_data(self, client):
        self._spied = client
        try:
            return real_client_data(self, client)
        finally:
            self._spied = None

    def encode(self, indices):
        if getattr(self, "_spied", None) is not None:
            trained[self._spied] = np.asarray(indices).copy()
        return real_encode(self, indices)

    monkeypatch.setattr(FedPEFTRuntime, "_client_data", client_data)
    monkeypatch.setattr(FedPEFTRuntime, "_encode", encode)
    parts = tiny_parts(tiny_hub, *tiny_data, rounds=1, clients_per_round=4, val_fraction=0.25)
    run_fedpeft_session(parts, tmp_path / "run")

    fed = FederatedData(parts.data)
    clients = fed.partition.clients
    tests = set(fed.test_indices) | {int(i) for s in clients.values() for i in s.test}
    assert sorted(trained) == [0, 1, 2, 3]
    for c, split in clients.items():
        val = hold_out(split.train, 0.25, parts.seed, c).val
        assert len(split.train) == 12 and len(val) == 3 and len(trained[c]) == 9
        assert not set(val) & set(trained[c]) and not set(val) & tests and not set(trained[c]) & tests
        assert sorted([*val, *trained[c]]) == sorted(split.train)
    [metrics] = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics["train_examples"] == 36 and 0.0 <= metrics["client_val_accuracy_mean"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "run" / "client_eval.jsonl").read_text().splitlines()]
    assert [r["val_examples"] for r in rows] == [3, 3, 3, 3]
    # the pooled validation accuracy is the example-weighted mean of the clients' (3 examples each)
    assert metrics["val_accuracy"] == pytest.approx(np.mean([r["val_accuracy"] for r in rows]))
    # 12 validation + 18 test examples predicted once each, on top of 36 trained
    assert metrics["forward_passes"] == 36 + 12 + len(tests)


def test_test_every_scores_only_the_validation_split_between_and_changes_nothing_else(tiny_hub, tiny_data, tmp_path,
                                                                                      one_torch_thread):
    """fl.test_every=3 over 3 rounds: rounds 1 and 2 predict only the validation split (fewer
    forward passes by the test examples, no test metrics), round 3 everything; training, the
    validation curve and the final test scores are the numbers of a run that tests every round."""
    runs = {}
    for every in (None, 3):
        parts = tiny_parts(tiny_hub, *tiny_data, rounds=3, clients_per_round=4, val_fraction=0.25, test_every=every)
        summary, _ = run_fedpeft_session(parts, tmp_path / f"every{every}")
        rows = [json.loads(x) for x in (tmp_path / f"every{every}" / "metrics.jsonl").read_text().splitlines()]
        runs[every] = summary, rows
    (full, full_rows), (sparse, sparse_rows) = runs[None], runs[3]
    fed = FederatedData(tiny_parts(tiny_hub, *tiny_data).data)
    tests = len(set(fed.test_indices) | {int(i) for s in fed.partition.clients.values() for i in s.test})
    assert [("test_accuracy" in r) for r in sparse_rows] == [False, False, True]
    for a, b in zip(full_rows, sparse_rows):
        for key in ("train_loss", "val_accuracy", "client_val_accuracy_mean", "backward_passes"):
            assert a[key] == b[key], key
        assert a["forward_passes"] - b["forward_passes"] == (tests if b["round"] < 3 else 0)
    for key in ("test_accuracy", "test_loss", "client_test_accuracy_mean", "client_test_accuracy_min"):
        assert full[key] == sparse[key], key
    assert full["forward_passes_total"] - sparse["forward_passes_total"] == 2 * tests
    with pytest.raises(ValueError, match="fl.val_fraction is 0"):
        tiny_parts(tiny_hub, *tiny_data, test_every=2)


def _altered_test_labels(tiny_data, where):
    """A copy of the tiny corpus whose test examples (the global and every client's test split)
    all carry the first class (a permutation of balanced labels would leave a constant
    predictor's accuracy where it was)."""
    data, part = (shutil.copy(p, where / p.name) for p in tiny_data)
    with h5py.File(data, "r+") as f:
        attrs = json.loads(f["attributes"][()])
        first = min(attrs["label_vocab"], key=attrs["label_vocab"].get)
        for i in attrs["test_index_list"]:
            del f[f"Y/{i}"]
            f[f"Y/{i}"] = first
    return data, part


def test_a_search_does_not_change_when_the_test_labels_do(arch_hub, tiny_hub, tiny_data, tmp_path,
                                                         one_torch_thread):
    candidates = tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in NAMES)
    # 30% held out and lr 0.05: one round separates the tiny candidates (at 10% they tie at 0.0, and a
    # rung does not cut a tie: design note 76), so eta 3 keeps one and two never finish
    spec = SelectionSpec(name="successive_halving", candidates=candidates, r0=1, eta=3, val_fraction=0.3)
    where = tmp_path / "altered"
    where.mkdir()
    runs = {}
    for name, data in (("original", tiny_data), ("altered", _altered_test_labels(tiny_data, where))):
        parts = dataclasses.replace(tiny_parts(tiny_hub, *data, rounds=2, lr=0.05), selection=spec)
        runs[name] = run_selection(parts, tmp_path / name)["selection"]
    a, b = runs["original"], runs["altered"]
    assert a["search"]["ranking"] == b["search"]["ranking"] and a["chosen"] == b["chosen"]
    assert a["search"]["scores"] == b["search"]["scores"] and a["search"]["rungs"] == b["search"]["rungs"]

    def curves(run, key):
        return {c: [h.get(key) for h in hist] for c, hist in run["histories"].items()}

    # the validation curves are the same numbers; the altered labels did reach the test metrics, which
    # a search ranking on them (the old validation_key) would have read
    assert curves(a, "client_val_accuracy_mean") == curves(b, "client_val_accuracy_mean")
    for key in ("test_accuracy", "client_test_accuracy_mean"):
        assert curves(a, key) != curves(b, key), key
    # the test splits were scored only in the search's last round (by the 1 of 3 its last rung trained)
    tested = {c: [h["round"] for h in hist if "test_accuracy" in h] for c, hist in a["histories"].items()}
    finished = {c for c, n in a["search"]["rounds_trained"].items() if n == 2}
    assert len(finished) == 1 and tested == {c: [2] if c in finished else [] for c in NAMES}
    # replayed on its own validation curves (ReplayOracle's default key), the search decides as it did live
    replay = successive_halving(list(NAMES), ReplayOracle(b["histories"]), 1, 3, 2)
    assert replay.ranking == a["search"]["ranking"]
