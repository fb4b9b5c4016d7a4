"""What DP costs auto, the head probe pair (issue 16.7; design note 97):
``python experiments/selection_study/privacy_head.py RUNS --data DATA --hub HUB --work WORK
--only 20news5/iid/seed0 ... --epsilons 8 4 1 --draws 2 [--out DIR]``.

For each named study run under RUNS whose sampled features are kept in ``WORK/<run>/features``, runs
``selection=auto`` (head_pair) live on auto's shipped sampling, without DP and at each total
``selection.privacy.dp_epsilon`` E, ``--draws`` times: draw ``d`` of the ``k``-th run named at run seed
``seed + 1000 (d + 1) + 100 k`` (a new text sample, probe split and noise, another for every run: the
study's runs share seeds, and noise seeded alike would point the same way in all of them; the clients
and partition stay the run's), the no-DP run at the same seeds, so DP's cost is measured on the same
texts. One draw's seed is the same at every epsilon: its noise points the same way, only its size changes. Under DP the probe trains by
``head_dp``'s rule (noisy gradient sums, the server's Adam, one noisy report), its releases sharing
the budget with the statistics round's. Judges, from each run: auto (head_pair), both probes alone,
gbc_prior (the same run's noisy GBC and the size prior) and param_prior, against the run's setting's
truth (its seeds' mean, ties within 0.01). Writes ``privacy_head.md`` and ``privacy_head.json``.
Fewer releases, each less noisy: ``--head-rounds N`` trains the probes N rounds instead of the run's 6
(N + 1 releases a probe); ``--method head_gbc`` runs one uncentred probe instead of the pair.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from statistics import mean, stdev

from vista.drivers.study import method_quality, run_name
from vista.drivers.study_head import HEAD_SHIPPED
from vista.selection.combine import gbc_prior

from head_rounds import TIE_TOL, probe_config, probe_parser, probe_run
from table import load

DRAW_SEED, RUN_STRIDE = 1000, 100  # draw d of the k-th run: seed + DRAW_SEED (d + 1) + RUN_STRIDE k
METHODS = ("auto", "head_probe", "head_probe_centred", "gbc_prior", "param_prior")
LIVE = ("head_pair", "head_gbc")  # what --method may run: auto's pair, or one uncentred probe (half the releases)


def scored(live: dict, method: str = "head_pair") -> dict[str, dict]:
    """Each judged method's scores from one live run of ``method`` (judged as ``auto`` when it is auto's
    head_pair; a probe the run did not train is left out)."""
    s = live["scores"]
    out = {"auto" if method == "head_pair" else method: s[method], "head_probe": s["head_probe"]}
    if "head_probe_centred" in s:
        out["head_probe_centred"] = s["head_probe_centred"]
    return {**out, "gbc_prior": gbc_prior({"gbc": s["gbc"], "param_prior": s["param_prior"]}),
            "param_prior": s["param_prior"]}


def live_seed(result: dict, d: int, k: int) -> int:
    """The run seed of draw ``d`` of the ``k``-th run named (module doc)."""
    return result["seed"] + DRAW_SEED * (d + 1) + RUN_STRIDE * k


def run_rows(result: dict, cfg, data: Path, work: Path, epsilons: list[float | None], draws: int,
             k: int = 0, head_rounds: int | None = None, method: str = "head_pair") -> list[dict]:
    """``head_rounds``: the probes' rounds (default the run's recorded ones); ``method``: the live selection
    (:data:`LIVE`). Fewer rounds or one probe: fewer releases."""
    recorded = int(result["methods"][HEAD_SHIPPED]["head"]["rounds"])
    rounds = recorded if head_rounds is None else head_rounds
    suffix = ("" if rounds == recorded else f"_r{rounds}") + ("" if method == "head_pair" else f"_{method}")
    rows = []
    for eps in epsilons:
        for d in range(draws):
            privacy = dataclasses.replace(cfg.privacy, dp_epsilon=eps)
            tag = f"dp_{'none' if eps is None else f'eps{eps:g}'}_seed{live_seed(result, d, k)}{suffix}"
            live = probe_run(result, cfg, data, work, rounds, keep_features=True, name=method, privacy=privacy,
                             seed=live_seed(result, d, k), tag=tag)
            rep = live["privacy"]
            judged = scored(live, method)
            for name, scores in judged.items():
                q = method_quality(name, result["truth_mean"], scores, TIE_TOL)
                rows.append({"run": run_name(result), "epsilon": eps, "draw": d, "seed": live_seed(result, d, k),
                             "head_rounds": rounds, "method": name, "scores": scores,
                             "kendall_tau": q["kendall_tau"], "kendall_tau_max": q["kendall_tau_max"],
                             "top1_regret": q["top1_regret"], "chosen": q["chosen"], "best": q["best"],
                             "spent_epsilon": rep["epsilon"], "releases": rep["composition"]["releases"],
                             "release_noise_multiplier": rep["composition"]["release_noise_multiplier"]})
            first = rows[-len(judged)]
            print(f"{run_name(result)} eps={eps} draw {d}: {first['method']} picks {first['chosen']}, tau-b "
                  f"{first['kendall_tau']:.2f}", flush=True)
    return rows


def _cell(xs: list[dict]) -> str:
    taus = [x["kendall_tau"] for x in xs if not math.isnan(x["kendall_tau"])]
    sd = f" +- {stdev(taus):.2f}" if len(taus) > 1 else ""
    best = sum(x["top1_regret"] <= 1e-12 for x in xs) / len(xs)
    return f"{mean(taus):.2f}{sd}, {mean(x['top1_regret'] for x in xs):.3f}, {best:.0%}"


def markdown(rows: list[dict], epsilons: list[float | None]) -> str:
    runs = sorted({r["run"] for r in rows})
    draws = max(r["draw"] for r in rows) + 1
    eps_names = ["no DP" if e is None else f"epsilon {e:g}" for e in epsilons]
    methods = list(dict.fromkeys(r["method"] for r in rows))  # the live method's row first
    live = "auto" if methods[0] == "auto" else methods[0]
    title = "auto (head_pair)" if live == "auto" else live
    lines = [f"# What DP costs {title}", "",
             f"Live `selection={live}` on auto's shipped sampling, the probes at {rows[0].get('head_rounds', 6)} rounds, "
             f"{len(runs)} runs ({', '.join(runs)}) x {draws} draws "
             "(a new text sample, probe split and noise each, every run's its own; the no-DP column at the same seeds; a draw's noise points the same way at every epsilon). Epsilon is the "
             "whole run's budget (delta 1e-5), split equally over every release: the statistics round's sums and, "
             "per candidate and probe, the DP probe's gradient sums and its report. Per cell: mean Kendall tau-b "
             "+- its sd over runs and draws, mean top-1 regret, share of draws that picked the best, against each "
             "setting's truth (its seeds' mean, ties within 0.01). Made by `privacy_head.py`.", "",
             "| method | " + " | ".join(eps_names) + " |", "|---|" + "---|" * len(epsilons)]
    for m in methods:
        cells = [_cell([r for r in rows if r["method"] == m and r["epsilon"] == e]) for e in epsilons]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", f"| run | epsilon | draw | {live}'s pick | best | regret | tau-b | releases (statistics + head) | "
              "noise multiplier a release |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == live:
            rel = r["releases"]
            z = r["release_noise_multiplier"]
            eps = "none" if r["epsilon"] is None else f"{r['epsilon']:g}"
            lines.append(f"| {r['run']} | {eps} | {r['draw']} | "
                         f"{r['chosen']} | {r['best']} | {r['top1_regret']:.3f} | {r['kendall_tau']:.2f} | "
                         f"{rel['statistics']} + {rel['head']} | {'' if z is None else f'{z:.1f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = probe_parser(__doc__)
    p.add_argument("--only", nargs="+", required=True, help="the runs to re-run, as corpus/partition/seedN")
    p.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 4.0, 1.0])
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--head-rounds", type=int, default=None,
                   help="the probes' rounds (selection.head_rounds; default each run's recorded 6): fewer releases")
    p.add_argument("--method", default="head_pair", choices=LIVE,
                   help="the live selection: auto's head_pair (default), or head_gbc (one uncentred probe)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    cfg = probe_config(a)
    epsilons: list[float | None] = [None, *a.epsilons]
    results = {run_name(r): r for r in load(a.runs, TIE_TOL)}
    missing = [n for n in a.only if n not in results or not (a.work / n / "features").is_dir()]
    if missing:
        raise SystemExit(f"no result.json under {a.runs} or no kept features in {a.work} for: {missing}")
    if a.draws > RUN_STRIDE // 10 or len(a.only) * RUN_STRIDE >= DRAW_SEED:
        raise SystemExit(f"at most {RUN_STRIDE // 10} draws and {DRAW_SEED // RUN_STRIDE - 1} runs keep the seeds apart")
    rows = [row for k, n in enumerate(a.only)
            for row in run_rows(results[n], cfg, a.data, a.work, epsilons, a.draws, k, a.head_rounds, a.method)]
    out = a.out or a.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy_head.json").write_text(json.dumps({"rows": rows}, indent=1))
    (out / "privacy_head.md").write_text(markdown(rows, epsilons))
    print(markdown(rows, epsilons))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
