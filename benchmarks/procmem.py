"""Process-tree memory for the benchmarks: PSS sampled over a process and all its descendants.

PSS (proportional set size) charges each page to the processes that map it in equal shares, so
the sum over a tree counts a page shared by N workers (a memory-mapped model file, Ray's object
store) once, where RSS would count it N times. Read from ``/proc/PID/smaps_rollup`` (Linux >= 4.14;
psutil's ``memory_full_info().pss`` as a fallback).

* :class:`Sampler`: a thread that every ``interval`` s sums PSS over the tree (root + descendants,
  and everything in the root's session, which catches daemonised helpers such as Ray's) and keeps
  the peak of the tree and of the root, and a timeline.
* :func:`run_fresh`: one command in a fresh process (a new session) under a sampler: wall time,
  peak PSS, and the JSON the command printed on its last stdout line. Leftover processes of that
  session are killed (by pid) when it ends.
* :func:`probe_runtime`: a FedPEFT runtime wrapper for worker-side probes (``VISTA_BENCH_PROBE=DIR``):
  the first train job's start time, the worker's PSS after each job, and how many texts it read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1024 * 1024
PROBE_ENV = "VISTA_BENCH_PROBE"


def rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in bytes (Pss, Pss_Anon, Pss_File, Pss_Shmem, Private_Dirty, ...); {} if gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(b":") and parts[1].isdigit():
                    out[parts[0][:-1].decode()] = int(parts[1]) * 1024
    except OSError:
        return {}
    return out


def pss_bytes(pid: int) -> int | None:
    """PSS of one process in bytes; None when it is gone or unreadable."""
    pss = rollup(pid).get("Pss")
    if pss is not None:
        return pss
    try:
        import psutil

        return int(psutil.Process(pid).memory_full_info().pss)
    except Exception:  # noqa: BLE001  (no psutil, process gone, no access)
        return None


def anon_bytes(pid: int) -> int | None:
    """PSS of anonymous and shared-memory pages only (heap, tensors, /dev/shm): what a leak grows.
    File-backed pages (libraries, memory-mapped weights) are left out: their share moves whenever
    some other process on the host maps or unmaps the same files. Falls back to PSS (Linux < 5.?)."""
    r = rollup(pid)
    if "Pss_Anon" in r:
        return r["Pss_Anon"] + r.get("Pss_Shmem", 0)
    return pss_bytes(pid)


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session id) for every process, from /proc/PID/stat."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # state ppid pgrp session ...
        out[int(name)] = (int(fields[1]), int(fields[3]))
    return out


def tree_pids(root: int, session: int | None = None) -> list[int]:
    """``root``, its descendants, and (with ``session``) every process of that session."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root] if root in table else []
    if session is not None:
        todo += [pid for pid, (_, sid) in table.items() if sid == session]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return sorted(seen)


def sample_tree(root: int, session: int | None = None, detail: bool = False) -> dict[str, Any]:
    """One sample: PSS (bytes) of the root, of each other process, and of the whole tree; with
    ``detail`` also each process's whole ``smaps_rollup`` (``rollups``), the reading behind its PSS."""
    pids = tree_pids(root, session)
    rollups = {pid: r for pid in pids if (r := rollup(pid))} if detail else {}
    per = {pid: rollups[pid].get("Pss") if detail else pss_bytes(pid) for pid in (rollups if detail else pids)}
    per = {pid: v for pid, v in per.items() if v is not None}
    return {"root": per.get(root, 0), "others": {p: v for p, v in per.items() if p != root},
            "total": sum(per.values()), "procs": len(per), "rollups": rollups}


