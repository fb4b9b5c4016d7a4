"""ExpRecorder: every round's record goes to the local run directory and to W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vista.recording.local import LocalRecorder
from vista.recording.spec import RecorderSpec
from vista.recording.wandb_sink import WandbSink


class ExpRecorder:
    def __init__(self, spec: RecorderSpec, run_dir: str | Path, config: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        run_dir = Path(run_dir)
        self.local = LocalRecorder(run_dir)
        self.wandb = WandbSink(spec.mode, spec.project, spec.entity, run_dir, name or run_dir.name, config)

    def write_config(self, config: dict[str, Any]) -> None:
        self.local.write_config(config)

    def log(self, metrics: dict[str, Any]) -> None:
        self.local.log(metrics)
        self.wandb.log(metrics, step=int(metrics["round"]))

    def summary(self, summary: dict[str, Any]) -> None:
        self.local.summary(summary)
        self.wandb.summary(summary)

    def close(self) -> None:
        self.wandb.close()
        self.local.close()
