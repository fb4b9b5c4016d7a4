"""A candidate's centralised level on the study's corpora, the reference issue 16.2 sets for the
ground truth ("enough rounds that MiniLM reaches its centralised level within a few points"):
``python experiments/selection_study/centralised.py --data WORK/data --hub HUB --runs RUNS --out OUT``.

Centralised is the study's own run with one client that holds every training text: the same
texts (less the same validation share), length, batch, learning rate and LoRA, one epoch a
round, the test split scored every epoch, through the same FedPEFT driver (FedAvg over one client
is that client's model). Beside each corpus's epochs stands the candidate's federated truth in
``--runs`` (the grid's ``result.json`` files) per partition, the mean over its seeds, and the gap
to the best centralised epoch within the grid's budget. Writes ``centralised.md`` and
``centralised.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from vista.build import candidate_spec
from vista.drivers.fedpeft import run_fedpeft_session
from vista.drivers.study import StudyConfig, setting_parts

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from table import seed_truth, settings  # noqa: E402


def centralised_curve(cfg: StudyConfig, data_file: Path, work: Path) -> list[float]:
    """Test accuracy after each of ``cfg.rounds`` epochs of ``cfg.candidates[0]`` on one client."""
    one = dataclasses.replace(cfg, clients=1, clients_per_round=1)
    parts = setting_parts(one, data_file, "iid", 0, work)
    parts = dataclasses.replace(parts, fl=dataclasses.replace(parts.fl, val_fraction=cfg.val_fraction))
    _, state = run_fedpeft_session(parts, work / "run")
    return [float(r["test_accuracy"]) for r in state.history]


def federated_truths(runs: Path | None, corpus: str, candidate: str) -> dict[str, dict[str, Any]]:
    """The candidate's truth per partition of ``corpus`` in the grid's runs: the seeds' mean, as
    the table pools them (``table.seed_truth``)."""
    if runs is None:
        return {}
    results = [json.loads(p.read_text()) for p in sorted((runs / corpus).glob("*/seed*/result.json"))]
    truths = {part: (seed_truth(group)[0], len(group)) for (_, part), group in settings(results).items()}
    return {part: {"mean": truth[candidate], "seeds": n} for part, (truth, n) in truths.items() if candidate in truth}


def markdown(rows: list[dict[str, Any]], candidate: str, budget: int) -> str:
    epochs = max(len(r["centralised"]) for r in rows)
    out = [f"# {candidate}: centralised against federated", "",
           f"Centralised: one client holding every training text, one epoch a round, test accuracy after each "
           f"epoch. Federated: the grid's truth (mean over seeds) per partition, and its gap to the best of "
           f"the first {budget} centralised epochs (the level).", "",
           "| corpus | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1)) +
           f" | best in {budget} | federated (seeds): gap |", "|---|" + "---|" * (epochs + 2)]
    for r in rows:
        fed = "; ".join(f"{p} {v['mean']:.3f} ({v['seeds']}): {v['gap']:+.3f}" for p, v in r["federated"].items())
        out.append(f"| {r['corpus']} | " + " | ".join(f"{a:.3f}" for a in r["centralised"]) +
                   f" | {r['best_in_budget']:.3f} | {fed or '-'} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepare.py's corpora")
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--runs", type=Path, default=None, help="the grid's runs, for the federated truths beside")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--candidate", default="minilm")
    p.add_argument("--corpora", nargs="+", default=["20news5", "bbc", "r8", "rotten_tomatoes", "r52"])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--budget", type=int, default=6, help="the level is the best of the first this many epochs (at most the grid's rounds)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-of", nargs="+", default=["r8=5e-3", "rotten_tomatoes=5e-3", "r52=5e-3"],
                   metavar="CORPUS=LR", help="a corpus's own learning rate (the grid's)")
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args(argv)
    lr_of = {k: float(v) for k, _, v in (x.partition("=") for x in a.lr_of)}
    spec = candidate_spec(a.candidate, {"model_hub": str(a.hub)})
    rows = []
    for corpus in a.corpora:
        cfg = StudyConfig(candidates=(spec,), rounds=a.epochs, batch_size=a.batch_size,
                          max_seq_len=a.max_seq_len, lr=lr_of.get(corpus, a.lr), num_workers=a.workers)
        curve = centralised_curve(cfg, a.data / f"{corpus}_data.h5", a.out / "work" / corpus)
        level = max(curve[: a.budget])
        fed = {part: {**v, "gap": v["mean"] - level}
               for part, v in federated_truths(a.runs, corpus, spec.name).items()}
        rows.append({"corpus": corpus, "lr": cfg.lr, "centralised": curve, "best_in_budget": level, "federated": fed})
        print(f"{corpus}: {' '.join(f'{x:.3f}' for x in curve)}", flush=True)
    (a.out / "centralised.json").write_text(json.dumps({"candidate": spec.name, "rows": rows}, indent=1))
    (a.out / "centralised.md").write_text(markdown(rows, spec.name, a.budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
