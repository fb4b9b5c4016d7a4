"""Leave one candidate out: every method judged again on the study's sub-pools, ``python
experiments/selection_study/pool_ablation.py RUNS [--out DIR]``.

MPNet fine-tunes best in nearly every run of the study, so a method that puts MPNet first meets
the regret target whatever it does with the rest, and a shortlist by size alone (the two
largest candidates) holds the truth's top two in most runs. Dropping one candidate at a time
asks the harder questions the full pool hides: without MPNet, does a method tell SmolLM2 from
MiniLM (which label skew reorders)? Nothing is re-trained or re-encoded:

* a score of one candidate at a time (LogME, H-score, GBC, TransRate, the clients' mean LogME,
  the size prior) keeps its values; the sub-pool's ranking is theirs without the dropped one;
* a combined score is recombined on the sub-pool from its components: ``logme_gbc`` from the
  run's LogME and GBC; the ``gbc_prior`` family (auto, auto_shipped, gbc_prior_mean) from its
  own values, because ``c = z(gbc) + w z(prior)`` gives back ``z(gbc)`` (an increasing affine
  map of GBC, so its standardisation over any sub-pool is GBC's) although the sampled or
  mean-pooled GBC is not kept on its own; ``head_gbc_shipped`` (auto as shipped since design note
  89) as the server combines it, from ``head_shipped``'s values (the probe's held-out accuracy, one
  candidate at a time) and auto_shipped's recombined on the sub-pool, the centred variant,
  ``head_pair_shipped`` (both probes, design note 95) and ``head_pair_min_shipped`` (note 103)
  likewise; the full pool recombined must give the kept values (checked: the script stops otherwise);
* ``borda`` needs the clients' own rankings, which are not kept: left out;
* ``random`` is its expectation over the sub-pool;
* successive halving and hybrid (the study's, LogME top ``--top-k``; what ``selection=hybrid``
  ships, the top 2 by auto_shipped (gbc_prior); the top 2 by head_gbc_shipped; and the top 2 by size
  alone, the floor a data shortlist must beat) are replayed on the sub-pool's brute-force curves, their compute a fraction of the
  sub-pool's brute force.

Each run is judged against its own truth restricted to the sub-pool (ties within the run's
``tie_tol``). Writes ``pool_ablation.md`` and ``pool_ablation.json`` to ``--out`` (default:
RUNS's parent).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from statistics import mean

from vista.drivers.study import SHIPPED, StudyConfig, method_quality, run_name
from vista.drivers.study_compute import rounds_compute, selection_compute
from vista.drivers.study_head import HEAD_CENTRED, HEAD_GBC_SHIPPED, HEAD_SHIPPED, HEAD_VARIANTS, PAIR_RULES
from vista.selection.combine import (
    NEAR_TIE,
    PRIOR_WEIGHT,
    near_ties,
    weighted_z,
    zscores,
)
from vista.selection.head_scores import head_gbc_rule
from vista.selection.search import ReplayOracle, hybrid, successive_halving

DEFAULT = StudyConfig(candidates=())
ONE_AT_A_TIME = ("logme", "hscore", "reg_hscore", "transrate", "gbc", "avg_logme", "param_prior")
GBC_PRIOR = ("gbc_prior", "auto", "gbc_prior_mean", SHIPPED)  # z(gbc) + PRIOR_WEIGHT z(param_prior)
# hybrid top 2 as shipped (by auto_shipped: gbc_prior), by auto as shipped (head_gbc_shipped), and by size
# alone: the floor a data shortlist must beat
SHORTLISTS = (SHIPPED, HEAD_GBC_SHIPPED, "param_prior")
SEARCHES = ("successive_halving", "hybrid", *(f"hybrid top 2 by {s}" for s in SHORTLISTS))
FULL = "(none)"


def _only(values: dict, pool: list[str]) -> dict:
    return {c: values.get(c) for c in pool}


def gbc_prior_on(combined: dict, prior: dict, pool: list[str]) -> dict:
    """A ``gbc_prior`` score recombined over ``pool`` from its full-pool values: ``combined``
    less the prior's share is ``z(gbc)`` over the full pool, whose sub-pool standardisation is
    GBC's own."""
    zp = zscores(prior)
    gbc_z = {c: None if combined[c] is None else combined[c] - PRIOR_WEIGHT * (zp[c] or 0.0) for c in combined}
    return weighted_z({"gbc": _only(gbc_z, pool), "param_prior": _only(prior, pool)},
                      {"gbc": 1.0, "param_prior": PRIOR_WEIGHT}, required=("gbc",))


