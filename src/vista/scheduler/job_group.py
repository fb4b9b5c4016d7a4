"""The dispatch state of one ``run_jobs`` call, shared by every backend.

What happens to a job's attempt once it is over (final, re-run, or cancelled because the
run is stopping) is the fault semantics of :mod:`vista.pipeline.executor`; keeping it in one
place is what keeps the process and Ray backends agreeing on it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Sequence

from vista.pipeline.protocol import JobRequest, JobResult, JobState

log = logging.getLogger(__name__)


def cancelled(req: JobRequest, why: str, worker: int | None = None, attempt: int = 0) -> JobResult:
    """The CANCELLED result of a job that was stopped (or never started)."""
    return JobResult(req.job_id, req.key, JobState.CANCELLED, error=f"cancelled: {why}", traceback="(not run)",
                     worker=worker, attempt=attempt)


class JobGroup:
    """Jobs not yet started (``pending``), those on a worker now (``live``), and the results."""

    def __init__(self, requests: Sequence[JobRequest], shared: Any, shared_id: str | None,
                 on_start: Callable[[str, int], None], on_done: Callable[[JobResult], None],
                 on_retry: Callable[[JobResult, int], None], on_respawn: Callable[[int, str], None],
                 stop_on_failure: bool) -> None:
        self.pending: deque[tuple[JobRequest, int]] = deque((r, 0) for r in requests)
        self.live: dict[str, tuple[JobRequest, int]] = {}  # job id -> (request, attempt) on a worker now
        self.shared, self.shared_id = shared, shared_id
        self.on_start, self.on_done, self.on_retry, self.on_respawn = on_start, on_done, on_retry, on_respawn
        self.stop_on_failure = stop_on_failure
        self.results: list[JobResult] = []
        self.failed = False

    def finish(self, res: JobResult) -> None:
        self.results.append(res)
        self.on_done(res)
        if res.state in (JobState.FAILED, JobState.TIMED_OUT) and self.stop_on_failure:
            self.failed = True

    @property
    def done(self) -> bool:
        return self.failed or (not self.pending and not self.live)

    def started(self, req: JobRequest, attempt: int) -> None:
        self.live[req.job_id] = (req, attempt)

    def attempt_over(self, res: JobResult, max_retries: int, stopping: bool) -> bool:
        """One attempt of a live job ended: its result is final, it is cancelled (it would run
        again but the run is stopping), or it goes back to the front of the queue. True when
        it will be re-run (the caller counts the retry)."""
        req, attempt = self.live.pop(res.job_id)
        if res.ok or attempt >= max_retries:
            self.finish(res)
            return False
        if stopping:
            self.finish(cancelled(req, f"stop requested; its attempt {attempt} ended {res.state.value}: {res.error}",
                                  res.worker, attempt))
            return False
        log.warning("job %s attempt %d %s on worker %s (%s); re-running it (attempt %d of at most %d)",
                    res.job_id, attempt, res.state.value, res.worker, (res.error or "").splitlines()[0],
                    attempt + 1, max_retries + 1)
        self.on_retry(res, attempt + 1)
        self.pending.appendleft((req, attempt + 1))
        return True

    def cancel_pending(self) -> None:
        while self.pending:
            req, attempt = self.pending.popleft()
            self.finish(cancelled(req, "stop requested before it started", attempt=attempt))

    def cancel_live(self, job_id: str, why: str, worker: int) -> None:
        req, attempt = self.live.pop(job_id)
        self.finish(cancelled(req, why, worker, attempt))

    def fail_pending(self, error: str) -> None:
        """No worker is left: every job not yet run fails with ``error``."""
        while self.pending:
            req, attempt = self.pending.popleft()
            self.finish(JobResult(req.job_id, req.key, JobState.FAILED, attempt=attempt, error=error,
                                  traceback="(not run)"))
