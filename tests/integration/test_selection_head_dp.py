"""The head probe under DP in a selection run (design note 97): the driver's jobs give exactly the
curve :func:`vista.selection.head_dp.simulate_dp` computes in one process from the same features and
noise seeds, masked or in the clear, and ``selection.json`` accounts for its releases."""

from __future__ import annotations

import dataclasses
import math

import pytest
from test_selection_head import NAMES, _run, _stored_rows

from vista.data.fednlp import FedNLPData
from vista.models.hub import ModelSpec
from vista.selection.head_dp import simulate_dp
from vista.selection.privacy import GUARDED
from vista.selection.runtime import StatisticsRuntime
from vista.selection.spec import SelectionSpec

DP = dataclasses.replace(GUARDED, dp_epsilon=8.0)


def _same(a: list[dict], b: list[dict]) -> bool:
    """Curves equal float for float, NaN (a round without a report) equal to NaN."""
    def key(p: dict) -> dict:
        return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in p.items()}
    return [key(p) for p in a] == [key(p) for p in b]


@pytest.fixture(scope="module")
def candidates(arch_hub):
    return tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in NAMES)


def test_the_dp_run_gives_the_simulated_curve_and_accounts_for_it(tiny_hub, tiny_data, candidates, tmp_path,
                                                                   one_torch_thread):
    store = tmp_path / "store"
    sel, parts = _run(tiny_hub, tiny_data, candidates, tmp_path / "run", feature_store=str(store), privacy=DP)
    fed = FedNLPData(tiny_data[0])
    head = SelectionSpec(head_rounds=3).head_spec(parts.fl)
    rep = sel["privacy"]
    releases = rep["composition"]["total"]
    assert rep["composition"]["releases"]["head"] == len(NAMES) * 4  # 3 gradient sums and a report each
    assert releases == len(NAMES) * (1 + 4)  # the statistics round's counts, then the probe's sums
    assert rep["epsilon"] == pytest.approx(8.0, rel=1e-3)  # the budget, composed over all of them
    z = rep["composition"]["release_noise_multiplier"]  # two blocks a release: each at z sqrt 2 its sensitivity
    assert rep["head_sigma"] == pytest.approx({"g": z * math.sqrt(2) * math.sqrt(2 * (DP.clip_norm**2 + 1)),
                                               "n": z * math.sqrt(2), "correct": z * math.sqrt(2),
                                               "val_n": z * math.sqrt(2)})
    for i, name in enumerate(NAMES):
        curve = simulate_dp(_stored_rows(store, tiny_data, name), fed.num_labels, head, parts.seed, DP, releases,
                            cohort=sel["cohort"], candidate=i)
        assert _same(sel["head_curves"][name], curve)  # every float, NaN where no report went up
        assert [math.isnan(p["val_accuracy"]) for p in curve] == [True, True, True, False]
        assert sel["scores"]["head_probe"][name] == curve[-1]["val_accuracy"]
    # the clear path adds the same noisy blocks: the same curve
    clear, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "clear", feature_store=str(store),
                    privacy=dataclasses.replace(DP, secure_agg=False))
    assert all(_same(clear["head_curves"][n], sel["head_curves"][n]) for n in NAMES)


def test_auto_runs_under_dp_with_both_probes_and_a_lost_share_is_reported(tiny_hub, tiny_data, candidates, tmp_path,
                                                                           one_torch_thread, monkeypatch):
    sel, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "auto", name_="auto", privacy=DP)
    comp = sel["privacy"]["composition"]
    assert comp["releases"]["head"] == 2 * len(NAMES) * 4 and comp["releases"]["statistics"] == 2 * len(NAMES)
    assert sel["privacy"]["epsilon"] == pytest.approx(8.0, rel=1e-3)
    assert set(sel["head_curves_centred"]) == set(NAMES)
    assert all(v is not None for v in sel["scores"]["auto"].values()) and sel["ranked_by"] == "auto"

    real = StatisticsRuntime.head_train

    def flaky(self, key, payload, shared):  # noqa: ANN001
        if key == (0, 1, 0) and payload["round"] == 2:
            raise ConnectionError("client 1 lost its connection")
        return real(self, key, payload, shared)

    monkeypatch.setattr(StatisticsRuntime, "head_train", flaky)
    lost, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "lost", name_="head_probe", privacy=DP,
                   fl={"client_failures": "drop"})
    assert lost["privacy"]["composition"]["missing_shares"] == [1]  # one sum lacks one client's noise share
    assert lost["privacy"]["epsilon"] > 8.0
    (failed,) = lost["failed_jobs"]
    assert (failed["candidate"], failed["client"], failed["head_round"]) == (NAMES[0], 1, 2)
