"""``vista compare PATH_OR_GROUP ...``: compare the runs of a sweep.

Reads run directories (``metrics.jsonl``, ``summary.json``, ``config.yaml``,
``.hydra/overrides.yaml``) under the given paths, or the runs of a sweep by its group name
(local sweep directories under ``--root``; W&B's runs of that group when you are logged in,
or with ``--wandb``). Runs are grouped into configurations by their overrides minus the seed
(and minus paths and recorder settings), or by the config keys that vary between runs when
there are no Hydra overrides, or by ``--by KEY,...``. For every configuration it reports
the final and the best value of each metric, mean +/- std over seeds, prints the table,
writes it as ``compare.csv`` and ``compare.md``, and plots ``curves_<metric>.png`` (metric
vs round, mean and std band per configuration) and ``final_<metric>.png`` (final metric per
configuration with std error bars).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

DEFAULT_METRICS = ("test_accuracy", "test_macro_f1", "test_loss", "train_loss")
# not part of what a configuration *is*: ignored when grouping runs
IGNORED_KEYS = ("seed", "paths.", "recorder", "hydra.", "dataset.data_file", "partition.file", "model.path",
                "model.hub_dir", "scheduler.", "experiment_name")
RUN_FILES = ("metrics.jsonl", "summary.json")


@dataclass
class Run:
    name: str
    config: dict[str, Any]  # flattened, dotted keys
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] | None = None
    path: Path | None = None

    @property
    def status(self) -> str:
        if not self.summary:
            return "running" if self.rows else "missing"
        return str(self.summary.get("status", "finished"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.summary.get("seed"))


# -- loading -------------------------------------------------------------------------------------
def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = d if d is None or isinstance(d, (bool, int, float, str)) else json.dumps(d, default=str)
    return out


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def load_run(run_dir: Path) -> Run:
    rows = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass  # a line cut short by a killed job
    except OSError:
        pass
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    config = flatten(_yaml(run_dir / "config.yaml") or {})
    overrides = _yaml(run_dir / ".hydra" / "overrides.yaml")
    return Run(run_dir.name, config, rows, summary if isinstance(summary, dict) else {},
               [str(o) for o in overrides] if isinstance(overrides, list) else None, run_dir)


def find_run_dirs(path: Path) -> list[Path]:
    if any((path / f).is_file() for f in RUN_FILES):
        return [path]
    found = {p.parent for f in RUN_FILES for p in path.rglob(f) if "wandb" not in p.relative_to(path).parts}
    found |= {p.parent.parent for p in path.rglob(".hydra/overrides.yaml")
              if "wandb" not in p.relative_to(path).parts and p.parent.parent != path}
    return sorted(found, key=lambda p: (str(p.parent), _num(p.name), p.name))


def _num(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def find_group(group: str, roots: Iterable[Path]) -> list[Path]:
    """Run directories of the sweep ``group``: a sweep directory of that name under the roots,
    or runs whose ``config.yaml`` has ``recorder.group: <group>``."""
    dirs: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for cand in [root / group, *root.rglob(group)]:
            if cand.is_dir():
                dirs += find_run_dirs(cand)
        if not dirs:
            for cfg in root.rglob("config.yaml"):
                if ".hydra" in cfg.parts or "wandb" in cfg.parts:
                    continue
                if flatten(_yaml(cfg) or {}).get("recorder.group") == group:
                    dirs.append(cfg.parent)
    return sorted(set(dirs), key=lambda p: (str(p.parent), _num(p.name), p.name))


def load_wandb_group(group: str, project: str | None, entity: str | None, metrics: Iterable[str]) -> list[Run]:
    """The runs of a W&B group (needs a login and the network)."""
    import os

    import wandb

    api = wandb.Api()
    entity = entity or os.environ.get("WANDB_ENTITY") or api.default_entity
    project = project or os.environ.get("WANDB_PROJECT") or "vista"
    runs = []
    for r in api.runs(f"{entity}/{project}", filters={"group": group}):
        keys = ["round", *metrics]
        rows = [dict(h) for h in r.scan_history(keys=None)]
        rows = [{k: h[k] for k in keys if k in h} for h in rows if any(m in h for m in metrics)]
        for h in rows:
            h.setdefault("round", h.get("_step"))
        summary = {k: v for k, v in dict(r.summary).items() if not k.startswith("_")}
        state = {"finished": "finished", "running": "running"}.get(r.state, "failed")
        summary.setdefault("status", summary.get("status", state))
        runs.append(Run(r.name, flatten(dict(r.config)), rows, summary, None, None))
    return runs


# -- grouping and statistics -------------------------------------------------------------------------
def _ignored(key: str, extra: Iterable[str] = ()) -> bool:
    key = key.lstrip("+~")
    return any(key == p or (p.endswith(".") and key.startswith(p)) or key.startswith(p + ".")
               for p in (*IGNORED_KEYS, *extra))


def item(key: str, value: Any) -> str:
    """``key=value``, with a group's ``_target_`` shown as the group and the class name
    (``peft._target_=vista.peft.LoraSpec`` reads ``peft=LoraSpec``)."""
    if key.endswith("._target_") and isinstance(value, str):
        return f"{key[: -len('._target_')]}={value.rsplit('.', 1)[-1]}"
    return f"{key}={value}"


def config_items(run: Run, varying: list[str], by: list[str] | None, ignore: Iterable[str]) -> list[str]:
    """What makes a run's configuration: ``key=value`` items (its overrides minus the seed,
    paths and recorder settings; or the config keys that vary between the runs; or ``by``)."""
    if by:
        return [item(k, run.config.get(k)) for k in by]
    if run.overrides is not None:
        return sorted({o.lstrip("+~") for o in run.overrides if not _ignored(o.split("=", 1)[0], ignore)})
    return [item(k, run.config.get(k)) for k in varying]


def varying_keys(runs: list[Run], ignore: Iterable[str]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    return [k for k in keys if not _ignored(k, ignore) and len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _higher_is_better(metric: str) -> bool:
    return "loss" not in metric and "error" not in metric and "perplexity" not in metric


def _num_or_none(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def run_values(run: Run, metric: str) -> tuple[float | None, float | None]:
    """(final, best) of a metric in one run."""
    series = [x for x in (_num_or_none(r.get(metric)) for r in run.rows) if x is not None]
    final = series[-1] if series else _num_or_none(run.summary.get(metric))
    if series:
        best = max(series) if _higher_is_better(metric) else min(series)
    else:
        best = _num_or_none(run.summary.get(f"best_{metric}", run.summary.get(metric)))
    return final, best


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


@dataclass
class ConfigResult:
    label: str
    runs: list[Run]
    failed: list[Run]
    stats: dict[str, tuple[float | None, float | None]]  # "final_<m>" / "best_<m>" -> (mean, std)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


def common_items(runs: list[Run], by: list[str] | None = None, ignore: Iterable[str] = ()) -> list[str]:
    """The overrides all runs share (left out of the configuration labels)."""
    varying = varying_keys(runs, list(ignore))
    items = [set(config_items(r, varying, by, list(ignore))) for r in runs]
    if not items or len({frozenset(i) for i in items}) == 1:
        return []
    return sorted(set.intersection(*items))


def compare(runs: list[Run], metrics: list[str], by: list[str] | None = None,
            ignore: Iterable[str] = ()) -> list[ConfigResult]:
    ignore = list(ignore)
    varying = varying_keys(runs, ignore)
    items = [config_items(r, varying, by, ignore) for r in runs]
    common = set.intersection(*map(set, items)) if items else set()
    if len({tuple(i) for i in items}) > 1:  # label by what differs; the common part is shown once
        items = [[x for x in i if x not in common] for i in items]
    groups: dict[str, list[Run]] = {}
    for r, i in zip(runs, items):
        groups.setdefault(",".join(i) or "(defaults)", []).append(r)
    out = []
    for label, members in groups.items():
        ok = [r for r in members if r.status not in ("failed", "interrupted", "missing")]
        failed = [r for r in members if r not in ok]
        stats = {}
        for m in metrics:
            finals, bests = zip(*[run_values(r, m) for r in ok]) if ok else ((), ())
            stats[f"final_{m}"] = mean_std([x for x in finals if x is not None])
            stats[f"best_{m}"] = mean_std([x for x in bests if x is not None])
        out.append(ConfigResult(label, ok, failed, stats))
    if metrics:
        key, sign = f"final_{metrics[0]}", -1 if _higher_is_better(metrics[0]) else 1
        out.sort(key=lambda c: (c.stats[key][0] is None, sign * (c.stats[key][0] or 0.0), c.label))
    return out


def pick_metrics(runs: list[Run], requested: list[str] | None) -> list[str]:
    if requested:
        return requested
    present = {k for r in runs for row in r.rows for k in row} | {k for r in runs for k in r.summary}
    return [m for m in DEFAULT_METRICS if m in present]


# -- output -------------------------------------------------------------------------------------
def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def table_rows(results: list[ConfigResult], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["configuration", "runs", "failed", *[f"{w} {m}" for m in metrics for w in ("final", "best")]]
    body = [[c.label, str(len(c.runs)), str(len(c.failed)),
             *[_fmt(*c.stats[f"{w}_{m}"]) for m in metrics for w in ("final", "best")]] for c in results]
    return head, body


def markdown(results: list[ConfigResult], metrics: list[str]) -> str:
    head, body = table_rows(results, metrics)
    esc = [[x.replace("|", "\\|") for x in row] for row in body]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines) + "\n"


def plain(results: list[ConfigResult], metrics: list[str]) -> str:
    head, body = table_rows(results, metrics)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = lambda row: "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)]) + "\n"


def write_csv(path: Path, results: list[ConfigResult], metrics: list[str]) -> None:
    cols = ["configuration", "runs", "failed", "seeds"]
    for m in metrics:
        for w in ("final", "best"):
            cols += [f"{w}_{m}_mean", f"{w}_{m}_std"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for c in results:
            row: list[Any] = [c.label, len(c.runs), len(c.failed), " ".join(map(str, c.seeds))]
            for m in metrics:
                for which in ("final", "best"):
                    mean, std = c.stats[f"{which}_{m}"]
                    row += ["" if mean is None else mean, "" if std is None else std]
            w.writerow(row)


def plot(out: Path, results: list[ConfigResult], metric: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in results:
        by_round: dict[float, list[float]] = {}
        for r in c.runs:
            for row in r.rows:
                x, y = _num_or_none(row.get("round")), _num_or_none(row.get(metric))
                if x is not None and y is not None:
                    by_round.setdefault(x, []).append(y)
        if not by_round:
            continue
        xs = sorted(by_round)
        mean = np.array([np.mean(by_round[x]) for x in xs])
        std = np.array([np.std(by_round[x]) for x in xs])
        (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=c.label)
        if len(c.runs) > 1:
            ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per round (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    written.append(out / f"curves_{metric}.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    have = [c for c in results if c.stats[f"final_{metric}"][0] is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(have) + 2), 4.5))
    means = [c.stats[f"final_{metric}"][0] for c in have]
    stds = [c.stats[f"final_{metric}"][1] or 0.0 for c in have]
    ax.bar(range(len(have)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(have)))
    ax.set_xticklabels([c.label for c in have], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"final {metric}")
    ax.set_title(f"final {metric} per configuration (error bars: std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written.append(out / f"final_{metric}.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


# -- CLI ------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vista compare", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="PATH_OR_GROUP",
                   help="a sweep directory, run directories, or a sweep's group name")
    p.add_argument("--metric", "-m", action="append", help="metric to compare (repeatable; "
                   f"default: those of {', '.join(DEFAULT_METRICS)} present)")
    p.add_argument("--by", help="group runs by these config keys (comma-separated) instead of their overrides")
    p.add_argument("--ignore", action="append", default=[], help="also ignore this config key when grouping")
    p.add_argument("--out", "-o", type=Path, help="output directory (default: <sweep dir>/compare, "
                   "or ./compare/<group>)")
    p.add_argument("--root", action="append", type=Path, help="where to look for a group's sweep "
                   "directories (default: ./multirun and ./outputs)")
    p.add_argument("--wandb", action="store_true", help="read a group's runs from W&B (needs a login)")
    p.add_argument("--project", help="W&B project (default: WANDB_PROJECT, else vista)")
    p.add_argument("--entity", help="W&B entity (default: WANDB_ENTITY, else yours)")
    p.add_argument("--no-plots", action="store_true", help="only the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    roots = args.root or [Path("multirun"), Path("outputs")]
    runs: list[Run] = []
    out_default: Path | None = None
    for src in args.sources:
        path = Path(src)
        if path.exists():
            dirs = find_run_dirs(path)
            if not dirs:
                print(f"vista compare: no run directories (metrics.jsonl / summary.json) under {path}", file=sys.stderr)
                return 1
            out_default = out_default or (path / "compare" if len(dirs) > 1 or dirs[0] != path else path.parent / "compare")
            runs += [load_run(d) for d in dirs]
            continue
        dirs = [] if args.wandb else find_group(src, roots)
        if dirs:
            runs += [load_run(d) for d in dirs]
        else:
            from vista.recording.wandb_sink import effective_mode

            if not args.wandb and effective_mode("online") != "online":
                print(f"vista compare: {src!r} is neither a path nor a sweep group under "
                      f"{', '.join(map(str, roots))}; (W&B groups need a login: wandb login)", file=sys.stderr)
                return 1
            try:
                found = load_wandb_group(src, args.project, args.entity, args.metric or DEFAULT_METRICS)
            except Exception as err:
                print(f"vista compare: could not read W&B group {src!r}: {type(err).__name__}: {err}", file=sys.stderr)
                return 1
            if not found:
                print(f"vista compare: no runs in W&B group {src!r}", file=sys.stderr)
                return 1
            runs += found
        out_default = out_default or Path("compare") / src
    metrics = pick_metrics(runs, args.metric)
    if not metrics:
        print("vista compare: the runs have no metrics to compare (give --metric)", file=sys.stderr)
        return 1
    results = compare(runs, metrics, args.by.split(",") if args.by else None, args.ignore)
    out = args.out or out_default or Path("compare")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "compare.csv", results, metrics)
    common = common_items(runs, args.by.split(",") if args.by else None, args.ignore)
    header = f"Common to all runs: `{','.join(common)}`\n\n" if common else ""
    (out / "compare.md").write_text(header + markdown(results, metrics))
    written = [out / "compare.csv", out / "compare.md"]
    if not args.no_plots:
        for m in metrics:
            written += plot(out, results, m)
    if common:
        print(f"common to all runs: {','.join(common)}")
    print(plain(results, metrics), end="")
    failed = sum(len(c.failed) for c in results)
    print(f"{len(runs)} runs, {len(results)} configurations" + (f", {failed} failed runs" if failed else ""))
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
