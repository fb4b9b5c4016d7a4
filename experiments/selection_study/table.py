"""Table and plot of a selection study: ``python experiments/selection_study/table.py RUNS [--out DIR]``.

Reads every ``result.json`` under RUNS (written by run_study.py). A *setting* is a corpus x
partition; its seeds are runs of it. The ground truth of a setting is each candidate's test
accuracy averaged over its seeds (SELECTION.md: at least 3), with accuracies within
``--tie-tol`` (default ``TIE_TOL`` = 0.01) tied. Each method's quality is recomputed per seed
from that seed's scores against that truth (a candidate a score could not rank counts last, as
in a live run; ``random`` as its expectation over 1,000 seeded random rankings, not its one
seeded draw; ``brute_force`` is one seed's accuracies: the seed noise of the truth itself),
and written to ``--out`` (default: this folder's ``results/``):
- ``table.md``: per method, over settings, the mean and the spread (mean over settings of the
  standard deviation over seeds; range of the per-setting means) of Kendall tau-b and top-1
  regret, beside tau-b the best tau-b the truth's ties allow (``max_kendall_tau``), weighted tau,
  Spearman rho, how often it picked the best candidate, and its cost (client forward and
  backward passes, bytes, federated rounds, wall time; compute also as a fraction of brute
  force); then per setting the ground truth (mean and sd over seeds, its ties) and each
  method's tau-b (mean, sd, range over seeds) and regret;
- ``summary.csv``: one row per method x setting x seed;
- ``plot.png``: weighted tau per method and partition, and regret vs compute.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from statistics import mean, stdev

from vista.drivers.study import (
    EXPECTED,
    HEAD_GBC_SHIPPED,
    HEAD_SHIPPED,
    SHIPPED,
    TIE_TOL,
    method_quality,
)
from vista.drivers.study_compute import selection_compute
from vista.drivers.study_head import HEAD_CENTRED, HEAD_GBC_CENTRED, HEAD_PAIR, HEAD_PAIR_MIN
from vista.selection.ranking import (
    RANDOM_DRAWS,
    RANDOM_SEED,
    max_kendall_tau,
    tie_groups,
)
from vista.selection.scores import names as score_names
from vista.selection.spec import SEARCH_METHODS

# every registered score, auto, the head probe and the two together as shipped (a sample of the texts,
# study.score_shipped_auto and score_shipped_head) and centred (selection.head_centre), the searches
METHODS = (*score_names(), SHIPPED, HEAD_SHIPPED, HEAD_GBC_SHIPPED, HEAD_CENTRED, HEAD_GBC_CENTRED, HEAD_PAIR,
           HEAD_PAIR_MIN, *SEARCH_METHODS)
QUALITY = ("kendall_tau", "kendall_tau_max", "weighted_tau", "spearman", "top1_regret")


def settings(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The results grouped by setting (corpus, partition), each group's seeds in order."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        out[(r["data"], r["partition"])].append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def seed_truth(group: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation (NaN with one seed) over the seeds of each candidate's test
    accuracy: the setting's ground truth and its own noise. Candidates every seed trained."""
    names = sorted(set.intersection(*(set(r["truth"]) for r in group)))
    accs = {c: [float(r["truth"][c]) for r in group] for c in names}
    return ({c: mean(a) for c, a in accs.items()},
            {c: stdev(a) if len(a) > 1 else float("nan") for c, a in accs.items()})


def requalify(results: list[dict], tie_tol: float = TIE_TOL) -> list[dict]:
    """Each method's quality recomputed from its recorded scores against its setting's truth
    (:func:`seed_truth`, ties within ``tie_tol``); a missing score (None/NaN) ranked last as a
    live run ranks it (results written before that rule dropped them), and ``random`` as its
    expectation (results written before that reported one draw). Each result gets
    ``truth_mean``, ``truth_sd``, ``seeds`` and ``tie_tol``."""
    for group in settings(results).values():
        truth, sd = seed_truth(group)
        for r in group:
            r.update(truth_mean=truth, truth_sd=sd, seeds=[g["seed"] for g in group], tie_tol=tie_tol)
            for name, e in r["methods"].items():
                if "scores" in e:
                    for q in (*QUALITY, "chosen", "best", "picked_best", "draw", "draws", "seed"):
                        e.pop(q, None)
                    e.update(method_quality(name, truth, e["scores"], tie_tol))
    return results


