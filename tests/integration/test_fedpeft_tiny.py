"""End-to-end federated LoRA runs on a tiny RoBERTa built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.tiny import write_fednlp_pair

from vista.data.fednlp import FederatedDataSpec
from vista.drivers.fedpeft import run_fedpeft
from vista.fl.aggregators import FedAvg
from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs
from vista.fl.sampling import client_seed
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.peft.lora import LoraSpec
from vista.pipeline.protocol import WorkerEnv
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec

METRIC_KEYS = {"round", "test_accuracy", "test_loss", "bytes_up", "bytes_down", "round_seconds"}


def tiny_parts(hub: Path, data: Path, part: Path, method: str = "uniform", num_workers: int = 2,
               threads: int = 0, **fl) -> ExperimentParts:
    fl_spec = FLSpec(**{"rounds": 2, "clients_per_round": 2, "batch_size": 8, "lr": 5e-3, "max_seq_len": 32,
                        "eval_batch_size": 16, **fl})
    return ExperimentParts(
        seed=7,
        fl=fl_spec,
        model=ModelSpec(name="roberta", hub_dir=str(hub), hub_name="roberta-base"),
        peft=LoraSpec(r=4, alpha=8, dropout=0.1),
        data=FederatedDataSpec(str(data), str(part), method),
        aggregator=FedAvg(),
        scheduler=SchedulerSpec(num_workers=num_workers, device="cpu", threads_per_worker=threads),
        recorder=RecorderSpec(),
    )


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_rounds_on_two_worker_processes(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_fedpeft(tiny_parts(tiny_hub, *tiny_data), run_dir)
    rows = _metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert METRIC_KEYS <= r.keys() and 0.0 <= r["test_accuracy"] <= 1.0 and r["test_loss"] > 0
        # exactly the tensors sent: the trainable state, fp32, once per sampled client each way
        assert r["bytes_down"] == r["bytes_up"] == summary["trainable_params"] * 4 * 2
        assert len(r["clients"]) == 2
    assert rows[1]["bytes_up_total"] == 2 * rows[0]["bytes_up"]
    assert summary["test_accuracy"] == rows[-1]["test_accuracy"] and summary["rounds"] == 2
    assert 0 < summary["trainable_params"] < summary["total_params"] / 5

    steps = json.loads((run_dir / "event_pipeline.json").read_text())["steps"]
    # each round ends with its durable checkpoint (checkpoint.every=1)
    per_round = ["context_refresh", "sample_clients", "broadcast", "client_train", "aggregate", "broadcast",
                 "evaluate", "record", "checkpoint"]
    # teardown: the best round's evaluation is kept; its adapter is saved too when it is not the last
    best_again = ["best_round", "checkpoint", "checkpoint"] if summary["best_round"] != 2 \
        else ["best_round", "checkpoint"]
    assert [s["name"] for s in steps] == ["scheduler_start", "init_global", *per_round, *per_round,
                                          *best_again, "summary", "scheduler_shutdown"]
    assert summary["best"]["round"] == summary["best_round"]
    assert summary["best"]["test_accuracy"] == summary["best_test_accuracy"]
    assert [s["next"] for s in steps] == [*range(1, len(steps)), None]
    assert sorted(p.name for p in (run_dir / "workers").iterdir()) == ["worker_0.log", "worker_1.log"]

    adapter = load_file(str(run_dir / "adapter.safetensors"))
    assert sum(t.numel() for t in adapter.values()) == summary["trainable_params"]
    assert all("lora_" in k or "classifier" in k for k in adapter)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter.safetensors"))


def test_same_seed_same_metrics_whatever_the_number_of_workers(tiny_hub, tiny_data, tmp_path):
    runs = {}
    for workers in (0, 1, 2):
        run_dir = tmp_path / f"w{workers}"
        run_fedpeft(tiny_parts(tiny_hub, *tiny_data, method="niid_label_clients=4_alpha=1", num_workers=workers,
                               rounds=3, clients_per_round=3), run_dir)
        runs[workers] = ([{k: v for k, v in r.items() if k != "round_seconds"} for r in _metrics(run_dir)],
                         _adapter(run_dir))
    base_rows, base_adapter = runs[0]
    assert len(base_rows) == 3
    for workers in (1, 2):
        rows, adapter = runs[workers]
        assert rows == base_rows, f"num_workers={workers} changed the metrics"
        assert all(torch.equal(adapter[k], base_adapter[k]) for k in base_adapter)


def test_fedavg_of_one_client_equals_training_it_alone(tiny_hub, tmp_path):
    data, part = write_fednlp_pair(tmp_path / "one", n_clients=1, methods=("uniform",))
    parts = tiny_parts(tiny_hub, data, part, num_workers=1, rounds=1, clients_per_round=1, local_epochs=2)
    run_fedpeft(parts, tmp_path / "run")
    federated = _adapter(tmp_path / "run")

    # the same client trained alone, in this process, for the same steps
    from vista.data.fednlp import FederatedData

    fed = FederatedData(parts.data)
    runtime = FedPEFTRuntime(RuntimeArgs(parts.model, parts.peft, parts.data, parts.fl, fed.num_labels,
                                         parts.seed), WorkerEnv(0, "cpu"))
    init = runtime.init_state("init", {}, None)["state"]
    alone = runtime.train(0, {"seed": client_seed(parts.seed, 1, 0)}, {"state": init})["state"]
    assert federated.keys() == alone.keys()
    assert any(not torch.equal(init[k], alone[k]) for k in init)  # training did change the adapter
    for k in alone:
        assert torch.equal(federated[k], alone[k]), k


def test_worker_error_stops_the_run_with_its_job_id(tiny_hub, tmp_path):
    import h5py

    data, part = write_fednlp_pair(tmp_path / "bad")
    with h5py.File(data, "a") as f:  # a label the vocab does not know, in client 0's data
        del f["Y/0"]
        f["Y/0"] = "weather"
    from vista.pipeline import JobFailedError

    with pytest.raises(JobFailedError) as info:
        run_fedpeft(tiny_parts(tiny_hub, data, part, num_workers=1, clients_per_round=4), tmp_path / "run")
    msg = str(info.value)
    assert "client_train" in info.value.job_id and "'weather'" in msg and "Traceback" in msg
    assert (tmp_path / "run" / "event_pipeline.json").is_file()  # saved for the post-mortem
