"""scheduler.num_workers=auto and explicit counts on fake inventories: exact arrangements."""

from __future__ import annotations

import math

import pytest

from vista.scheduler.arrangement import (
    CUDA_CONTEXT_MB,
    GPU_SAFETY,
    Arrangement,
    Inventory,
    arrange,
    host_available_mb,
)
from vista.scheduler.devices import DevicePlanError, GpuInfo
from vista.scheduler.memory import ESTIMATE, OVERRIDE, MemoryEstimate

BIG = 10**6  # MB of host memory: never the limit unless a test says so
# an estimate with gpu_mb 1000 (GPU need 1000 x 1.2 + context) and total_mb 1500 on the CPU
EST = MemoryEstimate(
    frozen_mb=100.0, trainable_mb=10.0, activations_mb=890.0, source=ESTIMATE, overhead_mb=400.0, heap_slack_mb=100.0
)
NEED = 1000.0 * GPU_SAFETY + CUDA_CONTEXT_MB


def cpu(cores: int, host: int = BIG) -> Inventory:
    return Inventory(cpus=cores, gpus=(), host_available_mb=host)


def gpus(cores: int, *free: int, host: int = BIG) -> Inventory:
    return Inventory(cpus=cores, gpus=tuple(GpuInfo(i, 141_000, f) for i, f in enumerate(free)), host_available_mb=host)


def auto(inv: Inventory, memory=None, useful=None, device="auto", threads=0, gpu_mem=0) -> Arrangement:
    return arrange("auto", device, threads, gpu_mem, inv, memory, useful)


# -- CPU ---------------------------------------------------------------------------------------
def test_two_cores_give_two_workers_of_one_thread():
    a = auto(cpu(2), EST, useful=4)
    assert a.devices == ("cpu", "cpu") and a.threads == 1 and a.num_workers == 2
    assert a.mem_per_worker_mb == EST.total_mb == 1500 and a.mem_source == ESTIMATE
    assert a.reason == "bound by: usable cores (2)"
    assert a.describe() == (
        "arrangement: 2 workers on cpu x2, 1 thread each, ~1500 MB per worker (estimate); bound by: usable cores (2)"
    )


def test_sixteen_cores_four_clients_per_round():
    a = auto(cpu(16), EST, useful=4)
    assert (a.num_workers, a.threads) == (4, 4)
    assert a.reason == "bound by: jobs per round (4)"
    assert a.to_dict() == {
        "workers": 4,
        "per_device": {"cpu": 4},
        "threads": 4,
        "mem_per_worker_mb": 1500.0,
        "mem_source": ESTIMATE,
        "reason": "bound by: jobs per round (4)",
    }


def test_no_limit_but_the_cores_and_no_estimate():
    a = auto(cpu(8))
    assert (a.num_workers, a.threads, a.mem_per_worker_mb, a.mem_source) == (8, 1, None, "none")
    assert "no memory estimate" in a.describe()


def test_host_memory_binds():
    a = auto(cpu(16, host=8000), EST, useful=10)  # floor(8000 * 0.8 / 1500) = 4
    assert (a.num_workers, a.threads) == (4, 4)
    assert a.reason == "bound by: host memory (8000 MB available)"
    one = auto(cpu(16, host=1600), EST)  # 0.8 x 1600 < 1500 <= 1600: still one worker
    assert one.num_workers == 1 and one.threads == 16


def test_one_worker_over_the_host_memory_is_an_error():
    with pytest.raises(DevicePlanError, match=r"needs ~1500 MB \(estimate\) but the host has 1000 MB available"):
        auto(cpu(4, host=1000), EST)


def test_threads_per_worker_set_bounds_the_workers():
    a = auto(cpu(16), threads=3)
    assert (a.num_workers, a.threads) == (5, 3)
    assert a.reason == "bound by: scheduler.threads_per_worker=3 on 16 cores"
    assert auto(cpu(2), threads=4).devices == ("cpu",)  # more threads than cores: one worker


# -- GPUs --------------------------------------------------------------------------------------
def test_one_gpu_holds_several_workers():
    a = auto(gpus(16, 10_000), EST)
    fits = math.floor(10_000 * 0.95 / NEED)  # 5
    assert a.devices == ("cuda:0",) * fits and a.threads == 16 // fits
    assert a.mem_per_worker_mb == NEED and a.mem_source == ESTIMATE
    assert a.reason == f"bound by: GPU memory: cuda:0 fits {fits}"
    assert a.describe().startswith(
        f"arrangement: {fits} workers on cuda:0 x{fits}, 3 threads each, "
        f"~{NEED:.0f} MB of GPU memory per worker (estimate)"
    )


def test_the_override_is_the_need_as_given():
    a = auto(gpus(16, 10_000), EST, gpu_mem=2000)
    assert a.num_workers == 4 and a.mem_per_worker_mb == 2000 and a.mem_source == OVERRIDE  # 9500 // 2000
    b = auto(gpus(16, 10_000), MemoryEstimate.override(2000))
    assert (b.num_workers, b.mem_per_worker_mb, b.mem_source) == (4, 2000, OVERRIDE)


