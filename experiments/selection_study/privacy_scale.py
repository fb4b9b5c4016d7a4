"""Does DP selection become usable with more texts? (issue 16.7; design note 98):
``python experiments/selection_study/privacy_scale.py --src SRC --corpus rotten_tomatoes --train 4800
--hub HUB --work WORK --caps 48 150 600 --epsilons 8 4 1 --draws 3 [--runs RUNS] [--out DIR]``.

At the study's sizes (384 texts a round) DP's noise sets auto's order (``privacy_head.py``); the noise
a release carries does not grow with the texts, the signal does. This script takes one corpus at
``--train`` training texts (``prepare.subsample``, seed 0), IID over ``--clients`` (8), and runs
``selection=auto`` (head_pair) live at each per-client text cap in ``--caps`` (``max_texts_per_client``;
the shipped floor of 384 texts a round and 32 tokens), without DP and at each total epsilon, ``--draws``
times. Draw ``d`` runs at seed ``1000 (d + 1)`` at every cap and epsilon: a paired design, so at one
draw the noise is the same draw of the same mechanism at every cap and only the signal grows (its size
still follows epsilon), and the no-DP run of that draw scores the same texts. Every run reads one
feature store (``WORK/features``: the uncapped run, made first, encodes every text once; a capped run
reads its rows). Each DP ranking is judged against the no-DP ranking of the same cap and draw (tau-b,
the same pick) and, where ``--runs`` holds the corpus's study runs, against the study's truth of the
setting (the 600-text grid's, its seeds' mean: a proxy, since more texts fine-tune differently).
Writes ``privacy_scale.md`` and ``privacy_scale.json`` to ``--out`` (default WORK/out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from statistics import mean

from vista.build import candidate_spec
from vista.drivers.study import StudyConfig, _run_or_reuse, method_quality, setting_parts
from vista.selection.ranking import kendall_tau, missing_last, rank_by
from vista.selection.spec import SelectionSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from prepare import subsample  # noqa: E402
from table import load, settings  # noqa: E402

DRAW_SEED = 1000
SHIPPED_FLOOR, SHIPPED_LEN = 384, 32
PARTITION = "iid"


def live(cfg: StudyConfig, data_file: Path, work: Path, cap: int | None, epsilon: float | None, seed: int,
         floor: int | None = SHIPPED_FLOOR) -> dict:
    """One live ``selection=head_pair`` run (its whole ``selection`` record), reused when already there."""
    parts = setting_parts(cfg, data_file, PARTITION, 0, work)
    privacy = dataclasses.replace(cfg.privacy, dp_epsilon=epsilon)
    spec = SelectionSpec(name="head_pair", candidates=cfg.candidates, privacy=privacy, head_rounds=6,
                         feature_store=str(work / "features"), max_texts_per_client=cap,
                         min_texts_per_round=floor if cap is not None else None, max_seq_len=SHIPPED_LEN)
    tag = f"cap{'all' if cap is None else cap}_{'none' if epsilon is None else f'eps{epsilon:g}'}_seed{seed}"
    return _run_or_reuse(dataclasses.replace(parts, selection=spec, seed=seed), work / tag)


def agreement(noisy: dict, clear: dict) -> float:
    """Kendall tau-b between two score tables over the candidates (a missing score ranks last, as a live
    run ranks it)."""
    return kendall_tau(missing_last(clear), missing_last(noisy))


def rows_for(cfg: StudyConfig, data_file: Path, work: Path, caps: list[int], epsilons: list[float | None],
             draws: int, truth: dict | None, floor: int | None = SHIPPED_FLOOR) -> list[dict]:
    live(cfg, data_file, work, None, None, DRAW_SEED)  # every text encoded once into the store
    rows = []
    for cap in caps:
        for d in range(draws):
            seed = DRAW_SEED * (d + 1)
            clear = live(cfg, data_file, work, cap, None, seed, floor)["scores"]["head_pair"]
            for eps in epsilons:
                sel = live(cfg, data_file, work, cap, eps, seed, floor)
                s = sel["scores"]["head_pair"]
                row = {"cap": cap, "epsilon": eps, "draw": d, "seed": seed, "scores": s, "clear": clear,
                       "tau_vs_clear": agreement(s, clear), "same_pick": rank_by(s)[0] == rank_by(clear)[0],
                       "noise_multiplier": sel["privacy"]["composition"]["release_noise_multiplier"]
                       if eps is not None else None}
                if truth is not None:
                    q = method_quality("auto", truth, s, 0.01)
                    row.update(kendall_tau=q["kendall_tau"], top1_regret=q["top1_regret"], chosen=q["chosen"],
                               best=q["best"])
                rows.append(row)
                print(f"cap {cap} eps {eps} draw {d}: tau vs clear {row['tau_vs_clear']:.2f}, "
                      f"same pick {row['same_pick']}" + (f", regret {row['top1_regret']:.3f}" if truth else ""),
                      flush=True)
    return rows


def markdown(rows: list[dict], corpus: str, train: int, epsilons: list[float | None], truth: bool,
             clients: int = 8) -> str:
    caps = list(dict.fromkeys(r["cap"] for r in rows))
    draws = max(r["draw"] for r in rows) + 1
    lines = [f"# DP selection with more texts: {corpus}, {train} training texts, IID over {clients} clients", "",
             f"Live `selection=auto` (head_pair) at each per-client cap, 32 tokens, {draws} paired draws (seed "
             "1000 (d + 1) at every cap and epsilon: the same noise draw, more signal). Per cell: mean tau-b "
             "against the no-DP ranking of the same cap and draw, draws with the no-DP pick"
             + (", then mean tau-b and mean regret against the study's truth of the setting (600 texts, its "
                "seeds' mean; a proxy)" if truth else "") + ". Made by `privacy_scale.py`.", "",
             "| cap a client (texts a round) | " + " | ".join("no DP" if e is None else f"epsilon {e:g}"
                                                             for e in epsilons) + " |",
             "|---|" + "---|" * len(epsilons)]
    for cap in caps:
        cells = []
        for e in epsilons:
            xs = [r for r in rows if r["cap"] == cap and r["epsilon"] == e]
            cell = f"{mean(x['tau_vs_clear'] for x in xs):.2f}, {sum(x['same_pick'] for x in xs)} of {len(xs)}"
            if truth:
                cell += f"; {mean(x['kendall_tau'] for x in xs):.2f}, {mean(x['top1_regret'] for x in xs):.3f}"
            cells.append(cell)
        lines.append(f"| {cap} ({clients * cap}) | " + " | ".join(cells) + " |")  # every client scored
    mult = {e: next((r["noise_multiplier"] for r in rows if r["epsilon"] == e), None) for e in epsilons if e}
    lines += ["", "Noise multiplier a release: " + ", ".join(f"{m:.1f} at epsilon {e:g}" for e, m in mult.items())
              + " (the same at every cap: the releases do not change)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, required=True, help="where `vista-data import` wrote the corpora")
    p.add_argument("--corpus", default="rotten_tomatoes")
    p.add_argument("--train", type=int, default=4800)
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--candidates", nargs="+", default=["minilm", "mpnet", "smollm2", "minilm_l3", "random_bert"])
    p.add_argument("--caps", nargs="+", type=int, default=[48, 150, 600])
    p.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 4.0, 1.0])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--floor", type=int, default=SHIPPED_FLOOR,
                   help="selection.min_texts_per_round beside each cap (0: none), the shipped 384 by default")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--runs", type=Path, default=None, help="the study's runs: their truth of the corpus's IID setting")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.train < a.clients * max(a.caps):
        raise SystemExit(f"--train {a.train} is below {a.clients} clients x the largest cap {max(a.caps)}")
    a.work.mkdir(parents=True, exist_ok=True)
    data_file = subsample(a.corpus, a.src, a.work, a.train, 400, 0)
    cfg = StudyConfig(candidates=tuple(candidate_spec(c, {"model_hub": str(a.hub)}) for c in a.candidates),
                      clients=a.clients, num_workers=a.workers)
    truth = None
    if a.runs is not None:
        group = settings(load(a.runs)).get((a.corpus, PARTITION))
        truth = group[0]["truth_mean"] if group else None
    epsilons: list[float | None] = [None, *a.epsilons]
    rows = rows_for(cfg, data_file, a.work, a.caps, epsilons, a.draws, truth, a.floor or None)
    out = a.out or a.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy_scale.json").write_text(json.dumps({"corpus": a.corpus, "train": a.train, "rows": rows,
                                                        "truth": truth}, indent=1))
    md = markdown(rows, a.corpus, a.train, epsilons, truth is not None, a.clients)
    (out / "privacy_scale.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
