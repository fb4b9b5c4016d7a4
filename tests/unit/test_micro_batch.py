"""fl.micro_batch_size: a worker runs each step of ``fl.batch_size`` examples in micro-batches
(gradient accumulation), so what it keeps for backward scales with the micro-batch, and it trains
to the same numbers up to float rounding; ``num_workers=auto`` plans memory for the micro-batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from support.tiny import no_dropout, tiny_runtime_args

import vista.drivers.fedpeft as fedpeft
from vista.checks import FieldError
from vista.data.fednlp import FederatedDataSpec
from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.peft.lora import LoraSpec
from vista.pipeline.protocol import WorkerEnv


def test_the_micro_batch_is_capped_at_the_batch_and_checked():
    assert FLSpec(batch_size=16).micro_batch == 16
    assert FLSpec(batch_size=16, micro_batch_size=4).micro_batch == 4
    assert FLSpec(batch_size=8, micro_batch_size=32).micro_batch == 8
    with pytest.raises(FieldError, match="micro_batch_size"):
        FLSpec(micro_batch_size=0)


def _train(args: RuntimeArgs) -> tuple[dict, list[int]]:
    """One client's local training; returns its upload and the batch size of every forward."""
    rt = FedPEFTRuntime(args, WorkerEnv(0, "cpu"))
    try:
        no_dropout(rt.model)  # accumulation is then the full batch's gradient
        seen: list[int] = []
        rt.model.get_input_embeddings().register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
        init = rt.run("init_state", None, {}, None)["state"]
        seen.clear()
        return rt.run("train", 0, {"seed": 3}, {"state": init}), seen
    finally:
        rt.close()


def test_a_micro_batched_worker_trains_to_the_same_numbers_in_smaller_forwards(tiny_hub, tiny_data):
    args = tiny_runtime_args(tiny_hub, tiny_data)
    fl = args.train
    whole, whole_sizes = _train(args)
    micro, micro_sizes = _train(dataclasses.replace(args, train=dataclasses.replace(fl, micro_batch_size=3)))
    assert max(whole_sizes) == 8 and max(micro_sizes) == 3  # the micro-batch bounds every forward
    assert sum(micro_sizes) == sum(whole_sizes) == whole["num_examples"]  # the same examples, once each
    assert micro["steps"] == whole["steps"] > 1 and micro["micro_batch"] == 3 and micro["oom_retries"] == 0
    assert micro["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for k, v in whole["state"].items():
        assert torch.allclose(micro["state"][k], v, rtol=1e-4, atol=1e-6), k


class _Planned(Exception):
    pass


def test_auto_workers_plan_memory_for_the_micro_batch(tiny_hub, tiny_data, tmp_path, monkeypatch):
    """The memory estimate behind ``num_workers=auto`` sees the micro-batch, not the batch."""
    from vista.fl.aggregators import FedAvg
    from vista.parts import ExperimentParts
    from vista.recording.spec import RecorderSpec
    from vista.scheduler import SchedulerSpec

    planned = []

    def estimate(model, apply, labels, batch, seq, **kw):
        planned.append((batch, seq))
        raise _Planned

    monkeypatch.setattr(fedpeft, "estimate_memory", estimate)
    data, part = tiny_data
    for micro, expected in ((None, 8), (2, 2)):
        parts = ExperimentParts(
            seed=7, fl=FLSpec(rounds=1, clients_per_round=2, batch_size=8, max_seq_len=32, micro_batch_size=micro),
            model=ModelSpec(name="roberta", hub_dir=str(tiny_hub), hub_name="roberta-base"), peft=LoraSpec(r=4),
            data=FederatedDataSpec(str(data), str(part), "uniform"), aggregator=FedAvg(),
            scheduler=SchedulerSpec(num_workers="auto", device="cpu"), recorder=RecorderSpec())
        with pytest.raises(_Planned):
            fedpeft.run_fedpeft(parts, tmp_path / f"run{micro}")
        assert planned[-1] == (expected, 32)
