"""Summarise the reduced FedPETuning runs: one row per run (method, aggregator, learning
rate, trainable parameters, accuracy, fairness, traffic, time) as Markdown on stdout, plus
``accuracy_vs_uplink.png`` (final accuracy against total uplinked bytes) next to the runs.

Usage: python experiments/fedpetuning/table.py RUNS_DIR > table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def runs(root: Path) -> list[dict]:
    out = []
    for summary_file in sorted(root.glob("*/*/summary.json")):
        run_dir = summary_file.parent
        s = json.loads(summary_file.read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        out.append({
            "method": s.get("method") or cfg["peft"]["_target_"].rsplit(".", 1)[-1],
            "aggregator": cfg["aggregator"]["_target_"].rsplit(".", 1)[-1],
            "lr": cfg["fl"]["lr"],
            "status": s.get("status", "finished"),
            **{k: s.get(k) for k in ("trainable_params", "trainable_percent", "test_accuracy", "test_macro_f1",
                                     "best_test_accuracy", "client_test_accuracy_min", "bytes_up_total",
                                     "wall_seconds")},
        })
    return out


def markdown(rows: list[dict]) -> str:
    head = ["method", "aggregator", "lr", "trainable", "% of model", "final acc", "final macro-F1", "best acc",
            "worst client acc", "uplink MB", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "finished":
            lines.append(f"| {r['method']} | {r['aggregator']} | {r['lr']:g} | {r['status']} |" + " |" * (len(head) - 4))
            continue
        lines.append("| " + " | ".join([
            r["method"], r["aggregator"], f"{r['lr']:g}", f"{r['trainable_params']:,}", f"{r['trainable_percent']:.3f}",
            f"{r['test_accuracy']:.3f}", f"{r['test_macro_f1']:.3f}", f"{r['best_test_accuracy']:.3f}",
            f"{r['client_test_accuracy_min']:.3f}" if r["client_test_accuracy_min"] is not None else "-",
            f"{r['bytes_up_total'] / 2**20:.2f}", f"{r['wall_seconds']:.0f}",
        ]) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["status"] != "finished":
            continue
        label = r["method"] if r["aggregator"] == "FedAvg" else f"{r['method']}+{r['aggregator']}"
        ax.scatter(r["bytes_up_total"] / 2**20, r["test_accuracy"], s=30)
        ax.annotate(label, (r["bytes_up_total"] / 2**20, r["test_accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("total uplink (MiB, log scale)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("Reduced FedPETuning: MiniLM, 20news5, 10 clients alpha=1, 4 rounds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    root = Path(sys.argv[1])
    rows = runs(root)
    if not rows:
        raise SystemExit(f"no runs with a summary.json under {root}/*/*/")
    print(markdown(rows))
    plot(rows, root.parent / "results" / "accuracy_vs_uplink.png")


if __name__ == "__main__":
    main()
