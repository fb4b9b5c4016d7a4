"""fl.lr_schedule: the clients' rate in each round, computed by the server."""

from __future__ import annotations

import math

import pytest

from vista.checks import FieldError
from vista.fl.lr_schedule import LR_SCHEDULES, round_lr
from vista.fl.spec import FLSpec


def rates(**kw) -> list[float]:
    spec = FLSpec(**kw)
    return [round_lr(spec, r) for r in range(1, spec.rounds + 1)]


def test_constant_is_fl_lr_every_round():
    assert rates(rounds=5, lr=3e-3) == [3e-3] * 5
    assert FLSpec().lr_schedule == "constant"  # the default: runs train as before the schedules


def test_cosine_starts_at_lr_falls_every_round_and_the_last_round_still_trains():
    lr, lo, T = 4e-3, 1e-4, 4
    got = rates(rounds=T, lr=lr, lr_schedule="cosine", lr_min=lo)
    want = [lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * t / T)) for t in range(T)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[0] == lr and all(a > b for a, b in zip(got, got[1:])) and got[-1] > lo
    # half-way through the run, half-way between lr and lr_min
    assert rates(rounds=30, lr=lr, lr_schedule="cosine", lr_min=lo)[15] == pytest.approx((lr + lo) / 2)


def test_exponential_multiplies_by_lr_decay_each_round_down_to_lr_min():
    assert rates(rounds=4, lr=8e-3, lr_schedule="exponential", lr_decay=0.5) == pytest.approx([8e-3, 4e-3, 2e-3, 1e-3])
    assert rates(rounds=4, lr=8e-3, lr_schedule="exponential", lr_decay=0.5, lr_min=3e-3) == pytest.approx(
        [8e-3, 4e-3, 3e-3, 3e-3])
    assert rates(rounds=3, lr=8e-3, lr_schedule="exponential", lr_decay=1.0) == [8e-3] * 3


@pytest.mark.parametrize("field, kw", [
    ("lr_schedule", {"lr_schedule": "linear"}),
    ("lr_decay", {"lr_decay": 0.0}),
    ("lr_decay", {"lr_decay": 1.5}),
    ("lr_min", {"lr_min": 2e-3}),  # not below fl.lr (2e-3)
    ("lr_min", {"lr_min": -1e-4}),
])
def test_bad_schedules_name_the_field(field, kw):
    with pytest.raises(FieldError) as err:
        FLSpec(**kw)
    assert err.value.field == field
    if field == "lr_schedule":
        assert all(name in str(err.value) for name in LR_SCHEDULES)


def test_rounds_count_from_one():
    with pytest.raises(ValueError, match="from 1"):
        round_lr(FLSpec(), 0)


def test_cosine_falls_over_lr_horizon_when_given_and_stays_at_lr_min_past_it():
    lr = 4e-3
    whole = rates(rounds=4, lr=lr, lr_schedule="cosine")
    assert rates(rounds=2, lr=lr, lr_schedule="cosine", lr_horizon=4) == whole[:2]  # a stretch of a longer run
    assert rates(rounds=6, lr=lr, lr_schedule="cosine", lr_horizon=4, lr_min=1e-4)[4:] == [1e-4, 1e-4]
    with pytest.raises(FieldError) as err:
        FLSpec(lr_horizon=0)
    assert err.value.field == "lr_horizon"
