"""The validation split the searches rank on: held out of each client's training data, seeded
by the run seed, never the test split (vista.data.holdout, SelectionSpec's checks)."""

from __future__ import annotations

import numpy as np
import pytest

from vista.checks import FieldError
from vista.data.holdout import hold_out, holdout_size
from vista.fl.spec import FLSpec
from vista.selection.spec import SelectionSpec


@pytest.mark.parametrize(("n", "fraction", "k"), [
    (0, 0.1, 0), (1, 0.1, 0),  # nothing to hold out of a client with one text
    (2, 0.1, 1), (9, 0.1, 1), (10, 0.1, 1), (30, 0.1, 3), (100, 0.1, 10), (12, 0.25, 3),
    (2, 0.9, 1), (5, 0.99, 4),  # never all of them: one text stays to train on
    (100, 0.0, 0),  # no validation split
])
def test_holdout_size(n, fraction, k):
    assert holdout_size(n, fraction) == k


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_holdout_size_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match=r"lie in \[0, 1\)"):
        holdout_size(10, fraction)


def test_split_is_disjoint_complete_seeded_and_keeps_the_train_order():
    train = np.array([40, 3, 17, 8, 99, 23, 5, 61, 12, 30, 77, 2, 54, 19, 88, 41, 66, 7, 35, 90], dtype=np.int64)
    h = hold_out(train, 0.25, seed=42, client=3)
    assert len(h.val) == 5 and len(h.train) == 15
    assert not set(h.val) & set(h.train) and sorted([*h.val, *h.train]) == sorted(train)
    assert list(h.val) == sorted(h.val)
    assert list(h.train) == [i for i in train if i not in set(h.val)]  # the data order is the client's
    again = hold_out(train.copy(), 0.25, seed=42, client=3)
    assert np.array_equal(again.val, h.val) and np.array_equal(again.train, h.train)  # reproducible
    others = {tuple(hold_out(train, 0.25, seed=s, client=c).val) for s, c in ((43, 3), (42, 4), (7, 0))}
    assert tuple(h.val) not in others and len(others) == 3  # another seed or client: another draw
    assert np.array_equal(hold_out(train, 0.0, seed=42, client=3).train, train)  # fraction 0: as before
    assert len(hold_out(train[:1], 0.5, seed=42, client=3).val) == 0


def test_fl_val_fraction_range():
    assert FLSpec().val_fraction == 0.0 and FLSpec(val_fraction=0.2).val_fraction == 0.2
    with pytest.raises(FieldError, match=r"val_fraction=1.0 is outside \[0.0, 1.0\)"):
        FLSpec(val_fraction=1.0)


def test_searches_validate_on_the_held_out_split_never_on_a_test_metric():
    spec = SelectionSpec(name="successive_halving")
    assert (spec.val_fraction, spec.validation_key) == (0.1, "client_val_accuracy_mean")
    assert SelectionSpec(name="hybrid", validation_key="val_accuracy").validation_key == "val_accuracy"
    for key in ("client_test_accuracy_mean", "test_accuracy", "train_loss"):
        with pytest.raises(FieldError, match="must be a validation metric") as info:
            SelectionSpec(name="successive_halving", validation_key=key)
        assert info.value.field == "validation_key"
    for bad in (0.0, 1.0):
        with pytest.raises(FieldError, match="val_fraction"):
            SelectionSpec(name="brute_force", val_fraction=bad)


def test_config_searches_hold_out_a_tenth_and_reject_a_test_key():
    from hydra import compose, initialize_config_module

    from vista.config import ConfigError, validate

    def cfg(*overrides: str) -> dict:
        with initialize_config_module(config_module="vista.conf", version_base="1.3"):
            return validate(compose("config", overrides=list(overrides)))

    for method in ("successive_halving", "hybrid", "brute_force"):
        sel = cfg(f"selection={method}")["selection"]
        assert (sel["val_fraction"], sel["validation_key"]) == (0.1, "client_val_accuracy_mean")
    assert cfg("selection=hybrid", "selection.val_fraction=0.2")["selection"]["val_fraction"] == 0.2
    with pytest.raises(ConfigError) as info:
        cfg("selection=successive_halving", "selection.validation_key=client_test_accuracy_mean")
    assert str(info.value).startswith("selection.validation_key: must be a validation metric")
