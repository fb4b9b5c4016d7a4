"""The centred head probe as a live selection run (``selection.head_centre``, design note 93):
``python experiments/selection_study/centred_live.py RUNS --data DATA --hub HUB --work WORK [--out DIR]
[--earlier JSON]`` (``--earlier``: an earlier output's rows for the runs without kept features here).

For every study run under RUNS with ``head_shipped`` whose clients' sampled features are kept in
``WORK/<run>/features`` (a grid run's own directory, or ``refresh_head.py --keep-features``'s),
runs ``selection=head_probe`` with ``head_centre=true`` on auto's shipped sample, reading that store
(no encode), into ``WORK/<run>/head_<rounds>_centred``. Checks its curves against
``probe_variants.py``'s offline centred probe (the same features less their float64 pooled mean, in one
process) and says per run whether they are equal float for float; then judges head_probe and head_gbc
(with the run's recorded auto_shipped values, the same texts) from the live curves against the run's
own truth and its setting's (its seeds' mean), ties within 0.01, beside head_gbc as shipped
(``head_gbc_shipped``). Writes
``centred_live.md`` and ``centred_live.json`` to ``--out`` (default: WORK/out).
"""

from __future__ import annotations

import json
from pathlib import Path

from vista.data.fednlp import FedNLPData
from vista.drivers.study import SHIPPED, run_name
from vista.drivers.study_head import HEAD_GBC_SHIPPED, HEAD_SHIPPED
from vista.selection.head_probe import HeadSpec, simulate
from vista.selection.head_scores import head_gbc_rule

from head_rounds import judged, judged_line, live_runs, probe_curves
from probe_centring import variants
from probe_variants import sampled_rows


def run_rows(result: dict, cfg, data: Path, work: Path) -> list[dict]:
    entry = result["methods"][HEAD_SHIPPED]
    spec = HeadSpec(**entry["head"])
    live = probe_curves(result, cfg, data, work, spec.rounds, keep_features=True, centre=True)
    fed = FedNLPData(data / f"{result['data']}_data.h5")
    rows_of = sampled_rows(result, work / run_name(result), fed)
    offline = {n: simulate(variants(rows)["centred"], fed.num_labels, spec, result["seed"]) for n, rows in rows_of.items()}
    head = {n: c[-1]["val_accuracy"] for n, c in live.items()}
    auto = result["methods"][SHIPPED]["scores"]
    base = {"data": result["data"], "partition": result["partition"], "seed": result["seed"],
            "equal_to_offline": live == offline,
            "accuracy_equal_to_offline": all(c[-1]["val_accuracy"] == offline[n][-1]["val_accuracy"]
                                             for n, c in live.items())}
    out = []
    for method, scores in (("head_probe_centred", head), ("head_gbc_centred", head_gbc_rule(head, auto)),
                           (HEAD_GBC_SHIPPED, result["methods"][HEAD_GBC_SHIPPED]["scores"])):
        out += judged(result, method, scores, base)
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["# The centred head probe as a live selection run", "",
             "selection=head_probe with head_centre=true on auto's shipped sample; head_gbc_centred: z(its accuracy) + "
             "0.5 z(auto_shipped's gbc_prior). Against the run's own truth and its setting's (its seeds' mean), ties "
             "within 0.01. "
             "`equal`: the live curves equal probe_variants.py's offline centred ones float for float. Made by "
             "`centred_live.py`.", "",
             "| run | method | truth | pick | best | regret | tau-b | cap | equal |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [judged_line(r, "yes" if r["equal_to_offline"] else "no") for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    rows, _, out = live_runs(argv, __doc__, HEAD_SHIPPED, run_rows)
    (out / "centred_live.json").write_text(json.dumps({"rows": rows}, indent=1))
    (out / "centred_live.md").write_text(markdown(rows))
    print(f"wrote {out / 'centred_live.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
