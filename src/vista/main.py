"""``python -m vista.main`` / ``vista``: compose the config, validate it, run, name the run dir."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vista.config import ConfigError, register_resolvers, validate

register_resolvers()
# Offline first: models load from local directories; set HF_HUB_OFFLINE=0 to allow the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _user_errors() -> tuple[type[BaseException], ...]:
    from vista.data.fednlp import DataFileError
    from vista.models.hub import ModelNotFoundError
    from vista.pipeline import JobFailedError
    from vista.scheduler import DevicePlanError, WorkerStartError

    return (ModelNotFoundError, DataFileError, JobFailedError, DevicePlanError, WorkerStartError)


def _fail(kind: str, err: BaseException, code: int) -> None:
    print(f"vista: {kind}: {err}", file=sys.stderr, flush=True)
    raise SystemExit(code)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    try:
        resolved = validate(cfg)
    except ConfigError as err:
        _fail("config error", err, 2)
    from vista.build import build_parts
    from vista.drivers.run import DRIVERS

    errors = _user_errors()
    try:
        parts = build_parts(resolved)
        summary = DRIVERS[resolved["driver"]](parts, run_dir, resolved)
    except KeyboardInterrupt:
        print(f"vista: interrupted; workers stopped. run directory: {run_dir}", file=sys.stderr, flush=True)
        raise SystemExit(130)
    except errors as err:
        print(f"vista: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        print(f"run directory: {run_dir}", flush=True)
        raise SystemExit(1)
    acc = summary.get("test_accuracy")
    print(f"final test_accuracy {acc:.4f} (best {summary['best_test_accuracy']:.4f} at round {summary['best_round']})"
          if acc is not None else "finished", flush=True)
    print(f"run directory: {run_dir}", flush=True)
    return summary


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


def main() -> None:
    hint = unquoted_equals_hint(sys.argv[1:])
    if hint:
        print(hint, file=sys.stderr)
        raise SystemExit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
