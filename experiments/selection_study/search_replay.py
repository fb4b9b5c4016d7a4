"""Replay the searches on a study's brute-force curves, for any shortlist: ``python
experiments/selection_study/search_replay.py RUNS [--work WORK] [--scores ...] [--top-k ...]``.

FedPEFT is deterministic given the seed, so a search over the candidates is a walk over brute
force's recorded learning curves: what each rung would have read on the validation split, and
what each round cost. ``run_study.py`` keeps those curves in every ``result.json`` (``curves``);
this replays, per run, successive halving and hybrid for every shortlist score x ``top_k``
given, and reports each against that run's truth (tie-aware Kendall tau-b and top-1 regret,
``method_quality``) and its compute (forward equivalents, backward = 2 forward, the shortlist
score's statistics round included, the test-split predictions left out: ``study.selection_compute``)
as a fraction of brute force's.

``--work DIR``: a ``result.json`` written before the curves were kept, or before they kept the
validation loss, gets them from ``DIR/<data>/<partition>/seed<k>/brute_force/selection.json``
(rewritten in place). A run whose curves are in neither place is listed as not replayable.

``--tie-break loss``: a rung orders candidates of equal validation accuracy by their validation
loss instead of keeping them all (the live rule, design note 76), to measure whether a loss
tie-break beats waiting (design note 77); a run whose curves lack the loss is not replayable then.

Writes ``search_replay.md`` and ``search_replay.json`` to ``--out`` (default: RUNS's parent).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from vista.drivers.study import (
    HEAD_GBC_SHIPPED,
    SHIPPED,
    StudyConfig,
    curves_of,
    method_quality,
    run_name,
)
from vista.drivers.study_compute import rounds_compute, selection_compute
from vista.selection.search import ReplayOracle, hybrid, successive_halving

DEFAULT = StudyConfig(candidates=())


# a validation loss scaled by this never reorders two accuracies: on n validation texts they differ
# by at least 1/n, far more than LOSS_WEIGHT x any loss a fine-tune reports
LOSS_WEIGHT = 1e-9


def _has_loss(curves: dict) -> bool:
    return all("val_loss" in r for h in curves.values() for r in h)


def backfill(path: Path, result: dict, work: Path | None) -> bool:
    """Give ``result`` its curves (with the validation loss, where the run recorded it) from the
    work directory's brute-force run; True if it has curves."""
    if "curves" in result and (work is None or _has_loss(result["curves"])):
        return True
    bf = None if work is None else \
        work / run_name(result) / "brute_force" / "selection.json"
    if bf is None or not bf.is_file():
        return "curves" in result
    result["curves"] = curves_of(json.loads(bf.read_text())["histories"], result["validation_key"])
    ends = {c: h[-1]["test_accuracy"] for c, h in result["curves"].items()}
    if ends != result["truth"]:
        raise SystemExit(f"{bf}: its final test accuracies {ends} are not {path}'s truth {result['truth']}")
    path.write_text(json.dumps(result, indent=2))  # as run_study writes it
    return True


def ties_broken_by_loss(result: dict) -> dict | None:
    """A copy of ``result`` whose validation accuracies carry a loss term too small to reorder
    them (``LOSS_WEIGHT``), so a rung orders equal accuracies by lower validation loss; None if its
    curves lack the loss."""
    if not _has_loss(result["curves"]):
        return None
    key = result["validation_key"]
    curves = {c: [{**r, key: r[key] - LOSS_WEIGHT * r["val_loss"]} if key in r else r for r in h]
              for c, h in result["curves"].items()}
    return {**result, "curves": curves}


def replay(result: dict, scores: list[str], top_ks: list[int], r0: int, eta: int,
           search_rounds: list[int] | None = None) -> list[dict]:
    """One row per search on one run: successive halving, then hybrid per score x top_k, each
    per number of rounds its rungs may reach (``search_rounds``; default the budget's rounds,
    the study's own search, whose pick is a finished fine-tune).

    ``overhead_vs_brute_force`` is the search's compute minus the rounds of its pick that it
    trained (a fine-tune the user runs anyway, so not a cost of choosing), as a fraction of
    brute force's total compute."""
    truth, key, tol = result["truth"], result["validation_key"], result["tie_tol"]
    budget_rounds = result["budget"]["rounds"]
    bf = selection_compute(result, "brute_force")
    run = run_name(result)
    names = list(truth)
    searches = []
    for rounds in search_rounds or [budget_rounds]:
        searches.append(("successive_halving", None, None, rounds,
                         lambda n=rounds: successive_halving(names, ReplayOracle(result["curves"], key), r0, eta, n)))
        for score in scores:
            if score not in result["methods"]:  # e.g. auto_shipped before a run had it: its N shows it
                print(f"{run}: no {score} scores, its hybrid is not replayed")
                continue
            for k in top_ks:
                searches.append(("hybrid", score, k, rounds, lambda s=score, k=k, n=rounds: hybrid(
                    result["methods"][s]["scores"], ReplayOracle(result["curves"], key), k, r0, eta, n)))
    rows = []
    for method, score, k, rounds, search in searches:
        res = search()
        q = method_quality(method, truth, res.rank_scores, tol)
        compute = selection_compute(result, method, res.cost.to_dict(), res.rounds_trained) + \
            (selection_compute(result, score) if score else 0.0)
        pick = q["chosen"]
        overhead = compute - rounds_compute(result, pick, res.rounds_trained[pick])
        rows.append({"run": run, "method": method, "score": score, "top_k": k, "search_rounds": rounds,
                     "chosen": pick, "top1_regret": q["top1_regret"], "kendall_tau": q["kendall_tau"],
                     "kendall_tau_max": q["kendall_tau_max"], "compute_vs_brute_force": compute / bf,
                     "overhead_vs_brute_force": overhead / bf, "rounds_trained": res.rounds_trained})
    return rows


