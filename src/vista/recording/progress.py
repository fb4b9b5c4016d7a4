"""Round progress: a bar with ETA on a terminal, plain log lines otherwise (CI, files)."""

from __future__ import annotations

import sys
from typing import Any


class RoundProgress:
    def __init__(self, rounds: int, stream: Any = None) -> None:
        self.rounds = rounds
        self.stream = stream or sys.stderr
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=rounds, desc="rounds", unit="round", file=self.stream, dynamic_ncols=True)

    def update(self, round: int, metrics: dict[str, Any] | None, seconds: float) -> None:
        if metrics is not None:
            line = (f"round {round}/{self.rounds}  test_accuracy {metrics['test_accuracy']:.4f}  "
                    f"test_loss {metrics['test_loss']:.4f}  train_loss {metrics['train_loss']:.4f}  "
                    f"{metrics['round_seconds']:.1f}s")
        else:
            line = f"round {round}/{self.rounds}  {seconds:.1f}s"
        if self.bar is not None:
            self.bar.write(line)
            self.bar.update(1)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