def process_name(pid: int, root: int) -> str:
    """What a process of a run's tree is: the run itself, a Vista worker (``vista-w0``, ...), the
    fork server, Ray's daemons, or else its ``comm``."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if pid == root:
        return "runner (Vista: the main process)"
    if comm.startswith("vista-"):  # a forked worker keeps the fork server's command line, not its name
        return comm
    for marker, name in (("forkserver", "fork server"), ("resource_tracker", "resource tracker"),
                         ("raylet", "ray: raylet"), ("gcs_server", "ray: gcs")):
        if marker in cmd:
            return name
    return comm


class Sampler(threading.Thread):
    """Samples the tree of ``root`` every ``interval`` s until :meth:`stop`. With ``detail``, it
    also keeps each process's ``smaps_rollup`` and name at the moment the tree peaks."""

    def __init__(self, root: int, interval: float = 0.2, session: int | None = None, detail: bool = False) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.session, self.detail = root, interval, session, detail
        self.t0 = time.perf_counter()
        self.peak = self.peak_root = self.max_procs = 0
        self.timeline: list[tuple[float, int, int, int]] = []  # (s since start, tree, root, processes)
        self.seen: set[int] = set()
        self.own_peak: dict[int, int] = {}  # pid -> its own highest PSS (bytes)
        self.at_peak: dict[int, tuple[str, dict[str, int]]] = {}  # detail: pid -> (name, rollup) at the tree's peak
        self._halt = threading.Event()

    def sample(self) -> dict[str, Any]:
        s = sample_tree(self.root, self.session, self.detail)
        self.seen.update(s["others"])
        for pid, pss in [(self.root, s["root"]), *s["others"].items()]:
            self.own_peak[pid] = max(self.own_peak.get(pid, 0), pss)
        if self.detail and s["total"] > self.peak:
            self.at_peak = {pid: (process_name(pid, self.root), r) for pid, r in s["rollups"].items()}
        if s["procs"]:
            self.peak, self.peak_root = max(self.peak, s["total"]), max(self.peak_root, s["root"])
            self.max_procs = max(self.max_procs, s["procs"])
            self.timeline.append((time.perf_counter() - self.t0, s["total"], s["root"], s["procs"]))
        return s

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> Sampler:
        self._halt.set()
        if self.is_alive():
            self.join()
        return self


@dataclass
class FreshRun:
    cmd: list[str]
    rc: int
    wall_s: float
    launched_at: float  # time.time() just before the process was started
    peak_pss_mb: float  # the whole tree
    peak_root_pss_mb: float  # the command's own process
    max_procs: int
    result: Any  # the JSON of the last stdout line, or None
    timeline: list[tuple[float, int, int, int]] = field(repr=False, default_factory=list)
    tail: str = field(repr=False, default="")  # last lines of stdout + stderr
    own_peak: dict[int, int] = field(repr=False, default_factory=dict)  # pid -> its own highest PSS (bytes)
    at_peak: dict[int, tuple[str, dict[str, int]]] = field(repr=False, default_factory=dict)  # run_fresh(detail=True)


def run_fresh(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None, interval: float = 0.2,
              timeout: float | None = None, echo: bool = True, detail: bool = False) -> FreshRun:
    """Run ``cmd`` in a fresh process in a new session under a :class:`Sampler` (``detail``: see there)."""
    lines: list[str] = []
    launched = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                            start_new_session=True, bufsize=1)
    sampler = Sampler(proc.pid, interval, session=proc.pid, detail=detail)
    sampler.start()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if echo:
                print(f"    | {line.rstrip()[:200]}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    except BaseException:  # a time-out, or Ctrl-C here: the run's whole session goes
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
            raise
    wall = time.perf_counter() - t0
    sampler.stop()
    reader.join(timeout=5)
    _kill_leftovers(proc.pid, sampler.seen)
    result = None
    for line in reversed(lines):
        if line.strip():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    return FreshRun(cmd, rc, wall, launched, sampler.peak / MB, sampler.peak_root / MB, sampler.max_procs, result,
                    sampler.timeline, "\n".join(lines[-30:]), sampler.own_peak, sampler.at_peak)


def _kill_leftovers(session: int, seen: set[int], grace: float = 5.0) -> None:
    """Processes this run started that outlive it by ``grace`` s (only pids the sampler saw in its tree)."""
    deadline = time.monotonic() + grace
    while True:
        table = _proc_table()
        left = [pid for pid in seen if pid in table and table[pid][1] == session]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    names = []
    for pid in left:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80].decode(errors="replace"))
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass
    if left:
        print(f"    (killed {len(left)} process(es) of the run still alive {grace:.0f} s after it ended: {names})",
              file=sys.stderr)


