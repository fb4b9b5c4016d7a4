"""Deterministic fault injection, for the reliability tests only.

``VISTA_FAULTS`` (read by every worker process, and by the inline executor) lists faults as
``;``-separated entries ``SITE=ACTION``:

* ``TASK[@rROUND]#K=ACTION``: job ``K`` (its index in its group) of parallel task ``TASK``
  (``client_train``, ``evaluate``, ``init_global``, ``client_stats`` ...), in round ``ROUND``
  or in every round; e.g. ``client_train@r2#1=exit``;
* ``start#W=ACTION``: worker ``W`` while it builds its runtime (its first start only).

Actions: ``raise`` (a RuntimeError), ``exit`` (the process dies at once, as under the OOM
killer), ``hang`` (the process stops itself with SIGSTOP: silent, as a deadlocked or frozen
one), ``oom`` (a CUDA out-of-memory error, raised where the runtime trains:
:func:`fire_oom`). A job fault fires on the job's first attempt only, so a re-run succeeds
and a retried run ends exactly like the fault-free one.
"""

from __future__ import annotations

import contextvars
import os
import re
import signal
from dataclasses import dataclass

ENV = "VISTA_FAULTS"
ACTIONS = ("raise", "exit", "hang", "oom")
_ENTRY = re.compile(r"^(?P<task>[\w.]+)(?:@r(?P<round>\d+))?#(?P<index>\d+)=(?P<action>\w+)$")
_JOB_ID = re.compile(r"^r(?P<round>\d+)\.(?P<task>.+)\.g\d+\.j(?P<index>\d+)$")

# the job a worker is running now, and its attempt (0: first): set around runtime.run
current_job: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("vista_job", default=None)
_oom_fired: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class Fault:
    task: str
    round: int | None
    index: int
    action: str

    def matches(self, task: str, round: int, index: int) -> bool:
        return self.task == task and self.index == index and self.round in (None, round)


def plan(text: str | None = None) -> list[Fault]:
    """The faults ``VISTA_FAULTS`` (or ``text``) asks for; a malformed entry is an error."""
    text = os.environ.get(ENV, "") if text is None else text
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        m = _ENTRY.match(entry)
        if m is None or m["action"] not in ACTIONS:
            raise ValueError(f"{ENV}: cannot read {entry!r}; expected TASK[@rROUND]#K=ACTION or start#W=ACTION "
                             f"with ACTION one of {ACTIONS}")
        faults.append(Fault(m["task"], int(m["round"]) if m["round"] else None, int(m["index"]), m["action"]))
    return faults


def action_for_job(job_id: str, attempt: int) -> str | None:
    """The fault to inject into this attempt of ``job_id`` (first attempts only)."""
    if attempt > 0 or ENV not in os.environ:
        return None
    m = _JOB_ID.match(job_id)
    if m is None:
        return None
    return next((f.action for f in plan() if f.matches(m["task"], int(m["round"]), int(m["index"]))), None)


def action_for_start(worker_id: int, start: int) -> str | None:
    """The fault to inject while worker ``worker_id`` builds its runtime (its first start only)."""
    if start > 0 or ENV not in os.environ:
        return None
    return next((f.action for f in plan() if f.task == "start" and f.index == worker_id), None)


def inject(action: str | None, where: str) -> None:
    """Carry out ``action`` (``oom`` is left to :func:`fire_oom`, where training happens)."""
    if action == "raise":
        raise RuntimeError(f"injected fault ({ENV}) in {where}")
    if action == "exit":
        os._exit(70)
    if action == "hang":
        os.kill(os.getpid(), signal.SIGSTOP)


def fire_oom() -> None:
    """Called by a runtime where it trains at full micro-batch: raises the injected CUDA
    out-of-memory error of the current job's first attempt, once."""
    job = current_job.get()
    if job is not None and job not in _oom_fired and action_for_job(*job) == "oom":
        import torch

        _oom_fired.add(job)  # once: the halved re-run of this attempt trains on
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV} into job {job[0]})")
