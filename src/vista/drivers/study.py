"""Evaluating selection methods: one setting (corpus x partition x seed) at a time.

Per setting: one statistics round scores every candidate with every statistics score
(LogME, H-score, regularised H-score, TransRate, GBC, the avg_logme and Borda baselines),
the prior baselines cost nothing, and one brute-force run fine-tunes every candidate for
``rounds`` rounds on the clients' train splits less a validation split held out of each
(``val_fraction``, seeded; the ground truth: final global test accuracy). Successive halving
and hybrid are then *replayed* on the brute-force validation curves: FedPEFT is deterministic
and a continued run equals an uninterrupted one (tested), so a replayed search decides exactly
as a live one would (on the validation split, never the test split) and its cost is the sum
of the rounds it would have run.

``random`` is reported as its expectation over :data:`~vista.selection.ranking.RANDOM_DRAWS`
seeded rankings (:func:`~vista.selection.ranking.random_expectation`), its one live draw beside it.
Which scores: every one in the registry (:data:`vista.selection.scores.SCORES`), each on the
features its registry entry is meant for (``gbc_prior_mean``: mean-pooled; :func:`own_poolings`): a method
of another pooling than the classifiers' own gets a statistics round of its own; ``auto_shipped``
is auto as ``conf/selection/auto.yaml`` samples it (:data:`SHIPPED_AUTO`), a round of its own.
Statistics-score costs are per score, from what each declares: per-class Gram matrices
(TransRate, GBC) cost bytes, a second round (GBC) costs a round and bytes (its features come
from the feature cache, not a second encode, unless ``feature_cache_mb=0``); the bytes are
computed from the wire layout for each, plus what the server sends (the shift; GBC's basis
and centre). A score that is undefined for a candidate ranks it last, as a live run does
(:func:`vista.selection.ranking.missing_last`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vista.data.computed import ComputedPartitionSpec
from vista.data.fednlp import FederatedData, FederatedDataSpec
from vista.drivers.selection import run_selection
from vista.drivers.study_budget import (  # noqa: F401 - the study's API
    BUDGET_FIELDS,
    BudgetMismatch,
    budget_of,
    check_budget,
)
from vista.drivers.study_compute import corpus_token_counts
from vista.drivers.study_head import (  # noqa: F401
    HEAD_GBC_SHIPPED,
    HEAD_SHIPPED,
    HEAD_VARIANTS,
    head_entry,
    rescore_heads,
)
from vista.drivers.study_quality import EXPECTED, method_quality, quality_of  # noqa: F401 - the study's API
from vista.drivers.study_truth import check_truth, truth_of, truth_rounds
from vista.fl.aggregators import FedAvg
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.peft.lora import LoraSpec
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec
from vista.selection.combine import server_scores
from vista.selection.metrics import GBC_PCA_DIM
from vista.selection.privacy import GUARDED, PrivacySpec
from vista.selection.sampling import token_share
from vista.selection.scores import CLIENT, COMBINED, EXACT, HEAD, PRIOR, SCORES
from vista.selection.scores import names as score_names
from vista.selection.search import Cost, ReplayOracle, hybrid, successive_halving
from vista.selection.spec import SelectionSpec
from vista.selection.stats import SufficientStats

PARTITIONS: dict[str, tuple[str, float | None]] = {"iid": ("uniform", None), "alpha=1": ("niid_label", 1.0),
                                                   "alpha=0.1": ("niid_label", 0.1)}


def stat_methods() -> tuple[str, ...]:
    """The registry's scores that need client work (exact and client scores). The head probe's
    are studied on auto's sample of the texts only (:func:`score_shipped_head`)."""
    return (*score_names(EXACT), *score_names(CLIENT))


def prior_methods() -> tuple[str, ...]:
    return score_names(PRIOR)