def sub_scores(result: dict, pool: list[str]) -> dict[str, dict]:
    """Every method's scores over ``pool`` that can be had without the clients (see the module)."""
    m = result["methods"]
    out = {s: _only(m[s]["scores"], pool) for s in ONE_AT_A_TIME if s in m}
    if "logme" in m and "gbc" in m:
        out["logme_gbc"] = near_ties(_only(m["logme"]["scores"], pool), _only(m["gbc"]["scores"], pool), NEAR_TIE)
    for s in GBC_PRIOR:
        if s in m:
            out[s] = gbc_prior_on(m[s]["scores"], m["param_prior"]["scores"], pool)
    for probe, both, _ in HEAD_VARIANTS:  # the probe's accuracy is one candidate's at a time; head_gbc recombines
        if probe in m:
            out[probe] = _only(m[probe]["scores"], pool)
            if both in m:
                out[both] = head_gbc_rule(out[probe], out[SHIPPED])
    for entry, rule in PAIR_RULES.items():  # head_pair and head_pair_min: both probes beside auto_shipped
        if entry in m:
            out[entry] = rule(out[HEAD_SHIPPED], out[HEAD_CENTRED], out[SHIPPED])
    out["random"] = dict.fromkeys(pool, 0.0)  # judged as its expectation
    return out


def check_recombination(result: dict) -> None:
    """The full pool recombined must give back the kept scores: else the components are not
    what the kept values were made of."""
    pool = list(result["truth"])
    mine = sub_scores(result, pool)
    for s in (*GBC_PRIOR, "logme_gbc", *(both for _, both, _ in HEAD_VARIANTS), *PAIR_RULES):
        kept = result["methods"].get(s, {}).get("scores")
        if kept is None:
            continue
        bad = [c for c in pool if (kept[c] is None) != (mine[s][c] is None)
               or (kept[c] is not None and abs(kept[c] - mine[s][c]) > 1e-9 * max(1.0, abs(kept[c])))]
        if bad:
            raise SystemExit(f"{s}: recombined on the full pool it is not the kept score for {bad}")


def search_rows(result: dict, pool: list[str], scores: dict[str, dict], top_k: int, r0: int, eta: int) -> dict:
    """The searches replayed over ``pool``: scores (rank scores) and compute vs the pool's brute force."""
    key, rounds = result["validation_key"], result["budget"]["rounds"]
    curves = {c: result["curves"][c] for c in pool}
    bf = sum(rounds_compute(result, c, rounds) for c in pool)
    runs = {"successive_halving": (successive_halving(pool, ReplayOracle(curves, key), r0, eta, rounds), None),
            "hybrid": (hybrid(scores["logme"], ReplayOracle(curves, key), top_k, r0, eta, rounds), "logme"),
            **{f"hybrid top 2 by {s}": (hybrid(scores[s], ReplayOracle(curves, key), 2, r0, eta, rounds), s)
               for s in SHORTLISTS if s in scores}}
    out = {}
    for name, (res, shortlist) in runs.items():
        spent = sum(rounds_compute(result, c, k) for c, k in res.rounds_trained.items() if k)
        # the shortlist's statistics round encodes every candidate's texts alike: the sub-pool's share of it
        stats = selection_compute(result, shortlist) * len(pool) / len(result["truth"]) if shortlist else 0.0
        out[name] = {"scores": res.rank_scores, "compute_vs_brute_force": (spent + stats) / bf}
    return out


def ablate(result: dict, top_k: int, r0: int, eta: int) -> list[dict]:
    """One row per dropped candidate (``FULL``: none) x method, for a result with its curves."""
    check_recombination(result)
    truth, tol = result["truth"], result["tie_tol"]
    run = run_name(result)
    rows = []
    for dropped in (FULL, *truth):
        pool = [c for c in truth if c != dropped]
        sub_truth = _only(truth, pool)
        scores = sub_scores(result, pool)
        searches = search_rows(result, pool, scores, top_k, r0, eta)
        for method, s in [*scores.items(), *((k, v["scores"]) for k, v in searches.items())]:
            q = method_quality(method, sub_truth, s, tol)
            rows.append({"run": run, "dropped": dropped, "method": method, "best": q["best"], "chosen": q["chosen"],
                         "kendall_tau": q["kendall_tau"], "kendall_tau_max": q["kendall_tau_max"],
                         "top1_regret": q["top1_regret"], "picked_best": float(q.get("picked_best", q["top1_regret"] == 0)),
                         "compute_vs_brute_force": searches.get(method, {}).get("compute_vs_brute_force")})
    return rows


