"""Worker processes that start warm: forked from a server that has already imported torch & co.

A spawned worker pays for ``import torch, transformers, peft`` (seconds on a small CPU, and
~380 MB of private memory per process) before it can load a model. Here the worker processes
come from multiprocessing's *fork server*, started as soon as a run's config is known
(:func:`warm_up`, while the parent goes on composing, reading the data and planning) with
:data:`PRELOAD` (and the model's own modelling module) imported once. Each worker is then a
fork of it: ready to build its runtime in milliseconds, and sharing the imported modules'
pages copy-on-write with the other workers. The server imports only; it runs no torch op, so
no thread pool or CUDA context is forked.

What a fork would not carry is passed explicitly: a worker takes the parent's environment
from its :class:`~vista.pipeline.protocol.WorkerInit` (the server's is the parent's at the time
it started), and multiprocessing sends the parent's current ``sys.path`` and working directory
with every process it starts. ``VISTA_START_METHOD=spawn`` (or a platform without fork) falls
back to spawned workers.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import multiprocessing as mp
import os
import signal
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START_METHOD_ENV = "VISTA_START_METHOD"
# What every worker imports before it can build a runtime (in order: a failed import in the
# server is skipped silently by multiprocessing, and the worker imports it itself).
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "peft", "vista.scheduler.worker",
           "vista.fl.runtime", "vista.selection.runtime")
FREEZE = "vista.scheduler.fork_ready"  # imported after everything else: gc.freeze() before the first fork


def start_method() -> str:
    method = os.environ.get(START_METHOD_ENV, "forkserver")
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"{START_METHOD_ENV}={method!r}: use forkserver or spawn")
    return method if method in mp.get_all_start_methods() else "spawn"


def worker_context() -> BaseContext:
    """The multiprocessing context worker processes start from."""
    ctx = mp.get_context(start_method())
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        if not forkserver._forkserver._forkserver_pid:  # not started yet: ours to set
            ctx.set_forkserver_preload([*_preload, FREEZE])
    return ctx


_preload: list[str] = list(PRELOAD)


def model_modules(model_dir: str | Path | None) -> list[str]:
    """transformers' modelling module for the model in ``model_dir`` (its config's ``model_type``),
    read from config.json alone: no transformers import here."""
    if model_dir is None:
        return []
    import json

    try:
        kind = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    name = str(kind).replace("-", "_")
    return [f"transformers.models.{name}.modeling_{name}"]


def warm_up(extra: list[str] | None = None) -> bool:
    """Start the fork server now, importing :data:`PRELOAD` and ``extra`` in its own process while
    this one goes on. Returns whether a server was started (False with spawn, or when one runs)."""
    if start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    if forkserver._forkserver._forkserver_pid:
        return False
    _preload[:] = [*PRELOAD, *(m for m in extra or [] if m not in PRELOAD)]
    ctx = worker_context()
    ctx.set_forkserver_preload([*_preload, FREEZE])
    forkserver.ensure_running()
    atexit.register(_stop_server)  # a run that ends while the server still imports leaves nothing behind
    log.debug("fork server started, preloading %s", ", ".join(_preload))
    return True


def _stop_server() -> None:
    from multiprocessing import forkserver

    pid = forkserver._forkserver._forkserver_pid
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def warm_up_for(scheduler: Any, model: Any = None) -> bool:
    """:func:`warm_up` when a run with this scheduler (a SchedulerSpec, or its resolved config)
    will start worker processes: the process backend with workers. ``model``: its ModelSpec (or
    its resolved config), or None."""
    get = scheduler.get if isinstance(scheduler, dict) else (lambda k, d=None: getattr(scheduler, k, d))
    if get("backend", "process") != "process" or get("num_workers") == 0:
        return False
    if isinstance(model, dict):
        from vista.models.hub import ModelSpec

        known = {f.name for f in dataclasses.fields(ModelSpec)}
        model = ModelSpec(**{k: v for k, v in model.items() if k in known})
    where = None
    if model is not None:
        try:
            where = model.resolve()
        except Exception:  # noqa: BLE001  a missing model is reported by the driver, not here
            where = None
    return warm_up(model_modules(where))