def test_two_gpus_of_unequal_free_memory_freest_first():
    inv = gpus(64, 8_000, 20_000)  # cuda:1 is the freest
    a = auto(inv, EST)
    assert a.devices[0] == "cuda:1"
    assert a.per_device() == {"cuda:0": 4, "cuda:1": 10}  # floor(7600 / 1800), floor(19000 / 1800)
    assert a.reason == "bound by: GPU memory: cuda:0 fits 4, cuda:1 fits 10"
    b = auto(inv, EST, useful=8)  # cuda:1 keeps the most free memory for 7 workers
    assert b.devices == ("cuda:1",) * 7 + ("cuda:0",) and b.per_device() == {"cuda:0": 1, "cuda:1": 7}
    assert b.reason == "bound by: jobs per round (8)" and b.threads == 8


def test_eight_gpus_bound_by_cores_then_by_useful_workers():
    free = (30_000, 5_000, 12_000, 34_000, 9_000, 2_000, 31_000, 15_000)
    a = auto(gpus(6, *free), EST)
    assert a.num_workers == 6 and a.threads == 1
    assert a.reason == "bound by: usable cores (6)"
    # each next worker on the GPU with the most free memory left: 34000, 32200, 31000, 30400, 30000, 29200
    assert a.devices == ("cuda:3", "cuda:3", "cuda:6", "cuda:3", "cuda:0", "cuda:6")
    b = auto(gpus(64, *free), EST, useful=3)
    assert b.devices == ("cuda:3", "cuda:3", "cuda:6") and b.threads == 21
    c = auto(gpus(256, *free), EST)  # only memory binds: each GPU its own count
    fits = {f"cuda:{i}": math.floor(f * 0.95 / NEED) for i, f in enumerate(free)}
    assert c.per_device() == {d: k for d, k in fits.items() if k} and c.num_workers == sum(fits.values())


def test_gpus_without_an_estimate_take_one_worker_each():
    a = auto(gpus(16, 8_000, 20_000))
    assert a.devices == ("cuda:1", "cuda:0") and a.threads == 8 and a.mem_source == "none"
    assert a.reason == "bound by: one worker per GPU without a memory estimate (2)"


def test_a_model_that_fits_no_gpu():
    with pytest.raises(DevicePlanError) as err:
        auto(gpus(16, 1_000, 1_500), EST)
    msg = str(err.value)
    assert f"needs ~{NEED:.0f} MB of GPU memory (estimate)" in msg
    assert "the freest GPU (cuda:1) has 1500 MB free" in msg
    for fix in ("fl.batch_size", "fl.max_seq_len", "scheduler.device=cpu", "scheduler.gpu_mem_per_worker_mb"):
        assert fix in msg
    assert "\n" not in msg


def test_gpu_workers_bound_by_host_memory():
    a = auto(gpus(64, 80_000, host=2_000), EST)  # each passes 400 + 100 + 10 MB through the host
    assert a.num_workers == 3 and a.reason == "bound by: host memory (2000 MB available)"


def test_cuda_without_a_gpu_is_plan_devices_error():
    with pytest.raises(DevicePlanError, match="no CUDA device is visible"):
        auto(cpu(4), EST, device="cuda")
    with pytest.raises(DevicePlanError, match="no CUDA device is visible"):
        arrange(2, "cuda", 0, 0, cpu(4), None, None)


def test_cpu_device_ignores_gpus():
    a = auto(gpus(4, 80_000), EST, device="cpu", useful=8)
    assert a.devices == ("cpu",) * 4 and a.mem_per_worker_mb == EST.total_mb


# -- explicit counts ---------------------------------------------------------------------------
def test_an_explicit_count_is_placed_like_plan_devices():
    a = arrange(3, "auto", 0, 0, cpu(2), EST, None)
    assert a.devices == ("cpu",) * 3 and a.threads == 1 and a.reason == "scheduler.num_workers=3 as set"
    b = arrange(3, "auto", 0, 0, gpus(16, 8_000, 20_000), EST, 2)  # useful_workers does not cut a set count
    assert b.devices == ("cuda:1", "cuda:1", "cuda:1") and b.mem_per_worker_mb == NEED
    c = arrange(3, "cuda", 0, 0, gpus(16, 8_000, 20_000), None, None)  # no budget: an even spread
    assert c.devices == ("cuda:1", "cuda:0", "cuda:1") and c.mem_source == "none"
    d = arrange(2, "auto", 5, 0, cpu(16), None, None)
    assert d.threads == 5


