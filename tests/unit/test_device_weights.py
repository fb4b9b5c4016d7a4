"""One copy of the frozen weights per GPU (vista.models.device_weights), on the CPU.

The GPU's part (CUDA IPC handles opened in another process) is checked by
tests/integration/test_cuda_weights.py where a GPU is present; here the same code adopts
plain tensors standing in for the mapped ones: which parameters a worker points at the
shared copy, that a differing tensor stays private, that a write into the shared copy is
caught, that residual folding writes a private copy, and that a FedPEFT runtime given the
copy trains to the same numbers as one without it."""

from __future__ import annotations

import pytest
import torch
from support.tiny import tiny_runtime_args

from vista.fl.residual import ResidualFolder
from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs, build_model, weight_keeper
from vista.models.device_weights import WeightKeeper, WriteGuard, adopt
from vista.peft.state import frozen_parameters
from vista.pipeline.protocol import WorkerEnv


@pytest.fixture()
def args(tiny_hub, tiny_data) -> RuntimeArgs:
    return tiny_runtime_args(tiny_hub, tiny_data, local_epochs=1)


def _copy_of_frozen(args: RuntimeArgs) -> dict[str, torch.Tensor]:
    """What the parent keeps: the frozen parameters of the model a worker builds (a copy)."""
    return {k: p.detach().clone() for k, p in frozen_parameters(build_model(args)[1]).items()}


def test_frozen_parameters_are_the_base_not_the_adapters_and_tied_weights_once(args):
    model = build_model(args)[1]
    frozen = frozen_parameters(model)
    assert frozen and all(not p.requires_grad for p in frozen.values())
    assert not any("lora_" in k for k in frozen)  # adapters and the head train
    assert any(k.endswith("base_layer.weight") for k in frozen)  # LoRA's frozen W0
    assert len({id(p) for p in frozen.values()}) == len(frozen)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and not trainable & set(frozen)


def test_adopt_points_frozen_parameters_at_the_shared_copy_and_keeps_the_rest(args):
    shared = _copy_of_frozen(args)
    model = build_model(args)[1]
    trainable_before = {k: p.data_ptr() for k, p in model.named_parameters() if p.requires_grad}
    report = adopt(model, shared)
    frozen = frozen_parameters(model)
    assert report.shared_tensors == len(frozen) and report.private_tensors == 0
    assert report.shared_bytes == sum(p.numel() * p.element_size() for p in frozen.values())
    for k, p in frozen.items():
        assert p.data_ptr() == shared[k].data_ptr()  # the same memory, not an equal copy
    assert {k: p.data_ptr() for k, p in model.named_parameters() if p.requires_grad} == trainable_before


def test_a_tensor_that_differs_or_is_missing_stays_private(args):
    shared = _copy_of_frozen(args)
    names = sorted(shared)
    changed, missing = names[0], names[1]
    shared[changed] = shared[changed] + 1.0  # e.g. a head initialised with another seed
    del shared[missing]
    model = build_model(args)[1]
    report = adopt(model, shared)
    frozen = frozen_parameters(model)
    assert report.private_tensors == 2 and report.shared_tensors == len(frozen) - 2
    assert frozen[changed].data_ptr() != shared[changed].data_ptr()
    assert not torch.equal(frozen[changed], shared[changed])


def test_a_write_into_a_shared_tensor_is_an_error_and_a_private_copy_is_not(args):
    shared = _copy_of_frozen(args)
    model = build_model(args)[1]
    adopt(model, shared)
    guard = WriteGuard(model, shared)
    assert guard.watched == len(shared)
    guard.check()  # nothing written yet
    frozen = frozen_parameters(model)
    first, second = sorted(frozen)[:2]
    with torch.no_grad():
        frozen[first].data = frozen[first].detach().clone()  # re-pointed at a private copy, then written
        frozen[first].add_(1.0)
    guard.check()
    with torch.no_grad():
        frozen[second].mul_(2.0)  # written in place: every worker on the GPU would see it
    with pytest.raises(RuntimeError, match="shared with the GPU's other workers were written in place"):
        guard.check()


def test_residual_folding_writes_a_private_copy_and_leaves_the_shared_base(args):
    shared = _copy_of_frozen(args)
    pristine = {k: v.clone() for k, v in shared.items()}
    model = build_model(args)[1]
    adopt(model, shared)
    guard = WriteGuard(model, shared)
    path = next(n for n, m in model.named_modules() if hasattr(m, "get_base_layer") and hasattr(m, "scaling"))
    weight = model.get_submodule(path).get_base_layer().weight
    key = next(k for k, p in frozen_parameters(model).items() if p is weight)
    folder = ResidualFolder(model)
    residual = torch.ones_like(weight)
    folder.apply({path: residual})
    folder.apply({path: residual})  # from W0 each time, not cumulative
    scaling = model.get_submodule(path).scaling["default"]
    assert torch.allclose(weight, pristine[key] + scaling * residual)
    assert all(torch.equal(shared[k], pristine[k]) for k in shared)  # the shared copy is untouched
    guard.check()


def test_the_keeper_builds_nothing_for_cpu_devices_or_a_gpu_with_one_worker():
    calls = []
    keeper = WeightKeeper(lambda: calls.append(1) or torch.nn.Linear(2, 2))
    keeper.prepare(["cpu", "cpu"])
    keeper.prepare(["cuda:0", "cpu"])  # one worker alone on its GPU: the parent's context would cost more
    assert calls == [] and keeper.handles("cpu") is None and keeper.handles("cuda:0") is None
    assert keeper.devices == []


def test_weight_keeper_follows_model_share_weights(args):
    import dataclasses

    assert isinstance(weight_keeper(args), WeightKeeper)
    off = dataclasses.replace(args, model=dataclasses.replace(args.model, share_weights=False))
    assert weight_keeper(off) is None


class _Given:
    """Stands in for DeviceWeights: ``open()`` gives the tensors (here already in this process)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def open(self) -> dict[str, torch.Tensor]:
        return self.tensors


def test_a_runtime_given_the_shared_copy_trains_to_the_same_numbers(args):
    shared = _copy_of_frozen(args)
    kept = {k: v.clone() for k, v in shared.items()}
    plain = FedPEFTRuntime(args, WorkerEnv(0, "cpu"))
    mapped = FedPEFTRuntime(args, WorkerEnv(1, "cpu", _Given(shared)))
    try:
        assert plain.device_report is None
        assert mapped.device_report is not None and mapped.device_report.shared_tensors == len(shared)
        assert mapped.device_report.private_tensors == 0
        init = plain.run("init_state", None, {}, None)["state"]
        a = plain.run("train", 0, {"seed": 3}, {"state": init})
        b = mapped.run("train", 0, {"seed": 3}, {"state": init})
        assert a["loss"] == b["loss"] and a["steps"] == b["steps"] > 0
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
        assert all(torch.equal(shared[k], kept[k]) for k in shared)  # training never wrote the shared copy
    finally:
        plain.close()
        mapped.close()
