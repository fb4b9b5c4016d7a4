"""Hydra multiruns: naming each job's W&B run, progress across jobs, failed jobs at the end.

``SweepCallback`` is registered in ``conf/config.yaml`` (``hydra.callbacks``). It runs in
the launching process for ``on_multirun_*`` and in the job's process for ``on_job_end``
(the same process with the basic launcher, a worker with the joblib launcher), so it only
talks across processes through the run directories: every job leaves ``summary.json`` with
a ``status``. After the sweep it prints the failed jobs and leaves them in ``FAILED`` for
``vista.main`` to exit non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from vista.recording.progress import eta, fmt_seconds

# jobs that failed in the last multirun of this process: (job directory, error)
FAILED: list[tuple[Path, str]] = []
log = logging.getLogger(__name__)
_TOTAL_ENV, _T0_ENV = "VISTA_SWEEP_JOBS", "VISTA_SWEEP_STARTED"


def recorder_names(recorder: dict[str, Any], hydra_cfg: Any, experiment_name: str | None,
                   driver: str | None) -> dict[str, Any]:
    """The W&B name/group/tags/job_type of a job, where the config leaves them unset:
    name = the job's overrides (``override_dirname``; the run directory's name if none),
    group = the sweep directory's name in a multirun, tags += [experiment_name],
    job_type = the driver."""
    from hydra.types import RunMode

    out = dict(recorder)
    if not out.get("name"):
        out["name"] = job_label(hydra_cfg)
    if not out.get("group") and hydra_cfg.mode == RunMode.MULTIRUN:
        out["group"] = Path(hydra_cfg.sweep.dir).name
    tags = list(out.get("tags") or [])
    if experiment_name and experiment_name not in tags:
        tags.append(experiment_name)
    out["tags"] = tags
    if not out.get("job_type") and driver:
        out["job_type"] = driver
    return out


def _swept_only(overrides: list[str], swept: list[str] | None) -> str:
    return ",".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in (swept or ()))


def job_label(hydra_cfg: Any) -> str:
    """A job's name: the values of the keys its sweep varies (``peft=lora,seed=1``); else its
    overrides (``override_dirname``); else its run directory's name."""
    from hydra.types import RunMode

    swept = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        swept = swept_keys(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    return (_swept_only([str(o) for o in hydra_cfg.overrides.task], swept) or hydra_cfg.job.override_dirname
            or Path(hydra_cfg.runtime.output_dir).name)


def dir_label(job_dir: Path, swept: list[str] | None) -> str:
    """The same label, for a job directory of a finished sweep."""
    import yaml

    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):  # no overrides recorded: the directory's own name
        return job_dir.name
    return _swept_only([str(o) for o in overrides or []], swept) or job_dir.name


def swept_keys(multirun_yaml: Path) -> list[str] | None:
    """The keys a sweep varies (``a=1,2``, ``b=range(3)`` ...), from its ``multirun.yaml``."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(multirun_yaml)
        args = [str(x) for x in cfg.hydra.overrides.task]
        params = cfg.hydra.sweeper.get("params") or {}
        args += [f"{k}={v}" for k, v in params.items()]
        return [o.get_key_element().lstrip("+~") for o in OverridesParser.create().parse_overrides(args)
                if o.is_sweep_override()]
    except Exception as err:  # labels fall back to the whole override list
        log.warning("could not read the swept keys from %s: %s: %s", multirun_yaml, type(err).__name__, err)
        return None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep: those holding Hydra's ``.hydra`` folder."""
    return sorted((p.parent for p in Path(sweep_dir).glob("*/.hydra")), key=_job_order)


def _job_order(p: Path) -> tuple[int, str]:
    head = p.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, p.name)


def job_status(job_dir: Path) -> tuple[str, str]:
    """(status, error) from a job's ``summary.json``; ``missing`` without one."""
    try:
        s = json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "missing", "no summary.json (the job did not finish: killed?)"
    return str(s.get("status", "finished")), str(s.get("error", ""))