def combined_methods() -> tuple[str, ...]:
    """The registry's combined scores (``auto`` among them): computed by the server from their
    components' values, no client work of their own; but those of a head score (head_gbc:
    :func:`score_shipped_head`)."""
    return tuple(m for m in score_names(COMBINED) if not any(SCORES[u].kind == HEAD for u in SCORES[m].uses))


SEARCH_METHODS = ("successive_halving", "hybrid")

# Ground-truth accuracies closer than this tie in the study's rank measures (tau-b, weighted tau,
# Spearman; the regret keeps the real values). 0.01 is 4 of 400 test texts: under one binomial
# standard error of a test accuracy there (0.015 at 10% or 90%, 0.025 at 50%), so no order the test
# set can vouch for; small enough that it mostly merges candidates stuck at the majority rate.
TIE_TOL = 0.01


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    candidates: tuple[ModelSpec, ...]
    clients: int = 8
    clients_per_round: int = 4
    rounds: int = 3
    batch_size: int = 16
    lr: float = 2e-3
    max_seq_len: int = 64
    lora_r: int = 8
    local_epochs: int = 1
    lr_schedule: str = "constant"  # the clients' rate each round (fl.lr_schedule); cosine falls over the rounds
    truth: str = "last"  # which round of a candidate's curve its truth reads (study_truth.TRUTHS)
    r0: int = 1
    eta: int = 2
    top_k: int = 3
    num_workers: int = 2
    device: str = "cpu"  # auto | cpu | cuda (the scheduler's device plan)
    privacy: PrivacySpec = GUARDED
    val_fraction: float = 0.1  # of each client's train split, held out: what the searches rank on
    validation_key: str = "client_val_accuracy_mean"
    tie_tol: float = 0.0  # truth accuracies this close tie in the rank measures (run_study.py: TIE_TOL)
    keep_features: bool = False  # keep the statistics round's features in <setting>/features for re-scoring
    # brute force also scores the test split every this many rounds (None: only in the last, the
    # truth): one run then gives the truth at every such budget (longer_truth.py); training unchanged
    test_every: int | None = None


def setting_parts(cfg: StudyConfig, data_file: Path, partition: str, seed: int, work: Path) -> ExperimentParts:
    kind, alpha = PARTITIONS[partition]
    name = data_file.name.removesuffix("_data.h5")
    part_file, method = ComputedPartitionSpec(kind, str(work / f"{name}_partition_seed{seed}.h5"), clients=cfg.clients,
                                              alpha=alpha, seed=seed).resolve(data_file)
    return ExperimentParts(
        seed=seed,
        fl=FLSpec(rounds=cfg.rounds, clients_per_round=cfg.clients_per_round, batch_size=cfg.batch_size, lr=cfg.lr,
                  max_seq_len=cfg.max_seq_len, eval_batch_size=64, local_epochs=cfg.local_epochs,
                  lr_schedule=cfg.lr_schedule),
        model=cfg.candidates[0],
        peft=LoraSpec(r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.05),
        data=FederatedDataSpec(str(data_file), str(part_file), method),
        aggregator=FedAvg(),
        scheduler=SchedulerSpec(num_workers=cfg.num_workers, device=cfg.device),
        recorder=RecorderSpec(),
    )


def stats_bytes(dim: int, classes: int, per_class: bool, secure_agg: bool) -> int:
    """Bytes one client uploads for one candidate: 8-byte numbers (two 8-byte limbs each under
    secure aggregation), Grams as upper triangles."""
    return (16 if secure_agg else 8) * SufficientStats.wire_floats(classes, dim, per_class)


def own_poolings() -> dict[str, tuple[str, ...]]:
    """Methods the registry means for another pooling than each classifier's own
    (:attr:`ScoreDef.pooling <vista.selection.scores.ScoreDef.pooling>`, e.g. ``gbc_prior_mean``: mean),
    by pooling: the study scores them on a statistics round of their own, as a live run does."""
    out: dict[str, list[str]] = {}
    for m in (*stat_methods(), *combined_methods()):
        p = SCORES[m].pooling
        if p not in (None, "auto"):
            out.setdefault(p, []).append(m)
    return {p: tuple(ms) for p, ms in out.items()}


