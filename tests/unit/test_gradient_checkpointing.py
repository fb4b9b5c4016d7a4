"""fl.gradient_checkpointing: a worker recomputes activations in backward instead of keeping them,
and trains to the same numbers (non-reentrant checkpointing replays dropout's random draws)."""

from __future__ import annotations

import dataclasses

import torch
from support.tiny import tiny_runtime_args

from vista.fl.runtime import FedPEFTRuntime
from vista.pipeline.protocol import WorkerEnv


def test_a_checkpointed_worker_trains_to_the_same_numbers(tiny_hub, tiny_data):
    args = tiny_runtime_args(tiny_hub, tiny_data, dropout=0.1)
    fl = args.train
    out = {}
    for on in (False, True):
        rt = FedPEFTRuntime(dataclasses.replace(args, train=dataclasses.replace(fl, gradient_checkpointing=on)),
                            WorkerEnv(0, "cpu"))
        try:
            base = rt.model.base_model.model  # transformers 5 renamed the flag (the old name warns, gone in v6)
            new = hasattr(base, "is_activation_checkpointing")
            assert getattr(base, "is_activation_checkpointing" if new else "is_gradient_checkpointing") is on
            init = rt.run("init_state", None, {}, None)["state"]
            out[on] = rt.run("train", 0, {"seed": 3}, {"state": init})
        finally:
            rt.close()
    assert out[True]["steps"] == out[False]["steps"] > 0
    assert out[True]["loss"] == out[False]["loss"]
    for k, v in out[False]["state"].items():
        assert torch.allclose(out[True]["state"][k], v, rtol=0, atol=1e-7), k
