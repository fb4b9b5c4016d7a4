"""The Ray actor behind ``scheduler=ray``: one worker that builds its runtime once.

Kept apart from the executor so the actor's module is small to import on every node. The
class is plain; :func:`actor_class` wraps it with ``ray.remote`` once Ray is imported (Vista
imports Ray only when ``scheduler=ray`` is chosen).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from typing import Any

from vista.pipeline.protocol import JobResult, RunJob, WorkerEnv, WorkerInit
from vista.scheduler import faults
from vista.scheduler.worker import run_job

_REMOTE: Any = None


class VistaWorker:
    """Builds ``init.runtime_factory(args, env)`` on construction (again after a restart)."""

    def __init__(self, init: WorkerInit, shipment: Any = None) -> None:
        import ray
        import torch

        from vista.scheduler.devices import cap_gpu_memory

        t0 = time.perf_counter()
        self.worker_id = init.worker_id
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._log_to(init.log_file)
        log = logging.getLogger("vista.worker")
        try:
            faults.inject(faults.action_for_start(init.worker_id, init.start + int(restarted)),
                          f"worker {init.worker_id} start")
            torch.set_num_threads(init.num_threads)
            device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per actor
            cap_gpu_memory(device, init.gpu_mem_mb)
            args = shipment.materialize(init.runtime_args, ray.get) if shipment is not None else init.runtime_args
            self.runtime = init.runtime_factory(args, WorkerEnv(init.worker_id, device))
        except BaseException:
            log.error("worker %d failed to start:\n%s", init.worker_id, traceback.format_exc())
            raise
        ctx = ray.get_runtime_context()
        self.info = {"pid": os.getpid(), "device": device, "threads": torch.get_num_threads(),
                     "node": f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:12]}",
                     "host": socket.gethostname(), "seconds": time.perf_counter() - t0, "restarted": restarted,
                     "shipped": shipment is not None}
        log.info("worker %d ready on %s (%s) in %.1fs%s", init.worker_id, device, self.info["node"],
                 self.info["seconds"], " after a restart" if restarted else "")
        self._shared_id: str | None = None
        self._shared: Any = None

    @staticmethod
    def _log_to(log_file: str | None) -> None:
        """The worker's log file when its directory is reachable here (the driver's machine)."""
        if log_file and os.path.isdir(os.path.dirname(log_file)):
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                                handlers=[logging.FileHandler(log_file)], force=True)

    def ready(self) -> dict[str, Any]:
        return self.info

    def run(self, job: RunJob, shared_box: list[Any] | None) -> JobResult:
        """One attempt of a job. ``shared_box`` holds the group's payload ref on the first job
        of a group this actor gets (a list, so Ray hands over the ref, not the value)."""
        if job.shared_id != self._shared_id:
            import ray

            self._shared = ray.get(shared_box[0]) if shared_box else None
            self._shared_id = job.shared_id
        return run_job(self.runtime, job, self._shared, self.worker_id)


def actor_class(ray: Any) -> Any:
    """``ray.remote(VistaWorker)``, made once."""
    global _REMOTE
    if _REMOTE is None:
        _REMOTE = ray.remote(VistaWorker)
    return _REMOTE