def full_pool(results: list[dict], scores_of: Callable[[dict], dict]) -> dict[str, dict]:
    """A rule the study recombines (``scores_of(result)``: its scores on that run) judged the table's
    way, per setting: mean tau-b over its seeds against the setting's truth (``truth_mean``, from
    :func:`requalify`), the cap, mean and worst regret, runs that picked the best."""
    out = {}
    for (data, part), group in settings(results).items():
        qs = [method_quality("rule", r["truth_mean"], scores_of(r), r["tie_tol"]) for r in group]
        out[f"{data} {part}"] = {"kendall_tau": mean(q["kendall_tau"] for q in qs), "cap": qs[0]["kendall_tau_max"],
                                 "mean_regret": mean(q["top1_regret"] for q in qs),
                                 "worst_regret": max(q["top1_regret"] for q in qs),
                                 "best": sum(q["top1_regret"] == 0 for q in qs), "runs": len(qs)}
    return out


NEAR = 0.05  # 16.5's target: within this of the best tau-b reachable given ties
REGRET_OK = 0.01  # 16.5's target: top-1 regret at most this


def rule_summary(per: dict[str, dict]) -> dict:
    """:func:`full_pool`'s settings summed up as 16.5 judges a rule: mean tau-b and cap over settings,
    settings within :data:`NEAR` of their cap, settings with mean regret <= :data:`REGRET_OK`, runs that picked
    the best."""
    return {"tau_b": mean(s["kendall_tau"] for s in per.values()), "cap": mean(s["cap"] for s in per.values()),
            "near_cap": sum(s["kendall_tau"] >= s["cap"] - NEAR - 1e-9 for s in per.values()),
            "regret_ok": sum(s["mean_regret"] <= REGRET_OK for s in per.values()),
            "best": sum(s["best"] for s in per.values()), "runs": sum(s["runs"] for s in per.values())}


def searched_on_test(result: dict) -> bool:
    """A result written before the searches held out a validation split: they ranked on the
    clients' test splits, which together are the ground truth's test set."""
    return "val_fraction" not in result


def load(runs: Path, tie_tol: float = TIE_TOL) -> list[dict]:
    out = [json.loads(p.read_text()) for p in sorted(runs.rglob("result.json"))]
    if not out:
        raise SystemExit(f"no result.json under {runs}")
    return requalify(out, tie_tol)


