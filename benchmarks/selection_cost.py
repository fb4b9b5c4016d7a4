"""Selection cost: exact federated LogME over M candidates vs brute force vs successive halving,
and ``selection=auto`` (design note 54), its quality and its compute at the study's budget and
at FedPETuning's 100 rounds.

Runs one study setting (statistics round + brute-force FedPEFT of every candidate; successive
halving replayed on the brute-force curves, which equals a live run: see
tests/integration/test_selection_run.py) and prints, for LogME and successive halving, the
cost ratios to brute force and the top-1 regret of each:

- compute: forward-pass equivalents, a backward pass counted as two forward passes
  (client_forward + 2 x client_backward), less the predictions of the test splits (the ground
  truth's measurement, which no selection needs: ``study.selection_compute``), and measured
  wall time;
- bytes: client uplink + downlink;
- regret: accuracy of the best candidate minus accuracy of the chosen one.

    python benchmarks/selection_cost.py --data DIR --corpus bbc --partition alpha=1 \
        --hub /work/models [--candidates minilm mpnet smollm2 minilm_l3 random_bert] [--rounds 3]
    python benchmarks/selection_cost.py --results experiments/selection_study/results  # no training

With ``--results`` it also prints every combined score of the registry (auto among them)
re-scored from the committed component scores (tau, the best tau a ranking without ties can
reach given the truth's ties, the worst regret), and auto's compute by formula: one encode per
text, candidate and sampled client (the PCA round reads the features back), times
``max_seq_len / --train-seq-len`` (a forward pass's cost taken as linear in the sequence
length), over brute force's forward equivalents at the study's rounds and at ``--budget-rounds``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
from pathlib import Path
from statistics import mean

from vista.build import candidate_spec
from vista.drivers.study import PARTITIONS, StudyConfig, run_setting
from vista.drivers.study_compute import selection_compute
from vista.selection.ranking import missing_last, selection_quality
from vista.selection.sampling import cohort
from vista.selection.scores import COMBINED, SCORES
from vista.selection.scores import names as score_names
from vista.selection.search import Cost
from vista.selection.spec import SelectionSpec

POOL = ["minilm", "mpnet", "smollm2", "minilm_l3", "random_bert"]
COMPARED = ("logme", "successive_halving", "hybrid")


def ratios(result: dict) -> dict[str, dict[str, float]]:
    bf = result["methods"]["brute_force"]["cost"]
    bf_compute = selection_compute(result, "brute_force")  # less its test-split predictions
    out = {}
    for m in ("brute_force", *COMPARED):
        e = result["methods"][m]
        c = e["cost"]
        out[m] = {"compute_ratio": selection_compute(result, m) / bf_compute,
                  "bytes_ratio": (c["bytes_up"] + c["bytes_down"]) / (bf["bytes_up"] + bf["bytes_down"]),
                  "seconds_ratio": c["seconds"] / bf["seconds"] if bf["seconds"] else float("nan"),
                  **_quality(result["truth"], e)}
    return out


def _quality(truth: dict, entry: dict) -> dict[str, float]:
    """Regret and tau re-scored from the recorded scores (a missing score ranks last, as in a
    live run and in table.py), not the values stored with older results."""
    if "scores" not in entry:
        return {"regret": entry.get("top1_regret", float("nan")), "kendall_tau": entry.get("kendall_tau", float("nan"))}
    q = selection_quality(truth, missing_last(entry["scores"]))
    return {"regret": q["top1_regret"], "kendall_tau": q["kendall_tau"]}


def report(results: list[dict]) -> None:
    rows = [ratios(r) for r in results]
    print(f"{len(results)} setting(s); ratios are method / brute force (lower = cheaper)")
    print(f"{'method':20s} {'compute':>10s} {'bytes':>10s} {'wall':>10s} {'regret':>8s} {'tau':>6s}")
    for m in ("brute_force", *COMPARED):
        vals = {k: mean(r[m][k] for r in rows) for k in rows[0][m]}
        print(f"{m:20s} {vals['compute_ratio']:10.4f} {vals['bytes_ratio']:10.4f} {vals['seconds_ratio']:10.4f} "
              f"{vals['regret']:8.3f} {vals['kendall_tau']:6.2f}")


# auto's cost-cutting settings: (client_fraction, max_texts_per_client, max_seq_len)
AUTO_VARIANTS = {
    "auto": (1.0, None, None),
    "auto, client_fraction 0.5": (0.5, None, None),
    "auto, max_seq_len 32": (1.0, None, 32),
    "auto, client_fraction 0.5, max_seq_len 32": (0.5, None, 32),
    "auto, max_texts 16, max_seq_len 32": (1.0, 16, 32),
}


def reachable_tau(truth: dict[str, float]) -> float:
    """The best Kendall tau-b of a ranking without ties against ``truth``: sqrt(1 - n1/n0),
    n1 the truth's tied pairs (every untied pair concordant, no tied pair counted)."""
    pairs = list(itertools.combinations(truth.values(), 2))
    tied = sum(a == b for a, b in pairs)
    return math.sqrt(1 - tied / len(pairs))


