"""Errors a user can fix: a wrong config value found late, a data file, a model directory, a
partition. ``vista.main`` prints them as one line, ``vista: <message>``, and exits 2 (the
traceback only with ``HYDRA_FULL_ERROR=1``); anything else is a bug or a crash and keeps its
traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


class Interrupted(Exception):
    """A run stopped by a signal (SIGINT, SIGTERM, SIGHUP) after checkpointing its last complete
    round: ``vista.main`` exits with 128 + the signal number."""

    def __init__(self, signum: int, run_dir: str, round: int | None) -> None:
        import signal

        self.signum, self.run_dir, self.round = signum, run_dir, round
        self.signal = signal.Signals(signum).name
        self.resume = f"vista resume={run_dir}"
        done = f"after round {round}" if round else "before any round was complete"
        super().__init__(f"interrupted by {self.signal} {done}; continue with: {self.resume}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
