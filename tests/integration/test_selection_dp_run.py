"""A selection run with DP end to end on tiny candidates: one budget for the whole run, composed
over every release (two statistics rounds for GBC, the clients' own scores and weights for
avg_logme and borda), and reported in selection.json."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from support.experiments import tiny_parts

from vista.drivers.selection import run_selection
from vista.models.hub import ModelSpec
from vista.selection.privacy import PrivacySpec, epsilon_for, noise_multiplier_for
from vista.selection.spec import SelectionSpec

NAMES = ("bert", "roberta", "gpt2")


def test_dp_run_reports_the_composed_budget(arch_hub, tiny_hub, tiny_data, tmp_path, one_torch_thread):
    candidates = tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in NAMES)
    privacy = PrivacySpec(min_examples=8, min_per_class=2, secure_agg=True, dp_epsilon=3.0, clip_norm=4.0)
    spec = SelectionSpec(name="logme", candidates=candidates, privacy=privacy, scores=("gbc", "avg_logme", "borda"))
    parts = dataclasses.replace(tiny_parts(tiny_hub, *tiny_data), selection=spec)
    run_selection(parts, tmp_path / "sel")
    sel = json.loads((tmp_path / "sel" / "selection.json").read_text())
    rep = sel["privacy"]
    comp = rep["composition"]
    # 3 candidates x 2 rounds of sums, 3 vectors of client scores, the weights once
    assert comp["releases"] == {"statistics": 6, "client_scores": 3, "client_weights": 1, "head": 0}
    assert comp["total"] == 10
    z = noise_multiplier_for(3.0, 1e-5) * math.sqrt(10)
    assert comp["release_noise_multiplier"] == pytest.approx(z)
    assert comp["release_epsilon"] == pytest.approx(epsilon_for(z, 1e-5)) and comp["release_epsilon"] < 1.5
    assert rep["epsilon"] == pytest.approx(3.0, rel=1e-3) and rep["budget"] == 3.0 and rep["delta"] == 1e-5
    assert comp["missing_shares"] == [] and comp["accountant"].startswith("dp_accounting PLD")
    assert rep["client_scores"] == "noised" and rep["score_sigma"] == pytest.approx(3 * z)
    # the noisy scores still rank: every candidate has a finite value of each score
    for s in ("logme", "gbc", "avg_logme", "borda"):
        assert all(v is not None and math.isfinite(v) for v in sel["scores"][s].values()), s
    assert sel["baseline_voters"] == 4
