"""Does another federated budget bring a candidate to its centralised level? Issue 16.2 asks the
ground truth for "enough rounds that MiniLM reaches its centralised level within a few points":
``python experiments/selection_study/budget_probe.py PROBE_RUNS --grid RUNS --centralised JSON [JSON ...]``.

``PROBE_RUNS`` holds ``run_study.py`` runs of the candidate under the budget probed (e.g.
``--local-epochs 3``), its test split scored every round (``--test-every 1``), or run directories
of ``python -m vista.main`` (``config.yaml`` and ``metrics.jsonl``, e.g. under another server rule:
``aggregator=fedavgm``), read as the same setting when their corpus, partition and seed are the
study's; a run whose budget equals the grid's (FedAvg included) must reproduce the grid's curve of
the candidate, which the report checks. Per probed setting
this reports the candidate's test accuracy each round; the grid's truth for the same corpus,
partition and seed (``--grid``: the grid's ``result.json`` files), trained under the grid's
budget; the centralised level (``centralised.py``'s ``centralised.json``: the best of its epochs
within the grid's budget); the probe's gap to that level after its last round, whether that is
within ``--tolerance`` (16.2's "a few points"), and the first round it is; and the training the
probe costs against the grid's run of the candidate (backward passes, and seconds, which are
noisy); and readings of the probe's truth that one round's luck moves less (:func:`settled`: the
mean over its last ``--last`` rounds, and the test accuracy at its best validation round). A
run under a learning-rate schedule (``fl.lr_schedule``) names it in its budget. Writes
``budget_probe.md`` and ``budget_probe.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from vista.drivers.study import PARTITIONS, run_name
from vista.drivers.study_budget import BUDGET_FIELDS, UNSAID, budget_differs
from vista.drivers.study_truth import best_validation_round
from vista.fl.spec import FLSpec


def _load(runs: Path) -> dict[str, dict[str, Any]]:
    """Each run's ``result.json`` by its :func:`run_name`, so a probe finds the grid's run of its setting."""
    results = (json.loads(p.read_text()) for p in sorted(runs.glob("*/*/seed*/result.json")))
    return {run_name(r): r for r in results}


def _server_rule(agg: dict[str, Any]) -> str:
    """``FedAvgM(server_lr=1.0, momentum=0.9)`` from a run's ``aggregator`` config."""
    params = ", ".join(f"{k}={v}" for k, v in agg.items() if k != "_target_")
    return f"{agg['_target_'].rsplit('.', 1)[-1]}({params})"


def main_run(run_dir: Path) -> dict[str, Any]:
    """A ``vista.main`` FedPEFT run as a probe's result: its one model's curve (the last row of each
    round in ``metrics.jsonl``), the study's name of its partition, and its budget with the server
    rule beside the study's budget fields."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    part = cfg["partition"]
    kind, alpha = part.get("kind"), part.get("alpha")
    names = [n for n, (k, a) in PARTITIONS.items() if k == kind and (a is None or float(a) == float(alpha or 0))]
    if len(names) != 1:
        raise ValueError(f"{run_dir}: partition {kind} alpha {alpha} is not one of the study's "
                         f"({', '.join(PARTITIONS)})")
    by_round = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_round[row["round"]] = row
    curve = [by_round[r] for r in sorted(by_round)]
    fl, name = cfg["fl"], cfg["model"]["name"]
    budget = {**{k: fl[k] for k in BUDGET_FIELDS if k in fl and k != "lr_schedule"}, "clients": part["clients"],
              "lora_r": cfg["peft"]["r"],
              "aggregator": _server_rule(cfg["aggregator"])}
    if fl.get("lr_schedule", UNSAID["lr_schedule"]) != UNSAID["lr_schedule"]:  # a budget item only off the grid's
        budget["lr_schedule"] = _schedule(fl)
    return {"data": cfg["dataset"]["name"], "partition": names[0], "seed": cfg["seed"], "budget": budget,
            "curves": {name: curve}, "truth": {name: curve[-1]["test_accuracy"]}, "run_dir": str(run_dir)}


def load_probes(runs: Path) -> list[dict[str, Any]]:
    """The probe's runs: ``run_study.py``'s ``result.json`` files and ``vista.main`` run directories."""
    return [*_load(runs).values(), *(main_run(p.parent) for p in sorted(runs.glob("**/metrics.jsonl"))
                                     if (p.parent / "config.yaml").is_file())]


def reproduces(curve: list[dict[str, Any]], grid_curve: list[dict[str, Any]]) -> bool:
    """The same training as the grid's: validation accuracy and loss equal every round (loss to 1e-6).
    A longer run of the grid's budget passes its first rounds (the learning rate has no schedule)."""
    if len(curve) != len(grid_curve):
        return False
    return all(a.get("client_val_accuracy_mean") == b.get("client_val_accuracy_mean")
               and abs(a["val_loss"] - b["val_loss"]) <= 1e-6 * abs(b["val_loss"]) for a, b in zip(curve, grid_curve))


