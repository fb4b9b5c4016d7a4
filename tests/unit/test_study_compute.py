"""A method's compute in the study: forward equivalents less the test-split predictions, a
statistics round at a shorter length scaled by the share of the tokens it encodes."""

from __future__ import annotations

import pytest

from vista.drivers.study_compute import selection_compute


def _result() -> dict:
    cost = {"forward_passes": 1000, "backward_passes": 0, "bytes_up": 0, "bytes_down": 0, "rounds": 1, "seconds": 1.0}
    return {"truth": {"a": 0.9, "b": 0.5}, "test_texts": 10,
            "methods": {"auto": {"cost": cost}, "auto_shipped": {"cost": {**cost, "forward_passes": 400},
                                                                 "token_share": 0.25},
                        "brute_force": {"cost": {**cost, "forward_passes": 600, "backward_passes": 500, "rounds": 4}}}}


def test_a_shorter_round_counts_its_tokens_and_a_full_one_its_texts():
    r = _result()
    assert selection_compute(r, "auto") == 1000
    assert selection_compute(r, "auto_shipped") == pytest.approx(400 * 0.25)
    # brute force: 600 + 2 x 500, less the 10 test texts predicted in each of 2 rounds x 2 candidates
    assert selection_compute(r, "brute_force") == 600 + 1000 - 10 * 4


def test_a_cost_passed_in_is_not_scaled_by_the_entrys_share():
    # a replayed search's training rounds run at the study's length, whatever its shortlist score's
    passed = {"forward_passes": 100, "backward_passes": 0, "bytes_up": 0, "bytes_down": 0, "rounds": 1, "seconds": 0.0}
    assert selection_compute(_result(), "auto_shipped", passed, {}) == 100
