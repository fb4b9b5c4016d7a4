"""``selection=head_pair`` as a live selection run on the study's runs (design note 95):
``python experiments/selection_study/pair_live.py RUNS --data DATA --hub HUB --work WORK [--out DIR]
[--earlier JSON]`` (``--earlier``: an earlier output's rows for the runs without kept features here).

For every study run under RUNS with ``head_pair_shipped`` whose clients' sampled features are kept in
``WORK/<run>/features`` (a grid run's own directory, or ``refresh_head.py --keep-features``'s), runs
``selection=head_pair`` on auto's shipped sample, reading that store (no encode), into
``WORK/<run>/head_<rounds>_pair``: both probes side by side and gbc_prior from the same statistics round.
Says per run whether its two curves equal the run's recorded ``head_shipped`` and
``head_centred_shipped`` curves float for float (the study recombines recorded runs; a live run trains both
probes at once) and its head_pair orders the candidates as the recorded ``head_pair_shipped`` does, and how
far its gbc_prior and head_pair are from the recorded ``auto_shipped`` and ``head_pair_shipped`` values
(the same computation on the same features, but a run's auto_shipped may have been recorded by older
code: the last bits of GBC move), and judges the live pair against the run's own truth and its setting's
(its seeds' mean), ties within 0.01. Writes ``pair_live.md`` and ``pair_live.json`` to ``--out``
(default: WORK/out).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from vista.drivers.study import SHIPPED
from vista.drivers.study_head import HEAD_CENTRED, HEAD_PAIR, HEAD_SHIPPED
from vista.selection.combine import gbc_prior
from vista.selection.ranking import rank_by

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from head_rounds import judged, judged_line, live_runs, probe_run  # noqa: E402


def run_rows(result: dict, cfg, data: Path, work: Path) -> list[dict]:
    m = result["methods"]
    live = probe_run(result, cfg, data, work, int(m[HEAD_SHIPPED]["head"]["rounds"]), keep_features=True,
                     name="head_pair")
    s = live["scores"]
    auto = gbc_prior({"gbc": s["gbc"], "param_prior": s["param_prior"]})
    equal = {"uncentred curves": live["head_curves"] == m[HEAD_SHIPPED]["curves"],
             "centred curves": live["head_curves_centred"] == m[HEAD_CENTRED]["curves"],
             "pair's order": rank_by(s["head_pair"]) == rank_by(m[HEAD_PAIR]["scores"])}
    # gbc_prior is the same computation on the same features, but the recorded auto_shipped may be older code's
    gap = {"gbc_prior": _gap(auto, m[SHIPPED]["scores"]), "head_pair": _gap(s["head_pair"], m[HEAD_PAIR]["scores"])}
    return judged(result, "head_pair", s["head_pair"], {"data": result["data"], "partition": result["partition"],
                                                        "seed": result["seed"], "equal": equal, "gap": gap,
                                                        "head_cost": live["head_cost"]})


def _gap(a: dict, b: dict) -> float:
    """The largest difference between two score tables over the candidates (a missing value: inf, unless both)."""
    return max(0.0 if a[c] is None and b[c] is None else math.inf if None in (a[c], b[c]) else abs(a[c] - b[c])
               for c in a)


def markdown(rows: list[dict]) -> str:
    lines = ["# selection=head_pair as a live selection run", "",
             "Both probes side by side on auto's shipped sample, read from each run's kept features, beside "
             "gbc_prior from the same statistics round. `equal`: the live uncentred and centred curves equal the "
             "run's recorded head_shipped and head_centred_shipped float for float, and the pair orders the "
             "candidates as the recorded head_pair_shipped; the largest gap of gbc_prior and head_pair from the "
             "recorded values follows. Against the run's own truth and its setting's (its seeds' mean), ties within "
             "0.01. Made by `pair_live.py`.", "",
             "| run | method | truth | pick | best | regret | tau-b | cap | equal |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [judged_line(r, ("yes" if all(r["equal"].values()) else
                              "no: " + ", ".join(k for k, v in r["equal"].items() if not v))
                          + f" (gaps {r['gap']['gbc_prior']:.1e}, {r['gap']['head_pair']:.1e})") for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    rows, skipped, out = live_runs(argv, __doc__, HEAD_PAIR, run_rows)
    (out / "pair_live.json").write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=1))
    (out / "pair_live.md").write_text(markdown(rows))
    print(markdown(rows) + (f"\nskipped (no head_pair_shipped or no kept features): {skipped}\n" if skipped else ""))
    return 0 if all(all(r["equal"].values()) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
