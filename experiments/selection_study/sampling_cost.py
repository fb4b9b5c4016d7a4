"""What sampling the statistics round costs auto in ranking quality (issue 16.5).

    python experiments/selection_study/sampling_cost.py --runs WORK/runs --data WORK/data --hub models \
        --caps 16 32 48 60 --fractions 0.5 --draws 5 --out experiments/selection_study/results/ground_truth

``--seq-lens 64 32`` instead measures auto as shipped (``SHIPPED_AUTO``) at shorter lengths
(``selection.max_seq_len``) on the same draws, each length's features encoded once per run; its
compute is scaled by the share of the study length's tokens a length keeps.

auto's compute is its statistics round: one encode of every admitted text per candidate. Two
knobs cut it, both seeded by the run's seed: ``selection.max_texts_per_client`` (a sample of each
client's texts) and ``selection.client_fraction`` (a sample of the clients). This re-runs the live
statistics round of every finished study setting that kept its features (``run_study.py
--keep-features``) under each knob, ``--draws`` times with other seeds (``setting seed +
DRAW_SEED (draw + 1)``: other texts and clients, the same partition). A capped client's features
are rows of its kept uncapped ones and the probe's features are kept too, so nothing is encoded.

Each draw is compared with the setting's own uncapped statistics round (``result.json``) and with
its ground truth (the mean over its seeds, ties within ``--tie-tol``). The compute a live run
would spend is every admitted text once per candidate, against brute force's selection compute
(``vista.drivers.study.selection_compute``: its training, without the test split's predictions).
Writes ``sampling.md`` (per knob and method: tau-b, regret, how often the uncapped pick was kept
and the best picked, compute) and ``sampling.json`` (every draw) to ``--out``, and applies the
decision rule registered in the study README before this was run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from vista.drivers.study import (
    SHIPPED_AUTO,
    StudyConfig,
    _run_or_reuse,
    quality_of,
    run_name,
    setting_parts,
)
from vista.drivers.study_compute import corpus_token_counts, selection_compute
from vista.selection.sampling import token_share
from vista.selection.spec import SelectionSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study's scripts, run or imported from anywhere
from privacy_cost import _same, _truths, kept_settings, study_args, study_config  # noqa: E402

DRAW_SEED = 3000  # the draws' run seeds: setting seed + DRAW_SEED * (draw + 1)
METHODS = ("auto", "gbc", "logme")  # auto (= gbc_prior: GBC and the size prior) and two of its peers
TARGET = 1 / 20  # issue 16.5: compute <= 1/20 of brute force at the study's budget
TAU_SLACK = 0.02  # the registered rule: mean tau-b within this of the uncapped mean
SHARES = [1.0, 0.5, 0.25]  # the floor check's shares of the clients (registered, tenth sitting)


@dataclasses.dataclass(frozen=True)
class Knob:
    """One way of sampling the statistics round."""

    max_texts_per_client: int | None = None
    client_fraction: float = 1.0
    min_texts_per_round: int | None = None
    max_seq_len: int | None = None  # None: the study's length

    @property
    def label(self) -> str:
        parts = [] if self.max_texts_per_client is None else [f"max_texts_per_client={self.max_texts_per_client}"]
        if self.min_texts_per_round is not None:
            parts.append(f"min_texts_per_round={self.min_texts_per_round}")
        if self.max_seq_len is not None:
            parts.append(f"max_seq_len={self.max_seq_len}")
        if self.client_fraction < 1 or not parts:
            parts.append(f"client_fraction={self.client_fraction:g}")
        return ",".join(parts)


def rescore(cfg: StudyConfig, setting: Path, data: Path, result: dict, knob: Knob, draw: int | None,
            out: Path) -> dict:
    """One statistics round of ``setting`` under ``knob``, draw ``draw`` (None: the setting's own
    seed, into ``out/uncapped``, or ``out/<knob>``: at a length of its own, every text encoded once
    for the draws to slice), from its kept features."""
    parts = setting_parts(cfg, data / f"{result['data']}_data.h5", result["partition"], result["seed"], setting)
    # gbc_prior: what auto was when this was measured (design note 89 made auto head_gbc)
    spec = SelectionSpec(name="gbc_prior", candidates=cfg.candidates, scores=("logme",), privacy=cfg.privacy,
                         feature_store=str(setting / "features"), max_texts_per_client=knob.max_texts_per_client,
                         client_fraction=knob.client_fraction, min_texts_per_round=knob.min_texts_per_round,
                         max_seq_len=knob.max_seq_len)
    if draw is None:
        return _run_or_reuse(dataclasses.replace(parts, selection=spec), out / ("uncapped" if knob == Knob() else
                                                                                   knob.label))
    seed = result["seed"] + DRAW_SEED * (draw + 1)
    return _run_or_reuse(dataclasses.replace(parts, selection=spec, seed=seed), out / knob.label / f"draw{draw}")


def reproduce(cfg: StudyConfig, setting: Path, data: Path, result: dict, out: Path) -> None:
    """The setting's own statistics round again, from its store (a store that lacks the features
    gets them encoded once, uncapped, for the draws to slice): it must give the study's scores."""
    sel = rescore(cfg, setting, data, result, Knob(), None, out)
    off = [m for m in METHODS if not _same(sel["scores"][_name(m)], _recorded(result, m)["scores"])]
    if off:
        raise SystemExit(f"{setting}: re-scored {off} differ from the study's: a stale feature store?")


