"""``python -m vista.main`` / ``vista``: compose the config, validate it, run, name the run dir."""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vista.config import ConfigError, register_resolvers, validate

register_resolvers()
# Offline first: models load from local directories; set HF_HUB_OFFLINE=0 to allow the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _run_failures() -> tuple[type[BaseException], ...]:
    """A run that failed for a reason it reports itself (the clients lost, workers that would
    not start): one message, exit 1. A failed job (JobFailedError) is handled on its own."""
    from vista.drivers.fedpeft import TooFewClientsError
    from vista.scheduler import WorkerStartError

    return (TooFewClientsError, WorkerStartError)


def _fail(kind: str, err: BaseException, code: int, message: str | None = None) -> None:
    """One line (the traceback too with HYDRA_FULL_ERROR=1), then exit ``code``."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(f"vista: {kind}{err if message is None else message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _recorder_spec(resolved: dict[str, Any] | None, cfg: DictConfig) -> Any:
    """The job's RecorderSpec, to mark a failed job's W&B run failed too. A job can fail before
    its config validates; the recorder part may still be usable. None (and why, on stderr)
    when it is not: the failure is then recorded in the run directory only."""
    from vista.recording import RecorderSpec
    from vista.sweep import recorder_names

    try:
        if resolved is None:
            raw = OmegaConf.to_container(cfg, resolve=False)
            rec = recorder_names(dict(OmegaConf.to_container(cfg.recorder, resolve=True)), HydraConfig.get(),
                                 str(raw.get("experiment_name") or ""), str(raw.get("driver") or ""))
        else:
            rec = dict(resolved["recorder"])
        fields = set(RecorderSpec.__dataclass_fields__)
        return RecorderSpec(**{k: v for k, v in rec.items() if k in fields})
    except Exception as err:  # the recorder config itself is what is broken
        print(f"vista: the failure is recorded locally only (recorder config unusable: {type(err).__name__}: "
              f"{err})", file=sys.stderr, flush=True)
        return None


def _run(cfg: DictConfig, run_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Validate, build and run one job; raises on any failure (ConfigError, user errors, ...)."""
    hc = HydraConfig.get()
    _warm_up(cfg, from_parent=not _JOBS_STARTED)  # a sweep's later jobs: this process has run torch ops
    _JOBS_STARTED.append(run_dir)
    resolved = validate(cfg)
    if resolved["resume"]:  # the run's own saved config, with what may change taken from this command
        from vista.resume import resume_config

        resolved = validate(resume_config(resolved["resume"], [str(o) for o in hc.overrides.task], resolved))
    from vista.scheduler.devices import usable_cpus
    from vista.sweep import concurrent_runs, recorder_names, share_cores

    resolved["scheduler"] = share_cores(resolved["scheduler"], concurrent_runs(hc), usable_cpus())
    resolved["recorder"] = recorder_names(resolved["recorder"], hc, resolved.get("experiment_name"),
                                          resolved.get("driver"))
    state["resolved"] = resolved
    from vista.build import build_parts
    from vista.drivers import driver

    return driver(resolved["driver"])(build_parts(resolved), run_dir, resolved, from_checkpoint=bool(resolved["resume"]))


_JOBS_STARTED: list[Path] = []  # the run directories of this process's jobs so far


def _warm_up(cfg: DictConfig, from_parent: bool) -> None:
    """Start the workers' fork server (and its imports) now, beside the parent's own imports and
    checks, unless :func:`main` already did; a config that does not even resolve is left to
    validate() to report. ``from_parent``: see ``warm_start.warm_up``."""
    from vista.scheduler.warm_start import warm_up_for

    try:
        scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
        model = OmegaConf.to_container(cfg.model, resolve=True) if "model" in cfg else None
    except Exception:  # noqa: BLE001  validate() says what is wrong
        return
    if isinstance(scheduler, dict):
        warm_up_for(scheduler, model if isinstance(model, dict) else None, from_parent=from_parent)


def _finished(summary: dict[str, Any], run_dir: Path) -> None:
    if "chosen" in summary:
        print(f"chosen model: {summary['chosen']}", flush=True)
    acc = summary.get("test_accuracy")
    print(f"final test_accuracy {acc:.4f} (best {summary['best_test_accuracy']:.4f} at round {summary['best_round']})"
          if acc is not None else "finished", flush=True)
    print(f"run directory: {run_dir}", flush=True)


def _record_failure(run_dir: Path, err: BaseException, state: dict[str, Any], cfg: DictConfig,
                    with_wandb: bool) -> None:
    from vista.recording.recorder import record_failure

    resolved = state.get("resolved")
    spec = _recorder_spec(resolved, cfg) if with_wandb else None
    record_failure(run_dir, err, spec, resolved)


