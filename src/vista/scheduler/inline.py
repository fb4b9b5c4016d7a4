"""InlineExecutor: runs jobs in the pipeline process (``scheduler.num_workers=0``).

Same runtime, same job results, no processes: for debugging with pdb and for tests of
code that sits above the scheduler.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from vista.pipeline.protocol import JobRequest, JobResult, RunJob, WorkerEnv
from vista.scheduler.worker import run_job


class InlineExecutor:
    def __init__(self, runtime_factory: Callable[..., Any], runtime_args: Any, device: str = "cpu") -> None:
        self.runtime = runtime_factory(runtime_args, WorkerEnv(0, device))
        self.devices = [device]

    def run_jobs(
        self,
        requests: Sequence[JobRequest],
        shared: Any,
        on_start: Callable[[str, int], None] = lambda job_id, worker: None,
        on_done: Callable[[JobResult], None] = lambda result: None,
        stop_on_failure: bool = True,
    ) -> list[JobResult]:
        results = []
        for req in requests:
            on_start(req.job_id, 0)
            res = run_job(self.runtime, RunJob(req.job_id, req.fn, req.key, req.payload), shared, 0)
            results.append(res)
            on_done(res)
            if not res.ok and stop_on_failure:
                break
        return results

    def shutdown(self) -> None:
        close = getattr(self.runtime, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "InlineExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
