"""Re-run every committed run's ``head_shipped`` probe with today's code and keep its cost:
``python experiments/selection_study/refresh_head.py RUNS --data DATA --hub HUB --work WORK``.

For every ``result.json`` under RUNS whose ``head_shipped`` entry has no ``head_cost`` (recorded
before the probe's own cost was reported, design note 90), runs ``selection=head_probe`` on auto's
shipped sample as the study does (into ``WORK/<run>/head_<rounds>``, reused when there: the runs
``head_rounds.py --rounds 6 --work WORK`` makes), stops unless its curves equal the recorded ones
float for float, then replaces the entry's ``cost`` with the new run's and adds its ``head_cost``,
and re-scores ``head_gbc_shipped`` from them (its cost: auto_shipped's plus ``head_cost``, exact).
The scores cannot change (the curves are checked); only the costs do (the probe's sums are masked
under the study's guard since design note 90, two 8-byte limbs an entry). ``--centred`` also adds
the centred probe's entries where missing (:func:`add_centred`, design note 93); ``--pair`` adds
``head_pair_shipped`` and ``head_pair_min_shipped`` to every run that holds both probes (:func:`add_pair`,
design notes 95 and 103: no client work).
"""

from __future__ import annotations

import json
from pathlib import Path

from vista.drivers.study import SHIPPED, StudyConfig, run_name
from vista.drivers.study_head import HEAD_CENTRED, HEAD_SHIPPED, head_entry, rescore_heads, rescore_pair

from head_rounds import check_prefix, probe_config, probe_curves, probe_parser


def refresh(path: Path, cfg: StudyConfig, data: Path, work: Path, keep_features: bool = False) -> bool:
    """One run's refresh; True if its file changed."""
    result = json.loads(path.read_text())
    entry = result["methods"].get(HEAD_SHIPPED)
    if entry is None or "head_cost" in entry:
        return False
    rounds = int(entry["head"]["rounds"])
    curves = probe_curves(result, cfg, data, work, rounds, keep_features)
    check_prefix(result, curves)  # the same curves, float for float, or the script stops
    run = json.loads((work / run_name(result) / f"head_{rounds}" / "selection.json").read_text())
    result["methods"][HEAD_SHIPPED] = {**entry, "cost": run["cost"], "head_cost": run["head_cost"]}
    rescore_heads(result["methods"], result["truth"], result.get("tie_tol", cfg.tie_tol), SHIPPED)
    path.write_text(json.dumps(result, indent=2))  # as the study writes it
    return True


def add_centred(path: Path, cfg: StudyConfig, data: Path, work: Path) -> bool:
    """``head_centred_shipped`` and ``head_gbc_centred_shipped`` added to one run that lacks them: the
    probe with ``selection.head_centre`` on the same sample, reading the kept features in
    ``WORK/<run>/features``, into ``WORK/<run>/head_<rounds>_centred`` (reused when there:
    ``centred_live.py``'s runs); a run without kept features there is left as it is (no encode).
    True if the file changed."""
    result = json.loads(path.read_text())
    m = result["methods"]
    if HEAD_SHIPPED not in m or HEAD_CENTRED in m or not (work / run_name(result) / "features").is_dir():
        return False
    shipped = m[HEAD_SHIPPED]
    rounds = int(shipped["head"]["rounds"])
    probe_curves(result, cfg, data, work, rounds, keep_features=True, centre=True)
    run = json.loads((work / run_name(result) / f"head_{rounds}_centred" / "selection.json").read_text())
    # read from the kept store, the run encoded nothing: a live run encodes what head_shipped's round did
    run = {**run, "cost": {**run["cost"], "forward_passes": shipped["cost"]["forward_passes"]}}
    m[HEAD_CENTRED] = head_entry(run, shipped["sampling"], shipped["token_share"], {**shipped["head"], "centre": True})
    rescore_heads(m, result["truth"], result.get("tie_tol", cfg.tie_tol), SHIPPED)
    path.write_text(json.dumps(result, indent=2))
    return True


def add_pair(path: Path, cfg: StudyConfig) -> bool:
    """``head_pair_shipped`` and ``head_pair_min_shipped`` recombined into one run from its two probes'
    recorded values and auto_shipped's (:func:`~vista.drivers.study_head.rescore_pair`); True if the file changed."""
    result = json.loads(path.read_text())
    if not rescore_pair(result["methods"], result["truth"], result.get("tie_tol", cfg.tie_tol), SHIPPED):
        return False
    path.write_text(json.dumps(result, indent=2))
    return True


def main(argv: list[str] | None = None) -> int:
    p = probe_parser(__doc__)
    p.add_argument("--keep-features", action="store_true",
                   help="keep each run's sampled features in WORK/<run>/features (probe variants then re-run offline)")
    p.add_argument("--centred", action="store_true",
                   help="also add head_centred_shipped and head_gbc_centred_shipped where missing (selection.head_centre)")
    p.add_argument("--pair", action="store_true",
                   help="also add head_pair_shipped and head_pair_min_shipped where both probes are held")
    a = p.parse_args(argv)
    cfg = probe_config(a)
    paths = sorted(a.runs.rglob("result.json"))
    if not paths:
        raise SystemExit(f"no result.json under {a.runs}")
    changed = [p for p in paths if refresh(p, cfg, a.data, a.work, a.keep_features)]
    print(f"refreshed {len(changed)} of {len(paths)} runs (the others hold head_cost or no head_shipped)")
    if a.centred:
        added = [p for p in paths if add_centred(p, cfg, a.data, a.work)]
        print(f"added the centred probe to {len(added)} of {len(paths)} runs (the others hold it, have no "
              "head_shipped or no kept features in --work)")
    if a.pair:
        paired = [p for p in paths if add_pair(p, cfg)]
        print(f"added or updated the pair's entries in {len(paired)} of {len(paths)} runs (the others hold it as it "
              "is, or lack a probe)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
