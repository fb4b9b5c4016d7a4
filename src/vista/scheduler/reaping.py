"""Local process cleanup after Ray stops: what ``ray.shutdown()`` leaves running a moment
longer (idle pre-started workers, actor processes) is waited for, then killed, so that no Ray
process outlives a run with ``scheduler.address=local``. Linux /proc only; elsewhere nothing
is known and nothing is done."""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger(__name__)


def reap(pids: list[int], wait_s: float = 10.0) -> None:
    """Wait for these (local) processes to exit after Ray stopped; SIGKILL what lingers."""
    deadline = time.monotonic() + wait_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if running(p)]
        if alive:
            time.sleep(0.1)
    for pid in alive:
        log.warning("Ray process %d outlived ray.shutdown(): killing it", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def descendants(root: int) -> list[int]:
    """The processes below ``root`` (Linux /proc; elsewhere none are known)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our child that exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def is_ray(pid: int) -> bool:
    """Whether the process looks like one of Ray's (its command line names ray)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ray" in f.read()
    except OSError:
        return False