def summary(rows: list[dict], dropped: str | None) -> dict[str, dict]:
    """Per method over the rows of one dropped candidate (None: every leave-one-out sub-pool)."""
    out: dict[str, dict] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method and (r["dropped"] == dropped if dropped else r["dropped"] != FULL)]
        costs = [r["compute_vs_brute_force"] for r in rs if r["compute_vs_brute_force"] is not None]
        ranked = [r for r in rs if math.isfinite(r["kendall_tau_max"])]  # tau-b is undefined when all tie
        # a method that ties every candidate orders nothing: its undefined tau-b counts 0
        out[method] = {"n": len(rs), "n_tau": len(ranked),
                       "kendall_tau": mean(r["kendall_tau"] if math.isfinite(r["kendall_tau"]) else 0.0 for r in ranked),
                       "kendall_tau_max": mean(r["kendall_tau_max"] for r in ranked),
                       "picked_best": sum(r["picked_best"] for r in rs), "mean_regret": mean(r["top1_regret"] for r in rs),
                       "worst_regret": max(r["top1_regret"] for r in rs),
                       "compute_vs_brute_force": mean(costs) if costs else None}
    return out


def markdown(rows: list[dict], runs: list[str], skipped: list[str]) -> str:
    drops = list(dict.fromkeys(r["dropped"] for r in rows))
    out = ["# Leave one candidate out", "",
           f"{len(runs)} runs, each judged against its own truth restricted to the sub-pool: {', '.join(runs)}."
           + (f" Without curves (searches not replayed, so not here): {', '.join(skipped)}." if skipped else ""), "",
           "Per method: mean tau-b (mean cap given the ties), picked the best (runs; random: expected), mean and "
           "worst top-1 regret; searches: compute as a fraction of the sub-pool's brute force. "
           "`borda` is left out (it needs the clients' rankings). Tau-b is averaged over the run x pools whose "
           "truth does not tie every candidate (where it does, tau-b is undefined: the count is given); a method "
           "whose scores tie every candidate (the head probe at the majority rate) counts 0 there. "
           "Made by `pool_ablation.py`.", ""]
    for dropped in [*drops, None]:
        title = "every leave-one-out sub-pool together" if dropped is None else \
            ("the full pool" if dropped == FULL else f"without {dropped}")
        s = summary(rows, dropped)
        n = next(iter(s.values()))["n"]
        undefined = n - next(iter(s.values()))["n_tau"]
        out += [f"## {title} ({n} run x pool" + (f"; tau-b undefined in {undefined}, all tied" if undefined else "")
                + ")", "",
                "| method | tau-b | cap | picked best | mean regret | worst regret | compute vs brute force |",
                "|---|---|---|---|---|---|---|"]
        for method, v in s.items():
            cost = "" if v["compute_vs_brute_force"] is None else f"{v['compute_vs_brute_force']:.3f}"
            out.append(f"| {method} | {v['kendall_tau']:.2f} | {v['kendall_tau_max']:.2f} | {v['picked_best']:.1f} of {v['n']} | "
                       f"{v['mean_regret']:.3f} | {v['worst_regret']:.3f} | {cost} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="the study's runs folder (result.json files under it)")
    p.add_argument("--top-k", type=int, default=DEFAULT.top_k, help="the study's hybrid shortlist (LogME's top k)")
    p.add_argument("--r0", type=int, default=DEFAULT.r0)
    p.add_argument("--eta", type=int, default=DEFAULT.eta)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    rows, runs, skipped = [], [], []
    for path in sorted(a.runs.rglob("result.json")):
        result = json.loads(path.read_text())
        run = run_name(result)
        if "curves" not in result:
            skipped.append(run)
            continue
        runs.append(run)
        rows += ablate(result, a.top_k, a.r0, a.eta)
    if not rows:
        raise SystemExit(f"no result.json with curves under {a.runs}")
    out = a.out or a.runs.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool_ablation.md").write_text(markdown(rows, runs, skipped))
    (out / "pool_ablation.json").write_text(json.dumps({"runs": runs, "skipped": skipped, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out / 'pool_ablation.md'} ({len(runs)} runs, {len(skipped)} without curves)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