def _name(method: str) -> str:
    """The registry's name of what this script measures as ``auto``: gbc_prior, auto when it was
    measured (design note 89 made auto head_gbc, which the study scores on auto's sample only)."""
    return "gbc_prior" if method == "auto" else method


def _recorded(result: dict, method: str) -> dict:
    """A method's entry in a study result; ``auto``: gbc_prior's in runs made since design note 89."""
    m = result["methods"]
    return m[method] if method in m else m[_name(method)]


def rows_of(result: dict, truth: dict[str, float], sel: dict | None, knob: str, draw: int,
            tie_tol: float, bf: float, token_share: float = 1.0) -> list[dict]:
    """One row per method: its quality against the truth, whether it kept the uncapped pick (the
    one ``result`` records), and the compute a live run would spend against ``bf``, brute force's
    selection compute (``sel`` None: the setting's own uncapped round), its encoded texts scaled by
    ``token_share`` (the share of the study length's tokens a shorter length keeps)."""
    if sel is None:
        passes = _recorded(result, "auto")["cost"]["forward_passes"]
        scores = {m: _recorded(result, m)["scores"] for m in METHODS}
    else:
        passes = sum(r["examples"] for r in sel["clients"]) * len(result["truth"])  # one encode per text and candidate
        scores = {m: sel["scores"][_name(m)] for m in METHODS}
    rows = []
    for m in METHODS:
        q = quality_of(truth, scores[m], tie_tol)
        rows.append({"data": result["data"], "partition": result["partition"], "seed": result["seed"],
                     "knob": knob, "draw": draw, "method": m, "kendall_tau": q["kendall_tau"],
                     "top1_regret": q["top1_regret"], "chosen": q["chosen"], "best": q["best"],
                     "kept_pick": q["chosen"] == _recorded(result, m)["chosen"], "forward_passes": passes,
                     "token_share": token_share, "compute_vs_bf": passes * token_share / bf})
    return rows


