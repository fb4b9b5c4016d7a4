"""A client encodes its texts once per candidate and run: every round-1 score reads the same
statistics, and GBC's PCA round reads the round-1 features back from the feature cache, on
whichever worker it runs. Sampling clients and capping texts is recorded in selection.json."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
from support.experiments import tiny_parts

from vista.drivers.selection import run_selection
from vista.models.hub import ModelSpec
from vista.scheduler import SchedulerSpec
from vista.selection.features import FrozenEncoder
from vista.selection.privacy import PrivacySpec
from vista.selection.ranking import rank_by
from vista.selection.runtime import PROBE_TEXTS
from vista.selection.spec import SelectionSpec

NAMES = ("bert", "roberta", "gpt2")
SCORES = ("gbc", "hscore", "reg_hscore", "transrate", "avg_logme")
PRIVACY = PrivacySpec(min_examples=4, min_per_class=2, secure_agg=True)


@pytest.fixture(scope="module")
def candidates(arch_hub):
    return tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in NAMES)


@pytest.fixture
def encoded(monkeypatch):
    """Texts through each candidate's encoder (by model_type), counted in this process."""
    counts: Counter[str] = Counter()
    original = FrozenEncoder.features

    def features(self, texts, batch_size, max_seq_len):
        counts[self.model_type] += len(texts)
        yield from original(self, texts, batch_size, max_seq_len)

    monkeypatch.setattr(FrozenEncoder, "features", features)
    return counts


def _run(tiny_hub, tiny_data, tmp_path, candidates, name="logme", workers=0, **spec):
    sel = SelectionSpec(name=name, candidates=candidates, privacy=PRIVACY, **spec)
    parts = dataclasses.replace(tiny_parts(tiny_hub, *tiny_data), selection=sel,
                                scheduler=SchedulerSpec(num_workers=workers, device="cpu"))
    run_selection(parts, tmp_path)
    return json.loads((tmp_path / "selection.json").read_text())


def test_every_score_and_round_share_one_encode(tiny_hub, tiny_data, candidates, tmp_path, encoded,
                                                one_torch_thread):
    sel = _run(tiny_hub, tiny_data, tmp_path / "cached", candidates, scores=SCORES)
    admitted = sum(r["examples"] for r in sel["clients"])
    assert 36 <= admitted <= 48 and sel["cost"]["rounds"] == 2  # 4 clients x 12 texts less rare classes; 2 rounds
    # logme, gbc (both rounds), hscore, reg_hscore, transrate, avg_logme: each text once per
    # candidate, plus the server's 4 public probe texts
    assert encoded == {"bert": admitted + len(PROBE_TEXTS), "roberta": admitted + len(PROBE_TEXTS),
                       "gpt2": admitted + len(PROBE_TEXTS)}
    assert sel["cost"]["forward_passes"] == admitted * len(NAMES)

    encoded.clear()  # without the cache the PCA round encodes again, and the scores do not change
    plain = _run(tiny_hub, tiny_data, tmp_path / "plain", candidates, scores=SCORES, feature_cache_mb=0)
    assert encoded == {n: 2 * admitted + len(PROBE_TEXTS) for n in ("bert", "roberta", "gpt2")}
    assert plain["cost"]["forward_passes"] == 2 * admitted * len(NAMES)
    for s in ("logme", *SCORES):
        assert plain["scores"][s] == pytest.approx(sel["scores"][s], rel=1e-12, abs=0), s


def test_a_capped_head_probe_reads_its_rows_from_the_uncapped_store(tiny_hub, tiny_data, candidates, tmp_path,
                                                                     encoded, one_torch_thread):
    """auto (both head probes) re-scored at a text cap from a store of all the texts (privacy_scale.py):
    the probes read the capped rows the statistics round read, sliced from the uncapped entries, and
    encode nothing (they encoded every capped text again before: the capped key is never written)."""
    store = tmp_path / "store"
    _run(tiny_hub, tiny_data, tmp_path / "all", candidates, name="auto", feature_store=str(store))
    kept = sorted(p.name for p in store.glob("*.npy"))
    encoded.clear()
    sliced = _run(tiny_hub, tiny_data, tmp_path / "sliced", candidates, name="auto", feature_store=str(store),
                  max_texts_per_client=8)
    assert not encoded and sliced["cost"]["forward_passes"] == 0
    assert sorted(p.name for p in store.glob("*.npy")) == kept  # read, never written
    plain = _run(tiny_hub, tiny_data, tmp_path / "plain", candidates, name="auto", max_texts_per_client=8)
    assert plain["cost"]["forward_passes"] > 0
    # the same capped texts: the same order, curves within the store's float32 rounding of other batches
    assert sliced["ranking"] == plain["ranking"]
    for probe in ("head_curves", "head_curves_centred"):
        for n in NAMES:
            got = [p["val_accuracy"] for p in sliced[probe][n]]
            assert got == pytest.approx([p["val_accuracy"] for p in plain[probe][n]], abs=1e-6), (probe, n)


