"""ExpRecorder: local run directory always; W&B offline by default and never fatal."""

from __future__ import annotations

import io
import json

import pytest

from vista.recording import ExpRecorder, RecorderSpec
from vista.recording.progress import RoundProgress
from vista.recording.recorder import record_failure, split_record
from vista.recording.wandb_sink import effective_mode

ROWS = [{"round": 1, "test_accuracy": 0.5, "test_loss": 1.2, "clients": [1, 2]},
        {"round": 2, "test_accuracy": 0.75, "test_loss": 0.9, "clients": [0, 3]}]
PER_CLIENT = {1: [{"client": 1, "num_examples": 10, "train_loss": 0.7}, {"client": 2, "num_examples": 5, "train_loss": 0.9}],
              2: [{"client": 0, "num_examples": 8, "train_loss": 0.6}, {"client": 3, "num_examples": 7, "train_loss": 0.5}]}


@pytest.fixture(autouse=True)
def no_wandb_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def _record(rec: ExpRecorder, per_client: bool = False) -> None:
    rec.write_config({"seed": 1, "fl": {"rounds": 2}})
    for r in ROWS:
        rec.log({**r, "per_client": PER_CLIENT[r["round"]]} if per_client else r)
    rec.summary({"test_accuracy": 0.75, "best_round": 2})
    rec.close()


def _jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _check_local(run_dir, **extra) -> None:
    assert _jsonl(run_dir / "metrics.jsonl") == ROWS
    assert json.loads((run_dir / "summary.json").read_text()) == {"test_accuracy": 0.75, "best_round": 2,
                                                                  "status": "finished", **extra}
    assert "rounds: 2" in (run_dir / "config.yaml").read_text()


def test_disabled_writes_only_the_run_directory(tmp_path):
    _record(ExpRecorder(RecorderSpec(mode="disabled"), tmp_path))
    _check_local(tmp_path)
    assert not (tmp_path / "wandb").exists()


def test_online_without_a_login_falls_back_to_offline():
    assert effective_mode("online") == "offline"
    assert effective_mode("offline") == "offline" and effective_mode("disabled") == "disabled"


