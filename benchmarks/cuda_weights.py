"""One copy of the frozen weights per GPU (issue 15, point 1 on CUDA): device memory with N workers
on one GPU, the parent keeping the frozen base once (``model.share_weights=true``, the default)
against every worker copying it (``false``).

Each (model, sharing, N) runs in a fresh process: a NodeScheduler with N FedPEFT workers (LoRA r8
on every attention projection, batch 16, length 128) on cuda:0, then ``--rounds`` rounds of one
client job per worker. The device's used memory (NVML, the whole GPU: every process, CUDA
contexts included) is read before the scheduler starts, once the workers are ready, and sampled
every 10 ms during the rounds (peak). Also per process where NVML reports it, mean round time
after the first, and the last round's mean training loss (sharing must not change it).

Models are random, built once in ``--workdir`` in float32 with shapes of real ones:
``smollm2`` (SmolLM2-135M's: 30 layers, hidden 576, GQA, vocabulary 49,152; 0.54 GB) and ``1b``
(a 1.07B Llama: 16 layers, hidden 2048; 4.3 GB). Needs a CUDA GPU; prints a table, asserts nothing.

    python benchmarks/cuda_weights.py                              # both models, N = 1 2 4
    python benchmarks/cuda_weights.py --models smollm2 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = {
    "smollm2": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=49152),
}
MB = 2**20


def build_model(work: Path, name: str) -> Path:
    """A random Llama of ``SHAPES[name]`` with the tiny Llama's tokenizer (ids < 300 index the
    full vocabulary), saved in float32 under ``work/hub/name``."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    dest = work / "hub" / name
    if (dest / "config.json").is_file():
        return dest
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support.tiny import build_tiny_llama

    build_tiny_llama(dest)
    for f in dest.glob("*.safetensors"):
        f.unlink()
    cfg = LlamaConfig(**SHAPES[name], max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    with torch.device("cpu"):
        LlamaModel(cfg).to(torch.float32).save_pretrained(str(dest))
    return dest


ON_GPU = True  # --device cpu: a smoke test of this script's paths where no GPU is (memory reads 0)


def gpu_used_mb() -> float:
    if not ON_GPU:
        return 0.0
    import pynvml

    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    return pynvml.nvmlDeviceGetMemoryInfo(h).used / MB


def per_process_mb() -> dict[int, float]:
    if not ON_GPU:
        return {}
    import pynvml

    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    except pynvml.NVMLError:
        return {}
    return {p.pid: (p.usedGpuMemory or 0) / MB for p in procs}


class Peak:
    def __init__(self) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, gpu_used_mb())
            time.sleep(0.01)

    def __enter__(self) -> Peak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def child(args: argparse.Namespace) -> dict:
    import pynvml

    sys.path.insert(0, str(HERE))
    from scaling import write_pair

    from vista.data.fednlp import FederatedDataSpec
    from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs, weight_keeper
    from vista.fl.spec import FLSpec
    from vista.models.hub import ModelSpec
    from vista.peft.lora import LoraSpec
    from vista.pipeline.protocol import JobRequest
    from vista.scheduler import NodeScheduler, SchedulerSpec

    if ON_GPU:
        pynvml.nvmlInit()
    name, share, n = args.child[0], args.child[1] == "on", int(args.child[2])
    work = Path(args.workdir)
    data, part = write_pair(work, 64, 32, 64)
    fl = FLSpec(batch_size=16, max_seq_len=128, lr=1e-4)
    model = ModelSpec(name=name, hub_dir=str(work / "hub"), share_weights=share)
    rargs = RuntimeArgs(model, LoraSpec(r=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
                        FederatedDataSpec(str(data), str(part), "uniform"), fl, 5, 0)
    base = gpu_used_mb()
    spec = SchedulerSpec(num_workers=n, device=args.device, threads_per_worker=2, start_timeout_s=300)
    t0 = time.perf_counter()
    keeper = weight_keeper(rargs)
    with NodeScheduler(spec, FedPEFTRuntime.create, rargs, log_dir=work / "logs" / f"{name}_{share}_{n}",
                       weight_keeper=keeper) as s:
        ready_s = time.perf_counter() - t0
        time.sleep(0.5)
        ready = gpu_used_mb() - base
        procs = per_process_mb()
        init = s.run_jobs([JobRequest("init", "init", "init_state", None, {})], None)[0]
        assert init.ok, init.traceback
        state = {"state": init.value["state"]}
        rounds, losses = [], []
        with Peak() as peak:
            for r in range(args.rounds):
                t = time.perf_counter()
                res = s.run_jobs([JobRequest(f"r{r}c{c}", f"r{r}", "train", r * n + c, {"seed": r})
                                  for c in range(n)], state)
                assert all(x.ok for x in res), [x.traceback for x in res if not x.ok]
                rounds.append(time.perf_counter() - t)
                losses = [x.value["loss"] for x in res]
    return {"model": name, "share": share, "workers": n, "ready_mb": ready, "peak_mb": peak.peak - base,
            "ready_s": ready_s, "round_s": sum(rounds[1:]) / max(len(rounds) - 1, 1),
            "loss": sum(losses) / len(losses), "per_process_mb": sorted(procs.values()),
            "devices": s.devices}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,1b")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke test, no memory read")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global ON_GPU
    ON_GPU = args.device == "cuda"
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="vista_cuda_weights_")
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for name in args.models.split(","):
        build_model(Path(args.workdir), name)
        for n in args.workers:
            for share in ("on", "off"):
                cmd = [sys.executable, __file__, "--workdir", args.workdir, "--rounds", str(args.rounds),
                       "--device", args.device, "--child", name, share, str(n)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if out.returncode != 0:
                    print(f"{name} share={share} N={n}: failed\n{out.stderr[-3000:]}", flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows)


def report(rows: list[dict]) -> None:
    print("\n| model | N | sharing | used once ready (MB) | peak in rounds (MB) | + per extra worker (MB) "
          "| round (s) | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = sorted((x for x in rows if x["model"] == r["model"] and x["share"] == r["share"]),
                      key=lambda x: x["workers"])
        first = same[0]
        extra = ((r["peak_mb"] - first["peak_mb"]) / (r["workers"] - first["workers"])
                 if r["workers"] > first["workers"] else float("nan"))
        print(f"| {r['model']} | {r['workers']} | {'on' if r['share'] else 'off'} | {r['ready_mb']:,.0f} "
              f"| {r['peak_mb']:,.0f} | {extra:,.0f} | {r['round_s']:.3f} | {r['loss']:.5f} |")
    for name in dict.fromkeys(r["model"] for r in rows):
        for n in sorted({r["workers"] for r in rows if r["model"] == name}):
            on = next((r for r in rows if r["model"] == name and r["workers"] == n and r["share"]), None)
            off = next((r for r in rows if r["model"] == name and r["workers"] == n and not r["share"]), None)
            if on and off:
                print(f"{name} N={n}: peak on/off {on['peak_mb'] / off['peak_mb']:.2f}x, round time on/off "
                      f"{on['round_s'] / off['round_s']:.2f}x, loss on-off {on['loss'] - off['loss']:+.2e}")


if __name__ == "__main__":
    main()
