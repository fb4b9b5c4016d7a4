"""The comparison as a table (plain text, Markdown, CSV) and as plots (``curves_<metric>.png``,
``final_<metric>.png``), readable with a few configurations as with a few dozen."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from vista.compare.group import ConfigResult, higher_is_better, num_or_none

CURVES_SIZE = (7.0, 4.5)  # inches, before the legend (to the right of the axes) is added
LEGEND_FONT = 7
LABEL_FONT = 8


# -- tables -------------------------------------------------------------------------------------
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

    def fmt(row: list[str]) -> str:
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))

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


# -- plots ----------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _width_in(fig: Any, artists: list[Any]) -> float:
    """The widest of ``artists`` once drawn, in inches."""
    renderer = fig.canvas.get_renderer()
    return max((a.get_window_extent(renderer).width for a in artists), default=0.0) / fig.dpi


def curves_figure(results: list[ConfigResult], metric: str) -> Any:
    """``metric`` per round, mean and std band over seeds, one line per configuration; the
    legend to the right of the axes (the figure widened to hold it), never over the curves."""
    plt = _pyplot()
    import numpy as np

    series = []
    for c in results:
        by_round: dict[float, list[float]] = {}
        for r in c.runs:
            for row in r.rows:
                x, y = num_or_none(row.get("round")), num_or_none(row.get(metric))
                if x is not None and y is not None:
                    by_round.setdefault(x, []).append(y)
        if by_round:
            series.append((c, by_round))
    ncol = 1 if len(series) <= 24 else 2  # about 0.17 inch per legend row at LEGEND_FONT
    height = max(CURVES_SIZE[1], 0.17 * -(-len(series) // ncol) + 1.2)
    fig, ax = plt.subplots(figsize=(CURVES_SIZE[0], height))
    # 10 distinct colours, then 20 (tab20's light/dark pairs told apart by the line style)
    colors = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors
    for i, (c, by_round) in enumerate(series):
        xs = sorted(by_round)
        mean = np.array([np.mean(by_round[x]) for x in xs])
        std = np.array([np.std(by_round[x]) for x in xs])
        style = "-" if len(series) <= 10 or i % 2 == 0 else "--"
        (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=c.label, color=colors[i % len(colors)],
                          linestyle=style)
        if len(c.runs) > 1:
            ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per round (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        legend = ax.legend(fontsize=LEGEND_FONT, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           borderaxespad=0.0, ncol=ncol, frameon=False)
        fig.set_size_inches(CURVES_SIZE[0] + _width_in(fig, [legend]) + 0.2, height)
    fig.tight_layout()
    return fig


def final_figure(results: list[ConfigResult], metric: str) -> Any:
    """The final ``metric`` per configuration as horizontal bars, best at the top, with std
    error bars and the value; the configurations' labels on the y axis."""
    plt = _pyplot()

    have = [c for c in results if c.stats[f"final_{metric}"][0] is not None]
    sign = -1 if higher_is_better(metric) else 1
    have.sort(key=lambda c: (sign * c.stats[f"final_{metric}"][0], c.label))
    means = [c.stats[f"final_{metric}"][0] for c in have]
    stds = [c.stats[f"final_{metric}"][1] or 0.0 for c in have]
    height = max(2.5, 0.28 * len(have) + 1.3)
    fig, ax = plt.subplots(figsize=(6.0, height))
    ys = list(range(len(have)))
    ax.barh(ys, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8, height=0.7)
    ax.set_yticks(ys, [c.label for c in have], fontsize=LABEL_FONT)
    ax.invert_yaxis()  # the best configuration first, as in the table
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi + 0.15 * (hi - lo))  # room for the values
    for y, m, s in zip(ys, means, stds):
        ax.text(max(m, 0.0) + s, y, f" {m:.4f}", va="center", fontsize=LEGEND_FONT)
    ax.set_xlabel(f"final {metric}")
    ax.set_title(f"final {metric} per configuration (error bars: std over seeds)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.set_size_inches(6.0 + _width_in(fig, ax.get_yticklabels()), height)
    fig.tight_layout()
    return fig


def plot(out: Path, results: list[ConfigResult], metric: str) -> list[Path]:
    """Writes ``curves_<metric>.png`` and ``final_<metric>.png`` under ``out``."""
    plt = _pyplot()
    written = []
    for name, make in (("curves", curves_figure), ("final", final_figure)):
        fig = make(results, metric)
        written.append(out / f"{name}_{metric}.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