def markdown(rows: list[dict], runs: list[str], missing: list[str], tie_break: str = "wait") -> str:
    why = "curves pruned before they were kept" + (", or kept without the validation loss" if tie_break == "loss" else "")
    rule = ("A rung's tie of validation accuracies is ordered by validation loss (`--tie-break loss`, design "
            "note 77), not kept whole as a live search keeps it." if tie_break == "loss" else
            "A rung keeps every candidate tied with its last kept one, as a live search does (design note 76).")
    out = ["# Searches replayed on brute force's curves", "",
           f"{len(runs)} runs: {', '.join(runs)}." + (f" Not replayable ({why}): "
                                                    f"{', '.join(missing)}." if missing else ""), "", rule, "",
           "Compute: forward equivalents (backward = 2 forward), the shortlist score's statistics round "
           "included and the test-split predictions (the truth's measurement) left out, as a fraction of "
           "brute force's; the mean over runs. Overhead: the same less the rounds "
           "of its pick that the search trained (a fine-tune the user runs anyway). Rounds: how far a rung "
           "may train (the budget's rounds: the pick is a finished fine-tune).", "", *table(rows)]
    return "\n".join(out) + "\n"


def table(rows: list[dict]) -> list[str]:
    """The markdown table's lines: one row per search x shortlist score x top_k x rounds."""
    out = ["| search | shortlist score | top_k | rounds | regret per run | max regret | picked best | mean tau-b | "
           "mean cap | compute vs brute force | overhead vs brute force |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["score"], r["top_k"], r["search_rounds"]), []).append(r)
    for (method, score, k, rounds), rs in groups.items():
        regrets = [r["top1_regret"] for r in rs]
        out.append(f"| {method} | {score or '-'} | {k or '-'} | {rounds} | {' '.join(f'{x:.3f}' for x in regrets)} | "
                   f"{max(regrets):.3f} | {sum(x == 0 for x in regrets)}/{len(rs)} | "
                   f"{mean(r['kendall_tau'] for r in rs):.2f} | {mean(r['kendall_tau_max'] for r in rs):.2f} | "
                   f"{mean(r['compute_vs_brute_force'] for r in rs):.3f} | "
                   f"{mean(r['overhead_vs_brute_force'] for r in rs):.3f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="the study's runs folder (result.json files under it)")
    p.add_argument("--work", type=Path, default=None,
                   help="the work runs folder whose brute_force/selection.json fills in missing curves")
    p.add_argument("--scores", nargs="+",
                   default=["logme", "auto", SHIPPED, HEAD_GBC_SHIPPED, "gbc_prior_mean", "param_prior"],
                   help="shortlist scores for hybrid (default: logme, the study's, then gbc_prior on every text (the "
                        "runs' auto entries, auto until design note 89), gbc_prior as auto shipped it (its sampling), "
                        "auto as shipped since note 89 (head_gbc), the mean-pooled rule, and param_prior: the "
                        "candidates' sizes, no data, the floor a score's shortlist must beat)")
    p.add_argument("--top-k", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--search-rounds", nargs="+", type=int, default=None,
                   help="how far a rung may train (default: the budget's rounds; fewer: a quicker choice "
                        "whose pick the user trains on)")
    p.add_argument("--r0", type=int, default=DEFAULT.r0)
    p.add_argument("--eta", type=int, default=DEFAULT.eta)
    p.add_argument("--tie-break", choices=("wait", "loss"), default="wait",
                   help="a rung's tie of validation accuracies: wait for a round that separates it (the live "
                        "rule), or order it by validation loss (design note 77)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    paths = sorted(a.runs.rglob("result.json"))
    if not paths:
        raise SystemExit(f"no result.json under {a.runs}")
    rows, waited, runs, missing = [], [], [], []
    for path in paths:
        result = json.loads(path.read_text())
        run = run_name(result)
        kept = result if backfill(path, result, a.work) else None
        if kept is not None and a.tie_break == "loss":
            result = ties_broken_by_loss(kept)
        if kept is not None and result is not None:
            runs.append(run)
            rows += replay(result, a.scores, a.top_k, a.r0, a.eta, a.search_rounds)
            if a.tie_break == "loss":  # the live rule on the same runs, to compare against
                waited += replay(kept, a.scores, a.top_k, a.r0, a.eta, a.search_rounds)
        else:
            missing.append(run)
    if not rows:
        raise SystemExit(f"no run under {a.runs} has its curves; pass --work to fill them in")
    out = a.out or a.runs.parent
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, runs, missing, a.tie_break)
    if waited:
        md += "\n".join(["", "## The same runs under the live rule (a tie waits)", "", *table(waited)]) + "\n"
    (out / "search_replay.md").write_text(md)
    (out / "search_replay.json").write_text(json.dumps({"tie_break": a.tie_break, "runs": runs, "missing": missing,
                                                        "rows": rows, "rows_waiting": waited}, indent=2) + "\n")
    print(f"wrote {out / 'search_replay.md'} ({len(runs)} runs replayed, {len(missing)} without curves)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
