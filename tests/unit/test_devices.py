"""plan_devices / threads_per_worker / gpu_inventory, with fake GPU lists."""

from __future__ import annotations

import types

import pytest
import torch

from vista.scheduler import devices
from vista.scheduler.devices import DevicePlanError, GpuInfo, gpu_inventory, plan_devices, threads_per_worker


def test_cpu_gives_cpu_for_every_worker() -> None:
    assert plan_devices("cpu", 3, 0) == ["cpu", "cpu", "cpu"]
    # cpu ignores GPUs, even when there are some
    assert plan_devices("cpu", 2, 5000, gpus=[GpuInfo(0, 80000, 80000)]) == ["cpu", "cpu"]
    assert plan_devices("cpu", 0, 0) == []


def test_auto_without_gpus_falls_back_to_cpu() -> None:
    assert plan_devices("auto", 2, 4000, gpus=[]) == ["cpu", "cpu"]


def test_auto_on_this_machine_uses_gpu_inventory() -> None:
    expected = "cpu" if not gpu_inventory() else "cuda"
    assert all(d.startswith(expected) for d in plan_devices("auto", 2, 0))


def test_cuda_without_gpus_raises() -> None:
    with pytest.raises(DevicePlanError, match="no CUDA device"):
        plan_devices("cuda", 1, 0, gpus=[])


def test_unknown_device_raises() -> None:
    with pytest.raises(DevicePlanError, match="'tpu'"):
        plan_devices("tpu", 1, 0, gpus=[])


def test_workers_go_to_the_gpu_with_most_free_memory_left() -> None:
    gpus = [GpuInfo(0, 16000, 10000), GpuInfo(1, 16000, 6000)]
    # 10000 -> 7000 (w0 on 0), 7000 > 6000 -> 4000 (w1 on 0), 6000 > 4000 -> 3000 (w2 on 1)
    assert plan_devices("cuda", 3, 3000, gpus=gpus) == ["cuda:0", "cuda:0", "cuda:1"]
    # 10000 vs 8000: alternates once the first has been charged
    gpus = [GpuInfo(0, 16000, 10000), GpuInfo(1, 16000, 8000)]
    assert plan_devices("cuda", 3, 3000, gpus=gpus) == ["cuda:0", "cuda:1", "cuda:0"]
    # auto with GPUs behaves as cuda
    assert plan_devices("auto", 3, 3000, gpus=gpus) == ["cuda:0", "cuda:1", "cuda:0"]


def test_gpu_indices_are_the_torch_indices_given() -> None:
    gpus = [GpuInfo(2, 16000, 1000), GpuInfo(5, 16000, 9000)]
    assert plan_devices("cuda", 2, 2000, gpus=gpus) == ["cuda:5", "cuda:5"]


def test_equal_free_memory_spreads_with_a_budget() -> None:
    gpus = [GpuInfo(0, 80000, 80000), GpuInfo(1, 80000, 80000)]
    assert plan_devices("cuda", 4, 1000, gpus=gpus) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]


def test_budget_that_does_not_fit_raises_naming_the_numbers() -> None:
    gpus = [GpuInfo(0, 16000, 10000), GpuInfo(1, 16000, 6000)]
    # free after each worker: w0 {0: 7000}, w1 {0: 4000}, w2 {1: 3000}, w3 {0: 1000}, w4 {1: 0}
    assert plan_devices("cuda", 5, 3000, gpus=gpus) == ["cuda:0", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    with pytest.raises(DevicePlanError) as exc:
        plan_devices("cuda", 6, 3000, gpus=gpus)
    msg = str(exc.value)
    assert "worker 5 needs 3000 MB" in msg
    assert "(cuda:0) has 1000 MB left" in msg
    assert "gpu_mem_per_worker_mb" in msg


def test_budget_overflow_message_exact() -> None:
    gpus = [GpuInfo(0, 16000, 5000)]
    with pytest.raises(DevicePlanError) as exc:
        plan_devices("cuda", 3, 2000, gpus=gpus)  # 5000 -> 3000 -> 1000: worker 2 does not fit
    msg = str(exc.value)
    assert "worker 2 needs 2000 MB" in msg
    assert "(cuda:0) has 1000 MB left" in msg
    with pytest.raises(DevicePlanError, match="worker 0 needs 6000 MB"):
        plan_devices("cuda", 1, 6000, gpus=gpus)


def test_zero_budget_never_raises() -> None:
    gpus = [GpuInfo(0, 16000, 10)]
    assert plan_devices("cuda", 3, 0, gpus=gpus) == ["cuda:0"] * 3


def test_zero_budget_still_spreads_over_equal_gpus() -> None:
    gpus = [GpuInfo(0, 80000, 80000), GpuInfo(1, 80000, 80000)]
    assert sorted(set(plan_devices("cuda", 2, 0, gpus=gpus))) == ["cuda:0", "cuda:1"]


# ---- threads ---------------------------------------------------------------------------------


def test_threads_split_usable_cpus_between_cpu_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "usable_cpus", lambda: 16)
    assert threads_per_worker(0, 4, ["cpu"] * 4) == 4
    assert threads_per_worker(0, 3, ["cpu"] * 3) == 5
    assert threads_per_worker(0, 1, ["cpu"]) == 16
    # GPU workers do not count against the CPU split
    assert threads_per_worker(0, 4, ["cuda:0", "cuda:1", "cpu", "cpu"]) == 8
    assert threads_per_worker(0, 2, ["cuda:0", "cuda:0"]) == 16
    # never below one
    assert threads_per_worker(0, 40, ["cpu"] * 40) == 1


def test_threads_explicit_request_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "usable_cpus", lambda: 16)
    assert threads_per_worker(3, 4, ["cpu"] * 4) == 3
    assert threads_per_worker(64, 4, ["cpu"] * 4) == 64


def test_usable_cpus_matches_affinity() -> None:
    import os

    assert devices.usable_cpus() == len(os.sched_getaffinity(0)) >= 1


# ---- inventory ---------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_gpu_inventory_empty_on_cpu_machine() -> None:
    assert gpu_inventory() == []


def test_gpu_inventory_falls_back_to_torch_when_nvml_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend torch sees two GPUs while pynvml has no library: numbers come from torch."""
    import pynvml

    def no_lib() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_lib)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=f"GPU-uuid{i}"))
    mem = {0: (3 * 2**30, 8 * 2**30), 1: (5 * 2**30 + 123, 16 * 2**30)}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: mem[i])
    assert gpu_inventory() == [GpuInfo(0, 8192, 3072), GpuInfo(1, 16384, 5120)]


def test_gpu_inventory_prefers_nvml_numbers_matched_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML enumerates in its own order; torch index i is matched to NVML by UUID."""
    import pynvml

    nvml = {  # NVML index -> (uuid, total, free), in the opposite order from torch
        0: ("GPU-BBB", 40 * 2**30, 30 * 2**30),
        1: ("GPU-AAA", 80 * 2**30, 10 * 2**30),
    }
    shut = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: shut.append(1))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: nvml[h][0].encode())
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(total=nvml[h][1], free=nvml[h][2])
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    torch_uuid = {0: "aaa", 1: "bbb"}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=torch_uuid[i]))

    def no_torch_mem(i: int) -> None:
        raise AssertionError("torch.cuda.mem_get_info must not be used when NVML matched")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_torch_mem)
    assert gpu_inventory() == [GpuInfo(0, 81920, 10240), GpuInfo(1, 40960, 30720)]
    assert shut == [1]
