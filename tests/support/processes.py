"""Which of Ray's processes run on this machine: the tests that check a run leaves none behind."""

from __future__ import annotations

import psutil

RAY_MARKERS = ("gcs_server", "raylet", "ray::", "default_worker.py")


def ray_processes(ignore: set[int] | frozenset[int] = frozenset()) -> dict[int, str]:
    """pid -> the start of its command line, for Ray's own processes (GCS, raylet, workers)
    that are running (zombies have exited) and not in ``ignore`` (another Ray user's)."""
    out = {}
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.pid in ignore:
            continue
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:  # exited, waiting for init to reap it
                continue
            text = " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])[:2]])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(k in text for k in RAY_MARKERS):
            out[p.pid] = text[:80]
    return out