def _single_run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from vista.errors import Interrupted, UserError
    from vista.pipeline import JobFailedError

    state: dict[str, Any] = {}
    try:
        summary = _run(cfg, run_dir, state)
    except ConfigError as err:
        _record_failure(run_dir, err, state, cfg, with_wandb=False)
        _fail("config error: ", err, 2)
    except UserError as err:  # a data file, a model directory, a partition, clients per round ...
        _record_failure(run_dir, err, state, cfg, with_wandb=False)
        _fail("", err, 2)
    except Interrupted as err:  # recorded and checkpointed by the driver, which said how to continue
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt as err:
        _record_failure(run_dir, err, state, cfg, with_wandb=False)
        print(f"vista: interrupted; workers stopped. run directory: {run_dir}", file=sys.stderr, flush=True)
        raise SystemExit(130)
    except JobFailedError as err:
        _record_failure(run_dir, err, state, cfg, with_wandb=False)
        if err.result.user_error:  # e.g. a client's data the model cannot take: what the worker said, one line
            _fail("", err, 2, message=str(err.result.error).split(": ", 1)[-1])
        print(f"vista: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        print(f"run directory: {run_dir}", flush=True)
        raise SystemExit(1)
    except _run_failures() as err:
        _record_failure(run_dir, err, state, cfg, with_wandb=False)
        print(f"vista: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        print(f"run directory: {run_dir}", flush=True)
        raise SystemExit(1)
    except Exception as err:
        _record_failure(run_dir, err, state, cfg, with_wandb=False)
        raise
    _finished(summary, run_dir)
    return summary


def _sweep_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One job of a multirun: a failure is recorded (summary.json, W&B run marked failed) and
    returned, not raised, so that the other jobs run; ``main`` exits non-zero at the end."""
    from vista.errors import Interrupted

    state: dict[str, Any] = {}
    try:
        summary = _run(cfg, run_dir, state)
    except (KeyboardInterrupt, Interrupted):
        raise  # stops the whole sweep
    except BaseException as err:
        if isinstance(err, SystemExit) and err.code in (0, None):
            return {"status": "finished"}
        _record_failure(run_dir, err, state, cfg, with_wandb=True)
        kind = "config error" if isinstance(err, ConfigError) else type(err).__name__
        print(f"vista: job failed: {kind}: {err}", file=sys.stderr, flush=True)
        print(f"run directory: {run_dir}", flush=True)
        return {"status": "failed", "error": f"{kind}: {err}", "run_dir": str(run_dir)}
    _finished(summary, run_dir)
    return {**summary, "status": "finished"}


@hydra.main(version_base="1.3", config_path="pkg://vista.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir).resolve()
    if hc.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run_dir)
    return _single_run(cfg, run_dir)


_OVERRIDE = re.compile(r"^[+~]{0,2}([\w.@/-]+)=(.*)$", re.S)


def unquoted_equals_hint(argv: list[str]) -> str | None:
    """Hydra's grammar rejects ``key=a=b``; say how to write it instead of a parser error."""
    for arg in argv:
        m = _OVERRIDE.match(arg)
        if m and "=" in m.group(2) and m.group(2)[:1] not in "'\"[{(" and not m.group(1).startswith("hydra."):
            key, value = m.groups()
            hint = f"vista: the value of {key} contains '=': quote it for Hydra: '{key}=\"{value}\"'"
            if key == "partition.method":
                hint += " (or give it as parts: partition.kind=niid_label partition.clients=N partition.alpha=X)"
            return hint
    return None


def _resume_args(argv: list[str]) -> str | None:
    """``resume=RUN_DIR``: the run continues in RUN_DIR itself (its absolute path; Hydra writes no
    second ``.hydra`` there). Returns an error line for what cannot be resumed."""
    found = [i for i, a in enumerate(argv) if a.startswith("resume=")]
    if not found:
        return None
    if any(a in ("-m", "--multirun") for a in argv):
        return "vista: resume: continue one run at a time (no -m); the sweep's other jobs resume one by one"
    where = Path(argv[found[-1]].split("=", 1)[1]).expanduser().resolve()
    if not (where / "config.yaml").is_file():
        return f"vista: resume: {where} is not a Vista run directory (no config.yaml there)"
    argv[found[-1]] = f"resume={where}"
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        argv += [f"hydra.run.dir={where}", "hydra.output_subdir=null"]
    sys.argv[1:] = argv
    return None


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["compare"]:  # `vista compare PATH_OR_GROUP ...`; anything else goes to Hydra
        from vista.compare import main as compare_main

        raise SystemExit(compare_main(argv[1:]))
    hint = unquoted_equals_hint(argv) or _resume_args(argv)
    if hint:
        print(hint, file=sys.stderr)
        raise SystemExit(2)
    from vista import sweep
    from vista.errors import Interrupted
    from vista.scheduler.warm_start import warm_up_early

    warm_up_early(argv)  # the workers' imports begin now, beside Hydra's composition
    sweep.FAILED.clear()
    try:
        _hydra_main()
    except Interrupted as err:  # a sweep stopped by a signal
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        print("vista: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130)
    if sweep.FAILED:  # a multirun in which some job failed (listed by the sweep callback)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
