"""Start-up (issue 15.2): the CLI's own import is light, workers fork from a server that has
already imported torch & co., and the default path imports no wandb, matplotlib,
scikit-learn or sentence-transformers in any process. Times are benchmarks/startup.py's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

HEAVY_NEVER = ("wandb", "matplotlib", "sklearn", "sentence_transformers")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$")


def _imported(text: str) -> set[str]:
    return {m.group(1) for line in text.splitlines() if (m := IMPORTED.match(line))}


def _cli_args(hub, data, run_dir, rounds: int) -> list[str]:
    """A default CLI run (2 warm workers) on the tiny RoBERTa and the tiny corpus."""
    return ["model=roberta", f"paths.model_hub={hub}", "dataset=fednlp", f"dataset.data_file={data[0]}",
            "partition=fednlp_file", f"partition.file={data[1]}", "partition.method=uniform", f"fl.rounds={rounds}",
            "fl.clients_per_round=2", "fl.batch_size=8", "fl.max_seq_len=32", "scheduler.num_workers=2",
            "scheduler.threads_per_worker=1", f"hydra.run.dir={run_dir}"]


def test_importing_the_cli_loads_no_torch_scipy_or_transformers():
    code = ("import sys, vista.main; print(sorted(m for m in ('torch', 'scipy', 'transformers', 'peft', 'h5py', "
            "'sklearn', 'wandb', 'matplotlib', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_default_run_forks_warm_workers_and_imports_nothing_heavy(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    args = _cli_args(tiny_hub, tiny_data, run_dir, rounds=1)
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "vista.main", *args], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    parent_and_server = _imported(p.stderr)  # the fork server's preload prints here too
    logs = sorted((run_dir / "workers").glob("worker_*.log"))
    assert len(logs) == 2
    workers = [_imported(log.read_text()) for log in logs]
    for mods in (parent_and_server, *workers):
        assert not {m.split(".")[0] for m in mods} & set(HEAVY_NEVER)
    # the server imported torch, transformers and peft once; the workers, forked from it, did not
    assert {"torch", "transformers", "peft"} <= parent_and_server
    for mods in workers:
        assert not {"torch", "transformers", "peft"} & mods, sorted(mods)[:20]
        assert mods, "a worker's imports were not recorded (its log)"


_SERVER = """
import json, os, sys
from multiprocessing import forkserver
from vista.scheduler import warm_start
assert warm_start.warm_up([], from_parent=True)
pid = forkserver._forkserver._forkserver_pid
def rollup(p):
    return {k.rstrip(":"): int(v) // 1024 for k, v, *_ in (l.split() for l in open(f"/proc/{p}/smaps_rollup"))
            if k in ("Shared_Dirty:", "Private_Dirty:")}
with open(f"/proc/{pid}/stat") as f:
    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
import time
time.sleep(0.5)  # the server names itself first thing after the fork
comm = open(f"/proc/{pid}/comm").read().strip()
print(json.dumps({"server_parent": ppid, "me": os.getpid(), "server": rollup(pid), "torch": "torch" in sys.modules,
                  "comm": comm}))
