"""``scheduler=ray``: the same jobs on Ray actors, on this machine or across a cluster.

Each worker is a Ray actor that builds its runtime once (the frozen base loaded once per
actor) and serves jobs one at a time. A job group's shared payload (the broadcast global
state) is put into the object store once per group, not once per job; an actor fetches it
when its first job of the group arrives. ``scheduler.address``: ``local`` starts Ray here
with this machine's cores and GPUs (no dashboard) and stops it at the end; ``auto`` joins a
running cluster (``ray start``; ``RAY_ADDRESS`` names it); ``ray://HOST:PORT`` connects
through Ray Client. Actors get ``scheduler.cpus_per_worker`` CPUs (default: the
arrangement's threads) and ``scheduler.gpus_per_worker`` GPUs (fractional; default: from the
arrangement, 1/k for k workers per GPU) and spread over the nodes.

Faults, as the process backend (:mod:`vista.pipeline.executor`): a job that raises is re-run
up to ``max_retries`` times; an actor that dies (killed, out of memory) is restarted by Ray
(``max_restarts``) and rebuilds its runtime while its job is re-run; a job past
``job_timeout_s`` has its actor killed and restarted, and is re-run as TIMED_OUT; each
restart is reported through ``on_respawn``. There is no heartbeat: a hung actor is caught by
``job_timeout_s`` only. ``shutdown`` kills every actor and, for ``address=local``, stops Ray:
no Ray process outlives the run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from vista.errors import UserError
from vista.pipeline.executor import Placement, no_callback
from vista.pipeline.protocol import JobRequest, JobResult, JobState, RunJob, WorkerInit
from vista.scheduler import faults
from vista.scheduler.arrangement import Arrangement, Inventory
from vista.scheduler.backends import plan_workers
from vista.scheduler.devices import GpuInfo, gpu_inventory, usable_cpus
from vista.scheduler.job_group import JobGroup
from vista.scheduler.ray_actor import actor_class
from vista.scheduler.reaping import descendants, is_ray, reap
from vista.scheduler.shipping import ship
from vista.scheduler.spec import RaySchedulerSpec, SchedulerSpec

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
RAY_MISSING = ("scheduler=ray needs Ray, which is not installed: pip install 'vista[ray]' "
               "(from a checkout: pip install -e '.[ray]')")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


class _Slot:
    def __init__(self, wid: int, actor: Any) -> None:
        self.id, self.actor = wid, actor
        self.info: dict[str, Any] = {}
        self.ready: Any = None  # the ready() ref of a (re)starting actor
        self.ask_again_at: float | None = None  # a restarting actor said "unavailable": ask ready() then
        self.restart_deadline = 0.0
        self.job: tuple[Any, JobRequest, int, float] | None = None  # (ref, request, attempt, started)
        self.shared_id: str | None = None
        self.dead = False

    @property
    def idle(self) -> bool:
        return not self.dead and self.ready is None and self.ask_again_at is None and self.job is None


class RayExecutor:
    backend = "ray"

    def __init__(self, spec: SchedulerSpec, runtime_factory: Callable[..., Any], runtime_args: Any,
                 log_dir: str | Path | None = None, *, memory: Any = None, useful_workers: int | None = None,
                 weight_keeper: Any = None) -> None:
        # weight_keeper is not used: actors may live on other hosts, where CUDA IPC cannot reach,
        # so each keeps its own device copy of the frozen weights
        self.spec = spec if isinstance(spec, RaySchedulerSpec) else RaySchedulerSpec(
            **{k: v for k, v in vars(spec).items() if k != "backend"})
        self._factory, self._args = runtime_factory, runtime_args
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._memory, self._useful = memory, useful_workers
        self._ray: Any = None
        self._owns_ray = False  # this executor started (or connected) Ray, so it stops it
        self._before_ray: set[int] = set()
        self._slots: list[_Slot] = []
        self._groups = 0
        self._stop_at: float | None = None
        self.arrangement: Arrangement | None = None
        self.devices: list[str] = []
        self.retries = 0
        self.respawns = 0
        self.start_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> RayExecutor:
        t0 = time.perf_counter()
        faults.plan()
        ray = self._ray = import_ray()
        self._connect(ray)
        self.arrangement = plan_workers(self.spec, self._memory, self._useful, self._inventory(ray))
        self.devices = list(self.arrangement.devices)
        cpus, gpus = self._resources()
        shipment = ship(self._args, ray.put) if self.spec.ship_data else None
        Actor = actor_class(ray)
        for wid, device in enumerate(self.devices):
            init = WorkerInit(worker_id=wid, runtime_factory=self._factory, runtime_args=self._args, device=device,
                              num_threads=self.arrangement.threads, gpu_mem_mb=self.spec.gpu_mem_per_worker_mb or None,
                              log_file=str(self._log_dir / f"worker_{wid}.log") if self._log_dir else None,
                              heartbeat_s=self.spec.heartbeat_s)
            actor = Actor.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD",
                                  max_restarts=-1 if self.spec.max_retries > 0 else 0, max_task_retries=0,
                                  runtime_env={"env_vars": _actor_env()}).remote(init, shipment)
            self._slots.append(_Slot(wid, actor))
        for slot in self._slots:
            slot.ready = slot.actor.ready.remote()
        deadline = time.monotonic() + self.spec.start_timeout_s
        while any(s.ready is not None for s in self._slots):
            self._await_ready(deadline)
        self.start_seconds = time.perf_counter() - t0
        log.info("RayExecutor: %d actors on %d node(s), ready in %.1fs", len(self._slots),
                 len({s.info.get('node') for s in self._slots}), self.start_seconds)
        return self

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():  # a caller's own Ray session: use it, leave it running
            return
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                  namespace="vista")
        if self.spec.address == "local":
            if self._log_dir is not None:
                self._log_dir.mkdir(parents=True, exist_ok=True)
            inv = Inventory.probe()
            self._before_ray = set(descendants(os.getpid()))  # this process's own children are not Ray's
            ray.init(num_cpus=inv.cpus, num_gpus=len(inv.gpus), **kw)
        else:
            kw.pop("include_dashboard")
            ray.init(address=self.spec.address, **kw)
        self._owns_ray = True

    def _inventory(self, ray: Any) -> Inventory:
        """This machine's for ``address=local``; else the cluster's cores and GPUs, with the
        local GPUs' free memory taken as every GPU's (a homogeneous cluster), or none known."""
        if self.spec.address == "local":
            return Inventory.probe()
        res = ray.cluster_resources()
        n_gpus = int(res.get("GPU", 0))
        local = gpu_inventory() if n_gpus else []
        free = min((g.free_mb for g in local), default=0)
        total = min((g.total_mb for g in local), default=0)
        gpus = tuple(GpuInfo(i, total, free) for i in range(n_gpus))
        return Inventory(cpus=int(res.get("CPU", usable_cpus())), gpus=gpus,
                         host_available_mb=int(res.get("memory", 0) / 2**20) or 1 << 40)

    def _resources(self) -> tuple[float, float]:
        """Ray CPUs and GPUs per actor."""
        assert self.arrangement is not None
        cpus = self.spec.cpus_per_worker or float(self.arrangement.threads)
        gpus = self.spec.gpus_per_worker
        if not gpus and any(d.startswith("cuda") for d in self.devices):
            gpus = 1.0 / max(self.arrangement.per_device().values())
        return cpus, gpus

    def _await_ready(self, deadline: float) -> None:
        ray = self._ray
        waiting = {s.ready: s for s in self._slots if s.ready is not None}
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            self.shutdown()
            from vista.scheduler.node_scheduler import WorkerStartError

            raise WorkerStartError(f"{len(waiting)} Ray actor(s) did not start within "
                                   f"start_timeout_s={self.spec.start_timeout_s:g} (too few free CPUs/GPUs in the "
                                   f"cluster for scheduler.cpus_per_worker/gpus_per_worker?)")
        done, _ = ray.wait(list(waiting), num_returns=1, timeout=min(timeout, 1.0))
        for ref in done:
            slot = waiting[ref]
            slot.ready = None
            try:
                slot.info = ray.get(ref)
            except Exception as err:  # noqa: BLE001  the runtime failed to build
                self.shutdown()
                from vista.scheduler.node_scheduler import WorkerStartError

                raise WorkerStartError(f"worker {slot.id} (Ray actor) failed to start: {err}") from None

    def placement(self) -> list[Placement]:
        return [Placement(s.id, s.info.get("device", "?"), s.info.get("node", "?"), s.info.get("pid"),
                          int(s.info.get("threads", 0))) for s in self._slots]

    def abort(self) -> None:
        for slot in self._slots:
            try:
                self._ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001  already dead, or Ray is going down
                continue

    def shutdown(self) -> None:
        """Kill every actor; stop (or disconnect from) Ray when this executor started it."""
        ray, self._ray = self._ray, None
        if ray is None:
            return
        slots, self._slots = self._slots, []
        for slot in slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception as err:  # noqa: BLE001  already dead
                log.debug("killing actor %d: %s", slot.id, err)
        if self._owns_ray:
            local = self.spec.address == "local"
            # what Ray started below us (GCS, raylet, its workers); never other children of this
            # process (a W&B service, another executor's workers)
            started = [p for p in descendants(os.getpid()) if p not in self._before_ray and is_ray(p)] if local else []
            ray.shutdown()
            if local:  # all gone before we return, idle pre-started workers too
                reap(started)

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def request_stop(self, grace_s: float | None = None) -> None:
        at = time.monotonic() + max(0.0, self.spec.grace_s if grace_s is None else grace_s)
        if self._stop_at is None or at < self._stop_at:
            self._stop_at = at

    @property
    def stop_requested(self) -> bool:
        return self._stop_at is not None

    # -- dispatch ----------------------------------------------------------------------------
    def run_jobs(self, requests: Sequence[JobRequest], shared: Any,
                 on_start: Callable[[str, int], None] = no_callback,
                 on_done: Callable[[JobResult], None] = no_callback, stop_on_failure: bool = True, *,
                 on_retry: Callable[[JobResult, int], None] = no_callback,
                 on_respawn: Callable[[int, str], None] = no_callback) -> list[JobResult]:
        if self._ray is None:
            raise RuntimeError("RayExecutor.run_jobs before start()")
        ray = self._ray
        self._groups += 1
        shared_id = f"s{self._groups}" if shared is not None else None
        box = [ray.put(shared)] if shared is not None else None  # once per group
        g = JobGroup(requests, shared, shared_id, on_start, on_done, on_retry, on_respawn, stop_on_failure)

        def attempt_over(res: JobResult) -> None:
            if g.attempt_over(res, self.spec.max_retries, stopping=self._stop_at is not None):
                self.retries += 1

        def lost(slot: _Slot, state: JobState, reason: str) -> None:
            """The slot's actor died or was killed: its job's attempt is over; Ray restarts it."""
            _, req, attempt, started = slot.job  # type: ignore[misc]
            slot.job = None
            if self.spec.max_retries > 0 and self._stop_at is None:
                self.respawns += 1
                slot.ready = slot.actor.ready.remote()  # resolves when the restarted actor is up
                slot.restart_deadline = time.monotonic() + self.spec.start_timeout_s
                on_respawn(slot.id, reason)
            else:
                slot.dead = True
            attempt_over(JobResult(req.job_id, req.key, state, error=reason, worker=slot.id,
                                   traceback=f"(no traceback: {reason})", seconds=time.monotonic() - started,
                                   attempt=attempt))

        while True:
            if self._stop_at is not None:
                g.cancel_pending()
                if time.monotonic() >= self._stop_at:
                    for slot in self._slots:
                        if slot.job is not None:
                            req = slot.job[1]
                            ray.kill(slot.actor, no_restart=True)
                            slot.job, slot.dead = None, True
                            g.cancel_live(req.job_id, "still running at the stop deadline (actor killed)", slot.id)
            while g.pending and not g.failed:
                slot = next((s for s in self._slots if s.idle), None)
                if slot is None:
                    break
                req, attempt = g.pending.popleft()
                send = box if slot.shared_id != shared_id else None
                job = RunJob(req.job_id, req.fn, req.key, req.payload, shared_id, None, attempt)
                slot.job = (slot.actor.run.remote(job, send), req, attempt, time.monotonic())
                slot.shared_id = shared_id
                g.started(req, attempt)
                on_start(req.job_id, slot.id)
            if g.done:
                return g.results
            if g.pending and not g.live and all(s.dead for s in self._slots):
                g.fail_pending("no live worker left to run this job (all Ray actors died)")
                continue
            self._wait([s for s in self._slots if s.job is not None], attempt_over, lost)

    def _restarted(self, slot: _Slot, ref: Any) -> None:
        """A restarting actor answered ``ready()``: up (fresh, so it holds no payload), not yet
        (ask again shortly, until the restart deadline), or gone for good."""
        slot.ready = None
        try:
            slot.info = self._ray.get(ref)
            slot.shared_id = None
        except self._ray.exceptions.ActorUnavailableError as err:
            if time.monotonic() < slot.restart_deadline:
                slot.ask_again_at = time.monotonic() + 0.25
            else:
                log.warning("worker %d (Ray actor) did not come back within start_timeout_s: %s", slot.id, err)
                slot.dead = True
        except Exception as err:  # noqa: BLE001  ActorDiedError & co: no restart left
            log.warning("worker %d (Ray actor) did not restart: %s", slot.id, err)
            slot.dead = True

    def _wait(self, busy: list[_Slot], attempt_over: Callable[..., None], lost: Callable[..., None]) -> None:
        """Collect what finished (waiting up to POLL_SECONDS), restarted actors, time-outs."""
        ray = self._ray
        refs = {s.job[0]: s for s in busy}  # type: ignore[index]
        restarting = {s.ready: s for s in self._slots if s.ready is not None}
        now = time.monotonic()
        for slot in self._slots:
            if slot.ask_again_at is not None and now >= slot.ask_again_at:
                slot.ask_again_at, slot.ready = None, slot.actor.ready.remote()
        waiting = [*refs, *restarting]
        if not waiting:  # only actors to ask again: nothing to wait on
            time.sleep(POLL_SECONDS)
        done = ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS)[0] if waiting else []
        for ref in done:
            if ref in restarting:
                self._restarted(restarting[ref], ref)
                continue
            slot = refs[ref]
            try:
                res = ray.get(ref)
            except Exception as err:  # noqa: BLE001  RayActorError & co: the actor process is gone
                lost(slot, JobState.FAILED, f"worker {slot.id} (Ray actor) died while running the job "
                                            f"(out of memory?): {type(err).__name__}: {str(err).splitlines()[0]}")
                continue
            slot.job = None
            attempt_over(res)
        if self.spec.job_timeout_s > 0:
            now = time.monotonic()
            for slot in busy:
                if slot.job is not None and now - slot.job[3] > self.spec.job_timeout_s:
                    ray.kill(slot.actor, no_restart=self.spec.max_retries == 0)
                    lost(slot, JobState.TIMED_OUT, f"job {slot.job[1].job_id} ran longer than job_timeout_s="
                                                   f"{self.spec.job_timeout_s:g} on worker {slot.id} (actor killed)")


def _actor_env() -> dict[str, str]:
    """What an actor inherits from the driver, as a spawned worker process would: the import
    path (a runtime factory may live in the user's own module; entries a node lacks are
    skipped by Python) and Vista's own settings (``VISTA_*``, e.g. fault injection)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("VISTA_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
