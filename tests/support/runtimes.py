"""Small worker runtimes for scheduler tests (importable by spawned processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

INITS = 0


class EchoRuntime:
    """Records its process and how many times it was built and used."""

    def __init__(self, args: Any, env: Any) -> None:
        global INITS
        INITS += 1
        self.worker_id, self.jobs = env.worker_id, 0
        if isinstance(args, dict) and args.get("fail_init"):
            raise RuntimeError("cannot build this runtime")
        if isinstance(args, dict) and args.get("fail_init_file") and os.path.exists(args["fail_init_file"]):
            raise RuntimeError("cannot build this runtime any more")

    def run(self, fn: str, key: Any, payload: dict, shared: Any) -> Any:
        self.jobs += 1
        if fn == "sleep":
            time.sleep(payload.get("seconds", 0.1))
        elif fn == "boom":
            raise ValueError(f"boom on {key}")
        elif fn == "die":
            os._exit(7)
        elif fn == "tensors":  # what a training job returns: tensors, each sent over a file descriptor
            import torch

            return {f"t{i}": torch.full((64,), float(key)) for i in range(payload.get("n", 8))}
        elif fn in ("calc", "slow_once"):
            if fn == "slow_once" and _attempt() == 0:  # slow the first time only: a re-run is quick
                time.sleep(payload.get("seconds", 30))
            return calc(key, payload, shared)
        return {"pid": os.getpid(), "inits": INITS, "jobs": self.jobs, "key": key,
                "worker": self.worker_id, "shared": shared, "threads": _threads()}


def calc(key: Any, payload: dict, shared: Any) -> dict:
    """What ``calc`` (and ``slow_once``) return: a function of the request alone, whichever
    process or attempt ran it."""
    return {"key": key, "value": key * 10 + payload.get("x", 0), "shared": shared}


def _attempt() -> int:
    from vista.scheduler import faults

    job = faults.current_job.get()
    return 0 if job is None else job[1]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def make_echo(args: Any, env: Any) -> EchoRuntime:
    return EchoRuntime(args, env)


def make_flaky_fedpeft(args: Any, env: Any) -> Any:
    """The real FedPEFT runtime, except that training fails for the clients in FLAKY_CLIENTS
    (an environment variable, so spawned workers see it too)."""
    from vista.fl.runtime import FedPEFTRuntime

    class Flaky(FedPEFTRuntime):
        def train(self, client: int, payload: dict, shared: dict) -> dict:
            if str(client) in os.environ.get("FLAKY_CLIENTS", "").split(","):
                raise RuntimeError(f"client {client} lost its connection")
            return super().train(client, payload, shared)

    return Flaky(args, env)


class FilesRuntime:
    """Reports the files its arguments name, as this worker sees them (for ship_data)."""

    def __init__(self, args: Any, env: Any) -> None:
        self.args = args

    def run(self, fn: str, key: Any, payload: dict, shared: Any) -> Any:
        import hashlib

        data, model = self.args.data, self.args.model
        files = {"data_file": data.data_file, "partition_file": data.partition_file,
                 "config": str(Path(model.resolve()) / "config.json")}
        return {k: (v, hashlib.sha256(Path(v).read_bytes()).hexdigest()) for k, v in files.items()}


def make_files(args: Any, env: Any) -> FilesRuntime:
    return FilesRuntime(args, env)


class MemoryProbe:
    """The real FedPEFT runtime, plus a job reporting where its frozen weights live."""

    def __init__(self, args: Any, env: Any) -> None:
        from vista.fl.runtime import FedPEFTRuntime

        self.inner = FedPEFTRuntime(args, env)

    def run(self, fn: str, key: Any, payload: dict, shared: Any) -> Any:
        import torch

        from vista.models.shared_weights import _file_mappings, _inside

        model_dir = Path(self.inner.args.model.resolve())
        files = sorted(model_dir.glob("*.safetensors"))
        frozen = [p for p in self.inner.model.parameters() if not p.requires_grad]
        with torch.no_grad():  # touch every page, as training would
            checksum = float(sum(p.double().sum() for p in frozen))
        mapped = _file_mappings(files)
        device = self.inner.device
        report = self.inner.device_report
        return {"pid": os.getpid(), "checksum": checksum, "device": device,
                "frozen_on": sorted({str(p.device) for p in frozen}),
                "device_report": report.to_dict() if report is not None else None,
                # the caching allocator's live tensors: memory mapped from the parent is not among them
                "cuda_allocated": torch.cuda.memory_allocated(device) if device.startswith("cuda") else 0,
                "frozen_bytes": sum(p.numel() * p.element_size() for p in frozen),
                "frozen_in_file_bytes": sum(p.numel() * p.element_size() for p in frozen if _inside(p, mapped)),
                "file_smaps_kb": _smaps_of({str(f.resolve()) for f in files})}


def _smaps_of(paths: set[str]) -> dict[str, int]:
    """Summed smaps fields (kB) of this process's mappings of ``paths``."""
    out: dict[str, int] = {}
    take = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                take = len(head) >= 6 and head[5] in paths
            elif take and head and head[0].endswith(":") and len(head) >= 2 and head[1].isdigit():
                out[head[0][:-1]] = out.get(head[0][:-1], 0) + int(head[1])
    return out


def make_memory_probe(args: Any, env: Any) -> MemoryProbe:
    return MemoryProbe(args, env)
