"""The head probe as shipped and centred, re-run offline on every run's kept sample:
``python experiments/selection_study/probe_variants.py RUNS --work WORK [--out DIR]``.

For every run under RUNS with ``head_shipped`` whose sampled features ``refresh_head.py
--keep-features --work WORK`` kept (``WORK/<run>/features``), rebuilds each client's probe rows as
the selection runtime does (auto's capped sample at 32 tokens, the guard's admission), runs the probe
in one process (:func:`vista.selection.head_probe.simulate`) as it shipped, which must give the
recorded curves float for float (else the script stops), and on the same features centred on their
pooled mean (what the server knows from the statistics round's sums: ``probe_centring.py``'s
question, on the shipped sample). Judges head_probe and head_gbc (with the run's recorded
auto_shipped values, the same texts) per variant against each setting's truth (its seeds' mean, ties
within 0.01), as ``head_rounds.py`` does. Development evidence: every run here has been seen.
Writes ``probe_variants.md`` and ``probe_variants.json`` to ``--out`` (default: WORK/out).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from statistics import mean

from vista.data.fednlp import FedNLPData
from vista.drivers.study import SHIPPED, SHIPPED_AUTO, method_quality, run_name
from vista.drivers.study_head import HEAD_SHIPPED
from vista.selection.head_probe import HeadSpec, simulate
from vista.selection.head_scores import head_gbc_rule
from vista.selection.spec import SelectionSpec

from head_rounds import TIE_TOL
from probe_centring import client_rows, variants
from table import load

VARIANTS = ("shipped", "centred")


def sampled_rows(result: dict, run_dir: Path, data: FedNLPData) -> dict[str, dict[int, tuple]]:
    """Per candidate, each admitted client's (sampled text indices, kept features, labels), as
    auto's shipped round draws them."""
    sample = SelectionSpec(**SHIPPED_AUTO)
    return {name: client_rows(run_dir, data, name, SHIPPED_AUTO["max_seq_len"], sample, result["seed"])
            for name in result["truth"]}


def run_rows(result: dict, run_dir: Path, data: FedNLPData) -> list[dict]:
    entry = result["methods"][HEAD_SHIPPED]
    spec, classes = HeadSpec(**entry["head"]), data.num_labels
    rows_of = sampled_rows(result, run_dir, data)
    acc = {}
    for name, rows in rows_of.items():
        curve = simulate(rows, classes, spec, result["seed"])
        if curve != entry["curves"][name]:
            raise SystemExit(f"{run_name(result)}: the rebuilt probe of {name} is not the recorded curve")
        acc[("shipped", name)] = curve[-1]["val_accuracy"]
        acc[("centred", name)] = simulate(variants(rows)["centred"], classes, spec, result["seed"])[-1]["val_accuracy"]
    auto, out = result["methods"][SHIPPED]["scores"], []
    for v in VARIANTS:
        head = {n: acc[(v, n)] for n in rows_of}
        for method, scores in (("head_probe", head), ("head_gbc", head_gbc_rule(head, auto))):
            q = method_quality(method, result["truth_mean"], scores, TIE_TOL)
            out.append({"data": result["data"], "partition": result["partition"], "seed": result["seed"],
                        "variant": v, "method": method, "scores": scores, "chosen": q["chosen"], "best": q["best"],
                        "kendall_tau": q["kendall_tau"], "kendall_tau_max": q["kendall_tau_max"],
                        "top1_regret": q["top1_regret"]})
    return out


def summary(rows: list[dict]) -> list[dict]:
    """Per variant and method: tau-b (settings' mean of the seeds' mean, where defined), picks, regret."""
    out = []
    for v in VARIANTS:
        for method in ("head_probe", "head_gbc"):
            mine = [x for x in rows if x["variant"] == v and x["method"] == method]
            by: dict[tuple[str, str], list[dict]] = {}
            for x in mine:
                by.setdefault((x["data"], x["partition"]), []).append(x)
            taus = [mean(t) for t in ([x["kendall_tau"] for x in xs if not math.isnan(x["kendall_tau"])]
                                      for xs in by.values()) if t]
            worst = max(mine, key=lambda x: x["top1_regret"])
            out.append({"variant": v, "method": method, "runs": len(mine), "settings": len(by),
                        "kendall_tau": mean(taus) if taus else math.nan, "kendall_tau_max": mean(mean(x["kendall_tau_max"] for x in xs)
                                                                         for xs in by.values()),
                        "picked_best": sum(x["top1_regret"] <= 1e-12 for x in mine),
                        "mean_regret": mean(x["top1_regret"] for x in mine), "worst_regret": worst["top1_regret"],
                        "worst_run": f"{worst['data']} {worst['partition']} seed {worst['seed']}"})
    return out


def markdown(summ: list[dict]) -> str:
    lines = ["# The head probe as shipped and centred", "",
             "selection=head_probe re-run offline on auto's kept sample of every run (the shipped variant equals "
             "the recorded curves, checked), and on the same features centred on their pooled mean. head_gbc: "
             "z(head_probe) + 0.5 z(auto_shipped's gbc_prior). Against each setting's truth (its seeds' mean, ties "
             "within 0.01). Development evidence: every run has been seen. Made by `probe_variants.py`.", "",
             "| variant | method | runs | tau-b | cap | best pick | mean regret | worst regret (run) |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summ:
        lines.append(f"| {s['variant']} | {s['method']} | {s['runs']} | {s['kendall_tau']:.2f} | "
                     f"{s['kendall_tau_max']:.2f} | {s['picked_best']} of {s['runs']} | {s['mean_regret']:.3f} | "
                     f"{s['worst_regret']:.3f} ({s['worst_run']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("--data", type=Path, required=True, help="the study's prepared corpora (prepare.py --out)")
    p.add_argument("--work", type=Path, required=True, help="refresh_head.py --keep-features's --work")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    rows, skipped = [], []
    for result in load(a.runs, TIE_TOL):
        run_dir = a.work / run_name(result)
        if HEAD_SHIPPED not in result["methods"] or not (run_dir / "features").is_dir():
            skipped.append(run_name(result))
            continue
        rows += run_rows(result, run_dir, FedNLPData(a.data / f"{result['data']}_data.h5"))
    if not rows:
        raise SystemExit(f"no run under {a.runs} has kept sampled features in {a.work}")
    out = a.out or a.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    summ = summary(rows)
    (out / "probe_variants.json").write_text(json.dumps({"rows": rows, "summary": summ, "skipped": skipped}, indent=1))
    (out / "probe_variants.md").write_text(markdown(summ))
    print(f"wrote {out / 'probe_variants.md'} ({len({run_name(r) for r in rows})} runs; {len(skipped)} without "
          "kept features)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
