"""``vista-data stats``: per-client sizes and label histograms of one partition method.

:func:`client_stats` reads a FedNLP data file and one group of its partition file and
returns per-client train sizes, a clients x labels histogram and the mean per-client
label entropy. The CLI prints a table and writes two PNGs (matplotlib, Agg backend,
imported only there): ``<method>_label_heatmap.png`` (clients sorted by dominant label,
then by size) and ``<method>_sizes.png`` (histogram of client sizes).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp import FedNLPData, FedNLPPartition

__all__ = ["client_stats", "label_entropy", "plot_stats", "register"]


def label_entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of a count matrix; 0 for an empty row."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logp).sum(axis=1) + 0.0  # + 0.0 turns -0.0 into 0.0


def client_stats(data_file: str | Path, partition_file: str | Path, method: str) -> dict[str, Any]:
    """Per-client statistics of partition ``method``.

    Returns a dict with ``method`` (the group name as stored), ``client_ids``,
    ``sizes`` (int array, train examples per client), ``test_sizes``, ``histogram``
    (int array, clients x labels, train label counts), ``label_names``, ``entropy``
    (per-client label entropy, nats), ``mean_entropy`` and ``max_entropy`` (log of
    the number of labels).
    """
    data = FedNLPData(data_file)
    part = FedNLPPartition(partition_file, method)
    try:
        cids = part.client_ids
        n_labels = data.num_labels
        hist = np.zeros((len(cids), n_labels), dtype=np.int64)
        for row, cid in enumerate(cids):
            train = part.clients[cid].train
            if len(train):
                hist[row] = np.bincount(data.labels(train), minlength=n_labels)
    finally:
        data.close()
    ent = label_entropy(hist)
    return {
        "method": part.method,
        "client_ids": cids,
        "sizes": hist.sum(axis=1),
        "test_sizes": np.asarray([len(part.clients[c].test) for c in cids], dtype=np.int64),
        "histogram": hist,
        "label_names": list(data.label_names),
        "entropy": ent,
        "mean_entropy": float(ent.mean()) if len(ent) else 0.0,
        "max_entropy": float(np.log(n_labels)) if n_labels else 0.0,
    }


def _safe_name(method: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", method)


def plot_stats(stats: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``<method>_label_heatmap.png`` and ``<method>_sizes.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = _safe_name(stats["method"])
    hist = np.asarray(stats["histogram"])
    sizes = np.asarray(stats["sizes"])
    labels = stats["label_names"]

    # clients sorted by dominant label, then by size (largest first)
    dominant = hist.argmax(axis=1) if hist.size else np.zeros(len(sizes), dtype=np.int64)
    order = np.lexsort((-sizes, dominant))
    frac = hist[order] / np.maximum(sizes[order], 1)[:, None]

    heat_path = out / f"{name}_label_heatmap.png"
    fig, ax = plt.subplots(figsize=(max(7.0, 0.35 * len(labels) + 4), max(4.5, min(12.0, 0.08 * len(sizes) + 3))))
    im = ax.imshow(frac, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("label")
    ax.set_ylabel("client (sorted by dominant\nlabel, then size)")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=6 if len(labels) > 10 else 8)
    ax.set_title(f"{stats['method']}: label share per client", fontsize=9)
    fig.colorbar(im, ax=ax, label="share of client's examples")
    fig.tight_layout()
    fig.savefig(heat_path, dpi=100, bbox_inches="tight")
    plt.close(fig)

    size_path = out / f"{name}_sizes.png"
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(sizes, bins=min(30, max(1, len(np.unique(sizes)))))
    ax.set_xlabel("train examples per client")
    ax.set_ylabel("clients")
    ax.set_title(f"{stats['method']}: client sizes")
    fig.tight_layout()
    fig.savefig(size_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [heat_path, size_path]


def format_table(stats: dict[str, Any]) -> str:
    """A per-client table (size, test size, entropy, histogram) and a summary line."""
    labels = stats["label_names"]
    hist = stats["histogram"]
    lines = ["labels: " + ", ".join(f"{i}={n}" for i, n in enumerate(labels))]
    lines.append(f"{'client':>6} {'train':>7} {'test':>6} {'entropy':>7}  histogram (label 0..{len(labels) - 1})")
    for row, cid in enumerate(stats["client_ids"]):
        counts = " ".join(str(int(v)) for v in hist[row])
        lines.append(
            f"{cid:>6} {int(stats['sizes'][row]):>7} {int(stats['test_sizes'][row]):>6} "
            f"{stats['entropy'][row]:>7.3f}  {counts}"
        )
    sizes = np.asarray(stats["sizes"])
    present = (hist > 0).sum(axis=1)
    lines.append(
        f"{stats['method']}: {len(sizes)} clients, {int(sizes.sum())} train examples, "
        f"size min/mean/max {int(sizes.min())}/{sizes.mean():.1f}/{int(sizes.max())}, "
        f"labels per client mean {present.mean():.2f}, "
        f"mean label entropy {stats['mean_entropy']:.3f} (max {stats['max_entropy']:.3f})"
    )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    stats = client_stats(args.data, args.partition, args.method)
    print(format_table(stats))
    for p in plot_stats(stats, args.out_dir):
        print(f"wrote {p}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats",
        help="per-client sizes and label histograms of a partition, with plots",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--data", required=True, help="FedNLP *_data.h5 file")
    p.add_argument("--partition", required=True, help="FedNLP *_partition.h5 file")
    p.add_argument("--method", required=True, help="partition group, e.g. uniform or niid_label_clients=100_alpha=1.0")
    p.add_argument("--out-dir", default=".", help="folder for the PNG plots (default: current folder)")
    p.set_defaults(func=_run)