def _spent(curve: list[dict[str, Any]], key: str) -> float:
    return float(sum(r.get(key, 0) for r in curve))


def _schedule(fl: dict[str, Any]) -> str:
    """A run's schedule as the study's budget names it (``cosine``, as ``run_study.py
    --lr-schedule`` runs it), with the parameters it was given beyond that: ``exponential(lr_decay=0.9)``."""
    defaults = {f.name: f.default for f in dataclasses.fields(FLSpec)}
    used = {"exponential": ("lr_decay", "lr_min"), "cosine": ("lr_min", "lr_horizon")}.get(fl["lr_schedule"], ())
    given = [f"{k}={fl[k]}" for k in used if fl.get(k, defaults[k]) != defaults[k]]
    return f"{fl['lr_schedule']}({', '.join(given)})" if given else fl["lr_schedule"]


def settled(curve: list[dict[str, Any]], last: int, level: float | None, tolerance: float,
            validation_key: str = "client_val_accuracy_mean") -> dict[str, Any]:
    """Readings of a run's truth that one round's luck moves less than the last round's (the
    eighteenth sitting saw the test accuracy swing by 0.28 between two rounds under label skew):
    the mean test accuracy over the ``last`` rounds, how many of them are within ``tolerance``
    of the level, and the test accuracy at the round of best validation accuracy (of equal
    rounds the later, the more trained; what a user without the test split would keep)."""
    tail = [r.get("test_accuracy") for r in curve[-last:]]
    out: dict[str, Any] = {"last": len(tail), "last_mean": None, "last_within": None,
                           "best_val_round": None, "at_best_val": None}
    if len(tail) == last and all(a is not None for a in tail):
        out["last_mean"] = sum(float(a) for a in tail) / last
        if level is not None:
            out["last_within"] = sum(float(a) >= level - tolerance for a in tail)
    if any(validation_key in r and "test_accuracy" in r for r in curve):
        n = best_validation_round(curve, validation_key)
        out["best_val_round"], out["at_best_val"] = n, float(curve[n - 1]["test_accuracy"])
    return out


def probe_row(probe: dict[str, Any], grid: dict[str, Any] | None, centralised: dict[str, Any] | None,
              candidate: str, tolerance: float, last: int = 6) -> dict[str, Any]:
    """One probed setting against the grid's run of it and the corpus's centralised level."""
    curve = probe["curves"][candidate]
    accs = [float(r["test_accuracy"]) if "test_accuracy" in r else None for r in curve]
    level = None if centralised is None else float(centralised["best_in_budget"])
    row: dict[str, Any] = {
        "data": probe["data"], "partition": probe["partition"], "seed": probe["seed"],
        "budget": probe["budget"], "test_accuracy": accs, "final": accs[-1],
        "others": {c: v for c, v in probe["truth"].items() if c != candidate},
        "centralised": None if centralised is None else centralised["centralised"], "level": level,
        "gap": None, "within": None, "first_round_within": None,
        "grid": None, "grid_budget": None, "grid_gap": None, "backward_ratio": None, "seconds_ratio": None,
        "server_rule": probe["budget"].get("aggregator", "FedAvg()"), "reproduces_grid": None,
    }
    if level is not None:
        row["gap"] = accs[-1] - level
        row["within"] = row["gap"] >= -tolerance
        row["first_round_within"] = next((i + 1 for i, a in enumerate(accs) if a is not None and a >= level - tolerance),
                                         None)
    row["settled"] = settled(curve, last, level, tolerance)
    if grid is not None and candidate in grid["truth"]:
        row["grid"], row["grid_budget"] = float(grid["truth"][candidate]), grid["budget"]
        row["grid_gap"] = None if level is None else row["grid"] - level
        g = grid.get("curves", {}).get(candidate)
        same = (not budget_differs(grid["budget"], probe["budget"], ("rounds", "aggregator"))
                and len(curve) >= len(g or ()))
        if g and same and row["server_rule"] == "FedAvg()":  # the grid's own training (perhaps longer): its curve
            row["reproduces_grid"] = reproduces(curve[: len(g)], g)
        if g and _spent(g, "backward_passes"):
            row["backward_ratio"] = _spent(curve, "backward_passes") / _spent(g, "backward_passes")
            row["seconds_ratio"] = _spent(curve, "round_seconds") / _spent(g, "round_seconds")
    return row