def test_auto_on_a_sample_of_clients_and_texts(tiny_hub, tiny_data, candidates, tmp_path, one_torch_thread):
    sel = _run(tiny_hub, tiny_data, tmp_path, candidates, name="auto", client_fraction=0.5, max_texts_per_client=8,
               max_seq_len=16)
    assert sel["resolved"]["auto"]["resolved_to"] == "head_pair" and sel["ranked_by"] == "auto"
    # what each classifier reads (design note 69): the registry gives auto no pooling of its own
    assert sel["pooling"] == "auto" and sel["resolved"]["auto"]["pooling"] is None
    assert set(sel["scores"]) == {"auto", "head_probe", "head_probe_centred", "gbc", "param_prior"}
    assert sel["ranking"] == rank_by(sel["scores"]["auto"]) and sel["chosen"] == sel["ranking"][0]
    # both probes ran on the sampled clients' cached features
    assert set(sel["head_curves"]) == set(sel["head_curves_centred"]) == set(NAMES)
    assert len(sel["cohort"]) == 2 and set(sel["cohort"]) <= {0, 1, 2, 3} and sel["num_clients"] == 4
    assert [r["client"] for r in sel["clients"]] == sel["cohort"]
    assert all(r["examples"] <= 8 for r in sel["clients"])
    admitted = sum(r["examples"] for r in sel["clients"])
    # one encode per text and candidate: GBC's PCA round and the probe's rounds read the cache
    assert admitted <= 16 and sel["cost"]["forward_passes"] == admitted * len(NAMES)


def test_the_pca_round_reuses_features_across_worker_processes(tiny_hub, tiny_data, candidates, tmp_path):
    sel = _run(tiny_hub, tiny_data, tmp_path, candidates, name="gbc", workers=2)
    admitted = sum(r["examples"] for r in sel["clients"])
    # a job goes to any idle worker: the cache is on the host's disk, so every PCA-round job hits
    assert sel["cost"]["forward_passes"] == admitted * len(NAMES) and sel["cost"]["rounds"] == 2
    assert not (tmp_path / "feature_cache").exists()


def test_a_feature_store_lets_a_second_run_encode_nothing(tiny_hub, tiny_data, candidates, tmp_path, encoded,
                                                          one_torch_thread):
    """A study re-scoring the same clients (a DP sweep) keeps their features across runs: the
    second run reads them back (the server's public probe texts' too), encodes nothing and
    scores the same."""
    store = tmp_path / "store"
    first = _run(tiny_hub, tiny_data, tmp_path / "a", candidates, scores=SCORES, feature_store=str(store))
    admitted = sum(r["examples"] for r in first["clients"])
    assert encoded == {n: admitted + len(PROBE_TEXTS) for n in NAMES}  # round 1 fills it, GBC's round reads it
    kept = sorted(p.name for p in store.glob("*.npy"))
    assert len(kept) == len(NAMES) * (4 + 1)  # one file per candidate and client (and the probe), kept after the run

    encoded.clear()
    second = _run(tiny_hub, tiny_data, tmp_path / "b", candidates, scores=SCORES, feature_store=str(store))
    assert not encoded and second["cost"]["forward_passes"] == 0  # not even the public probe texts
    assert sorted(p.name for p in store.glob("*.npy")) == kept
    for s in ("logme", *SCORES):
        assert second["scores"][s] == pytest.approx(first["scores"][s], rel=1e-12, abs=0), s

    with pytest.raises(Exception, match="feature_cache_mb > 0"):
        SelectionSpec(name="logme", candidates=candidates, feature_store=str(store), feature_cache_mb=0)


def test_a_capped_rescore_reads_its_rows_from_the_uncapped_store(tiny_hub, tiny_data, candidates, tmp_path, encoded,
                                                                 one_torch_thread):
    """A study measuring what a text cap costs (sampling_cost.py) re-scores from the store of all
    the texts: the capped texts' rows are sliced out, nothing is encoded, and the scores are the
    ones a capped run that encodes its texts gets."""
    store = tmp_path / "store"
    _run(tiny_hub, tiny_data, tmp_path / "all", candidates, scores=SCORES, feature_store=str(store))
    kept = sorted(p.name for p in store.glob("*.npy"))

    encoded.clear()
    sliced = _run(tiny_hub, tiny_data, tmp_path / "sliced", candidates, scores=SCORES, feature_store=str(store),
                  max_texts_per_client=8)
    assert not encoded and sliced["cost"]["forward_passes"] == 0
    assert sorted(p.name for p in store.glob("*.npy")) == kept  # read, never written
    assert all(r["examples"] <= 8 for r in sliced["clients"])

    encoded.clear()
    own = tmp_path / "own"  # a capped run that encodes its texts, keeping what it encoded
    plain = _run(tiny_hub, tiny_data, tmp_path / "plain", candidates, scores=SCORES, max_texts_per_client=8,
                 feature_store=str(own))
    capped_texts = sum(r["examples"] for r in plain["clients"])
    assert encoded == {n: capped_texts + len(PROBE_TEXTS) for n in NAMES}
    assert [r["examples"] for r in sliced["clients"]] == [r["examples"] for r in plain["clients"]]
    # every row a capped client encoded is a row of its uncapped entry (float32 rounding aside:
    # the store's texts were encoded in other batches, other padding lengths)
    full = [np.load(p) for p in store.glob("*.npy")]
    for p in own.glob("*.npy"):
        rows = np.load(p)
        assert any(f.shape[1] == rows.shape[1] and f.shape[0] >= rows.shape[0]
                   and all(np.abs(f - r).max(axis=1).min() < 1e-5 for r in rows) for f in full), p.name
    for s in ("logme", "hscore", "avg_logme"):
        assert sliced["scores"][s] == pytest.approx(plain["scores"][s], rel=1e-6), s
    # per-class moments of 2-3 texts (GBC's variances in the PCA space, TransRate's and the
    # Ledoit-Wolf shrinkage's) magnify that rounding (GBC by up to 4.5e-4 in the runs seen)
    for s in ("gbc", "reg_hscore", "transrate"):
        assert sliced["scores"][s] == pytest.approx(plain["scores"][s], rel=1e-3), s
