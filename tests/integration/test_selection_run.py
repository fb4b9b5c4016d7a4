"""Selection runs end to end on tiny candidates: statistics methods, search methods, fine-tune.

Three tiny candidates of different architectures (BERT with a pooler, RoBERTa, GPT-2) in one
hub; the inline executor keeps this fast.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from support.experiments import tiny_parts

from vista.data.fednlp import FedNLPData, FedNLPPartition
from vista.drivers.selection import run_selection
from vista.models.hub import ModelSpec
from vista.selection import metrics
from vista.selection.features import FrozenEncoder
from vista.selection.privacy import PrivacySpec
from vista.selection.search import ReplayOracle, hybrid, successive_halving
from vista.selection.spec import SelectionSpec
from vista.selection.stats import SufficientStats

NAMES = ("bert", "roberta", "gpt2")


@pytest.fixture(scope="module")
def candidates(arch_hub):
    return tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in NAMES)


def _parts(tiny_hub, tiny_data, candidates, spec, **fl):
    parts = tiny_parts(tiny_hub, *tiny_data, **{"rounds": 2, **fl})
    return dataclasses.replace(parts, selection=spec)


def _pooled_stats(arch_hub, tiny_data, name, privacy, shift=False, basis=None):
    """What a server holding every client's admitted examples would compute, directly (with the
    clients' own batches, so the features are the same floats and only aggregation differs).
    ``shift``: around the server's shift, as the run accumulates (the mean of the probe texts'
    features, rounded to float32); the projected statistics are of the centred features.
    ``basis``: every feature (the probe's too) multiplied by it first (``selection.project_dim``)."""
    data, part = tiny_data
    fed = FedNLPData(data)
    clients = FedNLPPartition(part, "uniform").clients
    enc = FrozenEncoder(arch_hub / name)
    if basis is not None:
        from vista.selection.runtime import _Projected

        enc = _Projected(enc, basis, np.zeros(basis.shape[0]))
    from vista.selection.privacy import admit
    from vista.selection.runtime import PROBE_TEXTS

    centre = None
    if shift:
        probe = np.concatenate(list(enc.features(list(PROBE_TEXTS), len(PROBE_TEXTS), 32)))
        centre = probe.astype(np.float64).mean(axis=0).astype(np.float32).astype(np.float64)

    feats, labels = [], []
    for c in sorted(clients):
        idx = np.asarray(clients[c].train)
        y = fed.labels(idx)
        adm = admit(y, fed.num_labels, privacy)
        if not adm.eligible:
            continue
        texts = [t for t, k in zip(fed.texts(idx), adm.keep, strict=True) if k]
        feats += list(enc.features(texts, 32, 32))
        labels.append(y[adm.keep])
    f, y = np.concatenate(feats), np.concatenate(labels)
    stats = SufficientStats.from_features(f, y, fed.num_labels, per_class=True, shift=centre)
    projected = SufficientStats.from_features((f.astype(np.float64) - stats.mean()) @ metrics.pca_basis(stats), y,
                                              fed.num_labels, per_class=True)
    return stats, projected


def test_statistics_selection_equals_pooled_scores(arch_hub, tiny_hub, tiny_data, candidates, tmp_path,
                                                   one_torch_thread):
    privacy = PrivacySpec(min_examples=8, min_per_class=2, secure_agg=True)
    spec = SelectionSpec(name="logme", candidates=candidates, privacy=privacy,
                         scores=("hscore", "reg_hscore", "transrate", "gbc", "avg_logme", "borda", "param_prior",
                                 "random"))
    summary = run_selection(_parts(tiny_hub, tiny_data, candidates, spec), tmp_path / "sel")
    sel = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert sel["chosen"] == summary["chosen"] == max(sel["scores"]["logme"], key=sel["scores"]["logme"].get)
    assert sorted(sel["ranking"]) == sorted(NAMES)
    assert sel["privacy"]["secure_agg"] is True
    # The federated (masked, fixed-point, GBC in two rounds) score equals the pooled one (to 1e-8 on
    # the cases of tests/unit/test_selection_robust.py). These random tiny encoders' features are a
    # large mean plus a spread 300 times smaller, with eigenvalues all the way down to the noise
    # floor, where summation order moves the H-scores by up to ~2e-8: 1e-6 here (1e-3 before the
    # server's shift)
    for name in NAMES:
        pooled, projected = _pooled_stats(arch_hub, tiny_data, name, privacy, shift=True)
        for s in ("logme", "hscore", "reg_hscore", "transrate"):
            assert sel["scores"][s][name] == pytest.approx(getattr(metrics, s)(pooled), rel=1e-6), (s, name)
        # GBC's PCA basis: where these random encoders' covariance spectrum is nearly degenerate,
        # rounding rotates the basis inside the near-equal eigenspaces, and diagonal Gaussians are
        # not rotation invariant (1e-2 here before the shift and the rank-limited basis); the
        # two-round exactness to 1e-8: tests/unit/test_selection_robust.py
        # (seen: 4e-6 apart in one run of several, so 1e-5)
        assert sel["scores"]["gbc"][name] == pytest.approx(metrics.gbc(projected), rel=1e-5), name
        # H-score's caveat (N not much above D) is the pooled statistics' caveat, recorded per candidate
        assert sel["caveats"].get("hscore", {}).get(name) == metrics.hscore_caveat(pooled), name
    assert set(sel["scores"]["borda"]) == set(NAMES) and sel["baseline_voters"] == 4
    # cost: every admitted example of every client through every candidate, once: GBC's projection
    # round reads round 1's features back (selection.feature_cache_mb; it encoded again before)
    admitted = sum(r["examples"] for r in sel["clients"])
    assert sel["cost"]["forward_passes"] == admitted * len(NAMES) and sel["cost"]["rounds"] == 2
    assert not (tmp_path / "sel" / "feature_cache").exists()  # deleted when the round ends
    assert sel["cost"]["bytes_up"] > 0 and sel["cost"]["backward_passes"] == 0
    rows = [json.loads(x) for x in (tmp_path / "sel" / "selection.jsonl").read_text().splitlines()]
    assert [r["candidate"] for r in rows] == sel["ranking"]
    steps = json.loads((tmp_path / "sel" / "event_pipeline.json").read_text())["steps"]
    assert [s["name"] for s in steps if s["name"] in ("client_stats", "merge_and_score", "client_gbc_stats")] == \
        ["client_stats", "merge_and_score", "client_gbc_stats"]


def test_a_public_projection_scores_the_projected_features_exactly(arch_hub, tiny_hub, tiny_data, candidates,
                                                                   tmp_path, one_torch_thread):
    """``selection.project_dim``: every client (and the probe) multiplies its features by the same
    public random basis, so the federated scores are the pooled scores of the projected features,
    and the run's statistics are k-dimensional."""
    from vista.selection.runtime import public_basis

    k = 6
    privacy = PrivacySpec(min_examples=8, min_per_class=2, secure_agg=True)
    spec = SelectionSpec(name="logme", candidates=candidates, privacy=privacy, scores=("hscore", "gbc"),
                         project_dim=k)
    parts = _parts(tiny_hub, tiny_data, candidates, spec)
    run_selection(parts, tmp_path / "sel")
    sel = json.loads((tmp_path / "sel" / "selection.json").read_text())
    for name in NAMES:
        dim = FrozenEncoder(arch_hub / name).dim
        basis = public_basis(dim, k, parts.seed, name)
        assert basis.shape == (dim, k) and np.allclose(basis.T @ basis, np.eye(k), atol=1e-12)
        pooled, projected = _pooled_stats(arch_hub, tiny_data, name, privacy, shift=True, basis=basis)
        assert pooled.dim == k
        for s in ("logme", "hscore"):
            assert sel["scores"][s][name] == pytest.approx(getattr(metrics, s)(pooled), rel=1e-6), (s, name)
        assert sel["scores"]["gbc"][name] == pytest.approx(metrics.gbc(projected), rel=1e-5), name
    assert sel["dims"] == {n: k for n in NAMES} and sel["project_dim"] == k
    # public and fixed: the same basis for the same seed and candidate, another for another
    assert np.array_equal(public_basis(32, k, 0, "bert"), public_basis(32, k, 0, "bert"))
    assert not np.allclose(public_basis(32, k, 0, "bert"), public_basis(32, k, 0, "gpt2"))
    assert not np.allclose(public_basis(32, k, 0, "bert"), public_basis(32, k, 1, "bert"))


def test_a_saturated_hscore_is_recorded_and_said(tiny_hub, tiny_data, candidates, tmp_path, one_torch_thread,
                                                 capsys):
    """Fewer texts than feature dimensions (4 clients x 4 texts, D = 32): every candidate's H-score is
    C - 1 whatever it knows; selection.json's caveats and the run's output say so."""
    privacy = PrivacySpec(min_examples=1, min_per_class=1, secure_agg=False)
    spec = SelectionSpec(name="hscore", candidates=candidates, privacy=privacy, max_texts_per_client=4)
    run_selection(_parts(tiny_hub, tiny_data, candidates, spec), tmp_path / "sel")
    sel = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert sum(r["examples"] for r in sel["clients"]) == 16
    assert sorted(sel["caveats"]["hscore"]) == sorted(NAMES)
    for name in NAMES:
        assert "saturated" in sel["caveats"]["hscore"][name]
    classes = sel["num_labels"]
    assert all(v <= classes - 1 + 1e-9 for v in sel["scores"]["hscore"].values())
    out = capsys.readouterr().out
    assert out.count("selection: caveat: hscore of ") == len(NAMES)


def test_live_successive_halving_equals_replay_of_brute_force(tiny_hub, tiny_data, candidates, tmp_path,
                                                              one_torch_thread):
    # a validation split of 30% and lr 0.05, so that one round separates the tiny candidates (at
    # 10% they all sit at 0.0, a tie no rung cuts: design note 76); eta 3 keeps the best one
    val, lr = 0.3, 0.05
    bf = run_selection(_parts(tiny_hub, tiny_data, candidates, SelectionSpec(
        name="brute_force", candidates=candidates, val_fraction=val), lr=lr), tmp_path / "bf")["selection"]
    assert bf["search"]["rounds_trained"] == {n: 2 for n in NAMES}
    sh = run_selection(_parts(tiny_hub, tiny_data, candidates, SelectionSpec(
        name="successive_halving", candidates=candidates, r0=1, eta=3, val_fraction=val), lr=lr),
                       tmp_path / "sh")["selection"]
    replay = successive_halving(list(NAMES), ReplayOracle(bf["histories"]), 1, 3, 2)
    assert sh["chosen"] == replay.chosen and sh["ranking"] == replay.ranking
    live, rep = sh["search"]["cost"], replay.cost.to_dict()
    for k in ("forward_passes", "backward_passes", "bytes_up", "bytes_down", "rounds"):
        assert live[k] == rep[k], k
    assert live["rounds"] == 3 + 1 < bf["cost"]["rounds"] == 6  # one survivor of the first rung
    # the survivor was continued, not retrained: its stretches are separate run directories
    chosen = sh["chosen"]
    assert sorted(p.name for p in (tmp_path / "sh" / "search" / chosen).iterdir()) == ["rounds_1-1", "rounds_2-2"]
    # hybrid shortlists by gbc_prior unless told (auto from design note 70 to 89), then halves like the replay; its shortlist
    # round honours the sampling knobs hybrid.yaml sets (design note 74), here a cap of 8 the tiny clients feel
    spec = SelectionSpec(name="hybrid", candidates=candidates, max_texts_per_client=8, max_seq_len=32,
                         val_fraction=val)
    hy = run_selection(_parts(tiny_hub, tiny_data, candidates, spec, lr=lr), tmp_path / "hy")["selection"]
    seeded = hybrid(hy["scores"]["gbc_prior"], ReplayOracle(bf["histories"]), 2, 1, 2, 2)
    assert set(hy["scores"]) >= {"gbc_prior", "gbc", "param_prior"} and "logme" not in hy["scores"]
    assert hy["chosen"] == seeded.chosen and hy["search"]["cost"]["rounds"] == seeded.cost.rounds
    stats = json.loads((tmp_path / "hy" / "selection.json").read_text())["clients"]
    # no client encodes past the cap and one reaches it (the guard withholds a client's rare classes after it)
    assert stats and max(r["examples"] for r in stats) == 8


def test_then_finetune_trains_the_chosen_model(tiny_hub, tiny_data, candidates, tmp_path, one_torch_thread):
    spec = SelectionSpec(name="param_prior", candidates=candidates, then_finetune=True)
    summary = run_selection(_parts(tiny_hub, tiny_data, candidates, spec), tmp_path / "ft")
    sel = summary["selection"]
    params = sel["params"]
    assert sel["chosen"] == max(params, key=params.get) and sel["cost"]["forward_passes"] == 0
    ft = json.loads((tmp_path / "ft" / "finetune" / "summary.json").read_text())
    assert ft["model"] == sel["chosen"] and ft["rounds"] == 2
    assert summary["test_accuracy"] == ft["test_accuracy"]


def test_a_round_that_admits_no_client_is_a_user_error(tiny_hub, tiny_data, candidates, tmp_path):
    """auto caps each client's texts (48 by default): a cap under the guard's min_examples admits
    nobody, and the run says so in one line instead of failing in GBC's PCA round."""
    from vista.errors import UserError

    spec = SelectionSpec(name="auto", candidates=candidates, max_texts_per_client=4)  # GUARDED: min 8
    with pytest.raises(UserError, match=r"admitted none of the 4 clients .*min_examples=8.*at most 4 texts \(selection.max_texts_per_client"):
        run_selection(_parts(tiny_hub, tiny_data, candidates, spec), tmp_path / "none")
    # a floor on the round's texts (design note 71): 4 clients x 4 texts < 48, so each cap rises to 12
    floored = dataclasses.replace(spec, min_texts_per_round=48)
    run_selection(_parts(tiny_hub, tiny_data, candidates, floored), tmp_path / "floor")
    sel = json.loads((tmp_path / "floor" / "selection.json").read_text())
    assert all(r["eligible"] for r in sel["clients"]) and max(r["examples"] for r in sel["clients"]) > 4
    assert all(r["examples"] <= 12 for r in sel["clients"])


def test_selection_errors_are_useful(tiny_hub, tiny_data, candidates, tmp_path):
    missing = (*candidates, ModelSpec(name="nope", hub_dir=str(tmp_path), hub_name="nope"))
    with pytest.raises(Exception, match="nope"):
        run_selection(_parts(tiny_hub, tiny_data, candidates, SelectionSpec(name="logme", candidates=missing)),
                      tmp_path / "x")
    with pytest.raises(ValueError, match="at least 2"):
        run_selection(_parts(tiny_hub, tiny_data, candidates, SelectionSpec(name="logme", candidates=candidates[:1])),
                      tmp_path / "y")
    with pytest.raises(ValueError, match="unknown method"):
        SelectionSpec(name="magic")


def test_search_then_finetune_continues_the_chosen_run(tiny_hub, tiny_data, candidates, tmp_path,
                                                       one_torch_thread):
    spec = SelectionSpec(name="successive_halving", candidates=candidates[:2], r0=1, eta=2, max_rounds=1,
                         then_finetune=True)
    sel = run_selection(_parts(tiny_hub, tiny_data, candidates, spec, rounds=2), tmp_path / "sh")["selection"]
    ft = sel["finetune"]
    assert ft["continued_from_round"] == 1 and ft["rounds"] == 2 and ft["model"] == sel["chosen"]
    rows = [json.loads(x) for x in (tmp_path / "sh" / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [2]  # round 1 came from the search


def _no_timing(x):
    if isinstance(x, dict):
        return {k: _no_timing(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list):
        return [_no_timing(v) for v in x]
    return x


def test_a_resumed_search_continues_in_the_rung_it_was_in(tiny_hub, tiny_data, candidates, tmp_path,
                                                          one_torch_thread):
    """Successive halving stopped inside a stretch of its last rung: `resume` reads the finished
    stretches back (not retrained), continues the interrupted one from its checkpoint, and
    chooses exactly as the uninterrupted search did."""
    import shutil

    spec = SelectionSpec(name="successive_halving", candidates=candidates, r0=1, eta=2)
    parts = _parts(tiny_hub, tiny_data, candidates, spec, rounds=4)
    full = run_selection(parts, tmp_path / "full")["selection"]
    stretches = sorted((tmp_path / "full" / "search").glob("*/rounds_*"))
    last = max(stretches, key=lambda p: int(p.name.split("-")[1]))  # the last rung's longest stretch
    assert int(last.name.split("-")[1]) - int(last.name.split("_")[1].split("-")[0]) >= 1  # 2+ rounds long
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "full", stopped)
    interrupted = stopped / last.relative_to(tmp_path / "full")
    ckpts = sorted((interrupted / "checkpoints").iterdir())
    shutil.rmtree(ckpts[-1])  # killed after its first rounds: only the older checkpoint survives
    (interrupted / "summary.json").unlink()
    for f in ("selection.json", "summary.json"):
        (stopped / f).unlink()
    before = {p: p.stat().st_mtime_ns for p in (stopped / "search").glob("*/rounds_*/summary.json")}
    resumed = run_selection(parts, stopped, from_checkpoint=True)["selection"]
    assert _no_timing(resumed) == _no_timing(full)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished stretches were read, not retrained
    steps = json.loads((interrupted / "event_pipeline.json").read_text())["steps"]
    assert [s["name"] for s in steps].count("resume") == 1


def test_a_searchs_stretches_train_at_the_rates_of_one_run_of_the_whole_search(tiny_hub, tiny_data, candidates,
                                                                               tmp_path, one_torch_thread):
    """Under a cosine rate, a candidate continued over rungs of 1, 2 and 4 rounds trains each round
    at the rate of one 4-round run, not of a run ending at its rung (fl.lr_horizon)."""
    from vista.fl.lr_schedule import round_lr
    from vista.fl.spec import FLSpec

    spec = SelectionSpec(name="successive_halving", candidates=candidates, r0=1, eta=2, val_fraction=0.3)
    run_selection(_parts(tiny_hub, tiny_data, candidates, spec, rounds=4, lr=0.05, lr_schedule="cosine"),
                  tmp_path / "sh")
    whole = FLSpec(rounds=4, lr=0.05, lr_schedule="cosine")
    seen = {}
    for stretch in (tmp_path / "sh" / "search").glob("*/rounds_*"):
        for line in (stretch / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            seen[row["round"]] = row["lr"]
    assert sorted(seen) == [1, 2, 3, 4]  # the survivor reached the last rung through stretches
    assert seen == pytest.approx({r: round_lr(whole, r) for r in seen})
    assert seen[2] == pytest.approx(0.05 * (1 + np.cos(np.pi / 4)) / 2)  # not a 2-round run's 0.025