def test_online_with_an_api_key_stays_online_unless_wandb_mode_says_otherwise(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert effective_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert effective_mode("online") == "offline"


def test_lists_of_dicts_become_tables_and_stay_out_of_the_scalar_history():
    rest, tables = split_record({"round": 3, "acc": 0.5, "clients": [1, 2], "per_client": [{"client": 1}],
                                 "empty": []})
    assert rest == {"round": 3, "acc": 0.5, "clients": [1, 2], "empty": []}
    assert tables == {"per_client": [{"client": 1}]}


def test_per_client_rows_go_to_clients_jsonl_with_a_round_column(tmp_path):
    rec = ExpRecorder(RecorderSpec(mode="disabled"), tmp_path)
    _record(rec, per_client=True)
    _check_local(tmp_path)  # metrics.jsonl holds no table
    rows = _jsonl(tmp_path / "clients.jsonl")
    assert [(r["round"], r["client"]) for r in rows] == [(1, 1), (1, 2), (2, 0), (2, 3)]
    assert rows[0] == {"round": 1, "client": 1, "num_examples": 10, "train_loss": 0.7}


def test_table_writes_name_jsonl(tmp_path):
    with ExpRecorder(RecorderSpec(mode="disabled"), tmp_path) as rec:
        rec.table("selection_scores", [{"model": "a", "score": 0.3}, {"model": "b", "score": 0.1}], round=0)
    assert _jsonl(tmp_path / "selection_scores.jsonl")[1] == {"round": 0, "model": "b", "score": 0.1}


def _offline_runs(run_dir):
    return list((run_dir / "wandb").glob("offline-run-*"))


def _wandb_records(run_dir, until: str = "", timeout: float = 20.0) -> str:
    """The text of an offline run's records (enough to find names and keys); W&B's service
    writes them asynchronously, so wait until ``until`` shows up."""
    import time

    (run,) = _offline_runs(run_dir)
    deadline = time.monotonic() + timeout
    while True:
        text = b"".join(p.read_bytes() for p in run.glob("*.wandb")).decode("latin-1")
        if until in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_offline_creates_a_syncable_wandb_run_with_tables_and_artifacts(tmp_path):
    (tmp_path / "event_pipeline.json").write_text('{"steps": []}')
    spec = RecorderSpec(mode="offline", project="vista-test", group="sweep-x", name="peft=lora", tags=["exp1"],
                        job_type="fedpeft")
    rec = ExpRecorder(spec, tmp_path, {"seed": 1})
    rec.table("selection_scores", [{"model": "a", "score": 0.3}])
    _record(rec, per_client=True)
    _check_local(tmp_path)
    runs = _offline_runs(tmp_path)
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    tables = [p.name for p in runs[0].rglob("*.table.json")]
    assert any(t.startswith("per_client") for t in tables) and any(t.startswith("selection_scores") for t in tables)
    text = _wandb_records(tmp_path, until="event_pipeline")
    for needle in ("sweep-x", "peft=lora", "exp1", "fedpeft", "event_pipeline", "test_accuracy"):
        assert needle in text, needle


def test_a_failure_propagating_through_close_is_recorded(tmp_path):
    rec = ExpRecorder(RecorderSpec(mode="offline"), tmp_path)
    with pytest.raises(ValueError):
        try:
            rec.log(ROWS[0])
            raise ValueError("boom in round 2")
        finally:
            rec.close()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "ValueError: boom in round 2"
    assert "Traceback" in summary["traceback"] and "boom in round 2" in summary["traceback"]
    assert "boom in round 2" in _wandb_records(tmp_path, until="boom in round 2")


def test_an_exception_handled_by_the_caller_before_the_run_is_not_its_failure(tmp_path):
    try:
        raise KeyError("earlier")
    except KeyError:
        _record(ExpRecorder(RecorderSpec(mode="disabled"), tmp_path))
    _check_local(tmp_path)


def test_record_failure_before_any_recorder(tmp_path):
    record_failure(tmp_path, RuntimeError("no model"), RecorderSpec(mode="disabled"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: no model"
    record_failure(tmp_path, RuntimeError("second"), None)  # already recorded: kept
    assert json.loads((tmp_path / "summary.json").read_text())["error"] == "RuntimeError: no model"


def test_wandb_that_fails_to_start_never_kills_the_run(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise ConnectionError("no route to W&B")

    monkeypatch.setattr(wandb, "init", broken)
    _record(ExpRecorder(RecorderSpec(mode="offline"), tmp_path))
    _check_local(tmp_path, wandb="failed; local records only")
    err = capsys.readouterr().err
    assert err.count("W&B failed to start") == 1 and "no route to W&B" in err


def test_online_that_cannot_start_retries_offline(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    real = wandb.init

    def online_broken(*a, mode=None, **k):
        if mode == "online":
            raise TimeoutError("api.wandb.ai unreachable")
        k.pop("settings", None)
        return real(*a, mode=mode, **k)

    monkeypatch.setattr(wandb, "init", online_broken)
    _record(ExpRecorder(RecorderSpec(mode="online"), tmp_path))
    _check_local(tmp_path)
    assert len(_offline_runs(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.count("could not start online") == 1 and "wandb sync" in err


def test_wandb_that_fails_mid_run_falls_back_once(tmp_path, capsys):
    rec = ExpRecorder(RecorderSpec(mode="offline"), tmp_path)

    class Broken:
        id = "x"

        def log(self, *a, **k):
            raise OSError("disk full")

        def finish(self, *a, **k):
            pass

    rec.wandb.run.finish()
    rec.wandb.run = Broken()
    _record(rec)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["wandb"].startswith("failed")
    assert _jsonl(tmp_path / "metrics.jsonl") == ROWS
    assert capsys.readouterr().err.count("W&B failed to log") == 1


def test_progress_off_a_terminal_prints_lines_with_an_eta():
    now = [0.0]
    out = io.StringIO()
    p = RoundProgress(4, out, interval=30.0, clock=lambda: now[0])
    for r in (1, 2, 3, 4):
        now[0] += 10.0
        p.update(r, {"test_accuracy": 0.5, "round_seconds": 10.0} if r in (2, 4) else None, 10.0)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # evaluated rounds; unevaluated ones only every 30 s
    assert lines[0].startswith("round 2/4  test_accuracy 0.5000") and "eta 20s" in lines[0]
    assert lines[1].startswith("round 4/4") and "eta 0s" in lines[1]


def test_progress_follows_the_jobs_of_a_parallel_task():
    from vista.pipeline import EventManager
    from vista.pipeline.protocol import JobResult, JobSpec, JobState

    now = [0.0]
    out = io.StringIO()
    events = EventManager()
    RoundProgress(1, out, interval=5.0, clock=lambda: now[0]).attach(events)
    group = events.monitor.open_group("client_train", 1)
    reqs = [events.monitor.add(group, JobSpec("train", c)) for c in range(4)]
    for i, q in enumerate(reqs):
        now[0] += 3.0
        events.monitor.mark_running(q.job_id, 0)
        events.job_event(q.job_id, JobState.RUNNING)
        if i < 2:
            res = JobResult(q.job_id, q.key, JobState.DONE, worker=0)
            events.monitor.finish(res)
            events.job_event(q.job_id, res.state)
    assert "client_train: 2/4 jobs done" in out.getvalue() and "eta" in out.getvalue()


def test_progress_on_a_terminal_draws_bars():
    from vista.pipeline import EventManager
    from vista.pipeline.protocol import JobResult, JobSpec, JobState

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    events = EventManager()
    p = RoundProgress(2, out).attach(events)
    for rnd in (1, 2):
        group = events.monitor.open_group("client_train", rnd)
        for q in [events.monitor.add(group, JobSpec("train", c)) for c in range(3)]:
            events.monitor.mark_running(q.job_id, 0)
            events.job_event(q.job_id, JobState.RUNNING)
            events.monitor.finish(JobResult(q.job_id, q.key, JobState.DONE))
            events.job_event(q.job_id, JobState.DONE)
        p.update(rnd, {"test_accuracy": 0.5, "round_seconds": 1.0}, 1.0)
    p.close()
    text = out.getvalue()
    assert "rounds" in text and "client_train" in text and "3/3" in text and "round 2/2  test_accuracy 0.5000" in text


def test_a_netrc_login_means_online(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert effective_mode("online") == "online"


def test_snapshot_of_an_fl_context(tmp_path):
    from vista.pipeline import FLContext

    ctx = FLContext(round=3)
    ctx["test_accuracy"], ctx["global_state"] = 0.5, {"w": object()}
    ctx.set("train_loss", 0.7, role="client:2")
    ctx.set("num_examples", 9, role="client:2")
    with ExpRecorder(RecorderSpec(mode="disabled"), tmp_path) as rec:
        rec.snapshot(ctx, bytes_up=10)
    assert _jsonl(tmp_path / "metrics.jsonl") == [{"round": 3, "test_accuracy": 0.5, "bytes_up": 10}]
    assert _jsonl(tmp_path / "clients.jsonl") == [{"round": 3, "client": 2, "train_loss": 0.7, "num_examples": 9}]