def summary(rows: list[dict], knobs: list[str]) -> list[dict]:
    """Per knob and method: means over runs (each run's draws averaged first), worst cases, the rule."""
    out = []
    for k in knobs:
        for m in METHODS:
            sel = [r for r in rows if r["knob"] == k and r["method"] == m]
            runs = sorted({(r["data"], r["partition"], r["seed"]) for r in sel})
            per_run = [[r for r in sel if (r["data"], r["partition"], r["seed"]) == run] for run in runs]
            taus = [mean(r["kendall_tau"] for r in g) for g in per_run]
            out.append({"knob": k, "method": m, "runs": len(runs), "draws": len(sel),
                        "kendall_tau": mean(taus),
                        "tau_sd_over_draws": _mean_sd([[r["kendall_tau"] for r in g] for g in per_run]),
                        "mean_regret": mean(r["top1_regret"] for r in sel),
                        "worst_regret": max(r["top1_regret"] for r in sel),
                        "kept_pick": mean(float(r["kept_pick"]) for r in sel),
                        "picked_best": mean(float(r["chosen"] == r["best"]) for r in sel),
                        "compute_vs_bf": mean(mean(r["compute_vs_bf"] for r in g) for g in per_run),
                        "worst_compute_vs_bf": max(r["compute_vs_bf"] for r in sel)})
    return out


def _mean_sd(groups: list[list[float]]) -> float:
    """The mean over runs of the standard deviation over a run's draws (0 for one draw)."""
    return mean(stdev(g) if len(g) > 1 else 0.0 for g in groups)


def decide(summ: list[dict]) -> tuple[str | None, list[str]]:
    """The registered rule: of the knobs whose auto kept the uncapped pick in every draw, whose mean
    tau-b is within TAU_SLACK of the uncapped mean and whose compute is <= TARGET in every run,
    the cheapest; None when no knob passes. Returns it and one line per knob saying why."""
    auto = {s["knob"]: s for s in summ if s["method"] == "auto"}
    base = auto["uncapped"]
    lines, passing = [], []
    for k, s in auto.items():
        if k == "uncapped":
            continue
        checks = {"kept the pick in every draw": s["kept_pick"] == 1.0,
                  f"tau-b within {TAU_SLACK} of uncapped": s["kendall_tau"] >= base["kendall_tau"] - TAU_SLACK,
                  f"compute <= 1/{round(1 / TARGET)} in every run": s["worst_compute_vs_bf"] <= TARGET}
        failed = [c for c, ok in checks.items() if not ok]
        if not failed:
            passing.append(k)
        lines.append(f"{k}: {'passes' if not failed else 'fails: ' + '; '.join(failed)}")
    best = min(passing, key=lambda k: auto[k]["compute_vs_bf"], default=None)
    return best, lines


def floor_knobs(caps: list[int], floor: int, shares: list[float]) -> list[Knob]:
    """The floor check's knobs: at each share of the clients, each cap alone, with the floor, and
    (below every client) every text; at every client, every text is the run's own round."""
    knobs = []
    for share in shares:
        knobs += [k for c in caps for k in (Knob(c, share), Knob(c, share, floor))]
        knobs += [Knob(None, share)] if share < 1 else []
    return knobs


def decide_floor(rows: list[dict], caps: list[int], floor: int, shares: list[float]) -> tuple[bool, list[str]]:
    """The floor rule registered before it was measured (study README, tenth sitting): at every
    client the floor picks what the cap picks in every draw; at a share of them it keeps the pick at
    least as often as the cap alone and within one draw of every text; its compute is <= TARGET in
    every run at every share. Returns whether it passes and one line per check."""
    auto = [r for r in rows if r["method"] == "auto"]

    def picks(label: str) -> dict[tuple, dict]:
        return {(r["data"], r["partition"], r["seed"], r["draw"]): r for r in auto if r["knob"] == label}

    lines, ok = [], True
    for cap in caps:
        for share in shares:
            capped_, floored = picks(Knob(cap, share).label), picks(Knob(cap, share, floor).label)
            kept = {k: sum(r["kept_pick"] for r in v.values()) for k, v in (("cap", capped_), ("floor", floored))}
            checks = {f"compute <= 1/{round(1 / TARGET)} in every run":
                      max(r["compute_vs_bf"] for r in floored.values()) <= TARGET}
            if share == 1:
                checks["the cap's pick in every draw"] = all(floored[k]["chosen"] == capped_[k]["chosen"]
                                                             for k in capped_)
            else:
                kept["every text"] = sum(r["kept_pick"] for r in picks(Knob(None, share).label).values())
                checks["kept at least the cap's"] = kept["floor"] >= kept["cap"]
                checks["kept within one draw of every text's"] = kept["floor"] >= kept["every text"] - 1
            failed = [c for c, good in checks.items() if not good]
            ok = ok and not failed
            counts = ", ".join(f"{k} {v} of {len(floored)}" for k, v in kept.items())
            lines.append(f"cap {cap}, floor {floor}, client_fraction {share:g} (kept: {counts}): "
                         f"{'passes' if not failed else 'fails: ' + '; '.join(failed)}")
    return ok, lines