def count_jobs(config: Any) -> int | None:
    """How many jobs the basic sweeper will launch (None for other sweepers)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        sweeper = str(config.hydra.sweeper.get("_target_", ""))
        if not sweeper.endswith("BasicSweeper"):
            return None
        args = [str(x) for x in config.hydra.overrides.task]
        params = config.hydra.sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + args
        overrides = OverridesParser.create().parse_overrides(args)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception as err:  # Hydra's private sweeper API moved: progress lines go without a total
        log.warning("could not count the sweep's jobs: %s: %s", type(err).__name__, err)
        return None


class SweepCallback(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        FAILED.clear()
        total = count_jobs(config)
        os.environ[_T0_ENV] = str(time.time())
        if total:
            os.environ[_TOTAL_ENV] = str(total)
        else:
            os.environ.pop(_TOTAL_ENV, None)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        try:
            self._job_line(config, job_return)
        except Exception as err:  # a progress line is not worth stopping the sweep for; say it failed
            print(f"vista: sweep progress line failed ({type(err).__name__}: {err})", file=sys.stderr, flush=True)

    @staticmethod
    def _job_line(config: Any, job_return: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            return
        run_dir = Path(hc.runtime.output_dir)
        status = "failed"
        if job_return.status == JobStatus.COMPLETED:
            value = job_return._return_value
            status = value.get("status", "finished") if isinstance(value, dict) else "finished"
        total = int(os.environ.get(_TOTAL_ENV, "0")) or None
        t0 = float(os.environ.get(_T0_ENV, time.time()))
        done = sum(job_status(d)[0] in ("finished", "failed", "interrupted") for d in job_dirs(run_dir.parent))
        elapsed = time.time() - t0
        label = job_label(hc)
        of = f"/{total}" if total else ""
        rest = f"  eta {fmt_seconds(eta(elapsed, done, total))}" if total else ""
        print(f"sweep: job #{hc.job.num} {status} ({label}); {done}{of} jobs done, elapsed "
              f"{fmt_seconds(elapsed)}{rest}", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = job_dirs(sweep_dir)
        FAILED.clear()
        for d in jobs:
            status, error = job_status(d)
            if status != "finished":
                FAILED.append((d, f"{status}: {error}" if error else status))
        os.environ.pop(_TOTAL_ENV, None)
        os.environ.pop(_T0_ENV, None)
        if FAILED:
            swept = swept_keys(sweep_dir / "multirun.yaml")
            print(f"vista: {len(FAILED)} of {len(jobs)} sweep jobs failed:", file=sys.stderr)
            for d, error in FAILED:
                num = d.name.split("_", 1)[0]
                print(f"  #{num} {dir_label(d, swept)}: {error.splitlines()[0] if error else ''}", file=sys.stderr)
                print(f"      {d}", file=sys.stderr)
        print(f"sweep directory: {sweep_dir.resolve()}  (compare: vista compare {sweep_dir})", flush=True)


def concurrent_runs(hydra_cfg: Any) -> int:
    """How many Vista runs this sweep's launcher runs at once on this machine: ``n_jobs`` of
    the joblib launcher (-1: one per core, as joblib counts), else 1 (the basic launcher runs
    jobs one after the other; Slurm's submitit gives each job its own allocation)."""
    launcher = getattr(hydra_cfg, "launcher", None)
    target = str(getattr(launcher, "_target_", "") or "")
    if "Joblib" not in target:
        return 1
    n = int(getattr(launcher, "n_jobs", 1) or 1)
    if n < 0:  # joblib: -1 all cores, -2 all but one ...
        n = max(1, (os.cpu_count() or 1) + 1 + n)
    return max(1, n)


def share_cores(scheduler: dict[str, Any], runs: int, usable: int) -> dict[str, Any]:
    """``scheduler`` with ``cpus`` set to this run's share of the ``usable`` cores when
    ``runs`` Vista runs share the machine and the user left ``scheduler.cpus`` at 0: the runs'
    workers never ask for more threads than there are cores (no oversubscription)."""
    if runs <= 1 or scheduler.get("cpus"):
        return scheduler
    return {**scheduler, "cpus": max(1, usable // runs)}