def combined_quality(results: list[dict]) -> dict[str, list[dict]]:
    """Each registered combined score, re-scored from its components' committed scores."""
    out: dict[str, list[dict]] = {}
    for name in score_names(COMBINED):
        d = SCORES[name]
        if not all(u in r["methods"] for r in results for u in d.uses):
            continue
        out[name] = [selection_quality(r["truth"], missing_last(d.fn({u: r["methods"][u]["scores"] for u in d.uses})))
                     for r in results]
    return out


def auto_forward(result: dict, fraction: float, cap: int | None, seq_len: int | None, train_len: int) -> float:
    """auto's client compute in forward equivalents at the training length: each sampled
    client's admitted texts (at most ``cap``) once per candidate, scaled by the length."""
    clients = {r["client"]: r["examples"] for r in result["clients"]}
    size = SelectionSpec(name="auto", candidates=("a", "b"), client_fraction=fraction).cohort_size(len(clients))
    texts = sum(min(clients[c], cap or clients[c]) for c in cohort(sorted(clients), size, result["seed"]))
    return texts * len(result["candidates"]) * (seq_len or train_len) / train_len


def report_auto(results: list[dict], train_len: int, budget_rounds: int) -> None:
    print(f"\ncombined scores on the committed scores ({len(results)} settings; tau_max: the best tau a ranking "
          "without ties reaches given the truth's ties)")
    reach = [reachable_tau(r["truth"]) for r in results]
    print(f"{'score':12s} {'tau':>6s} {'tau_max':>7s} {'regret max':>10s} {'mean':>6s} {'best':>5s}  per setting tau")
    for name, qs in {"gbc": None, "logme": None, **combined_quality(results)}.items():
        if qs is None:
            qs = [selection_quality(r["truth"], missing_last(r["methods"][name]["scores"])) for r in results]
        regrets = [q["top1_regret"] for q in qs]
        alias = f" (= {SCORES[name].alias_of})" if SCORES[name].alias_of else ""
        taus = " ".join(f"{q['kendall_tau']:.2f}" for q in qs)
        print(f"{name:12s} {mean(q['kendall_tau'] for q in qs):6.3f} {mean(reach):7.3f} {max(regrets):10.3f} "
              f"{mean(regrets):6.3f} {sum(q['chosen'] == q['best'] for q in qs):3d}/{len(qs)}  {taus}{alias}")
    print(f"\nauto's compute / brute force (forward equivalents; length {train_len} in training; "
          f"brute force at the study's rounds and at {budget_rounds} rounds)")
    print(f"{'variant':44s} {'forward eq.':>11s} {'vs BF':>8s} {f'vs BF@{budget_rounds}':>9s}")
    bf_cost = [Cost(**r["methods"]["brute_force"]["cost"]) for r in results]
    study_rounds = [b.rounds / len(r["candidates"]) for b, r in zip(bf_cost, results)]
    bf = [selection_compute(r, "brute_force") for r in results]  # less its test-split predictions
    rows = {"gbc, PCA round re-encoding (before)": [2 * auto_forward(r, 1.0, None, None, train_len) for r in results],
            **{v: [auto_forward(r, *args, train_len) for r in results] for v, args in AUTO_VARIANTS.items()}}
    for v, fwd in rows.items():
        ratio = mean(f / b for f, b in zip(fwd, bf))
        at = mean(f / (b * budget_rounds / k) for f, b, k in zip(fwd, bf, study_rounds))
        print(f"{v:44s} {mean(fwd):11,.0f} {ratio:8.4f} {at:9.5f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, help="summarise finished study results instead of running")
    p.add_argument("--data", type=Path, help="folder with <corpus>_data.h5 (experiments/selection_study/prepare.py)")
    p.add_argument("--corpus", default="bbc")
    p.add_argument("--partition", default="alpha=1", choices=list(PARTITIONS))
    p.add_argument("--hub", type=Path, default=Path("models"))
    p.add_argument("--candidates", nargs="+", default=POOL)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seq-len", type=int, default=64, help="the study's fl.max_seq_len (auto's length scale)")
    p.add_argument("--budget-rounds", type=int, default=100, help="a realistic brute force (FedPETuning: 100)")
    a = p.parse_args(argv)
    if a.results:
        results = [json.loads(f.read_text()) for f in sorted(a.results.rglob("result.json"))]
        if not results:
            raise SystemExit(f"no result.json under {a.results}")
        report(results)
        report_auto(results, a.train_seq_len, a.budget_rounds)
        return
    if a.data is None:
        raise SystemExit("--data DIR (or --results RUNS) is required")
    cfg = StudyConfig(candidates=tuple(candidate_spec(c, {"model_hub": str(a.hub)}) for c in a.candidates),
                      rounds=a.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_setting(cfg, a.data / f"{a.corpus}_data.h5", a.partition, a.seed, Path(tmp))
    print(json.dumps({m: result["methods"][m]["cost"] for m in ("brute_force", *COMPARED)}, indent=1))
    report([result])


if __name__ == "__main__":
    main()
