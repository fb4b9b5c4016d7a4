"""``head_pair_min``, a candidate for auto (design note 103), judged as its registration says:
``python experiments/selection_study/pair_min.py RUNS [--out DIR]``.

The rule is ``z(min(z(head_probe), z(head_probe_centred))) + 0.5 z(gbc_prior)``, recorded beside the
shipped pair in every run that holds both probes (``head_pair_min_shipped``; ``refresh_head.py --pair``
adds it to older runs, no client work). Two judgements, never mixed:

* **development**: the runs it was chosen on (every run not in :data:`HELD_OUT`), each setting's seeds
  against that setting's truth over those seeds, the table's way (``table.full_pool``);
* **held out**: each run registered after the rule (:data:`HELD_OUT`, with the commit that registered
  it), against its own truth: tau-b, the cap, regret, beside the shipped pair; then the registered
  decision: the rule replaces auto's only when, over at least :data:`MIN_RUNS` held-out runs with at
  least :data:`MIN_DIFFERING` in the settings where the two rules differ in development
  (:data:`DIFFERING`), its regret is <= 0.01 on every one and its mean tau-b is above the pair's.

Writes ``pair_min.md`` and ``pair_min.json`` to ``--out`` (default ``results/probe_variants``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

from vista.drivers.study import method_quality, run_name
from vista.drivers.study_head import HEAD_PAIR, HEAD_PAIR_MIN

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from table import REGRET_OK, TIE_TOL, full_pool, load, requalify, rule_summary  # noqa: E402

RULE_COMMIT = "9dffa89"  # the registration of head_pair_min (study README, twenty-ninth sitting)
# each held-out run -> its registration (study README), after RULE_COMMIT's, or, for a run already going
# then, one whose result did not yet exist when the rule was registered
HELD_OUT = {"bbc/iid/seed1": "2026-12-07 19:50 UTC (e654a71)", "bbc/iid/seed2": "2026-12-07 20:46 UTC",
            "rotten_tomatoes/alpha=1/seed3": "2026-12-07 21:33 UTC", "bbc/alpha=0.1/seed1": "2026-12-07 23:00 UTC",
            "bbc/alpha=0.1/seed2": "2026-12-07 23:00 UTC",
            "rotten_tomatoes/alpha=0.1/seed3": "2026-12-07 23:02 UTC"}
DIFFERING = ("20news5/", "rotten_tomatoes/", "r8/alpha=0.1/", "r52/alpha=0.1/")  # run-name prefixes
MIN_RUNS, MIN_DIFFERING = 6, 3
RULES = {"head_pair (auto)": HEAD_PAIR, "head_pair_min": HEAD_PAIR_MIN}


def development(results: list[dict]) -> dict[str, dict]:
    """Each rule over the development runs, the table's way (their settings' truths over their seeds)."""
    if not results:
        return {}
    runs = requalify([json.loads(json.dumps(r)) for r in results], results[0]["tie_tol"])
    out = {}
    for label, entry in RULES.items():
        per = full_pool(runs, lambda r, e=entry: r["methods"][e]["scores"])
        out[label] = {**rule_summary(per), "settings": len(per)}
    return out


def held_out_rows(results: list[dict]) -> list[dict]:
    """One row per held-out run: its truth's cap and each rule's tau-b, regret and pick against it."""
    rows = []
    for r in results:
        row = {"run": run_name(r), "registered": HELD_OUT[run_name(r)],
               "differing": run_name(r).startswith(DIFFERING)}
        for label, entry in RULES.items():
            q = method_quality(entry, r["truth"], r["methods"][entry]["scores"], r["tie_tol"])
            row["cap"] = q["kendall_tau_max"]
            row[label] = {"kendall_tau": q["kendall_tau"], "top1_regret": q["top1_regret"], "chosen": q["chosen"]}
        rows.append(row)
    return rows


def decision(rows: list[dict]) -> dict:
    """The registered rule's state: enough held-out runs, regret on every one, and the mean tau-b.

    ``rejected``: a held-out regret above 0.01 can never be undone by later runs (the rule asks for every
    one), so the candidate is out for good, however many runs remain to be made."""
    pair, low = RULES  # the shipped pair's label, then the candidate's
    n, n_diff = len(rows), sum(r["differing"] for r in rows)
    misses = [r["run"] for r in rows if r[low]["top1_regret"] > REGRET_OK]
    taus = {lab: mean(r[lab]["kendall_tau"] for r in rows) if rows else float("nan") for lab in RULES}
    enough = n >= MIN_RUNS and n_diff >= MIN_DIFFERING
    return {"runs": n, "differing": n_diff, "enough": enough, "regret_ok": not misses, "regret_misses": misses,
            "rejected": bool(misses), "mean_tau_b": taus,
            "adopt": bool(enough and not misses and taus[low] > taus[pair])}


def markdown(dev: dict, rows: list[dict], verdict: dict) -> str:
    out = ["# head_pair_min beside auto (head_pair)", "",
           f"Registered at {RULE_COMMIT} (design note 103); made by `pair_min.py`. Development: the runs the rule "
           "was chosen on, each setting's seeds against its truth (ties within "
           f"{TIE_TOL}). Held out: each run registered after the rule, against its own truth.", "",
           "## Development", "",
           "| rule | mean tau-b | mean cap | settings near the cap | regret <= 0.01 | best pick (runs) |",
           "|---|---|---|---|---|---|"]
    for label, d in dev.items():
        out.append(f"| {label} | {d['tau_b']:.3f} | {d['cap']:.3f} | {d['near_cap']} of {d['settings']} | "
                   f"{d['regret_ok']} of {d['settings']} | {d['best']} of {d['runs']} |")
    out += ["", "## Held out", "", "| run | registered | cap | " + " | ".join(f"{lab}: tau-b, regret" for lab in RULES)
            + " |", "|---|---|---|" + "---|" * len(RULES)]
    for r in rows:
        cells = " | ".join(f"{r[lab]['kendall_tau']:.2f}, {r[lab]['top1_regret']:.3f}" for lab in RULES)
        out.append(f"| {r['run']}{' (differing)' if r['differing'] else ''} | {r['registered']} | {r['cap']:.2f} | "
                   f"{cells} |")
    taus = ", ".join(f"{lab} {t:.3f}" for lab, t in verdict["mean_tau_b"].items())
    out += ["", f"**Decision (registered):** {verdict['runs']} held-out runs, {verdict['differing']} in the settings "
            f"where the rules differ (needs {MIN_RUNS} and {MIN_DIFFERING}); regret <= {REGRET_OK} on every one: "
            f"{'yes' if verdict['regret_ok'] else 'no'}; mean tau-b: {taus}. " + outcome(verdict)]
    return "\n".join(out) + "\n"


def outcome(verdict: dict) -> str:
    """The decision's sentence: adopted, rejected for good, or auto kept (and why)."""
    if verdict["adopt"]:
        return "**head_pair_min would replace auto's rule.**"
    if verdict["rejected"]:
        return (f"**head_pair_min is rejected:** regret above {REGRET_OK} on {', '.join(verdict['regret_misses'])}, "
                "which no later run can undo; auto stays head_pair.")
    return "auto stays head_pair" + ("." if verdict["enough"] else " (not enough held-out runs yet).")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "probe_variants")
    a = ap.parse_args(argv)
    results = [r for r in load(a.runs) if HEAD_PAIR_MIN in r["methods"] and HEAD_PAIR in r["methods"]]
    if not results:
        raise SystemExit(f"no run under {a.runs} recorded {HEAD_PAIR_MIN}: add it with refresh_head.py --pair")
    held = [r for r in results if run_name(r) in HELD_OUT]
    dev = development([r for r in results if run_name(r) not in HELD_OUT])
    rows = held_out_rows(held)
    verdict = decision(rows)
    got = {"rule_commit": RULE_COMMIT, "development": dev, "held_out": rows, "decision": verdict}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "pair_min.json").write_text(json.dumps(got, indent=1))
    (a.out / "pair_min.md").write_text(markdown(dev, rows, verdict))
    print(markdown(dev, rows, verdict))
    return got


if __name__ == "__main__":
    main()