def run_setting(cfg: StudyConfig, data_file: Path, partition: str, seed: int, out_dir: Path) -> dict[str, Any]:
    """Every method on one setting; writes and returns ``<out_dir>/result.json``."""
    check_truth(cfg.truth, cfg.test_every)
    budget = check_budget(cfg, out_dir)
    parts = setting_parts(cfg, data_file, partition, seed, out_dir)
    names = [c.name for c in cfg.candidates]
    tol = cfg.tie_tol
    stats_spec = _stats_spec(cfg, out_dir, "auto")
    stats = _run_or_reuse(dataclasses.replace(parts, selection=stats_spec), out_dir / "statistics")
    stats_seconds = stats["selection_seconds"]
    bf_spec = SelectionSpec(name="brute_force", candidates=cfg.candidates, max_rounds=cfg.rounds,
                            val_fraction=cfg.val_fraction, validation_key=cfg.validation_key)
    bf_fl = parts.fl if cfg.test_every is None else dataclasses.replace(
        parts.fl, test_every=cfg.test_every, val_fraction=cfg.val_fraction)
    bf = _run_or_reuse(dataclasses.replace(parts, fl=bf_fl, selection=bf_spec), out_dir / "brute_force")
    bf_seconds = bf["selection_seconds"]
    histories = bf["histories"]
    read_at = truth_rounds({c: histories[c] for c in names}, cfg.truth, cfg.validation_key)
    truth = truth_of(histories, read_at)

    methods = _score_methods(stats, stats_spec, names, truth, tol, "auto")
    methods["brute_force"] = _entry("brute_force", truth, truth, Cost(**bf["cost"]), tol)
    result = {"data": data_file.name.removesuffix("_data.h5"), "partition": partition, "seed": seed,
              "candidates": names, "truth": truth, "methods": methods,
              "budget": budget, "val_fraction": cfg.val_fraction, "validation_key": cfg.validation_key, "tie_tol": tol,
              "clients": stats["clients"], "privacy": stats.get("privacy"),
              "seconds": {"statistics": stats_seconds, "brute_force": bf_seconds},
              "curves": curves_of(histories, cfg.validation_key), "test_texts": test_texts(parts),
              **({"truth_rounds": read_at} if cfg.truth != "last" else {})}
    replay_searches(result, cfg.top_k, cfg.r0, cfg.eta)
    return rescore_own_poolings(cfg, data_file, out_dir, result)


def replay_searches(result: dict[str, Any], top_k: int, r0: int, eta: int) -> bool:
    """Successive halving and hybrid (LogME's ``top_k``, its statistics round's cost included)
    replayed on ``result``'s brute-force curves, into its methods: a search decides exactly as a
    live one would. Rerun on a kept result whenever the searches' rules change (a rung's cut of
    a tie, :func:`vista.selection.search._cut`); True if an entry changed."""
    truth, key, tol, m = result["truth"], result["validation_key"], result["tie_tol"], result["methods"]
    rounds = result["budget"]["rounds"]
    sh = successive_halving(list(truth), ReplayOracle(result["curves"], key), r0, eta, rounds)
    hy = hybrid(m["logme"]["scores"], ReplayOracle(result["curves"], key), top_k, r0, eta, rounds)
    new = {"successive_halving": _entry("successive_halving", truth, sh.rank_scores, sh.cost, tol, search=sh.to_dict()),
           "hybrid": _entry("hybrid", truth, hy.rank_scores, hy.cost + Cost(**m["logme"]["cost"]), tol,
                            search=hy.to_dict())}
    changed = any(json.dumps(m.get(k), sort_keys=True) != json.dumps(v, sort_keys=True) for k, v in new.items())
    m.update(new)
    return changed


