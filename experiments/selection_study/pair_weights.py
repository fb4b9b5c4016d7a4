"""Would another weighting of auto's pair close 16.5's ranking gap? ``python
experiments/selection_study/pair_weights.py RUNS [--out DIR]``.

auto (``head_pair``) is ``z(z(head_probe) + z(head_probe_centred)) + 0.5 z(gbc_prior)``. Where it misses
the ranking target, the centred probe or gbc_prior often lifts a weaker candidate (on 20news5 alpha = 1,
MiniLM above SmolLM2, design note 100) while the uncentred probe has the order right. This script
recombines each run's recorded values (``head_shipped``, ``head_centred_shipped``, ``auto_shipped``; no
encode, no training) as ``z(z(head_probe) + wc z(head_probe_centred)) + wg z(gbc_prior)`` for a grid of
weights, and judges each against every setting's truth over its seeds, the table's way (ties within the
study's tolerance; a missing value ranks last). Weights (1, 0.5) must give back the recorded pair (checked).
Writes ``pair_weights.md`` and ``pair_weights.json`` to ``--out`` (default ``results/probe_variants``).
Decides nothing: every run here is development for any weighting it prefers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vista.drivers.study_head import HEAD_PAIR
from vista.selection.head_scores import HEAD_WEIGHT_OF_AUTO, head_pair_rule
from vista.selection.ranking import rank_by

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from table import TIE_TOL, full_pool, load, rule_summary  # noqa: E402

SHIPPED = (1.0, HEAD_WEIGHT_OF_AUTO)
WEIGHTS = (SHIPPED, (0.75, 0.5), (0.5, 0.5), (0.25, 0.5), (0.0, 0.5), (1.0, 0.25), (0.5, 0.25), (1.0, 0.0),
           (1.0, 1.0))


def pair(result: dict, wc: float, wg: float) -> dict[str, float | None]:
    """The pair at centred weight ``wc`` and gbc_prior weight ``wg`` from one run's recorded values."""
    m = result["methods"]
    return head_pair_rule(m["head_shipped"]["scores"], m["head_centred_shipped"]["scores"],
                          m["auto_shipped"]["scores"], centred_weight=wc, auto_weight=wg)


def check_shipped(result: dict) -> None:
    """The shipped weights order the candidates as the run's recorded head_pair (else this script is not
    judging auto)."""
    got, want = rank_by(pair(result, *SHIPPED)), rank_by(result["methods"][HEAD_PAIR]["scores"])
    if got != want:
        raise SystemExit(f"{result['data']} {result['partition']} seed {result['seed']}: the shipped weights "
                         f"give {got}, the recorded head_pair {want}")


def judge(results: list[dict], wc: float, wg: float) -> dict:
    """Mean tau-b over settings (each setting's seeds against its truth), settings within NEAR of the cap,
    settings with mean regret <= 0.01, runs whose pick is the setting's best."""
    per = full_pool(results, lambda r: pair(r, wc, wg))
    return {"wc": wc, "wg": wg, **rule_summary(per), "settings": per}


def markdown(rows: list[dict]) -> str:
    n = len(rows[0]["settings"])
    out = ["# auto's pair at other weights, from the recorded probes", "",
           "z(z(head_probe) + wc z(head_probe_centred)) + wg z(gbc_prior) from each run's recorded values, "
           f"against each setting's truth over its seeds (ties within {TIE_TOL}). Shipped: wc 1, wg 0.5. "
           "Development only: every run here is one any weighting is fitted on. Made by `pair_weights.py`.", "",
           "| wc (centred) | wg (gbc_prior) | mean tau-b | mean cap | settings near the cap | regret <= 0.01 | "
           "best pick (runs) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['wc']:g} | {r['wg']:g} | {r['tau_b']:.3f} | {r['cap']:.3f} | {r['near_cap']} of {n} | "
                   f"{r['regret_ok']} of {n} | {r['best']} of {r['runs']} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "probe_variants")
    a = ap.parse_args(argv)
    results = [r for r in load(a.runs) if HEAD_PAIR in r["methods"]]
    if not results:
        raise SystemExit(f"no run under {a.runs} recorded {HEAD_PAIR}")
    for r in results:
        check_shipped(r)
    rows = [judge(results, wc, wg) for wc, wg in WEIGHTS]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "pair_weights.json").write_text(json.dumps(rows, indent=1))
    (a.out / "pair_weights.md").write_text(markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
