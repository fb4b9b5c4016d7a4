"""Progress: bars with ETA on a terminal, plain periodic log lines otherwise (CI, files).

``RoundProgress`` shows the rounds of one run; ``attach(events)`` adds the jobs of each
parallel task (client training, evaluation shards) from the EventManager's ``job`` events.
Off a terminal every evaluated round prints one line (with elapsed time and ETA), other
rounds and job counts at most every ``interval`` seconds.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

from vista.pipeline.protocol import FINAL_STATES

# shown in this order when present in a round's metrics
SHOWN = ("test_accuracy", "test_macro_f1", "test_loss", "train_loss")


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def fmt_seconds(s: float | None) -> str:
    if s is None or math.isnan(s) or s < 0:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def eta(elapsed: float, done: int, total: int) -> float | None:
    if done <= 0 or total <= 0:
        return None
    return elapsed / done * max(total - done, 0)


class RoundProgress:
    def __init__(self, rounds: int, stream: Any = None, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rounds = rounds
        self.stream = stream or sys.stderr
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._last_line = self.started
        self._done = 0
        self.bar = None
        self._job_bar = None
        self._job_group: str | None = None
        self._job_last = self.started
        self._monitor: Any = None
        if is_tty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=rounds, desc="rounds", unit="round", file=self.stream, dynamic_ncols=True)

    # -- rounds -------------------------------------------------------------------------------
    def update(self, round: int, metrics: dict[str, Any] | None, seconds: float) -> None:
        self._done = max(self._done, round)
        now = self.clock()
        elapsed = now - self.started
        parts = [f"round {round}/{self.rounds}"]
        if metrics is not None:
            parts += [f"{k} {metrics[k]:.4f}" for k in SHOWN if isinstance(metrics.get(k), (int, float))]
            seconds = metrics.get("round_seconds", seconds)
        parts.append(f"{seconds:.1f}s")
        self._close_job_bar()
        if self.bar is not None:
            if metrics is not None:
                self.bar.write("  ".join(parts), file=self.stream)
            self.bar.update(1)
            return
        last = round >= self.rounds
        if metrics is None and not last and now - self._last_line < self.interval:
            return
        parts.append(f"elapsed {fmt_seconds(elapsed)}  eta {fmt_seconds(eta(elapsed, round, self.rounds))}")
        self._print("  ".join(parts))
        self._last_line = now

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    # -- jobs of a parallel task ------------------------------------------------------------------
    def attach(self, events: Any) -> "RoundProgress":
        """Follow the jobs of each parallel task: ``events.subscribe("job", ...)``."""
        self._monitor = getattr(events, "monitor", None)
        events.subscribe("job", self.job)
        return self

    def job(self, job_id: str, state: Any) -> None:
        """A job's state changed (``job`` event of the EventManager)."""
        group = job_id.rsplit(".j", 1)[0]
        if self._monitor is None:
            return
        try:
            counts = self._monitor.counts(group)
        except KeyError:  # a job of a group this monitor never opened (another EventManager's)
            return
        total = sum(counts.values())
        finished = sum(counts.get(s.value, 0) for s in FINAL_STATES)
        started = finished + counts.get("running", 0)
        task = group.split(".")[1] if group.count(".") >= 2 else group
        now = self.clock()
        if group != self._job_group:
            self._close_job_bar()
            self._job_group, self._job_started, self._job_last = group, now, now
            if self.bar is not None:
                from tqdm import tqdm

                self._job_bar = tqdm(total=total, desc=f"  {task}", unit="job", file=self.stream,
                                     dynamic_ncols=True, leave=False)
        if self._job_bar is not None:
            self._job_bar.n = finished
            self._job_bar.set_postfix_str(f"started {started}", refresh=True)
            return
        elapsed = now - self._job_started
        if finished >= total or now - max(self._job_last, self._last_line) < self.interval:
            return  # off a terminal: only a long task gets lines, every `interval` seconds
        self._job_last = now
        self._print(f"  {task}: {finished}/{total} jobs done, {started} started  elapsed {fmt_seconds(elapsed)}"
                    f"  eta {fmt_seconds(eta(elapsed, finished, total))}")

    def _close_job_bar(self) -> None:
        if self._job_bar is not None:
            self._job_bar.close()
            self._job_bar = None

    def close(self) -> None:
        self._close_job_bar()
        if self.bar is not None:
            self.bar.close()