def token_shares(cfg: StudyConfig, data_file: Path, lengths: list[int]) -> dict[int, float]:
    """Per length, the share of the study length's tokens it keeps (every training text tokenised
    by every candidate: ``study_compute.corpus_token_counts``); linear in tokens, an upper bound."""
    counts = corpus_token_counts(cfg.candidates, data_file)
    return {n: token_share(counts, n, cfg.max_seq_len) for n in lengths}


def length_knobs(lengths: list[int]) -> list[Knob]:
    """The length check's knobs: auto as shipped (SHIPPED_AUTO, all clients) at the study's length
    and at each of ``lengths``."""
    shipped = Knob(SHIPPED_AUTO["max_texts_per_client"], 1.0, SHIPPED_AUTO["min_texts_per_round"])
    return [shipped, *(dataclasses.replace(shipped, max_seq_len=n) for n in lengths)]


def decide_length(summ: list[dict], lengths: list[int]) -> tuple[int | None, list[str]]:
    """The length rule registered before it was measured (study README, eleventh sitting): against
    auto as shipped at the study's length on the same draws, a length (a) keeps the run's own pick
    in at least as many draws, (b) keeps the mean tau-b (over runs, of each run's draws) within
    TAU_SLACK and (c) has no larger worst regret, read from :func:`summary`. Returns the shortest
    length that passes (None if none) and one line per length."""
    auto = {s["knob"]: s for s in summ if s["method"] == "auto"}
    base, *others = length_knobs(lengths)

    def stats(label: str) -> tuple[int, float, float, int]:
        s = auto[label]
        return round(s["kept_pick"] * s["draws"]), s["kendall_tau"], s["worst_regret"], s["draws"]

    kept0, tau0, worst0, n = stats(base.label)
    lines, passing = [], []
    for knob in others:
        kept, tau, worst, _ = stats(knob.label)
        checks = {"kept at least as many picks": kept >= kept0, f"tau-b within {TAU_SLACK}": tau >= tau0 - TAU_SLACK,
                  "no larger worst regret": worst <= worst0 + 1e-12}
        failed = [c for c, ok in checks.items() if not ok]
        passing += [knob.max_seq_len] if not failed else []
        lines.append(f"max_seq_len {knob.max_seq_len} (kept {kept} of {n}, tau-b {tau:.3f}, worst regret {worst:.3f}; "
                     f"the study's length: {kept0}, {tau0:.3f}, {worst0:.3f}): "
                     f"{'passes' if not failed else 'fails: ' + '; '.join(failed)}")
    return min(passing, default=None), lines


