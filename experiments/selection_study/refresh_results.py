"""Bring every kept ``result.json`` under RUNS up to the study's current rules, without
training: ``python experiments/selection_study/refresh_results.py RUNS --data WORK/data --hub HUB``.

- **Searches**: successive halving and hybrid replayed on the run's kept brute-force curves
  (``study.replay_searches``), e.g. after a rung stopped cutting ties by name (design note 76).
  A result without curves (pruned before they were kept) keeps its entries, and is listed.
- **Tokens**: ``auto_shipped`` encodes at :data:`~vista.drivers.study.SHIPPED_AUTO`'s
  ``max_seq_len`` (32), brute force at the study's (128), so its compute is scaled by its
  ``token_share`` (design note 75). A run scored since then records it; for the runs before,
  it is computed from the corpora ``prepare.py`` wrote to ``--data`` and the candidates'
  tokenizers in ``--hub`` (about a second per run).

Each changed ``result.json`` is rewritten in place; then ``table.py`` and ``search_replay.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vista.build import candidate_spec
from vista.drivers.study import (
    SHIPPED,
    SHIPPED_AUTO,
    StudyConfig,
    replay_searches,
    run_name,
    shipped_token_share,
)

DEFAULT = StudyConfig(candidates=())


def add_token_share(result: dict, data: Path, hub: Path) -> bool:
    """``auto_shipped``'s token share into ``result`` if it lacks one; True if added."""
    entry = result["methods"].get(SHIPPED)
    if entry is None or entry.get("sampling") != SHIPPED_AUTO or "token_share" in entry:
        return False
    data_file = data / f"{result['data']}_data.h5"
    if not data_file.is_file():
        raise SystemExit(f"no {data_file}; run prepare.py --corpora {result['data']} --out {data}")
    candidates = [candidate_spec(c, {"model_hub": str(hub)}) for c in result["candidates"]]
    entry["token_share"] = shipped_token_share(candidates, data_file, result["budget"]["max_seq_len"])
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="the study's runs folder (result.json files under it)")
    p.add_argument("--data", type=Path, required=True, help="the corpora prepare.py wrote (<corpus>_data.h5)")
    p.add_argument("--hub", type=Path, required=True, help="the model hub the candidates load from")
    p.add_argument("--top-k", type=int, default=DEFAULT.top_k, help="hybrid's shortlist, as the study ran it")
    p.add_argument("--r0", type=int, default=DEFAULT.r0)
    p.add_argument("--eta", type=int, default=DEFAULT.eta)
    a = p.parse_args(argv)
    no_curves = []
    for path in sorted(a.runs.rglob("result.json")):
        result = json.loads(path.read_text())
        run = run_name(result)
        changed = add_token_share(result, a.data, a.hub)
        if "curves" not in result:
            no_curves.append(run)
        else:
            shortlist = len(result["methods"]["hybrid"]["search"]["rungs"][0]["scores"])
            if shortlist != min(a.top_k, len(result["truth"])):
                raise SystemExit(f"{path}: its hybrid shortlisted {shortlist}, not --top-k {a.top_k}")
            old = {m: result["methods"][m]["chosen"] for m in ("successive_halving", "hybrid")}
            if replay_searches(result, a.top_k, a.r0, a.eta):
                changed = True
                now = {m: result["methods"][m]["chosen"] for m in old}
                print(f"{run}: searches replayed (picks {old} -> {now})")
        if changed:
            path.write_text(json.dumps(result, indent=2))
    print(f"refreshed {a.runs}; searches not replayable (no curves): {', '.join(no_curves) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
