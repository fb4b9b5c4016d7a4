"""Table and plot of a selection study: ``python experiments/selection_study/table.py RUNS [--out DIR]``.

Reads every ``result.json`` under RUNS (written by run_study.py), recomputes each method's
quality from its scores (a candidate a score could not rank counts last, as in a live run;
``random`` as its expectation over 1,000 seeded random rankings, not its one seeded draw),
and writes to ``--out`` (default: this folder's ``results/``):
- ``table.md``: per method, the mean over settings of Kendall tau, weighted tau, Spearman rho,
  top-1 regret, how often it picked the best candidate, and its cost (client forward and
  backward passes, bytes, federated rounds, wall time; compute also as a fraction of brute
  force); then per setting the ground truth and each method's weighted tau / regret;
- ``summary.csv``: one row per method x setting;
- ``plot.png``: weighted tau per method and partition, and regret vs compute.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean

from vista.drivers.study import EXPECTED, method_quality
from vista.selection.ranking import RANDOM_DRAWS, RANDOM_SEED
from vista.selection.scores import names as score_names
from vista.selection.search import Cost
from vista.selection.spec import SEARCH_METHODS

METHODS = (*score_names(), *SEARCH_METHODS)  # every registered score, then the searches
QUALITY = ("kendall_tau", "weighted_tau", "spearman", "top1_regret")


def requalify(results: list[dict]) -> list[dict]:
    """Each method's quality recomputed from its recorded scores, a missing score (None/NaN)
    ranked last as a live run ranks it (results written before that rule dropped them), and
    ``random`` as its expectation (results written before that reported one draw)."""
    for r in results:
        for name, e in r["methods"].items():
            if "scores" in e:
                for q in (*QUALITY, "chosen", "best", "picked_best", "draw", "draws", "seed"):
                    e.pop(q, None)
                e.update(method_quality(name, r["truth"], e["scores"]))
    return results


def searched_on_test(result: dict) -> bool:
    """A result written before the searches held out a validation split: they ranked on the
    clients' test splits, which together are the ground truth's test set."""
    return "val_fraction" not in result


def load(runs: Path) -> list[dict]:
    out = [json.loads(p.read_text()) for p in sorted(runs.rglob("result.json"))]
    if not out:
        raise SystemExit(f"no result.json under {runs}")
    return requalify(out)


def compute(cost: dict) -> float:
    return Cost(**cost).forward_equivalents


def _m(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return mean(xs) if xs else float("nan")


def _f(x: float, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def rows_of(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        bf = r["methods"]["brute_force"]["cost"]
        for m in METHODS:
            e = r["methods"].get(m)
            if e is None:
                continue
            c = e["cost"]
            picked = e["picked_best"] if "picked_best" in e else float(e.get("chosen") == e.get("best"))
            rows.append({"data": r["data"], "partition": r["partition"], "seed": r["seed"], "method": m,
                         **{q: e.get(q) for q in QUALITY}, "chosen": e.get("chosen"), "best": e.get("best"),
                         "picked_best": picked,
                         "forward_passes": c["forward_passes"], "backward_passes": c["backward_passes"],
                         "bytes": c["bytes_up"] + c["bytes_down"], "rounds": c["rounds"], "seconds": c["seconds"],
                         "compute_vs_bf": compute(c) / compute(bf) if compute(bf) else float("nan")})
    return rows


def markdown(results: list[dict], rows: list[dict]) -> str:
    by = defaultdict(list)
    for row in rows:
        by[row["method"]].append(row)
    intro = ("Mean over settings (corpus x partition x seed). Quality against the ground truth (final global "
             "test accuracy of each candidate after brute-force federated LoRA). Regret: accuracy of the best "
             "candidate minus that of the chosen one. Compute: forward-pass equivalents (backward = 2 forward) "
             f"as a fraction of brute force. {', '.join(EXPECTED)}: the expectation over {RANDOM_DRAWS:,} "
             f"random rankings per setting (sampled, numpy seed {RANDOM_SEED}; picked best: the expected share), "
             "not the one seeded draw a live run makes.")
    header = ("| method | Kendall tau | weighted tau | Spearman | top-1 regret | picked best | forward passes | "
              "backward passes | MB | rounds | wall s | compute vs BF |")
    lines = [f"# Selection study: {len(results)} settings", "", intro, "", *_search_note(results), header,
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        rs = by.get(m)
        if not rs:
            continue
        hit = _m([x["picked_best"] for x in rs])
        lines.append(f"| {m} | {_f(_m([x['kendall_tau'] for x in rs]))} | {_f(_m([x['weighted_tau'] for x in rs]))} | "
                     f"{_f(_m([x['spearman'] for x in rs]))} | {_f(_m([x['top1_regret'] for x in rs]), 3)} | "
                     f"{hit:.0%} | {_m([x['forward_passes'] for x in rs]):,.0f} | "
                     f"{_m([x['backward_passes'] for x in rs]):,.0f} | {_m([x['bytes'] for x in rs]) / 1e6:,.1f} | "
                     f"{_m([x['rounds'] for x in rs]):.1f} | {_m([x['seconds'] for x in rs]):,.0f} | "
                     f"{_f(_m([x['compute_vs_bf'] for x in rs]), 4)} |")
    lines += ["", "## Per setting", ""]
    for r in results:
        truth = sorted(r["truth"].items(), key=lambda kv: -kv[1])
        lines.append(f"### {r['data']} / {r['partition']} / seed {r['seed']}")
        lines.append("")
        lines.append("Ground truth (test accuracy): " + ", ".join(f"{c} {a:.3f}" for c, a in truth))
        lines.append("")
        lines.append("| method | chosen | Kendall tau | weighted tau | regret |")
        lines.append("|---|---|---|---|---|")
        for m in METHODS:
            e = r["methods"].get(m)
            if e:
                chosen = e.get("chosen") if "draws" not in e else f"(expectation, {e['draws']} draws)"
                lines.append(f"| {m} | {chosen} | {_f(e.get('kendall_tau'))} | {_f(e.get('weighted_tau'))} | "
                             f"{_f(e.get('top1_regret'), 3)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _search_note(results: list[dict]) -> list[str]:
    old = sum(searched_on_test(r) for r in results)
    if not old:
        note = ("Successive halving and hybrid ranked on a validation split held out of the clients' training "
                f"data (val_fraction {results[0]['val_fraction']}); the test split decided nothing.")
    else:
        note = (f"**{old} of {len(results)} settings predate the held-out validation split: there successive "
                "halving and hybrid ranked on the clients' test splits, which together are the ground truth's "
                "test set, so their numbers favour them.**")
    return [note, ""]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    parts = sorted({r["partition"] for r in rows}, key=["iid", "alpha=1", "alpha=0.1"].index)
    methods = [m for m in METHODS if m != "brute_force" and any(r["method"] == m for r in rows)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5))
    w = 0.8 / len(parts)
    for i, p in enumerate(parts):
        vals = [_m([r["weighted_tau"] for r in rows if r["method"] == m and r["partition"] == p]) for m in methods]
        ax1.bar(np.arange(len(methods)) + i * w, vals, w, label=p)
    ax1.axhline(0, color="black", lw=0.8)
    ax1.set_xticks(np.arange(len(methods)) + w * (len(parts) - 1) / 2, methods, rotation=45, ha="right")
    ax1.set_ylabel("weighted Kendall tau vs ground truth")
    ax1.set_title("ranking quality (mean over corpora and seeds)")
    ax1.legend(title="partition")
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        x = [max(r["compute_vs_bf"], 1e-5) for r in rs]
        ax2.scatter(x, [r["top1_regret"] for r in rs], label=m, alpha=0.7)
    ax2.set_xscale("log")
    ax2.set_xlabel("compute as a fraction of brute force (log; free methods at 1e-5)")
    ax2.set_ylabel("top-1 regret (accuracy)")
    ax2.set_title("what selection costs and what it loses")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    results = load(a.runs)
    rows = rows_of(results)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table.md").write_text(markdown(results, rows))
    with (a.out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, a.out / "plot.png")
    print(f"wrote {a.out / 'table.md'}, {a.out / 'summary.csv'}, {a.out / 'plot.png'}")


if __name__ == "__main__":
    main()
