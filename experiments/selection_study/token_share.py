"""Give each ``result.json`` under RUNS that lacks it its ``auto_shipped`` token share:
``python experiments/selection_study/token_share.py RUNS --data WORK/data --hub HUB``.

``auto_shipped`` encodes at :data:`~vista.drivers.study.SHIPPED_AUTO`'s ``max_seq_len`` (32),
brute force at the study's (128): counted in texts, its compute overstates what it costs. A run
scored since the study counts tokens records the share itself (``study.score_shipped_auto``);
this fills it in for the runs scored before, from the corpora ``prepare.py`` wrote to ``--data``
and the candidates' tokenizers in ``--hub`` (about a second per corpus), rewriting each
``result.json`` in place. ``table.py`` and ``search_replay.py`` then scale its compute by it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vista.build import candidate_spec
from vista.drivers.study import SHIPPED, SHIPPED_AUTO
from vista.drivers.study_compute import corpus_token_counts
from vista.selection.sampling import token_share


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="the study's runs folder (result.json files under it)")
    p.add_argument("--data", type=Path, required=True, help="the corpora prepare.py wrote (<corpus>_data.h5)")
    p.add_argument("--hub", type=Path, required=True, help="the model hub the candidates load from")
    a = p.parse_args(argv)
    counts: dict[tuple, list[int]] = {}  # per corpus and candidates: tokenised once
    filled = 0
    for path in sorted(a.runs.rglob("result.json")):
        result = json.loads(path.read_text())
        entry = result["methods"].get(SHIPPED)
        if entry is None or entry.get("sampling") != SHIPPED_AUTO or "token_share" in entry:
            continue
        data_file = a.data / f"{result['data']}_data.h5"
        if not data_file.is_file():
            raise SystemExit(f"{path}: no {data_file}; run prepare.py --corpora {result['data']} --out {a.data}")
        key = (result["data"], *result["candidates"])
        if key not in counts:
            cands = [candidate_spec(c, {"model_hub": str(a.hub)}) for c in result["candidates"]]
            counts[key] = corpus_token_counts(cands, data_file)
        entry["token_share"] = token_share(counts[key], SHIPPED_AUTO["max_seq_len"], result["budget"]["max_seq_len"])
        path.write_text(json.dumps(result, indent=2))
        filled += 1
        print(f"{path}: token_share {entry['token_share']:.4f}")
    print(f"{filled} result.json given auto_shipped's token share")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
