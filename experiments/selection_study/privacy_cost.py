"""What the privacy guard's differential privacy costs in ranking quality (issue 16.7).

    python experiments/selection_study/privacy_cost.py --runs WORK/runs --data WORK/data --hub models \
        --epsilons 1 4 8 --draws 3 --out experiments/selection_study/results/ground_truth

Re-scores every finished study setting (a ``result.json`` whose setting kept its client features:
``run_study.py --keep-features``, which ``run_ground_truth.sh`` passes) with the live statistics
round under ``selection.privacy.dp_epsilon = E``: the whole run's budget, composed over everything
it releases (every candidate's sums in each round, the clients' own scores and weights), as
a live ``selection=`` run spends it. Each epsilon is run ``--draws`` times with other noise seeds
(``parts.seed``; the clients, their texts and the partition stay the setting's). The features are
read back from the setting's store (the server's public probe texts' too, after a first run), so a
run encodes nothing. A run without DP re-scores the same way first and must equal the setting's
own scores (a check that the store reproduces the study).

Quality is measured against the setting's ground truth (the mean over its seeds, ties within
``--tie-tol``), every score as the study does (``vista.drivers.study.quality_of``). Writes
``privacy.md`` (per method and epsilon: mean Kendall tau-b with its spread over draws, top-1
regret, how often the best model was picked) and ``privacy.json`` (every draw) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from vista.build import candidate_spec
from vista.drivers.study import (
    TIE_TOL,
    StudyConfig,
    _run_or_reuse,
    combined_methods,
    prior_methods,
    quality_of,
    run_name,
    setting_parts,
    stat_methods,
)
from vista.selection.privacy import GUARDED
from vista.selection.spec import DEFAULT_CANDIDATES, SelectionSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from table import seed_truth, settings  # noqa: E402

DRAW_SEED = 1000  # noise seeds of the draws: setting seed + DRAW_SEED * (draw + 1)


def _truths(results: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """Each setting's ground truth: every candidate's test accuracy averaged over its seeds, as the
    table pools them (``table.seed_truth``)."""
    return {k: seed_truth(g)[0] for k, g in settings(results).items()}


def rescore(cfg: StudyConfig, setting: Path, data: Path, result: dict, epsilon: float | None, draw: int,
            out: Path, project_dim: int | None = None, pooling: str = "auto") -> dict:
    """One statistics round of ``setting`` from its kept features, at total ``epsilon`` (None: no DP),
    the features on a public random basis of ``project_dim`` dimensions first where given, pooled
    by ``pooling`` (``selection.pooling``; features of another pooling than the study's are encoded
    once and kept in the setting's store)."""
    parts = setting_parts(cfg, data / f"{result['data']}_data.h5", result["partition"], result["seed"], setting)
    spec = SelectionSpec(name="logme", candidates=cfg.candidates,
                         scores=(*stat_methods(), *prior_methods(), *combined_methods()),
                         privacy=dataclasses.replace(cfg.privacy, dp_epsilon=epsilon),
                         feature_store=str(setting / "features"), project_dim=project_dim, pooling=pooling)
    seed = result["seed"] + (DRAW_SEED * (draw + 1) if epsilon is not None else 0)
    tag = "no_dp" if epsilon is None else f"eps{epsilon:g}/draw{draw}"
    return _run_or_reuse(dataclasses.replace(parts, selection=spec, seed=seed), out / tag)


def _fmt(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    return f"{mean(xs):.2f} ± {stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def table(rows: list[dict], epsilons: list[float | None], methods: list[str], report: dict,
          project_dim: int | None = None, pooling: str = "auto") -> str:
    cols = ["no DP" if e is None else f"ε = {e:g}" for e in epsilons]
    runs = sorted({f"{r['data']} {r['partition']} seed {r['seed']}" for r in rows})
    lines = ["# The privacy guard's cost in ranking quality", "",
             f"{len(runs)} study runs ({', '.join(runs)}), "
             f"{max(r['draw'] for r in rows) + 1} noise draws per epsilon. ε is the whole selection run's "
             "budget (δ = 1e-5), composed over every release with dp-accounting's PLD accountant; "
             "tau-b ± its standard deviation over draws and runs; regret is the truth's best accuracy minus "
             "the chosen candidate's; 'best' is the share of draws that picked the best candidate."
             + ("" if project_dim is None else f" Every candidate's features on a public random basis of "
                f"{project_dim} dimensions first (selection.project_dim={project_dim}), no DP included.")
             + ("" if pooling == "auto" else f" Every candidate's features pooled by selection.pooling={pooling}, "
                "no DP included."), "",
             "| method | " + " | ".join(f"{c}: tau-b | {c}: regret | {c}: best" for c in cols) + " |",
             "|---|" + "---|---|---|" * len(cols)]
    for m in methods:
        cells = []
        for e in epsilons:
            sel = [r for r in rows if r["epsilon"] == e and r["method"] == m]
            cells += [_fmt([r["kendall_tau"] for r in sel]), _fmt([r["top1_regret"] for r in sel]),
                      f"{mean(float(r['chosen'] == r['best']) for r in sel):.2f}" if sel else "n/a"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "What one DP run released and the noise it took (the first setting, per epsilon):", "",
              "| ε | releases | noise multiplier per release | ε per release | composed ε |", "|---|---|---|---|---|"]
    for e, rep in report.items():
        comp = rep["composition"]
        lines.append(f"| {e:g} | {comp['total']} ({', '.join(f'{k} {v}' for k, v in comp['releases'].items())}) | "
                     f"{comp['release_noise_multiplier']:.1f} | {comp['release_epsilon']:.3f} | {rep['epsilon']:.3f} |")
    return "\n".join(lines) + "\n"


def study_args(p: argparse.ArgumentParser) -> None:
    """The arguments every re-scoring script shares: where the study is, and how it ran."""
    p.add_argument("--runs", type=Path, required=True, help="run_study.py's --out")
    p.add_argument("--data", type=Path, required=True, help="run_study.py's --data")
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    p.add_argument("--clients", type=int, default=8, help="as the study ran (the partition file is reused)")
    p.add_argument("--max-seq-len", type=int, default=128, help="as the study ran (the features' key)")
    p.add_argument("--workers", type=int, default=0, help="0: in this process (each model loads once a run)")
    p.add_argument("--tie-tol", type=float, default=TIE_TOL)


def kept_settings(runs: Path) -> dict[Path, dict]:
    """Every finished setting under ``runs`` that kept its clients' features (``run_study.py
    --keep-features``): its directory -> its ``result.json``; exits when there is none."""
    found = sorted(runs.rglob("result.json"))
    results = {f.parent: json.loads(f.read_text()) for f in found if (f.parent / "features").is_dir()}
    if not results:
        raise SystemExit(f"no finished setting with kept features under {runs} (run_study.py --keep-features)")
    return results


def study_config(a: argparse.Namespace) -> StudyConfig:
    """The study's config as the re-scoring scripts need it (candidates, clients, length, privacy)."""
    cands = tuple(candidate_spec(c, {"model_hub": str(a.hub)}) for c in a.candidates)
    return StudyConfig(candidates=cands, clients=a.clients, max_seq_len=a.max_seq_len, num_workers=a.workers,
                       privacy=GUARDED)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    study_args(p)
    p.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 4.0, 8.0])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--project-dim", type=int, default=None,
                   help="selection.project_dim: features on a public random basis of this many dims first "
                        "(writes privacy_k<K>.md/json; the no-DP run then differs from the study's by design)")
    p.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean", "last"],
                   help="selection.pooling (writes privacy_<pooling>.md/json unless auto; the no-DP run then "
                        "differs from the study's by design)")
    p.add_argument("--work", type=Path, default=None,
                   help="where the re-scoring runs go (default: <runs>/../privacy_runs, next to the study's work)")
    a = p.parse_args(argv)
    k = a.project_dim
    stem = "privacy" + ("" if k is None else f"_k{k}") + ("" if a.pooling == "auto" else f"_{a.pooling}")
    cfg = study_config(a)
    results = kept_settings(a.runs)
    truths = _truths(list(results.values()))
    # random is left out: DP does not touch it, and one seeded draw per run would read as a
    # measurement (the study reports its expectation: tau 0.02)
    methods = [*stat_methods(), *combined_methods(), *(m for m in prior_methods() if m != "random")]
    epsilons: list[float | None] = [None, *a.epsilons]
    rows, report = [], {}
    for setting, res in results.items():
        truth = truths[(res["data"], res["partition"])]
        # named by what the run is, not by where --runs points: two settings never share a run
        work = (a.work or a.runs.parent / f"{stem}_runs") / run_name(res)
        for e in epsilons:
            for d in range(1 if e is None else a.draws):
                t0 = time.perf_counter()
                sel = rescore(cfg, setting, a.data, res, e, d, work, project_dim=k, pooling=a.pooling)
                if e is None and k is None and a.pooling == "auto":  # the store reproduces the study's own statistics round
                    own = res["methods"]
                    off = [m for m in stat_methods() if not _same(sel["scores"][m], own[m]["scores"])]
                    if off:
                        raise SystemExit(f"{setting}: re-scored {off} differ from the study's: a stale feature store?")
                elif e is not None and e not in report:
                    report[e] = sel["privacy"]
                for m in methods:
                    q = quality_of(truth, sel["scores"][m], a.tie_tol)
                    rows.append({"data": res["data"], "partition": res["partition"], "seed": res["seed"],
                                 "epsilon": e, "draw": d, "method": m, **{k: q.get(k) for k in (
                                     "kendall_tau", "weighted_tau", "top1_regret", "chosen", "best")}})
                print(f"{setting.relative_to(a.runs)} eps {e} draw {d}: {time.perf_counter() - t0:.0f}s, "
                      f"logme tau {rows[-len(methods)]['kendall_tau']:.2f}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{stem}.json").write_text(json.dumps({"rows": rows, "report": {str(k): v for k, v in report.items()},
                                                    "tie_tol": a.tie_tol}, indent=1))
    (a.out / f"{stem}.md").write_text(table(rows, epsilons, methods, report, k, a.pooling))
    print(f"wrote {a.out / f'{stem}.md'}, {a.out / f'{stem}.json'}")
    return 0


def _same(a: dict, b: dict, rel: float = 1e-9) -> bool:
    def close(x, y):
        if x is None or y is None or (isinstance(x, float) and math.isnan(x)):
            return (x is None or math.isnan(x)) and (y is None or math.isnan(y))
        return abs(x - y) <= rel * max(1.0, abs(x), abs(y))
    return set(a) == set(b) and all(close(a[k], b[k]) for k in a)


if __name__ == "__main__":
    raise SystemExit(main())