def table(summ: list[dict], runs: list[str], draws: int, footer: list[str]) -> str:
    lines = ["# What sampling the statistics round costs auto", "",
             f"{len(runs)} study runs ({', '.join(runs)}), {draws} seeded draws per knob (other texts and "
             "clients each draw), re-scored from each run's kept features. tau-b and regret against the "
             "setting's ground truth (ties within the study's tolerance); 'kept' is the share of draws that "
             "picked what the run's own uncapped statistics round picked; compute is a live run's forward "
             "passes (every admitted text once per candidate) over brute force's selection compute, the mean "
             "over runs and the worst run.", "",
             "| knob | method | tau-b | sd over draws | mean regret | worst regret | kept pick | picked best "
             "| compute vs BF | worst run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summ:
        lines.append(f"| {s['knob']} | {s['method']} | {s['kendall_tau']:.2f} | {s['tau_sd_over_draws']:.2f} | "
                     f"{s['mean_regret']:.3f} | {s['worst_regret']:.3f} | {s['kept_pick']:.2f} | "
                     f"{s['picked_best']:.2f} | {s['compute_vs_bf']:.4f} | {s['worst_compute_vs_bf']:.4f} |")
    return "\n".join([*lines, "", *footer, ""])


def footer_of(decision: tuple[str | None, list[str]]) -> list[str]:
    best, why = decision
    return ["The rule registered before this ran (study README): the cheapest knob whose auto kept its "
            f"uncapped pick in every draw, kept its mean tau-b within {TAU_SLACK} and spends <= 1/20 of brute "
            "force in every run.", "", *(f"- {w}" for w in why), "",
            f"Decision: {best if best else 'no knob passes; auto samples nothing'}."]


def floor_footer(floor: int, decision: tuple[bool, list[str]]) -> list[str]:
    ok, why = decision
    return ["A floor on the round's texts (selection.min_texts_per_round): the cap rises to ceil(floor / "
            "clients scored). The rule registered before this ran (study README, tenth sitting): at every client "
            "the floor picks what the cap picks in every draw; at a share of the clients it keeps the uncapped "
            "pick at least as often as the cap alone and within one draw of every text; compute <= 1/20 of brute "
            "force in every run.", "", *(f"- {w}" for w in why), "",
            f"Decision: {f'min_texts_per_round={floor} passes' if ok else 'the floor fails; not adopted'}."]


def length_footer(decision: tuple[int | None, list[str]]) -> list[str]:
    best, why = decision
    return ["auto as shipped (SHIPPED_AUTO) at shorter lengths (selection.max_seq_len), the same draws. Compute "
            "scales each run's encoded texts by the share of the study length's tokens a length keeps (linear in "
            "tokens: an upper bound). The rule registered before this ran (study README, eleventh sitting): against "
            f"the study's length, at least as many kept picks, mean tau-b within {TAU_SLACK}, no larger worst regret; "
            "the shortest length that passes.", "", *(f"- {w}" for w in why), "",
            f"Decision: {f'max_seq_len={best} passes' if best else 'no shorter length passes; auto keeps fl.max_seq_len'}."]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    study_args(p)
    p.add_argument("--caps", nargs="*", type=int, default=[16, 32, 48, 60], help="max_texts_per_client values")
    p.add_argument("--fractions", nargs="*", type=float, default=[0.5], help="client_fraction values")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--with-fraction", type=float, default=None,
                   help="every cap together with this client_fraction (a smaller federation, capped), written to "
                        "sampling_fraction<F>.md/json; no decision (the registered rule is the default run's)")
    p.add_argument("--floor", type=int, default=None,
                   help="the floor check: each cap alone and with min_texts_per_round FLOOR (and every text) at "
                        "each --shares, written to sampling_floor<FLOOR>.md/json with the floor rule's decision")
    p.add_argument("--shares", nargs="*", type=float, default=SHARES,
                   help="client_fraction values (--floor; others than the default go to sampling_floor<F>_shares<...>)")
    p.add_argument("--seq-lens", nargs="*", type=int, default=None,
                   help="the length check: auto as shipped at the study's length and at each of these "
                        "(selection.max_seq_len), written to sampling_length<L...>.md/json with the length rule's decision")
    p.add_argument("--work", type=Path, default=None,
                   help="where the re-scoring runs go (default: <runs>/../sampling_runs)")
    a = p.parse_args(argv)
    cfg = study_config(a)
    results = kept_settings(a.runs)
    truths = _truths(list(results.values()))
    knobs = [Knob(max_texts_per_client=c) for c in a.caps] + [Knob(client_fraction=f) for f in a.fractions]
    if a.with_fraction is not None:
        knobs = [Knob(max_texts_per_client=c, client_fraction=a.with_fraction) for c in a.caps]
    if a.floor is not None:
        knobs = floor_knobs(a.caps, a.floor, a.shares)
    if a.seq_lens:
        knobs = length_knobs(a.seq_lens)
    rows: list[dict] = []
    token_share: dict[str, dict[int, float]] = {}  # per corpus, per length
    for setting, res in results.items():
        truth = truths[(res["data"], res["partition"])]
        bf = selection_compute(res, "brute_force")  # less its test-split predictions
        rows += rows_of(res, truth, None, "uncapped", 0, a.tie_tol, bf)
        work = (a.work or a.runs.parent / "sampling_runs") / run_name(res)
        reproduce(cfg, setting, a.data, res, work)
        if a.seq_lens and res["data"] not in token_share:
            token_share[res["data"]] = token_shares(cfg, a.data / f"{res['data']}_data.h5", a.seq_lens)
        for n in a.seq_lens or []:  # every text encoded once at this length, for the draws to slice
            own = Knob(max_seq_len=n)
            sel = rescore(cfg, setting, a.data, res, own, None, work)
            rows += rows_of(res, truth, sel, own.label, 0, a.tie_tol, bf, token_share[res["data"]][n])
        for knob in knobs:
            share = token_share[res["data"]][knob.max_seq_len] if knob.max_seq_len else 1.0
            for d in range(a.draws):
                t0 = time.perf_counter()
                sel = rescore(cfg, setting, a.data, res, knob, d, work)
                rows += rows_of(res, truth, sel, knob.label, d, a.tie_tol, bf, share)
                print(f"{setting.relative_to(a.runs)} {knob.label} draw {d}: {time.perf_counter() - t0:.0f}s, "
                      f"auto picks {rows[-len(METHODS)]['chosen']}", flush=True)
    labels = ["uncapped", *(Knob(max_seq_len=n).label for n in a.seq_lens or []), *(k.label for k in knobs)]
    summ = summary(rows, labels)
    if a.seq_lens:
        stem, decision = "sampling_length" + "-".join(str(n) for n in a.seq_lens), decide_length(summ, a.seq_lens)
        footer = length_footer(decision)
    elif a.floor is not None:
        decision = decide_floor(rows, a.caps, a.floor, a.shares)
        suffix = "" if a.shares == SHARES else "_shares" + "-".join(f"{s:g}" for s in a.shares)
        stem = f"sampling_floor{a.floor}{suffix}"
        footer = floor_footer(a.floor, decision)
    elif a.with_fraction is not None:
        stem, decision = f"sampling_fraction{a.with_fraction:g}", None
        footer = ["Caps crossed with a share of the clients (--with-fraction): a smaller federation scoring capped "
                  "texts. Not the registered measurement: no decision."]
    else:
        stem, decision = "sampling", decide(summ)
        footer = footer_of(decision)
    runs = sorted({f"{r['data']} {r['partition']} seed {r['seed']}" for r in rows})
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{stem}.json").write_text(json.dumps({"rows": rows, "summary": summ, "tie_tol": a.tie_tol,
                                                    "decision": decision and decision[0],
                                                    "why": decision and decision[1]}, indent=1))
    (a.out / f"{stem}.md").write_text(table(summ, runs, a.draws, footer))
    print(f"wrote {a.out / f'{stem}.md'}, {a.out / f'{stem}.json'}; decision: {decision and decision[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
