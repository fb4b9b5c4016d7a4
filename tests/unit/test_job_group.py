"""The attempt bookkeeping both backends share (vista.scheduler.job_group)."""

from vista.pipeline.protocol import JobRequest, JobResult, JobState
from vista.scheduler.job_group import JobGroup


def _group(n: int = 2, stop_on_failure: bool = True) -> tuple[JobGroup, list]:
    heard: list = []
    reqs = [JobRequest(f"j{i}", "g", "fn", i, {}) for i in range(n)]
    g = JobGroup(reqs, None, None, lambda *a: None, lambda r: heard.append(("done", r.job_id, r.state)),
                 lambda r, a: heard.append(("retry", r.job_id, a)), lambda *a: None, stop_on_failure)
    return g, heard


def _run_next(g: JobGroup) -> JobRequest:
    req, attempt = g.pending.popleft()
    g.started(req, attempt)
    return req


def test_a_failed_attempt_is_rerun_first_then_final_after_max_retries():
    g, heard = _group()
    req = _run_next(g)
    assert g.attempt_over(JobResult(req.job_id, req.key, JobState.FAILED, error="boom"), 1, stopping=False)
    assert g.pending[0] == (req, 1) and heard == [("retry", "j0", 1)]
    req = _run_next(g)
    assert not g.attempt_over(JobResult(req.job_id, req.key, JobState.FAILED, error="boom", attempt=1), 1, False)
    assert g.failed and g.done and [r.attempt for r in g.results] == [1]


def test_stopping_turns_a_rerun_into_a_cancellation_and_cancels_what_never_started():
    g, heard = _group(3, stop_on_failure=False)
    req = _run_next(g)
    assert not g.attempt_over(JobResult(req.job_id, req.key, JobState.TIMED_OUT, error="slow", worker=4), 2, True)
    g.cancel_pending()
    assert [r.state for r in g.results] == [JobState.CANCELLED] * 3
    assert "attempt 0 ended timed_out: slow" in g.results[0].error and g.results[0].worker == 4
    assert g.done and not g.failed


def test_no_worker_left_fails_every_pending_job_with_the_reason():
    g, _ = _group(2, stop_on_failure=False)
    g.fail_pending("no live worker left")
    assert [(r.job_id, r.state, r.error) for r in g.results] == [
        ("j0", JobState.FAILED, "no live worker left"), ("j1", JobState.FAILED, "no live worker left")]
