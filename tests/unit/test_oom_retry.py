"""CUDA out of memory in a client job: the job trains again on the same worker with half the
micro-batch and gradient accumulation over the same batch, and says so in its result."""

from __future__ import annotations

import pytest
import torch
from support.tiny import no_dropout, tiny_lora, tiny_runtime_args

from vista.fl.client import LocalOptions, local_train
from vista.fl.runtime import FedPEFTRuntime
from vista.fl.spec import FLSpec
from vista.peft.state import trainable_state
from vista.pipeline.protocol import WorkerEnv
from vista.scheduler import faults

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = FLSpec(local_epochs=2, batch_size=8, lr=1e-2)  # 18 examples: steps of 8, 8 and 2 per epoch
JOB = ("r1.client_train.g0.j0", 0)


@pytest.fixture(scope="module")
def lora_model(tiny_hub):
    return tiny_lora(tiny_hub, dropout_off=True)


class SquaredNorm:
    """A step-level loss term (a function of the parameters only), as a PEFT method may add."""

    def loss_extra(self, model):
        return 0.1 * sum((p**2).sum() for n, p in model.named_parameters() if "lora_B" in n)


def _train(lora_model, micro, options=None, hooks=None):
    build, data, pad = lora_model
    model, params = build()
    stats = local_train(model, params, data, SPEC, seed=5, pad_id=pad, options=options, hooks=hooks, micro_batch=micro)
    return stats, trainable_state(model)


@pytest.mark.parametrize("case", ["plain", "fedprox", "loss_extra"])
def test_accumulated_micro_batches_train_like_the_full_batch(lora_model, case):
    options = LocalOptions(prox_mu=0.5) if case == "fedprox" else None
    hooks = SquaredNorm() if case == "loss_extra" else None
    full_stats, full = _train(lora_model, 8, options, hooks)
    _, default = _train(lora_model, None, options, hooks)
    assert all(torch.equal(full[k], default[k]) for k in full)  # micro_batch=None is the full batch
    for micro in (4, 3, 2):  # 3: micro-batches of 3, 3, 2 (and one of 2 at the end of an epoch)
        stats, state = _train(lora_model, micro, options, hooks)
        assert stats.steps == full_stats.steps == 6 and stats.num_examples == full_stats.num_examples
        assert stats.loss == pytest.approx(full_stats.loss, abs=1e-6)
        # float rounding of the summed gradients, amplified a little by Adam's normalisation
        # (updates of ~lr = 1e-2 per step): ~1e-6 after six steps
        worst = max(float((state[k] - full[k]).abs().max()) for k in full)
        assert worst < 3e-6, f"micro_batch={micro}: parameters differ by {worst:.2e}"


def test_a_micro_batch_below_one_is_refused(lora_model):
    with pytest.raises(ValueError, match="micro_batch"):
        _train(lora_model, 0)


@pytest.fixture()
def oom_fault(monkeypatch):
    """``VISTA_FAULTS='client_train#0=oom'`` with this process running job 0 of client_train."""
    monkeypatch.setenv(faults.ENV, "client_train#0=oom")
    monkeypatch.setattr(faults, "_oom_fired", set())
    token = faults.current_job.set(JOB)
    yield
    faults.current_job.reset(token)


def test_injected_oom_fires_at_the_full_batch_only(lora_model, oom_fault):
    with pytest.raises(torch.cuda.OutOfMemoryError, match="injected"):
        _train(lora_model, 8)
    _train(lora_model, 8)  # once per job attempt
    faults._oom_fired.clear()
    _train(lora_model, 4)  # accumulating: the injected fault is not for this run


def _runtime(tiny_hub, tiny_data) -> FedPEFTRuntime:
    runtime = FedPEFTRuntime(tiny_runtime_args(tiny_hub, tiny_data, local_epochs=2), WorkerEnv(0, "cpu"))
    no_dropout(runtime.model)
    return runtime


@pytest.fixture()
def runtime(tiny_hub, tiny_data):
    rt = _runtime(tiny_hub, tiny_data)
    yield rt
    rt.close()


def test_oom_in_a_client_job_retries_at_half_the_micro_batch(runtime, oom_fault):
    init = runtime.init_state(None, {}, None)["state"]
    token = faults.current_job.set(("r1.client_train.g0.j1", 0))  # not the faulted job
    try:
        clean = runtime.train(0, {"seed": 11}, {"state": init})
    finally:
        faults.current_job.reset(token)
    assert clean["micro_batch"] == 8 and clean["oom_retries"] == 0

    retried = runtime.train(0, {"seed": 11}, {"state": init})  # job 0: OOM at the full batch, then 4
    assert retried["micro_batch"] == 4 and retried["oom_retries"] == 1
    assert retried["steps"] == clean["steps"] == 4 and retried["num_examples"] == clean["num_examples"] == 12
    assert retried["loss"] == pytest.approx(clean["loss"], abs=1e-6)
    assert any(not torch.equal(init[k], clean["state"][k]) for k in init)
    worst = max(float((retried["state"][k] - clean["state"][k]).abs().max()) for k in clean["state"])
    assert worst < 3e-6, f"the retried job's parameters differ by {worst:.2e}"

    again = runtime.train(0, {"seed": 11}, {"state": init})  # the next job starts at the full batch again
    assert again["micro_batch"] == 8 and again["oom_retries"] == 0
    assert all(torch.equal(again["state"][k], clean["state"][k]) for k in clean["state"])


def test_oom_at_micro_batch_one_propagates_and_each_try_starts_from_the_broadcast_state(runtime, monkeypatch):
    import vista.fl.runtime as rt_module

    init = runtime.init_state(None, {}, None)["state"]
    tries: list[tuple[int, bool]] = []

    def always_oom(model, params, data, spec, seed, pad_id, device, options, hooks, micro_batch):
        fresh = all(torch.equal(params[k].detach(), init[k]) for k in init)
        tries.append((micro_batch, fresh))
        with torch.no_grad():  # what a failed attempt leaves behind
            for p in params.values():
                p.add_(1.0)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(rt_module, "local_train", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="test"):
        runtime.train(0, {"seed": 3}, {"state": init})
    assert tries == [(8, True), (4, True), (2, True), (1, True)]


def test_a_client_smaller_than_the_batch_halves_from_its_size(runtime, monkeypatch):
    import vista.fl.runtime as rt_module

    init = runtime.init_state(None, {}, None)["state"]
    real, tries = rt_module.local_train, []

    def oom_above_two(*args, micro_batch, **kwargs):
        tries.append(micro_batch)
        if micro_batch > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return real(*args, micro_batch=micro_batch, **kwargs)

    monkeypatch.setattr(rt_module, "local_train", oom_above_two)
    monkeypatch.setattr(runtime.args.train, "batch_size", 32)  # client 0 has 12 examples
    out = runtime.train(0, {"seed": 3}, {"state": init})
    assert tries == [32, 6, 3, 1] and out["micro_batch"] == 1 and out["oom_retries"] == 3
