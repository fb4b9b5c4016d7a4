"""The Weights & Biases sink: offline unless the user is logged in, and never fatal.

W&B failing to import, to start or mid-run falls back to the local run directory (which
is always written), says so once, and the run goes on; an offline run can be uploaded
later with ``wandb sync <run_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def effective_mode(requested: str) -> str:
    """``online`` only when credentials exist; otherwise ``offline``."""
    if requested == "online" and not wandb_logged_in():
        return "offline"
    return requested


class WandbSink:
    def __init__(self, mode: str, project: str, entity: str | None, run_dir: Path, name: str,
                 config: dict[str, Any] | None = None) -> None:
        self.run: Any = None
        self.mode = effective_mode(mode)
        if self.mode == "disabled":
            return
        if self.mode != mode:
            print(f"vista: W&B mode {mode} needs a login (wandb login or WANDB_API_KEY); recording offline",
                  file=sys.stderr, flush=True)
        try:
            import wandb

            self.run = wandb.init(mode=self.mode, project=project, entity=entity or os.environ.get("WANDB_ENTITY"),
                                  dir=str(run_dir), name=name, config=config or {})
        except Exception as err:  # noqa: BLE001 - W&B must never kill the experiment
            self._fallback("start", err)

    def _fallback(self, when: str, err: BaseException) -> None:
        print(f"vista: W&B failed to {when} ({type(err).__name__}: {err}); recording to the local run "
              f"directory only", file=sys.stderr, flush=True)
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        except Exception as err:  # noqa: BLE001
            self._fallback("log", err)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
        except Exception as err:  # noqa: BLE001
            self._fallback("write the summary", err)

    def close(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("W&B finish failed: %s", err)
            self.run = None