def test_texts(parts: ExperimentParts) -> int:
    """How many texts one evaluation predicts for the test splits (the global one and the
    clients', each text once)."""
    fed = FederatedData(parts.data)
    try:
        return len({int(i) for i in fed.test_indices} | {int(i) for s in fed.partition.clients.values() for i in s.test})
    finally:
        fed.close()


# per round of brute force: what a replayed search reads (its cost) and the truth it ends in
# (and the validation loss: what could order a tie of accuracies, e.g. all at the majority rate; note 76)
CURVE_KEYS = ("test_accuracy", "val_loss", "forward_passes", "backward_passes", "bytes_up", "bytes_down",
              "round_seconds")


def run_name(result: dict[str, Any]) -> str:
    """A setting's run as a study names it, and its directory under the study's runs:
    ``<corpus>/<partition>/seed<k>`` (``run_study.py`` writes ``result.json`` there)."""
    return f"{result['data']}/{result['partition']}/seed{result['seed']}"


def curves_of(histories: dict[str, list[dict[str, Any]]], validation_key: str) -> dict[str, list[dict[str, Any]]]:
    """Brute force's learning curves, trimmed to what a :class:`ReplayOracle` needs, so that any
    search (another ``top_k``, another shortlist score) can be replayed from ``result.json`` alone
    once the work directory is gone."""
    keys = (validation_key, *CURVE_KEYS)
    return {c: [{k: r[k] for k in keys if k in r} for r in h] for c, h in histories.items()}