"""


def _server(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _SERVER], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_fork_server_shares_the_parents_torch_pages():
    # forked from the parent after `import torch`: what that import allocated (~145 MB, more than
    # the parent's whole heap before it) is one set of pages for the parent, the server and its
    # workers, not one copy in the parent and another in the server
    forked = _server({})
    assert forked["server_parent"] == forked["me"] and forked["torch"] and forked["comm"] == "vista-server"
    assert forked["server"]["Shared_Dirty"] > 100, forked
    # the fresh interpreter multiprocessing starts shares no written pages with anyone yet
    fresh = _server({"VISTA_FORK_SERVER_FROM_PARENT": "0"})
    assert fresh["server"]["Shared_Dirty"] < 20 and not fresh["torch"], fresh


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_workers_of_a_forked_server_and_of_a_fresh_one_give_the_same_run(tiny_hub, tiny_data, tmp_path):
    runs = {}
    for env in ("1", "0"):
        run_dir = tmp_path / f"run{env}"
        p = subprocess.run([sys.executable, "-m", "vista.main", *_cli_args(tiny_hub, tiny_data, run_dir, rounds=2)], capture_output=True, text=True, cwd=tmp_path,
                           timeout=300, env={**os.environ, "VISTA_FORK_SERVER_FROM_PARENT": env})
        assert p.returncode == 0, p.stderr[-3000:]
        runs[env] = [{k: v for k, v in json.loads(line).items() if "seconds" not in k and k != "elapsed"}
                     for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(runs["1"]) == 2 and runs["1"] == runs["0"]


_EARLY = """
import json, os
from multiprocessing import forkserver
from vista.scheduler import warm_start
server = forkserver._forkserver
out = {"help": warm_start.warm_up_early(["model=roberta", "--cfg", "job"]), "pid_after_help": server._forkserver_pid}
out["early"] = warm_start.warm_up_early(["model=roberta"])
first = server._forkserver_pid
out["in_process"] = warm_start.warm_up_for({"backend": "process", "num_workers": 0})
out["first_alive"] = os.path.exists(f"/proc/{first}") and open(f"/proc/{first}/stat").read().split()[2] != "Z"
out["pid_after_stop"] = server._forkserver_pid
out["again"] = warm_start.warm_up_for({"backend": "process", "num_workers": 2})
out["second"] = server._forkserver_pid is not None and server._forkserver_pid != first
print(json.dumps(out))
"""


def test_the_cli_starts_the_server_before_composing_and_a_run_without_workers_stops_it():
    out = json.loads(subprocess.run([sys.executable, "-c", _EARLY], capture_output=True, text=True, timeout=120,
                                    check=True).stdout.strip().splitlines()[-1])
    assert out["help"] is False and out["pid_after_help"] is None  # --cfg/--help print and exit: no server
    assert out["early"] is True
    # scheduler.num_workers=0 runs in process: the early server is stopped, reaped and forgotten
    assert out["in_process"] is False and not out["first_alive"] and out["pid_after_stop"] is None
    assert out["again"] is True and out["second"]  # and a later run with workers starts another


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_a_cli_run_in_process_finishes_after_stopping_the_early_server(tiny_hub, tiny_data, tmp_path):
    args = [a for a in _cli_args(tiny_hub, tiny_data, tmp_path / "run", rounds=1) if not a.startswith("scheduler.")]
    p = subprocess.run([sys.executable, "-m", "vista.main", *args, "scheduler.num_workers=0"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not list((tmp_path / "run").glob("workers/worker_*.log"))  # trained in the main process
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_accuracy"] is not None


_AFTER_OPS = """
import json, os, sys
import torch


def parallel_op():  # in a worker: an OpenMP parallel region on 2 threads
    torch.set_num_threads(2)
    torch.nn.functional.gelu(torch.randn(4_000_000)).sum()


if __name__ == "__main__":
    from multiprocessing import forkserver
    from vista.scheduler import warm_start
    torch.set_num_threads(2)
    torch.nn.functional.gelu(torch.randn(4_000_000)).sum()  # this process's OpenMP pool now exists
    assert warm_start.warm_up_for({"backend": "process", "num_workers": 2})  # as run_fedpeft calls it
    pid = forkserver._forkserver._forkserver_pid
    shared = [int(l.split()[1]) // 1024 for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Shared_Dirty:")]
    p = warm_start.worker_context().Process(target=parallel_op)
    p.start()
    p.join(60)
    print(json.dumps({"exitcode": p.exitcode, "server_shared_mb": shared[0]}))
    if p.exitcode is None:
        p.kill()
"""


def test_a_parent_that_ran_parallel_torch_ops_gets_a_fresh_server_whose_workers_do_not_hang(tmp_path):
    # GNU OpenMP's pool does not survive a fork: a worker forked below a parent that had run a
    # 2-thread op hung in its own first parallel op. Only the CLI, before anything runs, forks
    # the server from the parent; an API run gets a fresh interpreter
    script = tmp_path / "after_ops.py"
    script.write_text(_AFTER_OPS)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["exitcode"] == 0, res
    assert res["server_shared_mb"] < 20, res  # a fresh interpreter, not a fork of this process
