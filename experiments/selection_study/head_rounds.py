"""How many rounds the head probe needs: ``python experiments/selection_study/head_rounds.py RUNS
--data DATA --hub HUB --work WORK [--rounds 12] [--out DIR]``.

For every study run under RUNS (``result.json``) that has ``head_shipped``, runs ``selection=head_probe``
on auto's shipped sample (the setting's own data, partition, seed and budget) for ``--rounds`` rounds
into ``WORK/<run>/``. The probe trains at a constant rate with each round's seeds fixed, so one run
gives its curve at every round up to ``--rounds``: the first rounds must equal the curve the study
recorded (``head_shipped``, 6 rounds), or the script stops. Reports, per number of rounds, head_probe
(the held-out accuracy then) and head_gbc (with the run's recorded auto_shipped values, the same texts)
against the truth of the run's setting (its seeds' mean, ties within 0.01, as ``table.py``): mean
tau-b over settings, the best pick, mean and worst regret. Writes ``head_rounds.md`` and
``head_rounds.json`` to ``--out`` (default: RUNS's parent's ``head_rounds/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from statistics import mean

from vista.build import candidate_spec
from vista.drivers.study import SHIPPED, SHIPPED_AUTO, StudyConfig, method_quality, run_name, setting_parts
from vista.drivers.study import _run_or_reuse as run_or_reuse
from vista.drivers.study_budget import BUDGET_FIELDS, UNSAID
from vista.drivers.study_head import HEAD_SHIPPED
from vista.selection.head_scores import head_gbc_rule
from vista.selection.privacy import PrivacySpec
from vista.selection.spec import SelectionSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from table import load  # noqa: E402

TIE_TOL = 0.01


def probe_curves(result: dict, cfg: StudyConfig, data: Path, work: Path, rounds: int,
                 keep_features: bool = False, centre: bool = False) -> dict[str, list[dict]]:
    """The probe's curves on the run's shipped sample, ``rounds`` long (reused when already run);
    ``keep_features``: the clients' sampled features kept in ``WORK/<run>/features`` (a feature store,
    read back when there); ``centre``: the centred probe (``selection.head_centre``, into ``head_<rounds>_centred``)."""
    return probe_run(result, cfg, data, work, rounds, keep_features, centre)["head_curves"]


def probe_run(result: dict, cfg: StudyConfig, data: Path, work: Path, rounds: int, keep_features: bool = False,
              centre: bool = False, name: str = "head_probe", privacy: PrivacySpec | None = None,
              seed: int | None = None, tag: str | None = None) -> dict:
    """:func:`probe_curves`'s run, its whole ``selection`` record; ``name``: the selection method run
    (``head_pair``: both probes, into ``head_<rounds>_pair``); ``privacy`` (default the study's guard),
    ``seed`` (default the run's: its text sample, probe and noise draws) and ``tag`` (the run's folder
    under ``WORK/<run>``) for a DP re-run (``privacy_head.py``)."""
    budget = {k: result["budget"].get(k, UNSAID.get(k)) for k in BUDGET_FIELDS}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in budget.items() if v is not None})
    out = work / run_name(result)
    parts = setting_parts(cfg, data / f"{result['data']}_data.h5", result["partition"], result["seed"], out)
    spec = SelectionSpec(name=name, candidates=cfg.candidates, privacy=privacy or cfg.privacy, head_rounds=rounds,
                         head_centre=centre, feature_store=str(out / "features") if keep_features else None,
                         **SHIPPED_AUTO)
    tag = tag or f"head_{rounds}" + ("_centred" if centre else "") + ("" if name == "head_probe" else f"_{name[5:]}")
    return run_or_reuse(dataclasses.replace(parts, selection=spec, seed=result["seed"] if seed is None else seed),
                        out / tag)


def judged(result: dict, method: str, scores: dict, base: dict) -> list[dict]:
    """``method``'s ``scores`` against the run's own truth and its setting's (its seeds' mean, table.py's),
    ties within :data:`TIE_TOL`: one row each, ``base`` first."""
    out = []
    for truth in ("run", "setting"):
        q = method_quality(method, result["truth" if truth == "run" else "truth_mean"], scores, TIE_TOL)
        out.append({**base, "method": method, "truth": truth, "scores": scores, "chosen": q["chosen"],
                    "best": q["best"], "kendall_tau": q["kendall_tau"], "kendall_tau_max": q["kendall_tau_max"],
                    "top1_regret": q["top1_regret"]})
    return out


def judged_line(r: dict, equal: str) -> str:
    """One :func:`judged` row as a markdown table row, ``equal`` in its last cell."""
    return (f"| {r['data']} {r['partition']} seed {r['seed']} | {r['method']} | {r['truth']} | {r['chosen']} | "
            f"{r['best']} | {r['top1_regret']:.4f} | {r['kendall_tau']:.2f} | {r['kendall_tau_max']:.2f} | {equal} |")


def live_runs(argv: list[str] | None, doc: str, entry: str,
              run_rows: Callable[[dict, StudyConfig, Path, Path], list[dict]]) -> tuple[list[dict], list[str], Path]:
    """A live-check script's loop (``centred_live.py``, ``pair_live.py``): its arguments parsed
    (:func:`probe_parser`, ``--out`` and ``--earlier``), ``run_rows`` on every run under RUNS that holds
    ``entry`` and kept sampled features in ``WORK/<run>/features``; the rows, the runs skipped, and the
    output folder (``--out``, default WORK/out, made). ``--earlier JSON``: an earlier output of the same
    script, whose rows stand in for the runs without kept features here (a fresh machine keeps only the
    features of the runs made on it): their live scores and checks kept, judged again against today's
    truths, since a new seed moves its setting's truth (:func:`rejudged`)."""
    p = probe_parser(doc)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--earlier", type=Path, default=None,
                   help="an earlier json of this script: its rows for runs without kept features here")
    a = p.parse_args(argv)
    cfg = probe_config(a)
    earlier = json.loads(a.earlier.read_text())["rows"] if a.earlier else []
    rows, skipped = [], []
    for result in load(a.runs, TIE_TOL):
        if entry in result["methods"] and (a.work / run_name(result) / "features").is_dir():
            rows += run_rows(result, cfg, a.data, a.work)
            print(f"{run_name(result)}: done", flush=True)
        elif entry in result["methods"] and (kept := rejudged(result, earlier)):
            rows += kept
            print(f"{run_name(result)}: the earlier rows, judged again", flush=True)
        else:
            skipped.append(run_name(result))
    if not rows:
        raise SystemExit(f"no run under {a.runs} has {entry} and kept sampled features in {a.work}"
                         + (f" or rows in {a.earlier}" if a.earlier else ""))
    out = a.out or a.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    return rows, skipped, out


