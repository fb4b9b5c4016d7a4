"""ExpRecorder: every round's record goes to the local run directory and to W&B.

``log(metrics)`` takes one flat record per evaluated round. It is split generically, by
value type, not by key name:

* scalars (numbers, bools, strings, None) -> ``metrics.jsonl`` and W&B's scalar history;
  lists of scalars (e.g. the sampled ``clients``) -> ``metrics.jsonl`` only;
  a dict of scalars (e.g. ``timings``) -> ``metrics.jsonl`` as is, W&B as ``timings/<key>``;
* lists of dicts (e.g. ``per_client``, ``client_eval``) -> tables: a local
  ``<name>.jsonl`` with a ``round`` column (``per_client`` -> ``clients.jsonl``) and a
  ``wandb.Table`` at that round's step.

``table(name, rows)`` records any other table (selection scores, rankings) the same way;
``artifact(path)`` uploads a file or folder to W&B when the run closes, together with
``event_pipeline.json`` and the local table files. ``close()`` writes ``summary.json`` with
the run's ``status``: ``failed`` (with ``error`` and ``traceback``) when an exception is
propagating through the caller's ``finally`` (or was given to ``fail()``), in which case the
W&B run is finished with a non-zero exit code (shown as failed).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from vista.errors import Interrupted
from vista.recording.checkpoints import save_tensors
from vista.recording.local import LocalRecorder, table_file, write_config
from vista.recording.plan import CLIENT_ROLE, RecordPlan, role_id
from vista.recording.spec import RecorderSpec
from vista.recording.wandb_sink import WandbSink, is_scalar

EVENT_PIPELINE = "event_pipeline.json"


def _is_table(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(r, dict) for r in v)


def split_record(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(everything but the tables, the tables) of one round's record."""
    rest, tables = {}, {}
    for k, v in metrics.items():
        if _is_table(v):
            tables[k] = list(v)
        else:
            rest[k] = v
    return rest, tables


def wandb_scalars(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalars of a record, nested dicts flattened as ``a/b``."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(wandb_scalars(v, f"{prefix}{k}/"))
        elif is_scalar(v) and v is not None:
            out[f"{prefix}{k}"] = v
    return out


def failure_fields(err: BaseException) -> dict[str, Any]:
    if isinstance(err, Interrupted):  # stopped on purpose, checkpointed: how to continue, no traceback
        return {"status": "interrupted", "signal": err.signal, "error": str(err), "resume": err.resume}
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    return {"status": status, "error": f"{type(err).__name__}: {err}",
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))}


def exit_code(err: BaseException | None) -> int:
    """The process exit code a run ending with ``err`` gets (also W&B's exit code for the run)."""
    if err is None:
        return 0
    if isinstance(err, Interrupted):
        return err.exit_code
    return 130 if isinstance(err, KeyboardInterrupt) else 1


