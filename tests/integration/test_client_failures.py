"""A failed client job under fl.client_failures: stop (the default) and drop."""

from __future__ import annotations

import dataclasses
import json

import pytest
from support.experiments import tiny_parts as parts
from support.runtimes import make_flaky_fedpeft

from vista.drivers.fedpeft import TooFewClientsError, run_fedpeft
from vista.fl.aggregation.base import ClientUpdate
from vista.fl.aggregators import FedAvg
from vista.pipeline import JobFailedError


@dataclasses.dataclass(frozen=True)
class SeesFailures(FedAvg):
    """FedAvg that also writes down the failures it was given (inline executor: same process)."""

    seen: list = dataclasses.field(default_factory=list, compare=False)

    def aggregate(self, global_state, updates: list[ClientUpdate], failures=(), state=None):  # noqa: ANN001
        self.seen.append(([u.client for u in updates], [f["client"] for f in failures]))
        return super().aggregate(global_state, updates, failures, state)


def test_a_failed_client_stops_the_run_by_default(tiny_hub, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAKY_CLIENTS", "0,1,2,3")
    with pytest.raises(JobFailedError, match="lost its connection"):
        run_fedpeft(parts(tiny_hub, *tiny_data), tmp_path / "r", runtime_factory=make_flaky_fedpeft)


@pytest.mark.parametrize("workers", [0, 2])
def test_dropped_clients_leave_the_round_and_the_aggregator_is_told(tiny_hub, tiny_data, tmp_path, monkeypatch,
                                                                     workers):
    monkeypatch.setenv("FLAKY_CLIENTS", "1")
    agg = SeesFailures()
    p = parts(tiny_hub, *tiny_data, agg, clients_per_round=4, client_failures="drop")
    p = dataclasses.replace(p, scheduler=dataclasses.replace(p.scheduler, num_workers=workers))
    summary = run_fedpeft(p, tmp_path / "r", runtime_factory=make_flaky_fedpeft)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    clients = [json.loads(x) for x in (tmp_path / "r" / "clients.jsonl").read_text().splitlines()]
    assert [r["clients_failed"] for r in rows] == [1, 1]
    failed = [c for c in clients if c.get("failed")]
    assert [c["client"] for c in failed] == [1, 1] and "lost its connection" in failed[0]["error"]
    # only successful clients' bytes count; with the inline executor the aggregator saw the failures
    n = summary["trainable_params"] * 4
    assert all(r["bytes_up"] == 3 * n for r in rows)
    if workers == 0:
        assert agg.seen == [([0, 2, 3], [1]), ([0, 2, 3], [1])]


def test_too_few_clients_left_is_an_error_that_names_them(tiny_hub, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAKY_CLIENTS", "0,1,2")
    p = parts(tiny_hub, *tiny_data, clients_per_round=4, client_failures="drop", min_clients=2)
    with pytest.raises(TooFewClientsError, match=r"1 of 4 client jobs succeeded, fl.min_clients=2.*client 0"):
        run_fedpeft(p, tmp_path / "r", runtime_factory=make_flaky_fedpeft)
