"""How many worker processes, where, with how many threads: ``scheduler.num_workers`` (an int or ``auto``).

Rules of :func:`arrange`:

* ``num_workers`` an int >= 1: that many workers, placed as :func:`vista.scheduler.devices.plan_devices`
  places them, charging each worker ``scheduler.gpu_mem_per_worker_mb`` when > 0, else the GPU need of
  the memory estimate when one is given (so the estimate also checks that the count fits: an error
  when the freest GPU cannot take the next worker), else nothing (an even spread, freest GPU first).
  On the CPU an estimate whose total over the workers passes the host's available memory is an error.
  Threads as :func:`~vista.scheduler.devices.threads_per_worker`: ``threads_per_worker`` when set,
  else the usable cores split between the CPU workers (a GPU worker alone gets them all).
* ``auto`` on the CPU (``device=cpu``, or ``auto`` with no GPU): the fewest of the usable cores, the
  useful workers (the most jobs a round can run at once, e.g. clients per round; None: no limit),
  ``cores // threads_per_worker`` when that is set, and ``floor(0.8 x host available / total_mb)``
  when an estimate is given; at least 1. Threads: ``threads_per_worker`` when set, else
  ``cores // workers``. On a 2-core machine with 4+ clients per round that is 2 workers x 1 thread,
  the measured-best arrangement (Vista 2 workers 1.11x a plain loop vs 1 worker 1.15x).
* ``auto`` on GPUs (``device=cuda``, or ``auto`` with GPUs): a worker needs ``M`` =
  ``scheduler.gpu_mem_per_worker_mb`` when > 0 (taken as is), else the estimate's accelerator part
  (:attr:`~vista.scheduler.memory.MemoryEstimate.gpu_mb`: parameters, optimizer state, activations)
  x ``GPU_SAFETY`` (1.2) + ``CUDA_CONTEXT_MB`` (each process's own CUDA context); with neither,
  one worker per GPU. GPU ``i`` holds ``floor(0.95 x free_i / M)`` workers. When the parent keeps
  the frozen weights once per GPU (``MemoryEstimate.frozen_shared``: ``model.share_weights``, process
  backend), ``M`` leaves them out and a GPU of two or more workers is first charged the parent's copy
  and context (``frozen x 1.2 + CUDA_CONTEXT_MB``); a GPU that fits only one worker gives it its own
  copy, as the keeper does (:mod:`vista.models.device_weights`). The count is the fewest
  of their sum, the useful workers, the usable cores (each worker needs a core to feed its GPU),
  ``cores // threads_per_worker`` when set, and the host memory the workers pass their weights
  through (``floor(0.8 x host available / (overhead + parameters))``). Workers fill greedily: each
  next one on the GPU with the most free memory left after those already placed, among the GPUs
  with room, so unequal free memory gives unequal counts. Threads: ``threads_per_worker`` when set,
  else ``max(1, cores // workers)``.
* A model that does not fit (no GPU can hold one worker; on the CPU, one worker passing the host's
  available memory) is a :class:`~vista.scheduler.devices.DevicePlanError` naming the need, what is
  free and what to do. ``device=cuda`` with no GPU is plan_devices' error.

``Arrangement.reason`` says which limit bound the count, e.g. ``bound by: usable cores (2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vista.scheduler.devices import (
    DEVICES,
    DevicePlanError,
    GpuInfo,
    gpu_inventory,
    plan_devices,
    usable_cpus,
)
from vista.scheduler.memory import OVERRIDE, MemoryEstimate

HOST_HEADROOM = 0.8  # the share of the host's available memory auto may plan for
GPU_HEADROOM = 0.95  # the share of a GPU's free memory auto may plan for
GPU_SAFETY = 1.2  # the estimate's accelerator part x this: fragmentation of the caching allocator, cuBLAS workspaces
# A process's own CUDA context (lazy module loading, cuBLAS handle) as NVML reports it: ~520 MB measured
# on an H200 (torch 2.11, CUDA 13; benchmarks/cuda_weights.py, 2026-12-04), 400-600 MB elsewhere; the
# upper end is charged. `python benchmarks/memory_estimate.py --device cuda` measures it on a GPU machine.
CUDA_CONTEXT_MB = 600.0
HOST_UNKNOWN_MB = 1 << 30  # no /proc/meminfo (not Linux): no host-memory limit
USEFUL = "jobs per round"


def host_available_mb(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """MemAvailable, lowered to what a cgroup's memory limit leaves (containers, Slurm); without
    /proc/meminfo (not Linux) a large number (no limit)."""
    try:
        found = [
            int(line.split()[1]) // 1024
            for line in meminfo.read_text().splitlines()
            if line.startswith("MemAvailable:")
        ]
    except (OSError, ValueError, IndexError):
        found = []
    avail = found[0] if found else HOST_UNKNOWN_MB
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = (cgroup / limit_file).read_text().strip()
            if limit != "max":
                usage = int((cgroup / usage_file).read_text().strip())
                avail = min(avail, max(0, (int(limit) - usage) // 2**20))
            break
        except (OSError, ValueError):
            continue
    return int(avail)


@dataclass(frozen=True)
class Inventory:
    cpus: int  # usable cores (devices.usable_cpus())
    gpus: tuple[GpuInfo, ...]  # free memory per GPU (devices.gpu_inventory())
    host_available_mb: int  # MemAvailable (and the cgroup limit)

    @classmethod
    def probe(cls) -> Inventory:
        """This machine."""
        return cls(usable_cpus(), tuple(gpu_inventory()), host_available_mb())


@dataclass(frozen=True)
class Arrangement:
    devices: tuple[str, ...]  # one per worker: "cpu" or "cuda:i"
    threads: int  # torch threads per worker
    mem_per_worker_mb: float | None  # what each worker is expected to use (on its GPU for GPU workers)
    mem_source: str  # "estimate", "upper bound", "scheduler.gpu_mem_per_worker_mb", or "none"
    reason: str  # why this many workers here

    @property
    def num_workers(self) -> int:
        return len(self.devices)

    def per_device(self) -> dict[str, int]:
        """Workers per device, "cpu" first, then GPUs by index."""
        counts: dict[str, int] = {}
        for d in self.devices:
            counts[d] = counts.get(d, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (kv[0] != "cpu", _index(kv[0]))))

    def to_dict(self) -> dict[str, Any]:
        mem = None if self.mem_per_worker_mb is None else round(float(self.mem_per_worker_mb), 1)
        return {
            "workers": self.num_workers,
            "per_device": self.per_device(),
            "threads": self.threads,
            "mem_per_worker_mb": mem,
            "mem_source": self.mem_source,
            "reason": self.reason,
        }

    def describe(self) -> str:
        n = self.num_workers
        where = ", ".join(f"{d} x{k}" for d, k in self.per_device().items())
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''} each"
        if self.mem_per_worker_mb is None:
            mem = "no memory estimate"
        else:
            of = " of GPU memory" if any(d.startswith("cuda") for d in self.devices) else ""
            mem = f"~{self.mem_per_worker_mb:.0f} MB{of} per worker ({self.mem_source})"
        return f"arrangement: {n} worker{'s' if n != 1 else ''} on {where}, {threads}, {mem}; {self.reason}"


def _index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else -1


def arrange(
    num_workers: int | str,
    device: str,
    threads_per_worker: int,
    gpu_mem_per_worker_mb: int,
    inventory: Inventory,
    memory: MemoryEstimate | None,
    useful_workers: int | None,
) -> Arrangement:
    """The workers for ``scheduler.num_workers`` on ``inventory`` (the rules: this module's docstring)."""
    gpus = list(inventory.gpus)
    if device not in DEVICES or (device == "cuda" and not gpus):
        plan_devices(device, 1, 0, gpus)  # raises plan_devices' one-line error
    on_gpu = device == "cuda" or (device == "auto" and bool(gpus))
    if num_workers == "auto":
        if on_gpu:
            return _auto_gpu(threads_per_worker, gpu_mem_per_worker_mb, inventory, memory, useful_workers)
        return _auto_cpu(threads_per_worker, inventory, memory, useful_workers)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise DevicePlanError(f"scheduler.num_workers must be 'auto' or an integer >= 1 here, got {num_workers!r}")
    return _explicit(
        num_workers, device if on_gpu else "cpu", threads_per_worker, gpu_mem_per_worker_mb, inventory, memory
    )


def _gpu_need(gpu_mem_per_worker_mb: int, memory: MemoryEstimate | None) -> tuple[float | None, str]:
    """(GPU memory one worker needs in MB, where that figure comes from)."""
    if gpu_mem_per_worker_mb > 0:
        return float(gpu_mem_per_worker_mb), OVERRIDE
    if memory is None:
        return None, "none"
    if memory.source == OVERRIDE:
        return memory.gpu_mb, OVERRIDE
    return _charged(memory.worker_gpu_mb), memory.source


def _charged(mb: float) -> float:
    """GPU memory planned for a process holding ``mb`` of estimate: x GPU_SAFETY, plus its CUDA context."""
    return mb * GPU_SAFETY + CUDA_CONTEXT_MB


def _kept_mb(memory: MemoryEstimate | None, gpu_mem_per_worker_mb: int) -> float:
    """What the parent holds on each GPU of two or more workers when it keeps their frozen
    weights (its own CUDA context and one copy); 0 when nothing is kept or the user's budget rules."""
    if memory is None or not memory.frozen_shared or memory.source == OVERRIDE or gpu_mem_per_worker_mb > 0:
        return 0.0
    return _charged(memory.frozen_mb)


def _fits(free_mb: float, need: float, kept: float, memory: MemoryEstimate | None) -> int:
    """Workers one GPU holds: with a kept copy, two or more sharing it, else one with its own copy."""
    room = free_mb * GPU_HEADROOM
    if kept <= 0 or memory is None:
        return int(room // need)
    together = int((room - kept) // need)
    if together >= 2:
        return together
    return int(room >= _charged(memory.gpu_mb))  # alone, with its own copy


def _bound(limits: list[tuple[str, int]]) -> tuple[int, str]:
    """(the fewest workers any limit allows, at least 1; "bound by: " the limits that allow just that)."""
    fewest = min(value for _, value in limits)
    binding = [name for name, value in limits if value == fewest]
    return max(1, fewest), "bound by: " + ", ".join(binding)


def _common_limits(cpus: int, threads_per_worker: int, useful: int | None) -> list[tuple[str, int]]:
    limits = [(f"usable cores ({cpus})", cpus)]
    if threads_per_worker > 0:
        limits.append(
            (f"scheduler.threads_per_worker={threads_per_worker} on {cpus} cores", cpus // threads_per_worker)
        )
    if useful is not None:
        limits.append((f"{USEFUL} ({useful})", max(1, int(useful))))
    return limits


def _auto_cpu(
    threads_per_worker: int, inv: Inventory, memory: MemoryEstimate | None, useful: int | None
) -> Arrangement:
    cpus = max(1, inv.cpus)
    limits = _common_limits(cpus, threads_per_worker, useful)
    if memory is not None:
        if memory.total_mb > inv.host_available_mb:
            raise DevicePlanError(
                f"one CPU worker needs ~{memory.total_mb:.0f} MB ({memory.source}) but the host has "
                f"{inv.host_available_mb} MB available; use a smaller fl.batch_size / fl.max_seq_len, "
                f"a smaller model or a GPU (scheduler.device=cuda)"
            )
        limits.append(
            (
                f"host memory ({inv.host_available_mb} MB available)",
                int(inv.host_available_mb * HOST_HEADROOM // memory.total_mb),
            )
        )
    workers, reason = _bound(limits)
    threads = threads_per_worker if threads_per_worker > 0 else max(1, cpus // workers)
    return Arrangement(
        ("cpu",) * workers,
        threads,
        None if memory is None else memory.total_mb,
        "none" if memory is None else memory.source,
        reason,
    )


def _auto_gpu(
    threads_per_worker: int,
    gpu_mem_per_worker_mb: int,
    inv: Inventory,
    memory: MemoryEstimate | None,
    useful: int | None,
) -> Arrangement:
    cpus = max(1, inv.cpus)
    need, source = _gpu_need(gpu_mem_per_worker_mb, memory)
    kept = _kept_mb(memory, gpu_mem_per_worker_mb)
    gpus = sorted(inv.gpus, key=lambda g: (-g.free_mb, g.index))  # freest first
    if need is None:
        fits = {g.index: 1 for g in gpus}
        limits = [(f"one worker per GPU without a memory estimate ({len(gpus)})", len(gpus))]
    else:
        fits = {g.index: _fits(g.free_mb, need, kept, memory) for g in gpus}
        if not any(fits.values()):
            top, alone = gpus[0], need if kept <= 0 else _charged(memory.gpu_mb)
            raise DevicePlanError(
                f"a worker needs ~{alone:.0f} MB of GPU memory ({source}) but the freest GPU (cuda:{top.index}) "
                f"has {top.free_mb} MB free ({GPU_HEADROOM:.0%} of it plannable); use a smaller fl.batch_size / "
                f"fl.max_seq_len, scheduler.device=cpu, or set scheduler.gpu_mem_per_worker_mb"
            )
        per_gpu = ", ".join(f"cuda:{g.index} fits {fits[g.index]}" for g in sorted(gpus, key=lambda g: g.index))
        limits = [(f"GPU memory: {per_gpu}", sum(fits.values()))]
    limits += _common_limits(cpus, threads_per_worker, useful)
    if memory is not None and memory.source != OVERRIDE:
        host_need = memory.overhead_mb + memory.frozen_mb + memory.trainable_mb  # weights load on the host first
        limits.append(
            (
                f"host memory ({inv.host_available_mb} MB available)",
                int(inv.host_available_mb * HOST_HEADROOM // max(host_need, 1.0)),
            )
        )
    workers, reason = _bound(limits)
    free = {g.index: float(g.free_mb) for g in gpus}
    placed = {g.index: 0 for g in gpus}
    devices = []
    for _ in range(workers):
        room = [g.index for g in gpus if placed[g.index] < fits[g.index]]
        best = max(room, key=lambda i: (free[i], -i))
        free[best] -= need or 0.0
        placed[best] += 1
        devices.append(f"cuda:{best}")
    threads = threads_per_worker if threads_per_worker > 0 else max(1, cpus // workers)
    return Arrangement(tuple(devices), threads, need, source, reason)


def _explicit(
    n: int,
    device: str,
    threads_per_worker: int,
    gpu_mem_per_worker_mb: int,
    inv: Inventory,
    memory: MemoryEstimate | None,
) -> Arrangement:
    reason = f"scheduler.num_workers={n} as set"
    if device == "cpu":
        total = None if memory is None else memory.total_mb
        if total is not None and n * total > inv.host_available_mb:
            raise DevicePlanError(
                f"scheduler.num_workers={n} CPU workers need ~{n * total:.0f} MB ({total:.0f} MB each, "
                f"{memory.source}) but the host has {inv.host_available_mb} MB available; lower "
                f"scheduler.num_workers (or set it to auto), or use a smaller fl.batch_size / fl.max_seq_len"
            )
        devices = plan_devices("cpu", n, 0, [])
        source = "none" if memory is None else memory.source
    else:
        total, source = _gpu_need(gpu_mem_per_worker_mb, memory)
        budget = math.ceil(total) if total is not None else 0
        kept = _kept_mb(memory, gpu_mem_per_worker_mb) if n >= 2 else 0.0  # charged to every GPU: safe side
        gpus = [replace(g, free_mb=max(0, int(g.free_mb - kept))) for g in inv.gpus]
        try:
            devices = plan_devices(device, n, budget, gpus)
        except DevicePlanError as err:
            if source == OVERRIDE or total is None:
                raise
            raise DevicePlanError(
                f"scheduler.num_workers={n} does not fit: each worker needs ~{budget} MB of GPU memory "
                f"({source}) and {err}; or set scheduler.num_workers=auto, a smaller fl.batch_size / "
                f"fl.max_seq_len, or scheduler.gpu_mem_per_worker_mb"
            ) from None
    if threads_per_worker > 0:
        threads = threads_per_worker
    else:  # devices.threads_per_worker's rule, on this inventory's cores
        threads = max(1, max(1, inv.cpus) // (sum(1 for d in devices if d == "cpu") or 1))
    return Arrangement(tuple(devices), threads, total, source, reason)
