"""How a setting's truth moves with the training budget, and every method judged at each budget:
``python experiments/selection_study/longer_truth.py LONG_RUNS --short RUNS [--out DIR]``.

``LONG_RUNS`` holds runs trained longer than the grid, their test split scored every few rounds
(``run_ground_truth.sh`` with ``ROUNDS=12 TEST_EVERY=2``), so one run gives the truth after 2, 4,
..., 12 rounds. Per run this reports:

* each candidate's test accuracy at every scored round (the truth at that budget);
* whether the run's first rounds reproduce the grid's run of the same setting in ``--short``
  (the same validation curve, the same truth at the grid's budget, the same statistics scores):
  FedPEFT is deterministic given the seed, so a longer run is the shorter one continued, and
  every difference between the two truths is what the extra rounds trained;
* or, where the run's budget differs from the grid's in more than its rounds (e.g. ``--local-epochs
  3``, ``budget_probe.py``'s probe trained on the whole pool), how the truth moved: what differs,
  and the grid's truth judged as a ranking of this run's truth at the grid's rounds (pick, regret,
  tau-b and its cap);
* every statistics and prior method (their scores do not depend on the budget) judged against the
  truth at each scored round: pick, top-1 regret, tie-aware Kendall tau-b and its cap;
* successive halving and the shipped hybrid (top 2 by auto_shipped) replayed with their rungs
  reaching that round, judged against the truth there.

Writes ``longer_truth.md`` and ``longer_truth.json`` to ``--out`` (default: LONG_RUNS's parent).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from vista.drivers.study import (
    SHIPPED,
    StudyConfig,
    method_quality,
    quality_of,
    run_name,
)
from vista.drivers.study_budget import budget_differs
from vista.selection.search import ReplayOracle, hybrid, successive_halving

DEFAULT = StudyConfig(candidates=())
METHODS = (SHIPPED, "auto", "logme", "gbc", "hscore", "transrate", "param_prior")


def scored_rounds(result: dict[str, Any]) -> list[int]:
    """The rounds (1-based) whose test accuracy every candidate's curve recorded."""
    curves = result["curves"]
    n = min(len(h) for h in curves.values())
    return [r for r in range(1, n + 1) if all("test_accuracy" in h[r - 1] for h in curves.values())]


def truth_at(result: dict[str, Any], rounds: int) -> dict[str, float]:
    return {c: float(h[rounds - 1]["test_accuracy"]) for c, h in result["curves"].items()}


