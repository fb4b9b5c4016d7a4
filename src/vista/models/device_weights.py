"""One copy of the frozen weights per GPU: the parent holds it, the GPU's workers map it (CUDA IPC).

On the host, frozen tensors are already one copy per machine (:mod:`vista.models.shared_weights`:
views of the memory-mapped file). On a GPU each worker used to copy them to the device again, so
N workers on one GPU held N copies of the frozen base. Now the parent (a
:class:`WeightKeeper`, made before any worker starts) builds the model the workers build, keeps
one copy of its frozen parameters on each GPU the plan uses, and hands each worker, in its
:class:`~vista.pipeline.protocol.WorkerInit`, CUDA IPC handles to them (torch's own
``reduce_tensor``: what ``torch.multiprocessing`` sends). The worker maps them and points its own
frozen parameters at them (:func:`adopt`); trainable tensors, optimizer state and activations
stay its own. The parent outlives its workers (a replaced worker maps the same memory again),
so the memory is never freed under a worker.

What is shared: parameters that do not train after the PEFT method is applied, matched by name,
shape and dtype, and checked equal to what the worker loaded (a tensor that differs stays
private). Full fine-tuning trains everything, so nothing is shared and no keeper is made.
Frozen means *never written*: nothing in Vista writes a frozen parameter in place (the one
exception, FedEx-LoRA's residual folding, re-points the weight at a private copy first), and
:class:`WriteGuard` checks after every job that no shared tensor was written: a write would
change every worker's model, so it is an error, not a warning. The process and inline backends
use it; Ray's actors may live on other hosts, so they keep private device copies.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vista.peft.state import frozen_parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceWeights:
    """What a worker gets: IPC handles of one GPU's frozen tensors (picklable, no CUDA needed)."""

    device: str
    handles: dict[str, tuple[Callable[..., torch.Tensor], tuple[Any, ...]]]

    def open(self) -> dict[str, torch.Tensor]:
        """The tensors themselves, mapped into this process (the device's memory, not a copy)."""
        return {name: rebuild(*args) for name, (rebuild, args) in self.handles.items()}


class WeightKeeper:
    """The parent's copy of the frozen parameters on each GPU, for the workers there to map.

    ``build`` makes the model exactly as a worker does (same files, same PEFT method, same
    seed) on the CPU, once per :meth:`prepare` that has GPUs to fill."""

    def __init__(self, build: Callable[[], torch.nn.Module]) -> None:
        self._build = build
        self._on: dict[str, dict[str, torch.Tensor]] = {}

    def prepare(self, devices: Sequence[str]) -> None:
        """Copy the frozen parameters to each CUDA device that ``devices`` (the workers' devices,
        one entry per worker) names twice or more. One worker alone on a GPU keeps its own copy:
        a keeper there would only add the parent's CUDA context (~0.5 GB, measured on an H200)."""
        todo = [d for d, n in Counter(devices).items() if d.startswith("cuda") and n >= 2 and d not in self._on]
        if not todo:
            return
        with torch.random.fork_rng(devices=[]):  # the parent's own random streams stay as they were
            host = {k: p.detach() for k, p in frozen_parameters(self._build()).items()}
        for device in todo:
            self._on[device] = {k: t.to(device) for k, t in host.items()}
            log.info("frozen weights kept once on %s for its workers: %d tensors, %.1f MB", device, len(host),
                     sum(t.numel() * t.element_size() for t in host.values()) / 2**20)

    def handles(self, device: str) -> DeviceWeights | None:
        """Fresh IPC handles for one worker on ``device`` (None: nothing kept there)."""
        tensors = self._on.get(device)
        if not tensors:
            return None
        from torch.multiprocessing.reductions import reduce_tensor

        return DeviceWeights(device, {k: reduce_tensor(t) for k, t in tensors.items()})

    @property
    def devices(self) -> list[str]:
        return list(self._on)

    def close(self) -> None:
        self._on.clear()


@dataclass(frozen=True)
class AdoptReport:
    shared_tensors: int
    shared_bytes: int
    private_tensors: int  # frozen, but missing from the shared set or different from it
    private_bytes: int

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def adopt(model: torch.nn.Module, shared: dict[str, torch.Tensor], verify: bool = True) -> AdoptReport:
    """Point ``model``'s frozen parameters at the ``shared`` tensors of the same name, shape and
    dtype (and, with ``verify``, equal values); the rest stay as they are."""
    n_shared = n_private = b_shared = b_private = 0
    with torch.no_grad():
        for name, p in frozen_parameters(model).items():
            nbytes = p.numel() * p.element_size()
            t = shared.get(name)
            if t is None or t.shape != p.shape or t.dtype != p.dtype or (verify and not _equal(p, t)):
                n_private, b_private = n_private + 1, b_private + nbytes
                continue
            p.data = t
            n_shared, b_shared = n_shared + 1, b_shared + nbytes
    report = AdoptReport(n_shared, b_shared, n_private, b_private)
    if n_private:
        log.warning("%d frozen tensors (%.1f MB) are not in the shared copy or differ from it: kept private",
                    n_private, b_private / 2**20)
    return report


def _equal(p: torch.Tensor, shared: torch.Tensor) -> bool:
    return bool(torch.equal(p.detach().to(shared.device), shared))


class WriteGuard:
    """Notices a shared tensor written in place (every worker on the device would see it)."""

    def __init__(self, model: torch.nn.Module, shared: dict[str, torch.Tensor]) -> None:
        ptrs = {t.data_ptr() for t in shared.values()}
        self._watch = [(name, p, p.data_ptr(), p._version) for name, p in frozen_parameters(model).items()
                       if p.data_ptr() in ptrs]

    def check(self) -> None:
        """Raise when a parameter still pointing at shared memory was written since adoption.
        (One that was re-pointed at a private copy first, as residual folding does, is fine.)"""
        written = [name for name, p, ptr, version in self._watch if p.data_ptr() == ptr and p._version != version]
        if written:
            raise RuntimeError(f"{len(written)} frozen weights shared with the GPU's other workers were written in "
                               f"place ({', '.join(written[:3])}...): give the tensor a private copy before writing "
                               f"it (p.data = p.detach().clone()), or run with model.share_weights=false")

    @property
    def watched(self) -> int:
        return len(self._watch)