def rescore_own_poolings(cfg: StudyConfig, data_file: Path, out_dir: Path,
                         result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every method the registry means for another pooling (:func:`own_poolings`) on a
    statistics round of that pooling (``<out_dir>/statistics_<pooling>``), and every method an
    earlier rule scored on another pooling than the one it is now meant for on the setting's own
    round, and ``auto_shipped`` (:func:`score_shipped_auto`), against the setting's truth; write
    ``result.json``. Given no ``result``, the setting's ``result.json`` is read and only what it
    lacks is scored (a finished setting of an earlier rule: a statistics round, not brute force)."""
    path = out_dir / "result.json"
    changed = result is not None  # a fresh result is written whatever happens below
    if result is None:
        result = json.loads(path.read_text())
        changed = "budget" not in result  # a result of before budgets were recorded gets its budget
        result["budget"] = check_budget(cfg, out_dir)
    names, truth, tol = result["candidates"], result["truth"], result.get("tie_tol", cfg.tie_tol)
    # scored on another pooling under an earlier rule, now meant for the classifiers' own (auto,
    # design note 69): back to the setting's own statistics round, which is reused
    back = [m for m in (*stat_methods(), *combined_methods()) if SCORES[m].pooling in (None, "auto")
            and result["methods"].get(m, {}).get("pooling", "auto") != "auto"]
    if back:
        parts = setting_parts(cfg, data_file, result["partition"], result["seed"], out_dir)
        spec = _stats_spec(cfg, out_dir, "auto")
        got = _score_methods(_run_or_reuse(dataclasses.replace(parts, selection=spec), out_dir / "statistics"),
                                spec, names, truth, tol, "auto")
        result["methods"].update({m: got[m] for m in back})
        changed = True
    for pooling, wanted in own_poolings().items():
        todo = [m for m in wanted if result["methods"].get(m, {}).get("pooling") != pooling]
        if not todo:
            continue
        parts = setting_parts(cfg, data_file, result["partition"], result["seed"], out_dir)
        spec = _stats_spec(cfg, out_dir, pooling)
        stats = _run_or_reuse(dataclasses.replace(parts, selection=spec), out_dir / f"statistics_{pooling}")
        got = _score_methods(stats, spec, names, truth, tol, pooling)
        result["methods"].update({m: got[m] for m in todo})
        result.setdefault("seconds", {})[f"statistics_{pooling}"] = stats["selection_seconds"]
        changed = True
    changed = score_shipped_auto(cfg, data_file, out_dir, result) or changed
    changed = score_shipped_head(cfg, data_file, out_dir, result) or changed
    if changed:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
    return result


# gbc_prior as conf/selection/auto.yaml samples it: auto as shipped until design note 89 (notes 70, 71, 73; a
# test keeps the sampling equal); auto as shipped since is head_gbc_shipped (study_head.py)
SHIPPED = "auto_shipped"
SHIPPED_AUTO = {"max_texts_per_client": 48, "min_texts_per_round": 384, "max_seq_len": 32}
SHIPPED_TAG = "-".join(str(v) for v in SHIPPED_AUTO.values())  # names the shipped sample's run directories


def score_shipped_auto(cfg: StudyConfig, data_file: Path, out_dir: Path, result: dict[str, Any]) -> bool:
    """Score ``auto_shipped`` into ``result``: gbc_prior (auto until design note 89) on
    :data:`SHIPPED_AUTO`'s texts and length, the setting's own seed (the draw a live run makes),
    from the feature store when the study keeps one (capped rows are sliced out of the kept ones),
    with its ``token_share`` (its compute counts tokens: :mod:`~vista.drivers.study_compute`).
    False when ``result`` has both already."""
    entry = result["methods"].get(SHIPPED, {})
    if entry.get("sampling") == SHIPPED_AUTO and "token_share" in entry:
        return False
    share = shipped_token_share(cfg.candidates, data_file, cfg.max_seq_len)
    if entry.get("sampling") == SHIPPED_AUTO:  # scored before its compute counted tokens
        entry["token_share"] = share
        return True
    parts = setting_parts(cfg, data_file, result["partition"], result["seed"], out_dir)
    spec = dataclasses.replace(_stats_spec(cfg, out_dir, "auto"), **SHIPPED_AUTO)
    tol = result.get("tie_tol", cfg.tie_tol)
    stats = _run_or_reuse(dataclasses.replace(parts, selection=spec), out_dir / f"statistics_shipped_{SHIPPED_TAG}")
    got = _score_methods(stats, spec, result["candidates"], result["truth"], tol, "auto")
    result["methods"][SHIPPED] = {**got["gbc_prior"], "sampling": SHIPPED_AUTO, "token_share": share}
    return True


def score_shipped_head(cfg: StudyConfig, data_file: Path, out_dir: Path, result: dict[str, Any]) -> bool:
    """Score the head probe's entries into ``result`` (:mod:`~vista.drivers.study_head`: as shipped and
    centred, each beside auto_shipped): ``selection=head_probe`` as a live run makes it, on
    :data:`SHIPPED_AUTO`'s texts and length (a statistics round, then the probe's rounds at the
    setting's own rate, batch and local epochs), run once and re-scored from its kept curves after;
    True if an entry changed."""
    m, made = result["methods"], False
    for probe, _, centre in HEAD_VARIANTS:
        if probe in m:
            continue
        parts = setting_parts(cfg, data_file, result["partition"], result["seed"], out_dir)
        spec = SelectionSpec(name="head_probe", candidates=cfg.candidates, privacy=cfg.privacy, head_centre=centre,
                             **SHIPPED_AUTO)
        run = _run_or_reuse(dataclasses.replace(parts, selection=spec), out_dir / f"{probe}_{SHIPPED_TAG}")
        m[probe] = head_entry(run, SHIPPED_AUTO, shipped_token_share(cfg.candidates, data_file, cfg.max_seq_len),
                              dataclasses.asdict(spec.head_spec(parts.fl)))
        made = True
    return rescore_heads(m, result["truth"], result.get("tie_tol", cfg.tie_tol), SHIPPED) or made


def shipped_token_share(candidates: Sequence[ModelSpec], data_file: Path, full_length: int) -> float:
    """The share of ``full_length``'s tokens that auto_shipped's round (:data:`SHIPPED_AUTO`'s
    ``max_seq_len``) encodes on the corpus in ``data_file`` (design note 75)."""
    return token_share(corpus_token_counts(candidates, data_file), SHIPPED_AUTO["max_seq_len"], full_length)


def _stats_spec(cfg: StudyConfig, out_dir: Path, pooling: str) -> SelectionSpec:
    """One statistics round that records every registered score, its features pooled by ``pooling``."""
    return SelectionSpec(name="logme", candidates=cfg.candidates,
                         scores=(*stat_methods(), *prior_methods(), *combined_methods()), privacy=cfg.privacy,
                         pooling=pooling, feature_store=str(out_dir / "features") if cfg.keep_features else None)


def _score_methods(stats: dict[str, Any], stats_spec: SelectionSpec, names: list[str], truth: dict[str, float],
                   tol: float, pooling: str) -> dict[str, dict[str, Any]]:
    """Every statistics, prior and combined method's entry from one statistics round, with its cost."""
    uploading = len(stats["clients"])  # ineligible clients upload zeros too (their masks must cancel)
    dims = stats["dims"]
    classes, secure = stats["num_labels"], stats_spec.privacy.secure_agg
    encoded = sum(r["examples"] for r in stats["clients"]) * len(names)  # one statistics round
    seconds = stats["selection_seconds"]
    methods: dict[str, dict[str, Any]] = {}
    stat_costs: dict[str, Cost] = {}
    shift_down = sum(uploading * 8 * dims[c] for c in names)  # the server's shift, to every client
    for m in stat_methods():
        d = SCORES[m]
        per_class = d.per_class and d.rounds == 1
        up = sum(uploading * stats_bytes(dims[c], classes, per_class, secure) for c in names)
        cost = Cost(forward_passes=encoded, rounds=1, seconds=seconds, bytes_up=up, bytes_down=shift_down)
        if d.rounds == 2:  # the PCA round: per-class statistics on the basis (basis and centre sent out)
            k = {c: int(stats.get("pca_dims", {}).get(c, min(GBC_PCA_DIM, dims[c]))) for c in names}
            # the round-1 features are read back from the feature cache (note 54): no second encode
            again = 0 if stats_spec.feature_cache_mb > 0 else encoded
            cost = cost + Cost(forward_passes=again, rounds=1,
                               bytes_up=sum(uploading * stats_bytes(k[c], classes, True, secure) for c in names),
                               bytes_down=sum(uploading * 8 * dims[c] * (k[c] + 1) for c in names))
        stat_costs[m] = cost
        methods[m] = _entry(m, truth, stats["scores"][m], cost, tol, pooling=pooling)
    for m in prior_methods():
        methods[m] = _entry(m, truth, stats["scores"][m], Cost(), tol)
    for m in combined_methods():  # its components share one encode: it costs what its dearest component does
        costs = [stat_costs[u] for u in SCORES[m].uses if u in stat_costs]
        cost = max(costs, key=lambda c: (c.rounds, c.forward_passes, c.bytes_up), default=Cost())
        if m not in stats["scores"]:  # a round run before m was registered: the server's rule on its components
            server_scores([m], names, {}, 0, stats["scores"])
        methods[m] = _entry(m, truth, stats["scores"][m], cost, tol, uses=list(SCORES[m].uses), pooling=pooling)
    return methods


def _run_or_reuse(parts: ExperimentParts, run_dir: Path) -> dict[str, Any]:
    """A finished selection run in ``run_dir`` is reused (delete the directory to redo it):
    re-scoring a study then costs one statistics round, not the brute force again."""
    done = run_dir / "selection.json"
    if done.is_file():
        return json.loads(done.read_text())
    return run_selection(parts, run_dir)["selection"]


def _entry(method: str, truth: dict[str, float], scores: dict[str, float | None], cost: Cost, tie_tol: float,
           **extra: Any) -> dict[str, Any]:
    return {**method_quality(method, truth, scores, tie_tol), "scores": scores, "cost": cost.to_dict(), **extra}