class ExpRecorder:
    def __init__(self, spec: RecorderSpec, run_dir: str | Path, config: dict[str, Any] | None = None,
                 name: str | None = None, resume: dict[str, Any] | None = None) -> None:
        """``resume`` (:meth:`state` at a checkpoint) continues a run: its record files as they were
        then, and the same W&B run."""
        self.run_dir = Path(run_dir)
        self.spec = spec
        resume = resume or {}
        self.local = LocalRecorder(self.run_dir, restore=resume.get("files"))
        self._summary: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._artifacts: list[tuple[Path, str | None, str]] = []
        self._tables: list[str] = list(resume.get("tables", []))
        self._closed = False
        # an exception already being handled by our caller is not this run's failure
        self._exc_at_start = sys.exc_info()[1]
        tags = list(dict.fromkeys(getattr(spec, "tags", None) or []))
        self.wandb = WandbSink(spec.mode, spec.project, spec.entity, self.run_dir,
                               name or getattr(spec, "name", None) or self.run_dir.name, config,
                               group=getattr(spec, "group", None), tags=tags,
                               job_type=getattr(spec, "job_type", None), resume_id=resume.get("wandb_id"))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the records: the files so far, the tables, the W&B run id."""
        return {"files": self.local.written(), "tables": list(self._tables), "wandb_id": self.wandb.run_id}

    def __enter__(self) -> "ExpRecorder":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(error=exc)

    def write_config(self, config: dict[str, Any]) -> None:
        self.local.write_config(config)

    def log(self, metrics: dict[str, Any]) -> None:
        record, tables = split_record(metrics)
        step = record.get("round")
        step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None
        self.local.log(record)
        for name, rows in tables.items():
            self._note_table(name)
            self.local.table(name, rows, round=step)
        self.wandb.log(wandb_scalars(record), step=step, tables=tables)

    def snapshot(self, ctx: Any, plan: RecordPlan | None = None, **extra: Any) -> dict[str, Any]:
        """Log an FLContext round: what ``plan`` declares (metrics, tables; see
        :mod:`vista.recording.plan`), or with no plan every server scalar and one ``per_client``
        row per client role. Returns the record logged."""
        if plan is not None:
            record = {**plan.record(ctx), **extra}
        else:
            record = {"round": ctx.round, **ctx.scalars(), **extra}
            clients = sorted(r for r in ctx.roles() if r.startswith(CLIENT_ROLE))
            rows = [{"client": role_id(role), **ctx.scalars(role)} for role in clients]
            if rows and "per_client" not in record:
                record["per_client"] = rows
        self.log(record)
        return record

    def save_artifacts(self, ctx: Any, plan: RecordPlan, metadata: dict[str, str] | None = None) -> list[Path]:
        """Write the plan's artifacts present in ``ctx`` (tensors -> safetensors files in the
        run directory); returns the files written. An artifact that is None now removes the file
        an earlier part of the run (before a resume) left."""
        written = []
        for art in plan.artifacts:
            tensors = ctx.get(art.key, role=plan.role)
            path = self.run_dir / art.file
            if tensors is None:
                path.unlink(missing_ok=True)
                continue
            save_tensors(path, tensors, metadata)
            written.append(path)
        return written

    def table(self, name: str, rows: list[dict[str, Any]], round: int | None = None) -> None:
        """A table (selection scores, rankings ...): ``<name>.jsonl`` and a ``wandb.Table``."""
        rows = [dict(r) for r in rows]
        self._note_table(name)
        self.local.table(name, rows, round=round)
        self.wandb.table(name, rows, step=round)

    def artifact(self, path: str | Path, name: str | None = None, type: str = "file") -> None:
        """Upload ``path`` (a file or a folder) to W&B when the run closes."""
        self._artifacts.append((Path(path), name, type))

    def summary(self, summary: dict[str, Any]) -> None:
        self._summary = dict(summary)
        self.local.summary({**self._summary, "status": "running"})
        self.wandb.summary(self._summary)

    def fail(self, err: BaseException) -> None:
        """Mark the run failed (``close`` also finds an exception propagating on its own)."""
        self._error = err

    def _note_table(self, name: str) -> None:
        if name not in self._tables:
            self._tables.append(name)

    def _failure(self, error: BaseException | None) -> BaseException | None:
        if error is not None:
            return error
        if self._error is not None:
            return self._error
        current = sys.exc_info()[1]
        if current is not None and current is not self._exc_at_start:
            if isinstance(current, SystemExit) and current.code in (0, None):
                return None
            return current
        return None

    @property
    def status(self) -> str:
        return self._summary.get("status", "running")

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        err = self._failure(error)
        final = {**self._summary, **(failure_fields(err) if err is not None else {"status": "finished"})}
        if self.wandb.failed:
            final["wandb"] = "failed; local records only"
        self._summary = final
        self.local.summary(final)
        if self.wandb.active:
            self.wandb.summary({k: final[k] for k in ("status", "error", "traceback") if k in final})
            files = [(self.run_dir / EVENT_PIPELINE, "event_pipeline", "event_pipeline")]
            files += [(self.run_dir / table_file(t), t, "table") for t in self._tables]
            for path, name, kind in [p for p in files if p[0].exists()] + self._artifacts:
                if path.exists():
                    self.wandb.artifact(path, name, kind)
                else:
                    print(f"vista: artifact {path} does not exist; not uploaded", file=sys.stderr, flush=True)
            self.wandb.close(exit_code=exit_code(err))
        self.local.close()


def record_failure(run_dir: str | Path, err: BaseException, spec: RecorderSpec | None = None,
                   config: dict[str, Any] | None = None) -> None:
    """A job that failed before (or without) an ExpRecorder: ``summary.json`` with the error,
    and a W&B run finished as failed when W&B is on. Never raises."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    try:
        if path.is_file() and json.loads(path.read_text()).get("status") in ("failed", "interrupted"):
            return  # the run's own recorder has recorded it
    except (OSError, ValueError):
        pass
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None and not (run_dir / "config.yaml").exists():
            write_config(run_dir, config)
        if spec is not None and spec.mode != "disabled":
            rec = ExpRecorder(spec, run_dir, config)
            rec.close(error=err)
        else:
            path.write_text(json.dumps(failure_fields(err), indent=2) + "\n")
    except Exception as e:
        print(f"vista: could not record the failure in {run_dir}: {e}", file=sys.stderr, flush=True)
