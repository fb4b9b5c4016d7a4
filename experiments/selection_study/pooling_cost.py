"""Does the pooling decide the ranking? Every statistics score with each pooling, against the truth.

    python experiments/selection_study/pooling_cost.py --runs WORK/runs --data WORK/data --hub models \
        --poolings auto mean --out experiments/selection_study/results/ground_truth

``selection.pooling=auto`` scores the representation each candidate's sequence classifier reads
(BERT's pooler output, a decoder's last non-pad token); ``mean`` scores the masked mean of the
last hidden states for every candidate. Frozen-feature scores rank a decoder (SmolLM2) below
encoders it beats once fine-tuned; this asks whether that is the scores or the pooling.

Re-runs the live statistics round of every finished study setting (``result.json``; the clients,
texts and partition are the setting's) once per pooling, without DP, and measures each score
against the setting's ground truth (the mean over its seeds, ties within ``--tie-tol``) exactly as
the study does (``vista.drivers.study.quality_of``). The features go to the setting's feature
store (``<setting>/features``, keyed by pooling), so a second call encodes nothing. The exact
scores are functions of the pooled statistics, so a corpus's settings (partitions, seeds) share
them; only the truth and the clients' own scores differ. With ``auto`` the re-scored values must
equal the study's own (a check that the round reproduces it). Writes ``pooling.md`` and
``pooling.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean

from vista.drivers.study import (
    combined_methods,
    prior_methods,
    quality_of,
    run_name,
    stat_methods,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from privacy_cost import _same, _truths, rescore, study_args, study_config  # noqa: E402


def table(rows: list[dict], poolings: list[str], methods: list[str]) -> str:
    runs = sorted({f"{r['data']} {r['partition']} seed {r['seed']}" for r in rows})
    lines = ["# Pooling against the ground truth", "",
             f"{len(runs)} study runs ({', '.join(runs)}); no DP. Per method and pooling: mean Kendall tau-b "
             "over the runs (each against its setting's truth), mean top-1 regret, the share of runs that "
             "picked the best candidate, and the candidate chosen per run.", "",
             "| method | " + " | ".join(f"{p}: tau-b | {p}: regret | {p}: best | {p}: chosen" for p in poolings)
             + " |", "|---|" + "---|---|---|---|" * len(poolings)]
    for m in methods:
        cells = []
        for p in poolings:
            sel = [r for r in rows if r["pooling"] == p and r["method"] == m]
            taus = [r["kendall_tau"] for r in sel if r["kendall_tau"] is not None]
            cells += [f"{mean(taus):.2f}" if taus else "n/a", f"{mean(r['top1_regret'] for r in sel):.3f}",
                      f"{mean(float(r['chosen'] == r['best']) for r in sel):.2f}",
                      " ".join(str(r["chosen"]) for r in sel)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Scores per run (method: candidate value):", ""]
    for r in rows:
        if r["method"] in ("logme", "hscore", "gbc"):
            vals = ", ".join(f"{c} {v:.3f}" if v is not None else f"{c} n/a" for c, v in r["scores"].items())
            lines.append(f"- {r['data']} {r['partition']} seed {r['seed']}, {r['pooling']}, {r['method']}: {vals}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    study_args(p)
    p.add_argument("--poolings", nargs="+", default=["auto", "mean"], choices=["auto", "cls", "mean", "last"])
    p.add_argument("--only", nargs="*", default=None,
                   help="settings to re-score, as paths under --runs (e.g. bbc/iid/seed0; default: every one)")
    p.add_argument("--work", type=Path, default=None, help="where the runs go (default: <runs>/../pooling_runs)")
    a = p.parse_args(argv)
    cfg = study_config(a)
    found = sorted(a.runs.rglob("result.json"))
    results = {f.parent: json.loads(f.read_text()) for f in found}
    if not results:
        raise SystemExit(f"no finished setting under {a.runs}")
    truths = _truths(list(results.values()))
    methods = [*stat_methods(), *combined_methods(), *(m for m in prior_methods() if m != "random")]
    rows = []
    for setting, res in results.items():
        if a.only is not None and str(setting.relative_to(a.runs)) not in a.only:
            continue
        truth = truths[(res["data"], res["partition"])]
        work = (a.work or a.runs.parent / "pooling_runs") / run_name(res)
        for pooling in a.poolings:
            t0 = time.perf_counter()
            # the live statistics round without DP (privacy_cost's, at no epsilon): <work>/<pooling>/no_dp
            sel = rescore(cfg, setting, a.data, res, None, 0, work / pooling, pooling=pooling)
            if pooling == "auto":  # the round reproduces the study's own statistics round
                own = res["methods"]
                off = [m for m in stat_methods() if not _same(sel["scores"][m], own[m]["scores"], rel=1e-6)]
                if off:
                    raise SystemExit(f"{setting}: re-scored {off} differ from the study's with pooling=auto")
            for m in methods:
                q = quality_of(truth, sel["scores"][m], a.tie_tol)
                rows.append({"data": res["data"], "partition": res["partition"], "seed": res["seed"],
                             "pooling": pooling, "method": m, "scores": sel["scores"][m],
                             **{k: q.get(k) for k in ("kendall_tau", "weighted_tau", "top1_regret", "chosen", "best")}})
            print(f"{setting.relative_to(a.runs)} {pooling}: {time.perf_counter() - t0:.0f}s, "
                  f"logme tau {rows[-len(methods)]['kendall_tau']:.2f}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "pooling.json").write_text(json.dumps({"rows": rows, "tie_tol": a.tie_tol}, indent=1))
    (a.out / "pooling.md").write_text(table(rows, a.poolings, methods))
    print(f"wrote {a.out / 'pooling.md'}, {a.out / 'pooling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