def rejudged(result: dict, earlier: list[dict]) -> list[dict]:
    """The run's rows of an earlier live check, each method's live scores judged again by :func:`judged`
    against the run's truths as they stand (the old row as the base: judged's fields replace its verdict,
    the rest is kept); none when the earlier check lacks the run."""
    mine = [r for r in earlier if (r["data"], r["partition"], r["seed"]) ==
            (result["data"], result["partition"], result["seed"]) and r["truth"] == "run"]
    return [row for r in mine for row in judged(result, r["method"], r["scores"], r)]


def check_prefix(result: dict, curves: dict[str, list[dict]]) -> None:
    """The longer run's first rounds are the study's recorded curve, float for float."""
    kept = result["methods"][HEAD_SHIPPED]["curves"]
    off = [c for c in kept if curves[c][: len(kept[c])] != kept[c]]
    if off:
        raise SystemExit(f"{run_name(result)}: the probe's first rounds differ from head_shipped's for {off}")


def rows_of(result: dict, curves: dict[str, list[dict]], rounds: int) -> list[dict]:
    truth, auto = result["truth_mean"], result["methods"][SHIPPED]["scores"]
    rows = []
    for r in range(1, rounds + 1):
        head = {c: curve[r]["val_accuracy"] for c, curve in curves.items()}
        for method, scores in (("head_probe", head), ("head_gbc", head_gbc_rule(head, auto))):
            q = method_quality(method, truth, scores, TIE_TOL)
            rows.append({"data": result["data"], "partition": result["partition"], "seed": result["seed"],
                         "rounds": r, "method": method, "kendall_tau": q["kendall_tau"],
                         "kendall_tau_max": q["kendall_tau_max"], "top1_regret": q["top1_regret"],
                         "chosen": q["chosen"], "best": q["best"]})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per method and rounds: tau-b and its cap as the mean over settings of the seeds' mean; picks and regret over runs."""
    out = []
    for method in ("head_probe", "head_gbc"):
        for r in sorted({x["rounds"] for x in rows}):
            mine = [x for x in rows if x["method"] == method and x["rounds"] == r]
            by: dict[tuple[str, str], list[dict]] = {}
            for x in mine:
                by.setdefault((x["data"], x["partition"]), []).append(x)
            # tau-b is undefined (NaN) in a run where the probe ties every candidate (all at the majority rate)
            defined = {k: [x for x in v if not math.isnan(x["kendall_tau"])] for k, v in by.items()}
            out.append({"method": method, "rounds": r, "runs": len(mine), "settings": len(by),
                        "tau_undefined": sum(math.isnan(x["kendall_tau"]) for x in mine),
                        "kendall_tau": mean(mean(x["kendall_tau"] for x in v) for v in defined.values() if v),
                        "kendall_tau_max": mean(mean(x["kendall_tau_max"] for x in v) for v in by.values()),
                        "picked_best": sum(x["top1_regret"] <= 1e-12 for x in mine),
                        "mean_regret": mean(x["top1_regret"] for x in mine),
                        "worst_regret": max(x["top1_regret"] for x in mine),
                        "worst_run": max(mine, key=lambda x: x["top1_regret"])})
    return out


