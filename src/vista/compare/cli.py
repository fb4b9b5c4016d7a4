"""``vista compare PATH_OR_GROUP ...``: compare the runs of a sweep.

Reads run directories (``metrics.jsonl``, ``summary.json``, ``config.yaml``,
``.hydra/overrides.yaml``) under the given paths, or the runs of a sweep by its group name
(local sweep directories under ``--root``; W&B's runs of that group when you are logged in,
or with ``--wandb``). Runs are grouped into configurations by their overrides minus the seed
(and minus paths and recorder settings), or by the config keys that vary between runs when
there are no Hydra overrides, or by ``--by KEY,...`` (a config group such as ``peft`` reads
as the option the run used: ``peft=lora``). For every configuration it reports the final and
the best value of each metric, mean +/- std over seeds, prints the table, writes it as
``compare.csv`` and ``compare.md``, and plots ``curves_<metric>.png`` (metric vs round, mean
and std band per configuration) and ``final_<metric>.png`` (final metric per configuration
with std error bars).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vista.compare.group import DEFAULT_METRICS, common_items, compare, pick_metrics
from vista.compare.load import (
    Run,
    find_group,
    find_run_dirs,
    load_run,
    load_wandb_group,
)
from vista.compare.render import markdown, plain, plot, write_csv


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vista compare", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="PATH_OR_GROUP",
                   help="a sweep directory, run directories, or a sweep's group name")
    p.add_argument("--metric", "-m", action="append", help="metric to compare (repeatable; "
                   f"default: those of {', '.join(DEFAULT_METRICS)} present)")
    p.add_argument("--by", help="group runs by these config keys (comma-separated) instead of their "
                   "overrides; a config group (peft, aggregator, ...) by the option each run used")
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
            except Exception as err:  # noqa: BLE001 - any failure of the W&B API is reported, not raised
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
    by = args.by.split(",") if args.by else None
    results = compare(runs, metrics, by, args.ignore)
    out = args.out or out_default or Path("compare")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "compare.csv", results, metrics)
    common = common_items(runs, by, args.ignore)
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