def _rule(row: dict[str, Any]) -> str:
    """What a probe row trains under beyond the grid's FedAvg at a constant rate: ``, FedLC(tau=1.0), lr cosine``."""
    rule = "" if row["server_rule"] == "FedAvg()" else f", {row['server_rule']}"
    return rule + (f", lr {row['budget']['lr_schedule']}" if "lr_schedule" in row["budget"] else "")


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(rows: list[dict[str, Any]], candidate: str, tolerance: float, unfinished: list[str] = (),
             last: int = 6) -> str:
    out = [f"# {candidate}: a federated budget against its centralised level", "",
           f"Probe: the budget each row names, test accuracy after each round. Grid: the same setting's truth "
           f"under the grid's budget. Level: the best centralised epoch within the grid's budget "
           f"(`centralised.py`). Within: the probe's last round is at most {tolerance} under the level. "
           f"Training: the probe's backward passes (seconds) over the grid run's, for {candidate}.", "",
           "| setting | probe budget | probe, rounds 1.. | grid | level | gap: probe (grid) | within | "
           "first round within | training x (seconds x) | others at the probe's last round |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["budget"]
        setting = f"{r['data']} {r['partition']} seed {r['seed']}"
        others = ", ".join(f"{c} {v:.3f}" for c, v in r["others"].items()) or "-"
        out.append(f"| {setting} | {b['local_epochs']} local epochs, {b['rounds']} rounds, lr {b['lr']:g}{_rule(r)} | "
                   + " ".join(_f(a) for a in r["test_accuracy"])
                   + f" | {_f(r['grid'])} | {_f(r['level'])} | {_f(r['gap'], '+.3f')} ({_f(r['grid_gap'], '+.3f')}) | "
                   + f"{'-' if r['within'] is None else ('yes' if r['within'] else 'no')} | "
                   + f"{r['first_round_within'] or '-'} | {_f(r['backward_ratio'], '.2f')} "
                   + f"({_f(r['seconds_ratio'], '.2f')}) | {others} |")
    for r in rows:
        if r["reproduces_grid"] is not None:
            n = r["grid_budget"]["rounds"]
            verdict = "reproduces" if r["reproduces_grid"] else "does NOT reproduce"
            out.append(f"\n{r['data']} {r['partition']} seed {r['seed']} under the grid's budget and FedAvg "
                       f"({r['budget']['rounds']} rounds): {verdict} the grid's curve of {candidate} over its {n} "
                       "rounds (validation accuracy and loss every round).")
    out += ["", f"Settled readings (the last round's accuracy can swing between rounds): the mean over the "
            f"last {last} rounds, how many of them are within {tolerance} of the level, and the test accuracy at "
            "the round of best validation accuracy (`client_val_accuracy_mean`; of equal rounds the later).", "",
            f"| setting | probe budget | last round | mean of the last {last} | within, of the last {last} | "
            "best validation round: test there |", "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settled"]
        at = "-" if s["best_val_round"] is None else f"{s['best_val_round']}: {s['at_best_val']:.3f}"
        out.append(f"| {r['data']} {r['partition']} seed {r['seed']} | {r['budget']['rounds']} rounds{_rule(r)} | "
                   f"{_f(r['final'])} | "
                   f"{_f(s['last_mean'])} | {'-' if s['last_within'] is None else s['last_within']} | {at} |")
    out += [f"\nNot finished, left out: {u}." for u in unfinished]
    met = [r for r in rows if r["within"]]
    out += ["", f"Within {tolerance} of the centralised level after the probe's last round: {len(met)} of "
            f"{sum(r['within'] is not None for r in rows)} settings."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", type=Path, help="run_study.py's runs under the probed budget")
    p.add_argument("--grid", type=Path, required=True, help="the grid's runs (result.json files)")
    p.add_argument("--centralised", type=Path, nargs="+", required=True,
                   help="centralised.py's centralised.json; of several, a later file's level of a corpus wins "
                        "(e.g. the 4-epoch run, then the 8-epoch one of some corpora)")
    p.add_argument("--candidate", default="minilm")
    p.add_argument("--tolerance", type=float, default=0.05, help="16.2's 'a few points'")
    p.add_argument("--last", type=int, default=6, help="the settled readings' window: the mean over the last "
                                                        "this many rounds")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    level_of: dict[str, dict[str, Any]] = {}
    for path in a.centralised:
        cen = json.loads(path.read_text())
        if cen["candidate"] != a.candidate:
            p.error(f"{path} is {cen['candidate']}'s centralised level, not {a.candidate}'s")
        level_of.update({r["corpus"]: r for r in cen["rows"]})
    grid = _load(a.grid)
    try:
        probes = load_probes(a.probe)
    except ValueError as err:
        p.error(str(err))
    probes = [r for r in probes if a.candidate in r["curves"]]
    done = [r for r in probes if len(r["curves"][a.candidate]) == r["budget"]["rounds"]]
    unfinished = [f"{r.get('run_dir', run_name(r))} ({len(r['curves'][a.candidate])} of {r['budget']['rounds']} rounds)"
                  for r in probes if r not in done]
    rows = [probe_row(r, grid.get(run_name(r)), level_of.get(r["data"]), a.candidate, a.tolerance, a.last)
            for r in done]
    if not rows:
        p.error(f"no run of {a.candidate} under {a.probe} (expected <corpus>/<partition>/seed<k>/result.json "
                "or vista.main run directories)")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "budget_probe.json").write_text(json.dumps({"candidate": a.candidate, "tolerance": a.tolerance,
                                                         "last": a.last, "rows": rows}, indent=1))
    md = markdown(rows, a.candidate, a.tolerance, unfinished, a.last)
    (a.out / "budget_probe.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
