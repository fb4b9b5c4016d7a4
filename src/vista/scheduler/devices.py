"""Where worker processes run: CUDA devices chosen by free memory (pynvml), else the CPU.

pynvml raising (``NVMLError_LibraryNotFound`` on machines without a driver) means "no GPU
to read", not a crash: we fall back to torch's own view, then to the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from vista.errors import UserError

log = logging.getLogger(__name__)


DEVICES = ("auto", "cpu", "cuda")


class DevicePlanError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class GpuInfo:
    index: int  # torch's CUDA index
    total_mb: int
    free_mb: int


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_inventory() -> list[GpuInfo]:
    """CUDA devices as torch numbers them, with free memory from NVML (matched by UUID)."""
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    nvml_free: dict[str, tuple[int, int]] = {}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                uuid = pynvml.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                nvml_free[uuid.lower().removeprefix("gpu-")] = (mem.total // 2**20, mem.free // 2**20)
        finally:
            pynvml.nvmlShutdown()
    except Exception as err:  # NVMLError_LibraryNotFound and friends: read torch's numbers
        log.info("pynvml unavailable (%s); reading free memory through torch", err)
    out = []
    for i in range(n):
        props = torch.cuda.get_device_properties(i)
        uuid = str(getattr(props, "uuid", "")).lower().removeprefix("gpu-")
        if uuid in nvml_free:
            total, free = nvml_free[uuid]
        else:
            free_b, total_b = torch.cuda.mem_get_info(i)
            total, free = total_b // 2**20, free_b // 2**20
        out.append(GpuInfo(i, int(total), int(free)))
    return out


def plan_devices(
    device: str, num_workers: int, gpu_mem_per_worker_mb: int, gpus: list[GpuInfo] | None = None
) -> list[str]:
    """One device string per worker. ``auto`` uses CUDA when present, else CPU, quietly.

    With CUDA and a per-worker budget, each worker goes to the GPU with the most free memory
    left after the workers already placed there (an error when even that one cannot hold the
    budget); without a budget, workers spread evenly, freest GPU first.
    """
    if device not in DEVICES:
        raise DevicePlanError(f"scheduler.device must be auto, cpu or cuda, not {device!r}")
    if device == "cpu":
        return ["cpu"] * num_workers
    gpus = gpu_inventory() if gpus is None else gpus
    if not gpus:
        if device == "cuda":
            raise DevicePlanError(
                "scheduler.device=cuda but no CUDA device is visible to torch "
                "(check the driver / CUDA_VISIBLE_DEVICES, or use scheduler.device=auto)"
            )
        return ["cpu"] * num_workers
    free = {g.index: g.free_mb for g in gpus}
    placed = {g.index: 0 for g in gpus}
    plan = []
    for w in range(num_workers):
        if gpu_mem_per_worker_mb > 0:
            best = max(free, key=lambda i: free[i])
        else:  # no budget to charge: spread by worker count, then by free memory
            best = min(free, key=lambda i: (placed[i], -free[i]))
        if gpu_mem_per_worker_mb > 0 and free[best] < gpu_mem_per_worker_mb:
            raise DevicePlanError(
                f"worker {w} needs {gpu_mem_per_worker_mb} MB of GPU memory but the freest GPU "
                f"(cuda:{best}) has {free[best]} MB left; lower scheduler.num_workers or "
                f"scheduler.gpu_mem_per_worker_mb"
            )
        free[best] -= gpu_mem_per_worker_mb
        placed[best] += 1
        plan.append(f"cuda:{best}")
    return plan


def cap_gpu_memory(device: str, mem_mb: int | None) -> None:
    """Cap this process's CUDA caching allocator at ``mem_mb`` on ``device``."""
    import torch

    if not device.startswith("cuda") or not mem_mb:
        return
    torch.cuda.set_device(device)
    total = torch.cuda.get_device_properties(device).total_memory / 2**20
    torch.cuda.set_per_process_memory_fraction(min(1.0, mem_mb / total), device)


def threads_per_worker(requested: int, num_workers: int, device_plan: list[str]) -> int:
    """CPU threads per worker: the usable cores split between workers unless set."""
    if requested > 0:
        return requested
    cpu_workers = sum(1 for d in device_plan if d == "cpu") or 1
    return max(1, usable_cpus() // cpu_workers)
