"""Run the selection study grid: corpora x partitions x seeds, every selection method each.

    python experiments/selection_study/run_study.py --data DIR --hub /work/models --out RUNS \
        --corpora 20news5 bbc r8 --partitions iid alpha=1 alpha=0.1 --seeds 0 --rounds 3

``--data`` holds the subsampled corpora written by ``prepare.py``. Candidates default to the
offline pool (``vista-hub add NAME`` for minilm, mpnet, smollm2, minilm-l3, random-bert), named by their
model configs. Each setting writes ``<out>/<corpus>/<partition>/seed<k>/result.json``; a
finished setting is skipped on a rerun (but for a method the registry now scores on another
pooling, e.g. ``auto`` on mean-pooled features: one statistics round of that pooling; and
``auto_shipped``, auto on the sample of texts ``conf/selection/auto.yaml`` ships: one round on
that sample), a failed one is recorded and the grid goes on.
Then ``table.py RUNS`` writes the table and the plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from vista.build import candidate_spec
from vista.drivers.study import (
    BUDGET_FIELDS,
    PARTITIONS,
    TIE_TOL,
    StudyConfig,
    rescore_own_poolings,
    run_setting,
)
from vista.drivers.study_truth import TRUTHS
from vista.errors import Interrupted
from vista.fl.lr_schedule import LR_SCHEDULES
from vista.selection.spec import DEFAULT_CANDIDATES

POOL = list(DEFAULT_CANDIDATES)  # the selection= default pool


def corpus_budgets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """``["r8.lr=5e-3", "r8.rounds=8"]`` -> ``{"r8": {"lr": 0.005, "rounds": 8}}``, each value of
    its field's type."""
    types = {f.name: type(f.default) for f in dataclasses.fields(StudyConfig) if f.name in BUDGET_FIELDS}
    out: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        corpus, dot, field = key.partition(".")
        if not (eq and dot and corpus and field in types):
            raise ValueError(f"--set {item}: expected CORPUS.FIELD=VALUE with FIELD one of {', '.join(types)}")
        out.setdefault(corpus, {})[field] = types[field](value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--candidates", nargs="+", default=POOL)
    p.add_argument("--corpora", nargs="+", default=["20news5", "bbc", "r8"])
    p.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=list(PARTITIONS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--clients-per-round", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--lr-schedule", default="constant", choices=sorted(LR_SCHEDULES),
                   help="the clients' rate each round (fl.lr_schedule): cosine falls from --lr over the rounds")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="of each client's train split, held out: what the searches rank on (default 0.1)")
    p.add_argument("--tie-tol", type=float, default=TIE_TOL,
                   help=f"truth accuracies this close tie in result.json's rank measures (default {TIE_TOL}; "
                        "table.py recomputes them against the mean over seeds)")
    p.add_argument("--keep-features", action="store_true",
                   help="keep each setting's client features in <setting>/features (privacy_cost.py re-scores "
                        "from them without encoding again); they derive from the clients' texts")
    p.add_argument("--test-every", type=int, default=None, metavar="N",
                   help="brute force also scores the test split every N rounds (the truth at each such "
                        "budget from one run: longer_truth.py); training is unchanged")
    p.add_argument("--truth", default="last", choices=sorted(TRUTHS),
                   help="which round each candidate's truth reads: the last (default) or best_val, the round "
                        "of best validation accuracy (scores the test split every round: --test-every 1)")
    p.add_argument("--set", nargs="+", default=[], metavar="CORPUS.FIELD=VALUE",
                   help="one corpus's own budget, e.g. r8.lr=5e-3 (fields: " + ", ".join(BUDGET_FIELDS) + ")")
    a = p.parse_args(argv)
    try:
        own = corpus_budgets(a.set)
    except ValueError as err:
        p.error(str(err))
    if a.truth == "best_val" and a.test_every is None:
        a.test_every = 1
    cands = tuple(candidate_spec(c, {"model_hub": str(a.hub)}) for c in a.candidates)
    cfg = StudyConfig(candidates=cands, clients=a.clients, clients_per_round=a.clients_per_round, rounds=a.rounds,
                      batch_size=a.batch_size, lr=a.lr, max_seq_len=a.max_seq_len, num_workers=a.workers,
                      device=a.device, val_fraction=a.val_fraction, local_epochs=a.local_epochs,
                      tie_tol=a.tie_tol, keep_features=a.keep_features, test_every=a.test_every,
                      lr_schedule=a.lr_schedule, truth=a.truth)
    failed = []
    t_all = time.perf_counter()
    for corpus in a.corpora:
        for part in a.partitions:
            for seed in a.seeds:
                out = a.out / corpus / part / f"seed{seed}"
                done = (out / "result.json").is_file()
                t0 = time.perf_counter()
                print(f"skip {out} (done; methods of another pooling scored if new)" if done else
                      f"== {corpus} {part} seed {seed}", flush=True)
                try:
                    corpus_cfg = dataclasses.replace(cfg, **own.get(corpus, {}))
                    if done:  # a method the registry now means for another pooling: one statistics round
                        rescore_own_poolings(corpus_cfg, a.data / f"{corpus}_data.h5", out)
                        continue
                    res = run_setting(corpus_cfg, a.data / f"{corpus}_data.h5", part, seed, out)
                except Interrupted as err:  # a stop asked for stops the grid, not only this setting
                    print(f"stopped at {corpus} {part} seed {seed}: {err}", file=sys.stderr, flush=True)
                    return 130
                except Exception as err:  # noqa: BLE001 - record and go on with the grid
                    out.mkdir(parents=True, exist_ok=True)
                    (out / "failed.json").write_text(json.dumps({"error": repr(err),
                                                                 "traceback": traceback.format_exc()}))
                    print(f"FAILED {corpus} {part} seed {seed}: {err!r}", file=sys.stderr, flush=True)
                    failed.append(str(out))
                    continue
                m = res["methods"]
                print(f"   {time.perf_counter() - t0:.0f}s truth {res['truth']}\n   logme tau "
                      f"{m['logme'].get('kendall_tau')} regret {m['logme'].get('top1_regret')}; SH regret "
                      f"{m['successive_halving'].get('top1_regret')}", flush=True)
    print(f"grid done in {time.perf_counter() - t_all:.0f}s; failed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