def _m(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return mean(xs) if xs else float("nan")


def _sd(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return stdev(xs) if len(xs) > 1 else float("nan")


def _f(x: float, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _range(xs: list[float], nd: int = 2) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    return f"{min(xs):.{nd}f} to {max(xs):.{nd}f}" if xs else "n/a"


def spread(rows: list[dict], key: str) -> dict[str, float | list[float]]:
    """One method's ``key`` over settings: ``means`` (per setting, the mean over its seeds),
    ``mean`` (of those), ``seed_sd`` (the mean over settings of the sd over seeds: how much one
    seed moves it; NaN with single seeds)."""
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        by[(r["data"], r["partition"])].append(r[key])
    means = [_m(v) for v in by.values()]
    return {"means": means, "mean": _m(means), "seed_sd": _m([_sd(v) for v in by.values()])}


def rows_of(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        bf = selection_compute(r, "brute_force")
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
                         "compute_vs_bf": selection_compute(r, m) / bf if bf else float("nan")})
    return rows


def markdown(results: list[dict], rows: list[dict]) -> str:
    by = defaultdict(list)
    for row in rows:
        by[row["method"]].append(row)
    groups = settings(results)
    tol = results[0].get("tie_tol", TIE_TOL)
    seeds = Counter(len(g) for g in groups.values())
    intro = ("A setting is a corpus x partition; its ground truth is each candidate's final global test accuracy "
             "after brute-force federated LoRA, averaged over the setting's seeds, with "
             + (f"accuracies within {tol:g} of each other tied" if tol else "exactly equal accuracies tied")
             + ". Each method is scored per seed (its scores on that seed's clients) "
             "against that truth. Per method: the mean over settings of the per-setting mean over seeds; "
             "'seed sd': the mean over settings of the standard deviation over seeds (how much one seed moves it); "
             "'range': the lowest and highest per-setting mean; 'tau-b cap': the best tau-b a score without ties "
             "of its own can reach, given the truth's ties (sqrt(1 - tied pairs / pairs); 1 without ties). "
             "brute_force is one seed's accuracies against the mean over seeds: the truth's own noise. "
             "Regret: accuracy of the best candidate minus that of the chosen one. Compute: forward-pass "
             "equivalents (backward = 2 forward) as a fraction of brute force's, each less its predictions of "
             "the test splits (the truth's measurement, which no selection needs; the forward passes column "
             "keeps them). "
             f"{', '.join(EXPECTED)}: the expectation over {RANDOM_DRAWS:,} random rankings per seed (sampled, "
             f"numpy seed {RANDOM_SEED}; picked best: the expected share), not the one seeded draw a live run makes.")
    header = ("| method | Kendall tau-b | seed sd | range | tau-b cap | weighted tau | Spearman | top-1 regret | "
              "seed sd | range | picked best | forward passes | backward passes | MB | rounds | wall s | "
              "compute vs BF |")
    counts = ", ".join(f"{n} with {k} seed{'s' if k > 1 else ''}" for k, n in sorted(seeds.items()))
    lines = [f"# Selection study: {len(groups)} setting{'s' if len(groups) > 1 else ''}, {len(results)} runs ({counts})", "", intro, "",
             *_search_note(results), *_pooling_note(results), *_shipped_note(results), *_coverage_note(results, by),
             header, "|---|" + "---|" * 16]
    for m in METHODS:
        rs = by.get(m)
        if not rs:
            continue
        tau, reg = spread(rs, "kendall_tau"), spread(rs, "top1_regret")
        lines.append(f"| {m} | {_f(tau['mean'])} | {_f(tau['seed_sd'])} | {_range(tau['means'])} | "
                     f"{_f(spread(rs, 'kendall_tau_max')['mean'])} | {_f(spread(rs, 'weighted_tau')['mean'])} | "
                     f"{_f(spread(rs, 'spearman')['mean'])} | {_f(reg['mean'], 3)} | {_f(reg['seed_sd'], 3)} | "
                     f"{_range(reg['means'], 3)} | {_m([x['picked_best'] for x in rs]):.0%} | "
                     f"{_m([x['forward_passes'] for x in rs]):,.0f} | "
                     f"{_m([x['backward_passes'] for x in rs]):,.0f} | {_m([x['bytes'] for x in rs]) / 1e6:,.1f} | "
                     f"{_m([x['rounds'] for x in rs]):.1f} | {_m([x['seconds'] for x in rs]):,.0f} | "
                     f"{_f(_m([x['compute_vs_bf'] for x in rs]), 4)} |")
    lines += ["", "## Per setting", ""]
    for (data, part), group in groups.items():
        r0 = group[0]
        truth, sd = r0["truth_mean"], r0["truth_sd"]
        order = sorted(truth, key=lambda c: -truth[c])
        ties = [g for g in tie_groups(truth, tol) if len(g) > 1]
        seed_list = f"seed{'s' if len(group) > 1 else ''} {', '.join(str(s) for s in r0['seeds'])}"
        lines += [f"### {data} / {part} / {seed_list}", "",
                  "Ground truth (test accuracy, mean +- sd over seeds): "
                  + ", ".join(f"{c} {truth[c]:.3f}" + (f" +- {sd[c]:.3f}" if not math.isnan(sd[c]) else "")
                              for c in order), "",
                  (f"Tied within {tol:g}: " if tol else "Tied exactly: ") + ("; ".join(" = ".join(g) for g in ties) if ties else "none")
                  + f". Best reachable tau-b: {_f(max_kendall_tau(truth, tol), 3)}.", "",
                  "| method | chosen (per seed) | Kendall tau-b | seed sd | range over seeds | weighted tau | regret | "
                  "regret sd |", "|---|---|---|---|---|---|---|---|"]
        for m in METHODS:
            es = [r["methods"][m] for r in group if m in r["methods"]]
            if not es:
                continue
            if "draws" in es[0]:
                chosen = f"(expectation, {es[0]['draws']} draws)"
            else:
                chosen = ", ".join(f"{c} x{n}" if n > 1 else str(c) for c, n in Counter(e.get("chosen") for e in es).items())
            taus = [float("nan") if e.get("kendall_tau") is None else e["kendall_tau"] for e in es]
            regs = [float("nan") if e.get("top1_regret") is None else e["top1_regret"] for e in es]
            lines.append(f"| {m} | {chosen} | {_f(_m(taus))} | {_f(_sd(taus))} | {_range(taus)} | "
                         f"{_f(_m([e.get('weighted_tau') for e in es]))} | {_f(_m(regs), 3)} | {_f(_sd(regs), 3)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _coverage_note(results: list[dict], by: dict[str, list[dict]]) -> list[str]:
    """The methods scored in only some of the runs (added later, e.g. the centred probe): their rows
    average over those runs alone, so they are said, not silently compared with the others."""
    part = {m: len(rs) for m, rs in by.items() if len(rs) < len(results)}
    if not part:
        return []
    return ["Scored in fewer runs than the table holds (their rows average over those runs alone): "
            + "; ".join(f"{m} in {n} of {len(results)}" for m, n in part.items()) + ".", ""]


def _shipped_note(results: list[dict]) -> list[str]:
    """What ``auto_shipped`` sampled (``auto`` is the same rule on every text)."""
    shipped = [r["methods"][SHIPPED]["sampling"] for r in results if SHIPPED in r["methods"]]
    if not shipped:
        return []
    said = "; ".join(sorted({", ".join(f"{k} {v}" for k, v in s.items()) for s in shipped}))
    have = len(shipped)
    shares = [r["methods"][SHIPPED]["token_share"] for r in results if "token_share" in r["methods"].get(SHIPPED, {})]
    short = any("max_seq_len" in s for s in shipped)
    tokens = "" if not short else (
        f" Its compute counts tokens: each run's encoded texts scaled by its token share (of the study length's tokens "
        f"what its shorter length keeps, over the corpus's training texts and the candidates' tokenizers; "
        f"{min(shares):.2f} to {max(shares):.2f}, `refresh_results.py`)." if len(shares) == have else
        f" Its compute counts encoded texts whatever their length in {have - len(shares)} of its {have} runs "
        "(no token share recorded: `refresh_results.py` fills it in); scaled by the tokens it keeps it is lower.")
    return [f"{SHIPPED}: auto as `conf/selection/auto.yaml` ships it ({said}), the run's own seeded draw of the "
            f"texts, in {have} of {len(results)} runs; `auto` is the same rule on every text.{tokens}", ""]


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


def _pooling_note(results: list[dict]) -> list[str]:
    """Which methods were scored on other features than the classifiers' own (``gbc_prior_mean``: mean)."""
    other: dict[str, set[str]] = defaultdict(set)
    for r in results:
        for m, e in r["methods"].items():
            if e.get("pooling") not in (None, "auto"):
                other[m].add(e["pooling"])
    if not other:
        return []
    said = "; ".join(f"{m} on {'/'.join(sorted(p))}-pooled features" for m, p in sorted(other.items()))
    return [f"Features: what each candidate's classifier reads (BERT's pooler, a decoder's last token), but {said} "
            "(the pooling the registry gives the method, a statistics round of its own).", ""]


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
    p.add_argument("--tie-tol", type=float, default=TIE_TOL,
                   help=f"mean truth accuracies this close tie in the rank measures (default {TIE_TOL}; 0: exact ties)")
    a = p.parse_args(argv)
    results = load(a.runs, a.tie_tol)
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
