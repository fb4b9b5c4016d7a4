"""Every PEFT method runs a federated round through the real runtime, on a tiny encoder
(RoBERTa) and a tiny decoder (GPT-2): the run records the method's trainable-parameter count,
ships exactly the trainable tensors, and local training changes those and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vista.data.fednlp import FederatedDataSpec
from vista.drivers.fedpeft import run_fedpeft
from vista.fl.aggregators import FedAvg
from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.peft import METHODS
from vista.pipeline.protocol import WorkerEnv
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec

FL = {"rounds": 1, "clients_per_round": 2, "batch_size": 8, "lr": 5e-3, "max_seq_len": 32, "eval_batch_size": 64}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parts(hub: Path, arch: str, method: str, data: Path, part: Path) -> ExperimentParts:
    return ExperimentParts(
        seed=7, fl=FLSpec(**FL), model=ModelSpec(name=arch, hub_dir=str(hub), hub_name=arch),
        peft=METHODS[method](), data=FederatedDataSpec(str(data), str(part), "uniform"), aggregator=FedAvg(),
        scheduler=SchedulerSpec(num_workers=0, device="cpu"), recorder=RecorderSpec(),
    )


@pytest.mark.parametrize("arch", ["roberta", "gpt2"])
@pytest.mark.parametrize("method", list(METHODS))
def test_one_round_changes_only_the_trainable_tensors(method, arch, arch_hub, tiny_data, tmp_path):
    p = parts(arch_hub, arch, method, *tiny_data)

    # one federated round, inline: the summary records the method's trainable count, and the
    # saved global state is exactly the trainable tensors
    summary = run_fedpeft(p, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1] and 0.0 <= rows[0]["test_accuracy"] <= 1.0
    saved = load_file(str(tmp_path / "run" / "adapter.safetensors"))

    # the same runtime, driven by hand: snapshot everything, train one client, compare
    runtime = FedPEFTRuntime(RuntimeArgs(p.model, p.peft, p.data, p.fl, 3, p.seed), WorkerEnv(0, "cpu"))
    try:
        info = p.peft.describe(runtime.model)
        init = runtime.init_state(None, {}, None)
        assert summary["trainable_params"] == init["trainable_params"] == info["trainable"]
        assert summary["total_params"] == init["total_params"] == info["total"]
        assert saved.keys() == init["state"].keys() == set(runtime.params)
        assert sum(t.numel() for t in saved.values()) == info["trainable"]

        before = {k: v.detach().clone() for k, v in runtime.model.state_dict().items()}
        out = runtime.train(0, {"seed": 1}, {"state": init["state"]})
        after = runtime.model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed == set(init["state"]), (f"trainable but unchanged: {sorted(set(init['state']) - changed)[:4]}; "
                                               f"frozen but changed: {sorted(changed - set(init['state']))[:4]}")
        assert out["state"].keys() == init["state"].keys() and out["steps"] == 2
        assert all(not torch.equal(out["state"][k].float(), init["state"][k]) for k in init["state"])
    finally:
        runtime.close()
