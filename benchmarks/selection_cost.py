"""Selection cost: exact federated LogME over M candidates vs brute force vs successive halving.

Runs one study setting (statistics round + brute-force FedPEFT of every candidate; successive
halving replayed on the brute-force curves, which equals a live run: see
tests/integration/test_selection_run.py) and prints, for LogME and successive halving, the
cost ratios to brute force and the top-1 regret of each:

- compute: forward-pass equivalents, a backward pass counted as two forward passes
  (client_forward + 2 x client_backward), and measured wall time;
- bytes: client uplink + downlink;
- regret: accuracy of the best candidate minus accuracy of the chosen one.

    python benchmarks/selection_cost.py --data DIR --corpus bbc --partition alpha=1 \
        --hub /work/models [--candidates minilm mpnet smollm2 minilm_l3 random_bert] [--rounds 3]
    python benchmarks/selection_cost.py --results experiments/selection_study/results  # no training
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from statistics import mean

from vista.build import candidate_spec
from vista.selection.search import Cost
from vista.drivers.study import PARTITIONS, StudyConfig, run_setting

POOL = ["minilm", "mpnet", "smollm2", "minilm_l3", "random_bert"]
COMPARED = ("logme", "successive_halving", "hybrid")


def compute(cost: dict) -> float:
    return Cost(**cost).forward_equivalents


def ratios(result: dict) -> dict[str, dict[str, float]]:
    bf = result["methods"]["brute_force"]["cost"]
    out = {}
    for m in ("brute_force", *COMPARED):
        e = result["methods"][m]
        c = e["cost"]
        out[m] = {"compute_ratio": compute(c) / compute(bf),
                  "bytes_ratio": (c["bytes_up"] + c["bytes_down"]) / (bf["bytes_up"] + bf["bytes_down"]),
                  "seconds_ratio": c["seconds"] / bf["seconds"] if bf["seconds"] else float("nan"),
                  "regret": e.get("top1_regret", float("nan")), "kendall_tau": e.get("kendall_tau", float("nan"))}
    return out


def report(results: list[dict]) -> None:
    rows = [ratios(r) for r in results]
    print(f"{len(results)} setting(s); ratios are method / brute force (lower = cheaper)")
    print(f"{'method':20s} {'compute':>10s} {'bytes':>10s} {'wall':>10s} {'regret':>8s} {'tau':>6s}")
    for m in ("brute_force", *COMPARED):
        vals = {k: mean(r[m][k] for r in rows) for k in rows[0][m]}
        print(f"{m:20s} {vals['compute_ratio']:10.4f} {vals['bytes_ratio']:10.4f} {vals['seconds_ratio']:10.4f} "
              f"{vals['regret']:8.3f} {vals['kendall_tau']:6.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, help="summarise finished study results instead of running")
    p.add_argument("--data", type=Path, help="folder with <corpus>_data.h5 (experiments/selection_study/prepare.py)")
    p.add_argument("--corpus", default="bbc")
    p.add_argument("--partition", default="alpha=1", choices=list(PARTITIONS))
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--candidates", nargs="+", default=POOL)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.results:
        results = [json.loads(f.read_text()) for f in sorted(a.results.rglob("result.json"))]
        if not results:
            raise SystemExit(f"no result.json under {a.results}")
        report(results)
        return
    if a.data is None:
        raise SystemExit("--data DIR (or --results RUNS) is required")
    cfg = StudyConfig(candidates=tuple(candidate_spec(c, {"model_hub": str(a.hub)}) for c in a.candidates),
                      rounds=a.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_setting(cfg, a.data / f"{a.corpus}_data.h5", a.partition, a.seed, Path(tmp))
    print(json.dumps({m: result["methods"][m]["cost"] for m in ("brute_force", *COMPARED)}, indent=1))
    report([result])


if __name__ == "__main__":
    main()