def test_an_explicit_count_the_estimate_does_not_fit():
    with pytest.raises(DevicePlanError) as err:
        arrange(6, "cuda", 0, 0, gpus(16, 10_000), EST, None)  # 5 x 1800 fit in 10000
    msg = str(err.value)
    assert msg.startswith(f"scheduler.num_workers=6 does not fit: each worker needs ~{math.ceil(NEED)} MB")
    assert "(estimate)" in msg and "scheduler.num_workers=auto" in msg
    with pytest.raises(DevicePlanError, match="lower scheduler.num_workers or scheduler.gpu_mem_per_worker_mb"):
        arrange(6, "cuda", 0, 2000, gpus(16, 10_000), EST, None)  # the user's own figure: plan_devices' words
    with pytest.raises(DevicePlanError, match=r"scheduler.num_workers=4 CPU workers need ~6000 MB"):
        arrange(4, "cpu", 0, 0, cpu(4, host=5_000), EST, None)


@pytest.mark.parametrize("bad", [0, -1, "two", 2.0, True])
def test_bad_counts(bad):
    with pytest.raises(DevicePlanError, match="scheduler.num_workers must be 'auto' or an integer >= 1"):
        arrange(bad, "cpu", 0, 0, cpu(2), None, None)


# -- the inventory -----------------------------------------------------------------------------
def test_host_available_reads_meminfo_and_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   20480000 kB\n")
    cg = tmp_path / "cgroup"
    cg.mkdir()
    assert host_available_mb(meminfo, cg) == 20000
    (cg / "memory.max").write_text("max\n")
    assert host_available_mb(meminfo, cg) == 20000
    (cg / "memory.max").write_text(f"{8 * 2**30}\n")
    (cg / "memory.current").write_text(f"{2 * 2**30}\n")
    assert host_available_mb(meminfo, cg) == 6 * 1024
    assert host_available_mb(tmp_path / "absent", tmp_path / "absent") > 10**8


def test_probe_reads_this_machine():
    inv = Inventory.probe()
    assert inv.cpus >= 1 and inv.host_available_mb > 0 and all(g.free_mb >= 0 for g in inv.gpus)


# -- the parent keeps the frozen weights once per GPU (models.device_weights) -------------------
# a 1B model's shape: 4,300 MB frozen, small adapters, 3,000 MB of activations
BIG_FROZEN = MemoryEstimate(frozen_mb=4300.0, trainable_mb=50.0, activations_mb=3000.0, source=ESTIMATE)
SHARED = MemoryEstimate(**{**vars(BIG_FROZEN), "frozen_shared": True})
OWN = (4300 + 50 + 3000) * GPU_SAFETY + CUDA_CONTEXT_MB  # a worker with its own copy
LEAN = (50 + 3000) * GPU_SAFETY + CUDA_CONTEXT_MB  # a worker mapping the kept copy
KEPT = 4300 * GPU_SAFETY + CUDA_CONTEXT_MB  # the parent's copy and context


def test_a_shared_copy_lets_more_workers_onto_a_gpu():
    assert SHARED.worker_gpu_mb == 3050 and BIG_FROZEN.worker_gpu_mb == SHARED.gpu_mb == 7350
    plain = auto(gpus(64, 60_000), BIG_FROZEN)
    shared = auto(gpus(64, 60_000), SHARED)
    assert plain.num_workers == math.floor(60_000 * 0.95 / OWN) == 6
    assert shared.num_workers == math.floor((60_000 * 0.95 - KEPT) / LEAN) == 12
    assert shared.mem_per_worker_mb == LEAN and shared.reason == "bound by: GPU memory: cuda:0 fits 12"
    assert SHARED.to_dict()["frozen_shared"] is True


def test_a_gpu_that_fits_one_worker_gives_it_its_own_copy():
    # room 0.95 x 12,000 = 11,400: one worker with its own copy (9,420) fits; the kept copy (5,760)
    # plus two lean workers (2 x 4,260) does not
    inv = gpus(64, 12_000)
    assert auto(inv, SHARED).devices == ("cuda:0",)
    with pytest.raises(DevicePlanError, match=f"a worker needs ~{OWN:.0f} MB of GPU memory"):
        auto(gpus(64, 8_000), SHARED)  # not even one worker with its own copy


def test_an_explicit_count_is_charged_the_kept_copy_once_per_gpu():
    # 4 workers: 5,760 kept + 4 x 4,260 = 22,800 MB on one GPU of 23,000 free; without the kept copy
    # charged they would need 4 x 9,420
    a = arrange(4, "cuda", 0, 0, gpus(64, 23_000), SHARED, None)
    assert a.devices == ("cuda:0",) * 4 and a.mem_per_worker_mb == LEAN
    with pytest.raises(DevicePlanError, match="does not fit"):
        arrange(4, "cuda", 0, 0, gpus(64, 23_000), BIG_FROZEN, None)
    with pytest.raises(DevicePlanError, match="does not fit"):
        arrange(5, "cuda", 0, 0, gpus(64, 23_000), SHARED, None)  # 5,760 + 5 x 4,260 > 23,000
