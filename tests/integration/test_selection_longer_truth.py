"""A longer truth from one brute-force run: the test split scored every few rounds
(``StudyConfig.test_every``) gives the truth at each of those budgets, and the run's first rounds
are exactly the shorter run's (same seed, same partition), so one run checks a study's budget."""

from __future__ import annotations

import pytest

from vista.drivers.study import StudyConfig, run_setting
from vista.models.hub import ModelSpec


@pytest.fixture(scope="module")
def short_and_long(arch_hub, tiny_data, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("longer_truth")
    cands = tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in ("bert", "gpt2"))
    cfg = StudyConfig(candidates=cands, clients=4, clients_per_round=2, rounds=2, batch_size=8, max_seq_len=32,
                      num_workers=0, top_k=2)
    short = run_setting(cfg, tiny_data[0], "iid", 0, out / "short")
    longer = StudyConfig(**{**cfg.__dict__, "rounds": 4, "test_every": 2})
    return short, run_setting(longer, tiny_data[0], "iid", 0, out / "long"), out


def test_brute_force_scores_the_test_split_every_n_rounds_and_in_the_last(short_and_long):
    _, long, _ = short_and_long
    for c, curve in long["curves"].items():
        assert [("test_accuracy" in r) for r in curve] == [False, True, False, True], c
        assert long["truth"][c] == curve[-1]["test_accuracy"]
    assert long["budget"]["rounds"] == 4


def test_a_longer_run_begins_with_the_shorter_run_exactly(short_and_long):
    short, long, _ = short_and_long
    for c, curve in short["curves"].items():
        prefix = long["curves"][c][:2]
        assert [r["client_val_accuracy_mean"] for r in prefix] == [r["client_val_accuracy_mean"] for r in curve]
        assert [r["val_loss"] for r in prefix] == pytest.approx([r["val_loss"] for r in curve], rel=1e-6)
        assert prefix[-1]["test_accuracy"] == short["truth"][c]
    # the statistics round does not depend on the rounds: the same scores
    assert long["methods"]["logme"]["scores"] == pytest.approx(short["methods"]["logme"]["scores"], rel=1e-9)