def markdown(summ: list[dict], rounds: int) -> str:
    lines = ["# How many rounds the head probe needs", "",
             f"selection=head_probe on auto's shipped sample of every run, {rounds} rounds (one run gives every "
             "shorter probe: a constant rate, each round's seeds fixed; its first 6 rounds equal the study's "
             "head_shipped curves, checked). head_gbc: z(head_probe) + 0.5 z(auto_shipped's gbc_prior). Against "
             "each setting's truth (its seeds' mean, ties within 0.01); tau-b and its cap: the mean over settings "
             "of the seeds' mean, over the runs where it is defined (undefined: every candidate tied, all at the "
             "majority rate); picks and regret over runs. The shipped probe runs 6 rounds.", "",
             "| method | rounds | tau-b | tau-b undefined | cap | best pick | mean regret | worst regret (run) |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summ:
        w = s["worst_run"]
        where = f" ({w['data']} {w['partition']} seed {w['seed']})" if s["worst_regret"] > 0 else ""
        lines.append(f"| {s['method']} | {s['rounds']} | {s['kendall_tau']:.2f} | {s['tau_undefined']} runs | "
                     f"{s['kendall_tau_max']:.2f} | "
                     f"{s['picked_best']} of {s['runs']} | {s['mean_regret']:.3f} | {s['worst_regret']:.3f}{where} |")
    return "\n".join(lines) + "\n"


def probe_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a script that re-runs the committed runs' probes (this one, refresh_head.py)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("--data", type=Path, required=True, help="the study's prepared corpora (prepare.py --out)")
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--work", type=Path, required=True, help="where the probe's runs go (reused when there)")
    p.add_argument("--candidates", nargs="+", default=["minilm", "mpnet", "smollm2", "minilm_l3", "random_bert"])
    p.add_argument("--workers", type=int, default=1)
    return p


def probe_config(a: argparse.Namespace) -> StudyConfig:
    """The study configuration :func:`probe_parser`'s arguments name (candidates from the hub, workers)."""
    cands = tuple(candidate_spec(c, {"model_hub": str(a.hub)}) for c in a.candidates)
    return StudyConfig(candidates=cands, num_workers=a.workers)


def main(argv: list[str] | None = None) -> int:
    p = probe_parser(__doc__)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    cfg = probe_config(a)
    rows = []
    for result in load(a.runs, TIE_TOL):
        if HEAD_SHIPPED not in result["methods"]:
            continue
        curves = probe_curves(result, cfg, a.data, a.work, a.rounds)
        check_prefix(result, curves)
        rows += rows_of(result, curves, a.rounds)
        print(f"{run_name(result)}: done", flush=True)
    out = a.out or a.runs.parent / "head_rounds"
    out.mkdir(parents=True, exist_ok=True)
    summ = summary(rows)
    (out / "head_rounds.json").write_text(json.dumps({"rows": rows, "summary": summ}, indent=1))
    (out / "head_rounds.md").write_text(markdown(summ, a.rounds))
    print(f"wrote {out / 'head_rounds.md'} ({len({run_name(r) for r in rows})} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
