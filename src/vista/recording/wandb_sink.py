"""The Weights & Biases sink: offline unless the user is logged in, and never fatal.

W&B failing to import, to start or mid-run falls back to the local run directory (which
is always written), says so once, and the run goes on. An online run that cannot start is
retried offline first, so it can still be uploaded later with
``wandb sync <run_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

# how long an online start may wait for the server before Vista retries offline
ONLINE_INIT_TIMEOUT_S = 60.0


def _say(msg: str) -> None:
    print(f"vista: {msg}", file=sys.stderr, flush=True)


def _wandb_hosts() -> set[str]:
    """The W&B server hosts a login may be stored for: WANDB_BASE_URL, wandb's default
    (which changes between wandb versions), and the classic api.wandb.ai."""
    urls = [os.environ.get("WANDB_BASE_URL", ""), "https://api.wandb.ai"]
    try:
        import wandb

        urls.append(str(wandb.Settings().base_url))
    except Exception as err:  # no wandb, or its settings moved: the two hosts above still count
        log.debug("wandb's default base_url unavailable: %s", err)
    return {h for h in (urlparse(u).hostname for u in urls if u) if h}


def wandb_logged_in() -> bool:
    """An API key in the environment, or a netrc entry (``wandb login``) for a W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        text = netrc.read_text()
    except OSError:
        return False
    return any(h in text for h in _wandb_hosts())


def effective_mode(requested: str) -> str:
    """``online`` only with credentials and unless ``WANDB_MODE`` says offline/disabled."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if requested == "online" and env in ("offline", "dryrun", "disabled"):
        return "disabled" if env == "disabled" else "offline"
    if requested == "online" and not wandb_logged_in():
        return "offline"
    return requested


def is_scalar(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, (int, float)):
        return True
    return hasattr(v, "item") and getattr(v, "ndim", 1) == 0


def _finite(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_table(rows: list[dict[str, Any]]) -> Any:
    """A ``wandb.Table`` of dict rows (columns: the union of their keys, in first-seen order)."""
    import wandb

    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)

    def cell(v: Any) -> Any:
        v = _finite(v)
        return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)

    return wandb.Table(columns=columns, data=[[cell(r.get(c)) for c in columns] for r in rows])


class WandbSink:
    def __init__(self, mode: str, project: str | None, entity: str | None, run_dir: Path, name: str,
                 config: dict[str, Any] | None = None, group: str | None = None,
                 tags: list[str] | None = None, job_type: str | None = None, resume_id: str | None = None) -> None:
        """``resume_id``: continue that W&B run (a resumed Vista run) instead of starting one."""
        self.run: Any = None
        self.requested = mode
        self.mode = effective_mode(mode)
        self.failed = False  # W&B itself failed: the run goes on with the local directory only
        if self.mode == "disabled":
            return
        if self.mode != mode:
            _say(f"W&B: not logged in (wandb login, or WANDB_API_KEY) or WANDB_MODE={os.environ.get('WANDB_MODE', '')}; "
                 f"recording offline: upload later with `wandb sync {run_dir}/wandb/offline-run-*`")
        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(project=project or os.environ.get("WANDB_PROJECT") or "vista",
                      entity=entity or os.environ.get("WANDB_ENTITY") or None, dir=str(run_dir), name=name,
                      group=group, tags=list(tags or []) or None, job_type=job_type, config=config or {})
        if resume_id:
            kwargs.update(id=resume_id, resume="allow")
        try:
            self.run = self._init(self.mode, kwargs)
        except Exception as err:
            if self.mode == "online":
                try:
                    self.run = self._init("offline", kwargs)
                    self.mode = "offline"
                    _say(f"W&B could not start online ({type(err).__name__}: {err}); recording offline: "
                         f"upload later with `wandb sync {run_dir}/wandb/offline-run-*`")
                    return
                except Exception as err2:
                    err = err2
            self._fallback("start", err)

    @staticmethod
    def _init(mode: str, kwargs: dict[str, Any]) -> Any:
        import wandb

        settings = None
        if mode == "online":
            try:
                settings = wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT_S)
            except Exception:
                settings = None
        extra = {"settings": settings} if settings is not None else {}
        return wandb.init(mode=mode, **kwargs, **extra)

    def _fallback(self, when: str, err: BaseException) -> None:
        _say(f"W&B failed to {when} ({type(err).__name__}: {err}); recording to the local run "
             f"directory only")
        self.failed = True
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception as finish_err:  # already said W&B failed; the local record goes on
                log.warning("W&B finish after a failure also failed: %s", finish_err)

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else str(self.run.id)

    def log(self, metrics: dict[str, Any], step: int | None = None,
            tables: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """Scalars go to the history; ``tables`` (name -> rows) become ``wandb.Table``s."""
        if self.run is None:
            return
        try:
            data = {k: _finite(v) for k, v in metrics.items() if is_scalar(v)}
            for name, rows in (tables or {}).items():
                if rows:
                    data[name] = to_table(rows)
            self.run.log(data, step=step)
        except Exception as err:
            self._fallback("log", err)

    def table(self, name: str, rows: list[dict[str, Any]], step: int | None = None) -> None:
        if self.run is None or not rows:
            return
        try:
            self.run.log({name: to_table(rows)}, step=step)
        except Exception as err:
            self._fallback("log a table", err)

    def artifact(self, path: Path, name: str | None = None, type: str = "file") -> None:
        if self.run is None:
            return
        try:
            import re

            import wandb

            base = re.sub(r"[^\w.-]+", "_", name or Path(path).stem)
            art = wandb.Artifact(f"{self.run.id}-{base}", type=type)
            if Path(path).is_dir():
                art.add_dir(str(path))
            else:
                art.add_file(str(path))
            self.run.log_artifact(art)
        except Exception as err:
            self._fallback("upload an artifact", err)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update({k: _finite(v) for k, v in summary.items()
                                     if v is not None and (is_scalar(v) or isinstance(v, (str, list, dict)))})
        except Exception as err:
            self._fallback("write the summary", err)

    def close(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as err:
                log.warning("W&B finish failed: %s", err)
            self.run = None
