"""Would H-score beside auto's probe pair close 16.5's ranking gap? ``python
experiments/selection_study/hscore_pair.py RUNS --data DATA --hub HUB --work WORK [--out DIR]``.

H-score reaches the cap in several of the settings where auto (``head_pair``) falls short, so the obvious
next rule is ``z(head_pair) + w z(hscore)``: it costs no bytes, H-score reads the same second moments as
GBC's first round. But the study's ``hscore`` is computed on every training text at length 128, while a
live auto run scores on its shipped sample (48 texts a client at 32 tokens: 384 texts against 384 to 768
feature dimensions). This script computes H-score as a live run would, ``selection=hscore`` on auto's
shipped sample read from each run's kept features (``WORK/<run>/hscore_sampled``; no encode; a run without
them is skipped), and judges
the rule with both H-scores at each weight ``w`` on the full pool (every setting's seeds against its
truth, the table's way) and on the 150 leave-one-candidate-out sub-pools (``pool_ablation.py``'s
recombination, each run's own truth). Also reports how many candidates' sampled H-score sits at its
ceiling, the sample's classes less one (where the features separate the sample's classes exactly, H-score
says nothing more). Writes
``hscore_pair.md`` and ``hscore_pair.json`` to ``--out`` (default WORK/out). Decides nothing by itself:
the numbers are development, on the runs auto was chosen on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

from vista.drivers.study import method_quality, run_name
from vista.drivers.study_head import HEAD_PAIR
from vista.selection.combine import weighted_z

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
import table  # noqa: E402
from head_rounds import TIE_TOL, probe_config, probe_parser, probe_run  # noqa: E402
from pool_ablation import sub_scores  # noqa: E402
from table import load  # noqa: E402

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5)
SAMPLED = "hscore_sampled"


def rule(result: dict, pool: list[str], w: float, h: str) -> dict:
    """``z(head_pair) + w z(h)`` over ``pool``: the pair recombined there (``pool_ablation.sub_scores``), H-score
    one candidate at a time."""
    hs = result["methods"][h]["scores"]
    return weighted_z({"pair": sub_scores(result, pool)[HEAD_PAIR], "h": {c: hs[c] for c in pool}},
                      {"pair": 1.0, "h": w}, required=("pair",))


def sampled_hscore(result: dict, cfg, data: Path, work: Path) -> dict:
    """H-score on auto's shipped sample, as a live run computes it (statistics only, from the kept features)."""
    live = probe_run(result, cfg, data, work, 6, keep_features=True, name="hscore", tag=SAMPLED)  # rounds unused
    return live["scores"]["hscore"]


def at_ceiling(h: dict) -> dict[str, bool]:
    """Which candidates' H-score sits at its ceiling, the classes in the sample less one (H-score is at most
    the between-class covariance's rank): the run's top value when that is a whole number, within 1e-3."""
    top = max(v for v in h.values() if v is not None)
    whole = abs(top - round(top)) < 1e-6
    return {c: whole and v is not None and abs(v - round(top)) < 1e-3 for c, v in h.items()}


def full_pool(results: list[dict], w: float, h: str) -> dict:
    """Per setting: mean tau-b over its seeds against its truth, the cap, the worst regret, picks of the best."""
    return table.full_pool(results, lambda r: rule(r, list(r["truth"]), w, h))


def leave_one_out(results: list[dict], w: float, h: str) -> dict:
    """Over every run with curves and every candidate left out: picks of the best, worst regret."""
    best, n, worst = 0, 0, 0.0
    for r in results:
        if "curves" not in r:
            continue
        for dropped in r["truth"]:
            pool = [c for c in r["truth"] if c != dropped]
            q = method_quality("rule", {c: r["truth"][c] for c in pool}, rule(r, pool, w, h), r["tie_tol"])
            best, n, worst = best + (q["top1_regret"] == 0), n + 1, max(worst, q["top1_regret"])
    return {"best": best, "sub_pools": n, "worst_regret": worst}


def summary_row(h: str, w: float, per: dict, loo: dict) -> dict:
    taus, caps = [v["kendall_tau"] for v in per.values()], [v["cap"] for v in per.values()]
    return {"hscore": h, "w": w, "kendall_tau": mean(taus), "cap": mean(caps),
            "near_cap": sum(t >= c - 0.05 for t, c in zip(taus, caps)), "settings": len(per),
            "worst_regret": max(v["worst_regret"] for v in per.values()),
            "best": sum(v["best"] for v in per.values()), "runs": sum(v["runs"] for v in per.values()),
            "loo": loo, "per_setting": per}


def markdown(rows: list[dict], ceiling: dict) -> str:
    lines = ["# H-score beside auto's probe pair", "",
             "`z(head_pair) + w z(H-score)`, H-score as the study records it (every training text, length 128) "
             "and as a live run computes it (auto's shipped sample: 48 texts a client, 32 tokens). Full pool: mean "
             "over settings of the seeds' mean tau-b against the setting's truth (ties within 0.01), settings within "
             "0.05 of their cap, worst regret, runs that picked the best. Leave one out: the sub-pools (each run's "
             "own truth) that picked the best, and the worst regret. Made by `hscore_pair.py`; development, on the "
             "runs auto was chosen on.", "",
             "| H-score | w | tau-b (cap) | near cap | worst regret | best | leave one out: best | worst |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['hscore']} | {r['w']:g} | {r['kendall_tau']:.3f} ({r['cap']:.3f}) | {r['near_cap']} of "
                     f"{r['settings']} | {r['worst_regret']:.3f} | {r['best']} of {r['runs']} | {r['loo']['best']} of "
                     f"{r['loo']['sub_pools']} | {r['loo']['worst_regret']:.3f} |")
    lines += ["", "Sampled H-score at its ceiling, the sample's classes less one (within 1e-3): "
              f"{ceiling['at_ceiling']} of {ceiling['values']} "
              f"candidate values over {ceiling['runs']} runs; by candidate: "
              + ", ".join(f"{c} {k} of {ceiling['runs']}" for c, k in ceiling["by_candidate"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = probe_parser(__doc__)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    cfg = probe_config(a)
    kept = [r for r in load(a.runs, TIE_TOL) if HEAD_PAIR in r["methods"]]  # truth_mean over all of a setting's seeds
    results = [r for r in kept if (a.work / run_name(r) / "features").is_dir()]
    skipped = [run_name(r) for r in kept if r not in results]
    if not results:
        raise SystemExit(f"no run under {a.runs} has head_pair_shipped and kept sampled features in {a.work}")
    by_candidate: dict[str, int] = {}
    at, values = 0, 0
    for r in results:
        h = sampled_hscore(r, cfg, a.data, a.work)
        r["methods"][SAMPLED] = {"scores": h}
        for c, hit in at_ceiling(h).items():
            at, values = at + hit, values + 1
            by_candidate[c] = by_candidate.get(c, 0) + hit
        print(f"{run_name(r)}: sampled H-score {h}", flush=True)
    rows = [summary_row(h, w, full_pool(results, w, h), leave_one_out(results, w, h))
            for h in ("hscore", SAMPLED) for w in WEIGHTS]
    ceiling = {"at_ceiling": at, "values": values, "runs": len(results), "by_candidate": by_candidate}
    out = a.out or a.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "hscore_pair.json").write_text(json.dumps({"rows": rows, "ceiling": ceiling, "skipped": skipped,
                                                      "sampled": {run_name(r): r["methods"][SAMPLED]["scores"]
                                                                  for r in results}}, indent=1))
    (out / "hscore_pair.md").write_text(markdown(rows, ceiling))
    print(markdown(rows, ceiling))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