class RoundSampler:
    """A ``progress_stream`` for run_fedpeft: at each ``round N/M`` line the driver prints, PSS (bytes)
    of this process and of each worker process below it (multiprocessing's spawned children; the
    resource tracker is left out); ``measure``: :func:`pss_bytes` or :func:`anon_bytes`. Rounds print
    when evaluated (``fl.eval_every=1``: every round)."""

    def __init__(self, echo: Any = None, measure: Any = pss_bytes) -> None:
        self.echo, self.measure, self.root, self.rows = echo, measure, os.getpid(), {}

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        words = text.split()
        if len(words) > 1 and words[0] == "round" and words[1].split("/")[0].isdigit():
            self.rows[int(words[1].split("/")[0])] = self.sample()
        return len(text)

    def sample(self) -> dict[str, Any]:
        workers = {}
        for pid in tree_pids(self.root):
            try:
                name = Path(f"/proc/{pid}/comm").read_bytes()
            except OSError:
                continue
            if pid != self.root and name.startswith(b"vista-w"):  # a worker (vista.scheduler.worker names itself)
                workers[pid] = self.measure(pid)
        return {"parent": self.measure(self.root), "workers": {p: v for p, v in workers.items() if v is not None}}

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()

    def isatty(self) -> bool:
        return False


# -- worker-side probes ------------------------------------------------------------------------------

def count_text_reads() -> dict[str, int]:
    """From now on, count the texts this process reads through Vista's FedNLPData (a live dict)."""
    from vista.data import fednlp

    counts = {"texts": 0, "calls": 0}
    original = fednlp.FedNLPData.texts
    if getattr(original, "_counted", None) is not None:
        return original._counted

    def texts(self: Any, indices: Any) -> list[str]:
        out = original(self, indices)
        counts["texts"] += len(out)
        counts["calls"] += 1
        return out

    texts._counted = counts  # type: ignore[attr-defined]
    fednlp.FedNLPData.texts = texts
    return counts


class _Probe:
    def __init__(self, inner: Any, where: Path) -> None:
        self.inner, self.where, self.pid = inner, where, os.getpid()
        self.counts = count_text_reads()
        self.first_train: float | None = None

    def run(self, fn: str, key: Any, payload: dict[str, Any], shared: Any) -> Any:
        if fn == "train" and self.first_train is None:
            self.first_train = time.time()
            (self.where / f"first_train.{self.pid}").write_text(repr(self.first_train))
        out = self.inner.run(fn, key, payload, shared)
        row = {"pid": self.pid, "fn": fn, "key": key if isinstance(key, (int, str)) else str(key), "t": time.time(),
               "pss": pss_bytes(self.pid), **self.counts}
        with open(self.where / f"jobs.{self.pid}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        return out

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def probe_runtime(args: Any, env: Any) -> Any:
    """``runtime_factory`` for run_fedpeft: FedPEFTRuntime under the probe (needs ``VISTA_BENCH_PROBE``)."""
    from vista.fl.runtime import FedPEFTRuntime

    where = Path(os.environ[PROBE_ENV])
    where.mkdir(parents=True, exist_ok=True)
    counts = count_text_reads()  # before the runtime is built: what start-up reads counts too
    probe = _Probe(FedPEFTRuntime.create(args, env), where)
    probe.counts = counts
    return probe


def read_probe(where: str | Path) -> dict[str, Any]:
    """What the probes wrote: the earliest first-train time, and per worker pid its job rows."""
    where = Path(where)
    firsts = [float(p.read_text()) for p in where.glob("first_train.*")]
    jobs = {int(p.name.split(".")[1]): [json.loads(x) for x in p.read_text().splitlines()]
            for p in where.glob("jobs.*.jsonl")}
    return {"first_train": min(firsts) if firsts else None, "jobs": jobs}


def versions(names: tuple[str, ...] = ("torch", "transformers", "peft", "flwr", "ray")) -> str:
    """Date, CPU, Python and package versions: the line a recorded table carries."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")), platform.machine())
    return (f"{time.strftime('%Y-%m-%d')}, {cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, "
            + ", ".join(f"{n} {v(n)}" for n in names))


def fmt_mb(b: float | None) -> str:
    return "-" if b is None else f"{b / MB:,.0f}"
