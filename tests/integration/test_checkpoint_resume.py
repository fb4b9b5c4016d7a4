"""Durable checkpoints and resuming from them: the continued run ends exactly like the
uninterrupted one (records, summary, adapter bytes), stateful aggregators and a different
number of workers included."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from support.experiments import tiny_parts
from support.records import TIMING, strip_timing

from vista.drivers.fedpeft import run_fedpeft
from vista.errors import Interrupted
from vista.fl.aggregators import ExactLoRA, FedAdam
from vista.recording.checkpoints import CheckpointSpec, CheckpointStore
from vista.scheduler import SchedulerSpec

RECORDS = ("metrics.jsonl", "clients.jsonl", "client_eval.jsonl", "best_client_eval.jsonl")


def _strip(x):
    return strip_timing(x, TIMING)


def _records(run_dir: Path) -> dict[str, object]:
    out = {f: [_strip(json.loads(line)) for line in (run_dir / f).read_text().splitlines()]
           for f in RECORDS if (run_dir / f).exists()}
    summary = json.loads((run_dir / "summary.json").read_text())
    # the executor (backend, arrangement, placement) says how the run was scheduled, not what it computed
    out["summary"] = _strip({k: v for k, v in summary.items() if k not in ("status", "executor")})
    out["adapters"] = {f: (run_dir / f).read_bytes() for f in ("adapter.safetensors", "adapter_best.safetensors")
                       if (run_dir / f).exists()}
    return out


def _parts(tiny_hub, tiny_data, rounds, workers=0, aggregator=None, **fl):
    """One thread per worker (and inline): bit-identity across worker counts needs the same
    thread count (CPU attention backward sums in a thread-dependent order; design note 4)."""
    p = tiny_parts(tiny_hub, *tiny_data, aggregator=aggregator, rounds=rounds, clients_per_round=3, **fl)
    return dataclasses.replace(p, scheduler=SchedulerSpec(num_workers=workers, device="cpu", threads_per_worker=1))


def test_checkpoints_are_complete_and_only_the_newest_are_kept(tiny_hub, tiny_data, tmp_path, one_torch_thread):
    parts = dataclasses.replace(_parts(tiny_hub, tiny_data, 3), checkpoint=CheckpointSpec(every=1, keep=2))
    run_fedpeft(parts, tmp_path / "run")
    store = CheckpointStore(tmp_path / "run")
    assert store.rounds() == [2, 3]
    assert sorted(p.name for p in store.dir.iterdir()) == ["round_000002", "round_000003"]  # no temp left
    r, tree = store.load()
    assert r == 3 and tree["state"]["round"] == 3 and tree["version"] == 1
    assert set(tree["records"]["files"]) >= {"metrics.jsonl", "clients.jsonl", "client_eval.jsonl"}
    assert len(tree["records"]["files"]["metrics.jsonl"].splitlines()) == 3
    assert tree["steps"][-1]["name"] == "record" and tree["steps"][-1]["round"] == 3
    assert set(tree["rng"]) == {"python", "numpy", "torch"}
    assert all(isinstance(t, torch.Tensor) for t in tree["state"]["global_state"].values())
    events = json.loads((tmp_path / "run" / "event_pipeline.json").read_text())["steps"]
    saved = [s for s in events if s["name"] == "checkpoint" and "bytes" in s["info"]]
    assert [s["round"] for s in saved] == [1, 2, 3] and all(s["info"]["bytes"] > 0 for s in saved)


def test_checkpoints_off(tiny_hub, tiny_data, tmp_path, one_torch_thread):
    parts = dataclasses.replace(_parts(tiny_hub, tiny_data, 2), checkpoint=CheckpointSpec(every=0))
    run_fedpeft(parts, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("aggregator", [FedAdam(server_lr=0.05), ExactLoRA()], ids=["fedadam", "exact_lora"])
def test_extending_a_finished_run_equals_the_longer_run(tiny_hub, tiny_data, tmp_path, one_torch_thread,
                                                        aggregator):
    """Inline before, a worker process after: the same records and adapter bytes."""
    full = tmp_path / "full"
    run_fedpeft(_parts(tiny_hub, tiny_data, 3, aggregator=aggregator), full)
    split = tmp_path / "split"
    run_fedpeft(_parts(tiny_hub, tiny_data, 2, aggregator=aggregator), split)
    run_fedpeft(_parts(tiny_hub, tiny_data, 3, workers=1, aggregator=aggregator), split, from_checkpoint=True)
    assert _records(split) == _records(full)
    steps = json.loads((split / "event_pipeline.json").read_text())["steps"]
    assert [s["index"] for s in steps] == list(range(len(steps)))
    resume = [s for s in steps if s["name"] == "resume"]
    assert len(resume) == 1 and resume[0]["round"] == 2 and resume[0]["kind"] == "implicit"


def _interrupting(args, env):
    """The real runtime, except that training in round 3 sends SIGTERM to the driver: a signal
    that arrives while jobs run (inline: the driver's own process)."""
    from vista.fl.runtime import FedPEFTRuntime

    class Interrupting(FedPEFTRuntime):
        def train(self, client, payload, shared):
            if payload["seed"] in _ROUND3_SEEDS:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().train(client, payload, shared)

    return Interrupting(args, env)


_ROUND3_SEEDS: set[int] = set()


def test_sigterm_mid_round_checkpoints_the_last_complete_round_then_resume_matches(
        tiny_hub, tiny_data, tmp_path, one_torch_thread):
    from vista.fl.sampling import client_seed

    parts = _parts(tiny_hub, tiny_data, 4, aggregator=FedAdam(server_lr=0.05))
    full = tmp_path / "full"
    run_fedpeft(parts, full)
    _ROUND3_SEEDS.update(client_seed(parts.seed, 3, c) for c in range(20))
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted) as info:
        run_fedpeft(parts, stopped, runtime_factory=_interrupting)
    assert info.value.exit_code == 143 and info.value.round == 2
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert summary["resume"] == f"vista resume={stopped}"
    assert CheckpointStore(stopped).rounds()[-1] == 2
    assert [json.loads(line)["round"] for line in (stopped / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    run_fedpeft(parts, stopped, from_checkpoint=True)
    assert _records(stopped) == _records(full)


def test_a_resumed_run_continues_the_same_wandb_run(tiny_hub, tiny_data, tmp_path, one_torch_thread, monkeypatch):
    from vista.recording.spec import RecorderSpec

    monkeypatch.setenv("WANDB_MODE", "offline")
    parts = dataclasses.replace(_parts(tiny_hub, tiny_data, 2), recorder=RecorderSpec(mode="offline"))
    run_fedpeft(parts, tmp_path / "run")
    run_id = CheckpointStore(tmp_path / "run").load()[1]["records"]["wandb_id"]
    assert run_id
    longer = dataclasses.replace(parts, fl=dataclasses.replace(parts.fl, rounds=3))
    run_fedpeft(longer, tmp_path / "run", from_checkpoint=True)
    offline = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    # wandb names a run's directory offline-run-<time>-<id>, with -1 appended when that is taken
    assert len(offline) == 2 and all(p.name.split("-")[3] == run_id for p in offline)
    assert CheckpointStore(tmp_path / "run").load()[1]["records"]["wandb_id"] == run_id
