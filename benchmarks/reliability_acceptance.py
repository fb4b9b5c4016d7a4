"""The reliability acceptance, as a new user would try it, with real signals from outside.

``vista experiment=smoke fl.rounds=3 fl.clients_per_round=4`` (the real MiniLM, 2 workers,
default settings) four times: fault-free; (a) one worker SIGKILLed in round 2; (b) one worker
SIGSTOPped in round 2 with ``scheduler.job_timeout_s=30``; (c) SIGTERM to the main process
after round 1, then ``vista resume=RUN_DIR``. Prints, per case, the exit codes, the seconds,
whether the final metrics equal the fault-free run's, and the processes left behind.

    python benchmarks/reliability_acceptance.py [--out DIR]      # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

BASE = ["experiment=smoke", "fl.rounds=3", "fl.clients_per_round=4"]
FINAL = ("test_accuracy", "test_loss", "test_macro_f1", "train_loss", "bytes_up_total", "client_test_accuracy_mean")


class Run:
    def __init__(self, args: list[str]) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "vista.main", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.pids: set[int] = set()
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.proc.stdout], daemon=True).start()

    def watch(self) -> None:
        try:
            self.pids |= {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def wait_for(self, text: str) -> float:
        while not any(text in x for x in self.lines):
            self.watch()
            if self.proc.poll() is not None:
                raise RuntimeError("".join(self.lines[-20:]))
            time.sleep(0.05)
        return time.monotonic() - self.t0

    def workers(self) -> list[int]:
        self.watch()
        return sorted(p for p in self.pids if psutil.pid_exists(p)
                      and psutil.Process(p).name().startswith("vista-w"))

    def finish(self) -> tuple[int, float]:
        code = self.proc.wait(timeout=900)
        return code, time.monotonic() - self.t0

    def left(self) -> int:
        time.sleep(2)
        return sum(1 for p in self.pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie")


def final(run_dir: Path) -> dict:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {k: rows[-1][k] for k in FINAL} | {"rounds": [r["round"] for r in rows]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="vista_reliability_")))
    out = p.parse_args().out
    results = []

    ref = Run([*BASE, f"hydra.run.dir={out}/fault_free"])
    code, seconds = ref.finish()
    truth = final(out / "fault_free")
    results.append(("fault-free", f"{code}", seconds, True, ref.left(), "-"))

    a = Run([*BASE, f"hydra.run.dir={out}/a"])
    a.wait_for("round 1/3")
    time.sleep(1.0)  # round 2's jobs are running
    victim = a.workers()[0]
    os.kill(victim, signal.SIGKILL)
    code, seconds = a.finish()
    retried = json.loads((out / "a" / "summary.json").read_text())["jobs_retried_total"]
    results.append(("(a) worker SIGKILL in round 2", f"{code}", seconds, final(out / "a") == truth, a.left(),
                    f"jobs retried {retried}"))

    b = Run([*BASE, "scheduler.job_timeout_s=30", f"hydra.run.dir={out}/b"])
    b.wait_for("round 1/3")
    time.sleep(1.0)
    stopped = b.workers()[0]
    t_stop = time.monotonic()
    os.kill(stopped, signal.SIGSTOP)
    while psutil.pid_exists(stopped) and psutil.Process(stopped).status() != "zombie":
        time.sleep(0.1)
    detected = time.monotonic() - t_stop
    code, seconds = b.finish()
    results.append(("(b) worker SIGSTOP in round 2, job_timeout_s=30", f"{code}", seconds,
                    final(out / "b") == truth, b.left(), f"hung worker killed after {detected:.1f} s"))

    c = Run([*BASE, f"hydra.run.dir={out}/c"])
    c.wait_for("round 1/3")
    os.kill(c.proc.pid, signal.SIGTERM)
    code1, s1 = c.finish()
    left = c.left()
    c2 = Run([f"resume={out}/c"])
    code2, s2 = c2.finish()
    results.append(("(c) SIGTERM after round 1, then resume", f"{code1}, then {code2}", s1 + s2,
                    final(out / "c") == truth, left + c2.left(), "status interrupted, then finished"))

    print(f"{'case':<50}{'exit':>12}{'seconds':>10}  {'same final metrics':<20}{'left behind':>12}  note")
    for name, codes, seconds, same, left, note in results:
        print(f"{name:<50}{codes:>12}{seconds:>10.1f}  {str(same):<20}{left:>12}  {note}")
    print(f"run directories: {out}")


if __name__ == "__main__":
    main()
