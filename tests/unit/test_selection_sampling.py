"""Cheaper statistics rounds: a seeded share of the clients (``selection.client_fraction``) and a
seeded cap on each client's texts (``selection.max_texts_per_client``), raised by a floor on the
round's texts (``selection.min_texts_per_round``); defaults change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from vista.config import ConfigError, validate
from vista.drivers.study import SHIPPED_AUTO
from vista.selection.sampling import capped, token_share
from vista.selection.scores import SCORES
from vista.selection.spec import SelectionSpec


def _compose(*overrides: str):
    with initialize_config_module(config_module="vista.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _spec(**kw) -> SelectionSpec:
    return SelectionSpec(name="auto", candidates=("a", "b"), **kw)


def test_defaults_keep_every_client_and_text_but_auto_and_hybrid_cap_their_texts():
    spec = _spec()
    assert spec.client_fraction == 1.0 and spec.max_texts_per_client is None and spec.cohort_size(10) is None
    cfg = validate(_compose("selection=logme"))["selection"]
    assert cfg["client_fraction"] == 1.0 and cfg["max_texts_per_client"] is None and cfg["max_seq_len"] is None
    assert cfg["feature_cache_mb"] == 1024 and cfg["min_texts_per_round"] is None
    # auto: every client, at most 48 texts each, at least 384 in the round, 32 tokens a text (design notes 70,
    # 71, 73: registered rules)
    cfg = validate(_compose("selection=auto"))["selection"]
    assert cfg["client_fraction"] == 1.0 and cfg["max_texts_per_client"] == 48 and cfg["max_seq_len"] == 32
    assert cfg["min_texts_per_round"] == 384
    assert {k: cfg[k] for k in SHIPPED_AUTO} == SHIPPED_AUTO  # the study's auto_shipped samples as auto.yaml
    # auto is head_pair (design note 96: a rule registered before a held-out run), which reads both probes, so
    # the flag stays off (it would centre both); head_gbc named is uncentred
    assert cfg["head_centre"] is False
    assert SCORES["auto"].alias_of == "head_pair"
    assert SelectionSpec(name="auto", candidates=("a", "b")).head_centrings() == (False, True)
    assert validate(_compose("selection=head_gbc"))["selection"]["head_centre"] is False
    # hybrid's shortlist round samples as auto does (design note 74: a registered replay), its search does not
    cfg = validate(_compose("selection=hybrid"))
    assert {k: cfg["selection"][k] for k in SHIPPED_AUTO} == SHIPPED_AUTO
    assert cfg["selection"]["val_fraction"] == 0.1 and cfg["fl"]["max_seq_len"] == 128


@pytest.mark.parametrize("fraction,available,size", [(0.5, 8, 4), (0.25, 10, 3), (0.3, 5, 2), (0.01, 8, 1),
                                                     (0.99, 3, 3), (1.0, 7, None)])
def test_client_fraction_rounds_half_up_and_keeps_at_least_one(fraction, available, size):
    assert _spec(client_fraction=fraction).cohort_size(available) == size


def test_clients_still_counts():
    assert _spec(clients=3).cohort_size(10) == 3


@pytest.mark.parametrize("cap,floor,scored,want", [
    (48, 384, 8, 48),  # the study's federation: the floor changes nothing
    (48, 384, 4, 96), (48, 384, 2, 192), (48, 384, 3, 128),  # ceil(384 / 3) = 128
    (48, 384, 16, 48), (48, 384, 0, 384),  # never below the cap; no client scored: the whole floor
    (48, None, 2, 48), (None, 384, 2, None),  # no floor: the cap; no cap: every text, the floor is moot
])
def test_the_floor_raises_the_cap_when_few_clients_are_scored(cap, floor, scored, want):
    assert _spec(max_texts_per_client=cap, min_texts_per_round=floor).texts_cap(scored) == want


def test_the_text_cap_is_a_seeded_sample_in_order():
    idx = np.arange(100, 120)
    a = capped(idx, 5, seed=11, client=2)
    assert len(a) == 5 and set(a) <= set(idx) and list(a) == sorted(a)
    assert np.array_equal(a, capped(idx, 5, seed=11, client=2))  # every candidate and round: the same texts
    assert not np.array_equal(a, capped(idx, 5, seed=11, client=3))  # each client its own draw
    assert not np.array_equal(a, capped(idx, 5, seed=12, client=2))
    assert capped(idx, None, 0, 0) is idx and capped(idx, 20, 0, 0) is idx and capped(idx, 50, 0, 0) is idx


@pytest.mark.parametrize("override,key", [
    ("selection.client_fraction=0", "selection.client_fraction"),
    ("selection.client_fraction=1.5", "selection.client_fraction"),
    ("selection.max_texts_per_client=0", "selection.max_texts_per_client"),
    ("selection.min_texts_per_round=0", "selection.min_texts_per_round"),
    ("selection.max_seq_len=0", "selection.max_seq_len"),
    ("selection.feature_cache_mb=-1", "selection.feature_cache_mb"),
])
def test_bad_values_are_one_line_errors(override, key):
    with pytest.raises(ConfigError) as info:
        validate(_compose("selection=auto", override))
    msg = str(info.value)
    assert msg.startswith(key + ":") and "\n" not in msg


def test_a_count_and_a_share_of_clients_are_not_both_set():
    with pytest.raises(ConfigError) as info:
        validate(_compose("selection=auto", "selection.clients=2", "selection.client_fraction=0.5"))
    assert str(info.value) == ("selection.client_fraction: cannot be 0.5 while selection.clients=2 is set: "
                               "sample by count or by share, not both")


def test_token_share_counts_what_truncation_keeps():
    # texts of 10, 50 and 200 tokens: at 128 they keep 10 + 50 + 128, at 32 they keep 10 + 32 + 32
    assert token_share([10, 50, 200], 32, 128) == pytest.approx(74 / 188)
    assert token_share([10, 20], 32, 128) == 1.0  # nothing past 32: a shorter round costs the same
    assert token_share([], 32, 128) == 1.0