def truth_at_grid_rounds(long: dict[str, Any], short: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """``short``'s rounds and ``long``'s truth there (empty where ``long`` did not score them)."""
    n = short["budget"]["rounds"]
    return n, truth_at(long, n) if n in scored_rounds(long) else {}


def score_rel_diff(long: dict[str, Any], short: dict[str, Any]) -> float:
    """The largest relative difference between the two runs' statistics and prior scores, which
    do not depend on the training budget: 0 when both runs scored the same features."""
    scores = 0.0
    for m in METHODS:
        a, b = long["methods"].get(m, {}).get("scores", {}), short["methods"].get(m, {}).get("scores", {})
        for c in set(a) & set(b):
            if a[c] is not None and b[c] is not None:
                scores = max(scores, abs(a[c] - b[c]) / max(abs(b[c]), 1e-12))
    return scores


def reproduction(long: dict[str, Any], short: dict[str, Any]) -> dict[str, Any]:
    """Whether ``long``'s first rounds are ``short``'s run: the validation curves up to the
    short budget, the truth there and the statistics scores (max absolute differences)."""
    key = short["validation_key"]
    n, here = truth_at_grid_rounds(long, short)
    kept = short.get("curves")  # runs whose curves were pruned before they were kept have none
    val = max((abs(a[key] - b[key]) for c in kept for a, b in zip(long["curves"][c][:n], kept[c])),
              default=math.nan) if kept else math.nan
    truth = max(abs(here[c] - t) for c, t in short["truth"].items()) if here else math.nan
    scores = score_rel_diff(long, short)
    return {"short_rounds": n, "max_val_diff": val, "max_truth_diff": truth, "max_score_rel_diff": scores,
            "reproduced": val == 0 and truth == 0 and scores < 1e-9}


def budget_shift(long: dict[str, Any], short: dict[str, Any]) -> dict[str, Any] | None:
    """How the truth moved where ``long`` was trained under another budget than ``short`` beyond
    its rounds: the budget items that differ (grid's, this run's) and ``short``'s truth judged as a
    ranking of ``long``'s truth at ``short``'s rounds, and whether the budget-free scores are
    the grid run's (:func:`score_rel_diff`). None where only the rounds differ (then
    :func:`reproduction` applies)."""
    differs = budget_differs(short["budget"], long["budget"], ignore=("rounds",))
    if not differs:
        return None
    n, here = truth_at_grid_rounds(long, short)
    q = quality_of(here, short["truth"], long["tie_tol"]) if here else {}
    return {"differs": differs, "short_rounds": n, "grid_truth": short["truth"], "truth_here": here,
            "max_score_rel_diff": score_rel_diff(long, short),
            "grid_pick": q.get("chosen"), "top1_regret": q.get("top1_regret"),
            "kendall_tau": q.get("kendall_tau"), "kendall_tau_max": q.get("kendall_tau_max")}


def judge(result: dict[str, Any], methods: list[str], r0: int, eta: int) -> list[dict[str, Any]]:
    """One row per method x scored round: the method's pick against the truth at that round."""
    key, tol, names = result["validation_key"], result["tie_tol"], list(result["truth"])
    scored = {m: result["methods"][m]["scores"] for m in methods if m in result["methods"]}  # budget-free
    rows = []
    for rounds in scored_rounds(result):
        truth = truth_at(result, rounds)
        picks: dict[str, dict[str, float | None]] = dict(scored)
        picks["successive_halving"] = successive_halving(names, ReplayOracle(result["curves"], key), r0, eta,
                                                         rounds).rank_scores
        if SHIPPED in result["methods"]:
            picks["hybrid_shipped"] = hybrid(result["methods"][SHIPPED]["scores"], ReplayOracle(result["curves"], key),
                                             2, r0, eta, rounds).rank_scores
        for m, scores in picks.items():
            q = method_quality(m, truth, scores, tol)
            rows.append({"method": m, "rounds": rounds, "chosen": q["chosen"], "top1_regret": q["top1_regret"],
                         "kendall_tau": q["kendall_tau"], "kendall_tau_max": q["kendall_tau_max"]})
    return rows


def markdown(reports: list[dict[str, Any]]) -> str:
    out = ["# The truth by training budget", "",
           "Test accuracy per candidate at every round the run scored the test split, and each method judged "
           "against the truth at that round (searches replayed with their rungs reaching it; tau-b tie-aware, "
           "its cap beside it).", ""]
    for rep in reports:
        rounds = rep["rounds"]
        out += [f"## {rep['run']} ({rep['budget_rounds']} rounds)", ""]
        bs = rep.get("budget_shift")
        if bs:
            what = ", ".join(f"{k} {g} -> {h}" for k, (g, h) in bs["differs"].items())
            grid = ", ".join(f"{c} {t:.3f}" for c, t in bs["grid_truth"].items())
            out += [f"Budget against the grid's run: {what}. The grid's truth ({grid}) as a ranking of this run's "
                    f"truth at round {bs['short_rounds']}: " + (
                        f"pick {bs['grid_pick']}, regret {bs['top1_regret']:.3f}, tau-b {bs['kendall_tau']:.2f} "
                        f"(cap {bs['kendall_tau_max']:.2f})." if bs["truth_here"] else "not scored at that round.")
                    + f" Statistics scores against the grid's: relative {bs['max_score_rel_diff']:.3g}.", ""]
        rp = rep.get("reproduction")
        if rp:
            out += [f"Rounds 1-{rp['short_rounds']} against the grid's run: "
                    f"{'reproduced' if rp['reproduced'] else 'NOT reproduced'} (validation max diff "
                    f"{rp['max_val_diff']:.3g}, truth {rp['max_truth_diff']:.3g}, scores relative "
                    f"{rp['max_score_rel_diff']:.3g}).", ""]
        out += ["| candidate | " + " | ".join(f"round {r}" for r in rounds) + " |",
                "|---|" + "---|" * len(rounds)]
        for c, accs in rep["test_accuracy"].items():
            out.append(f"| {c} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
        out += ["", "| method | " + " | ".join(f"round {r}: pick, regret, tau-b (cap)" for r in rounds) + " |",
                "|---|" + "---|" * len(rounds)]
        by_method: dict[str, dict[int, dict[str, Any]]] = {}
        for row in rep["methods"]:
            by_method.setdefault(row["method"], {})[row["rounds"]] = row
        for m, per in by_method.items():
            cells = [f"{per[r]['chosen']}, {per[r]['top1_regret']:.3f}, {per[r]['kendall_tau']:.2f} "
                     f"({per[r]['kendall_tau_max']:.2f})" for r in rounds]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="the longer runs (result.json files under it)")
    p.add_argument("--short", type=Path, default=None,
                   help="the grid's runs folder: each longer run is checked against its setting's run there")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--r0", type=int, default=DEFAULT.r0)
    p.add_argument("--eta", type=int, default=DEFAULT.eta)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    paths = sorted(a.runs.rglob("result.json"))
    if not paths:
        raise SystemExit(f"no result.json under {a.runs}")
    reports = []
    for path in paths:
        result = json.loads(path.read_text())
        rounds = scored_rounds(result)
        rep = {"run": run_name(result), "budget_rounds": result["budget"]["rounds"], "rounds": rounds,
               "test_accuracy": {c: [truth_at(result, r)[c] for r in rounds] for c in result["truth"]},
               "methods": judge(result, a.methods, a.r0, a.eta)}
        short = None if a.short is None else a.short / run_name(result) / "result.json"
        if short is not None and short.is_file():
            grid = json.loads(short.read_text())
            shift = budget_shift(result, grid)
            rep.update({"budget_shift": shift} if shift else {"reproduction": reproduction(result, grid)})
        reports.append(rep)
    out = a.out or a.runs.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "longer_truth.md").write_text(markdown(reports))
    (out / "longer_truth.json").write_text(json.dumps(reports, indent=1))
    print(f"wrote {out / 'longer_truth.md'} ({len(reports)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
