"""Worker processes that start warm: forked from a server that has already imported torch & co.

A spawned worker pays for ``import torch, transformers, peft`` (seconds on a small CPU, and
~380 MB of private memory per process) before it can load a model. Here the worker processes
come from multiprocessing's *fork server*, started as soon as the CLI has its arguments
(:func:`warm_up_early`, before Hydra composes the config; an API caller's :func:`warm_up`, as
soon as its run's config is known), while the parent goes on composing, reading the data and
planning, with
:data:`PRELOAD` (and the model's own modelling module) imported once. Each worker is then a
fork of it: ready to build its runtime in milliseconds, and sharing the imported modules'
pages copy-on-write with the other workers. The server imports only; it runs no torch op, so
no thread pool or CUDA context is forked.

What a fork would not carry is passed explicitly: a worker takes the parent's environment
from its :class:`~vista.pipeline.protocol.WorkerInit` (the server's is the parent's at the time
it started), and multiprocessing sends the parent's current ``sys.path`` and working directory
with every process it starts. ``VISTA_START_METHOD=spawn`` (or a platform without fork) falls
back to spawned workers.

From the CLI, the server itself is a fork of the parent taken right after ``import torch``
(which the parent needs anyway), before anything has run: what that import allocated is then
shared by the parent, the server and the workers instead of being paid twice
(:func:`_fork_server`; ~145 MB with torch 2.13 on CPU). Only a caller that vouches this process
has run no multi-threaded torch op may ask for that (``from_parent``): GNU OpenMP's pool does
not survive a fork, and the workers would hang. Any other start, ``VISTA_FORK_SERVER_FROM_PARENT=0``,
or a parent already running other Python threads, starts it as multiprocessing does, from a
fresh interpreter.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import multiprocessing as mp
import os
import signal
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START_METHOD_ENV = "VISTA_START_METHOD"
SERVER_NAME = "vista-server"
EARLY_ENV = "VISTA_WARM_UP_EARLY"  # "0": the CLI starts the server once the config is composed
FORK_PARENT_ENV = "VISTA_FORK_SERVER_FROM_PARENT"  # "0": the server is a fresh interpreter, as multiprocessing starts it
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


def warm_up(extra: list[str] | None = None, from_parent: bool = False) -> bool:
    """Start the fork server now, importing :data:`PRELOAD` and ``extra`` in its own process while
    this one goes on. Returns whether a server was started (False with spawn, or when one runs).

    ``from_parent``: the server is a fork of this process (:func:`_fork_server`), which the caller
    vouches has run no multi-threaded torch op yet: GNU OpenMP (torch's CPU thread pool) does not
    survive a fork, and a worker forked below such a parent hangs in its first parallel op. The
    CLI passes it before anything runs; an API script may call ``warm_up(from_parent=True)``
    first thing. Otherwise the server is a fresh interpreter, as multiprocessing starts it."""
    if start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    if forkserver._forkserver._forkserver_pid:
        return False
    _preload[:] = [*PRELOAD, *(m for m in extra or [] if m not in PRELOAD)]
    ctx = worker_context()
    ctx.set_forkserver_preload([*_preload, FREEZE])
    if not (from_parent and _fork_server([*_preload, FREEZE])):
        forkserver.ensure_running()  # a fresh interpreter that imports everything itself
    atexit.register(stop_server)  # a run that ends while the server still imports leaves nothing behind
    log.debug("fork server started, preloading %s", ", ".join(_preload))
    return True


# Hydra's flags that print and exit: no run, so no server either
NO_RUN_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion")


def warm_up_early(argv: list[str]) -> bool:
    """:func:`warm_up` from the CLI before Hydra composes the config, so that the server's
    imports (transformers, peft: ~2.5 s here) run beside the composition instead of after it.
    The model's own module is then imported by each worker (milliseconds). A run whose config
    turns out to need no worker processes stops it again (:func:`warm_up_for`).
    ``VISTA_WARM_UP_EARLY=0`` waits for the composed config instead."""
    if os.environ.get(EARLY_ENV, "1") == "0" or any(a in NO_RUN_FLAGS or a.startswith("--cfg=") for a in argv):
        return False
    return warm_up([], from_parent=True)  # nothing has run in this process yet


def stop_server() -> None:
    """Stop the fork server this process started and forget it: a later :func:`warm_up` starts
    another (also what runs at exit). Killed rather than asked (the alive pipe), since it may
    still be importing."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    with server._lock:
        pid = server._forkserver_pid
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server._stop_unlocked()  # closes the pipe, reaps the process, removes the socket's path
        except (ChildProcessError, OSError):
            server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
    log.debug("fork server %d stopped", pid)


def _single_threaded() -> bool:
    """No Python thread but this one (whose locks a fork could inherit held). Native pools are
    not counted: ``import torch`` loads numpy, whose OpenBLAS starts its thread server at once
    and stops it around a fork itself (``pthread_atfork``), as the fork server's own forks rely on."""
    import threading

    return threading.active_count() == 1


def _fork_server(preload: list[str]) -> bool:
    """Start multiprocessing's fork server as a *fork of this process* after ``import torch``,
    instead of a fresh interpreter: the parent needs torch too (it aggregates), and ~145 MB of
    what ``import torch`` allocates is then one set of pages shared by the parent, the server
    and every worker (copy-on-write, never written again) instead of one copy in the parent
    and another in the server. The server then imports the rest of ``preload`` itself, beside
    the parent, as before. Only while this process runs one Python thread (a fork inherits
    another thread's held locks, never the thread); returns False when it did not fork.
    Inherited descriptors are left open: closing them all, as a fresh interpreter's start
    does, broke the child on this machine (an interposed library's descriptor)."""
    from multiprocessing import forkserver, resource_tracker, util
    from multiprocessing.connection import arbitrary_address

    if os.environ.get(FORK_PARENT_ENV, "1") == "0" or not _single_threaded():
        return False
    import socket

    import torch  # noqa: F401  the import the parent and the workers share

    if not _single_threaded():  # importing started a Python thread: keep the fresh interpreter
        return False
    server = forkserver._forkserver
    with server._lock:
        resource_tracker.ensure_running()  # before the fork: both sides use the one tracker
        with socket.socket(socket.AF_UNIX) as listener:
            address = arbitrary_address("AF_UNIX")
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            gc.freeze()  # this process's collections then never write to the pages the fork shares
            pid = os.fork()
            if pid == 0:  # the server; it keeps the parent's other descriptors (stdio, the run's log)
                code = 0
                try:
                    os.close(alive_w)  # only the run's processes may hold it: its end is the server's cue to exit
                    from vista.scheduler.worker import name_process

                    name_process(SERVER_NAME)  # in ps/top; it would carry the parent's command line
                    for sig in (signal.SIGTERM, signal.SIGHUP):
                        signal.signal(sig, signal.SIG_DFL)
                    forkserver.main(listener.detach(), alive_r, preload)
                except SystemExit:
                    pass
                except BaseException:  # noqa: BLE001  said, then gone: the parent starts a fresh server instead
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            os.close(alive_r)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    log.debug("fork server forked from the parent (pid %d)", pid)
    return True


def warm_up_for(scheduler: Any, model: Any = None, from_parent: bool = False) -> bool:
    """:func:`warm_up` when a run with this scheduler (a SchedulerSpec, or its resolved config)
    will start worker processes: the process backend with workers. ``model``: its ModelSpec (or
    its resolved config), or None; ``from_parent`` as in :func:`warm_up`."""
    get = scheduler.get if isinstance(scheduler, dict) else (lambda k, d=None: getattr(scheduler, k, d))
    if get("backend", "process") != "process" or get("num_workers") == 0:
        stop_server()  # one started before the config was known (warm_up_early) is not needed
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
    return warm_up(model_modules(where), from_parent=from_parent)
