"""What a selection run is asked to do: the typed form of the ``selection=`` config group.

Built at the edge (``vista.build``) from the config; everything downstream takes a
:class:`SelectionSpec` and never the config. ``METHODS`` maps each selection method to the
work it needs (client statistics, nothing, or federated fine-tuning): one method per score in
the registry (:data:`vista.selection.scores.SCORES`, read live, so a score registered later is
a method too) plus the searches.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from vista.checks import FieldError, at_least, check_range, one_of
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.selection import scores as registry
from vista.selection.features import POOLINGS
from vista.selection.head_probe import HeadSpec
from vista.selection.privacy import GUARDED, PrivacySpec

STATS, PRIOR, SEARCH = "stats", "prior", "search"


@dataclass(frozen=True)
class Method:
    """A selection method: ``kind`` is the work it needs; ``score`` the score that ranks."""

    name: str
    kind: str  # STATS: client statistics (one round, two for GBC); PRIOR: none; SEARCH: FedPEFT training
    score: str | None = None  # the statistics score that ranks (STATS), or seeds hybrid's top-k


SEARCH_METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("successive_halving", SEARCH),
        # metric top-k (gbc_prior: auto from design note 70 to 89, what its replays measured), then successive halving
        Method("hybrid", SEARCH, "gbc_prior"),
        Method("brute_force", SEARCH),  # every candidate for the full budget: the ground truth
    )
}


def _method_of(d: registry.ScoreDef) -> Method:
    return Method(d.name, STATS if d.client_work else PRIOR, d.name)


class _Methods(Mapping[str, Method]):
    """Every score of the registry as a method ranked by itself, then the searches."""

    def __getitem__(self, name: str) -> Method:
        if name in registry.SCORES:
            return _method_of(registry.SCORES[name])
        return SEARCH_METHODS[name]

    def __iter__(self) -> Iterator[str]:
        yield from registry.names()
        yield from (n for n in SEARCH_METHODS if n not in registry.SCORES)

    def __len__(self) -> int:
        return len(set(registry.SCORES) | set(SEARCH_METHODS))


METHODS: Mapping[str, Method] = _Methods()


def __getattr__(name: str) -> tuple[str, ...]:
    """The name tuples of earlier versions, read from the registry when asked for."""
    views = {
        "EXACT_SCORES": lambda: registry.names(registry.EXACT),
        "CLIENT_SCORES": lambda: registry.names(registry.CLIENT),
        "PRIOR_SCORES": lambda: registry.names(registry.PRIOR),
        "SCORES": lambda: registry.names(),  # what selection.metric / selection.scores may name
        "PER_CLASS_SCORES": lambda: registry.names(needs="class_grams"),
        "TWO_ROUND_SCORES": lambda: registry.names(rounds=2),
    }
    if name in views:
        return views[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# what a search may rank by: metrics of the validation split (FedPEFT's val_*, client_val_*)
VALIDATION_PREFIXES = ("val_", "client_val_")

# model config names (conf/model/<name>.yaml), hub directory names or paths
DEFAULT_CANDIDATES = ("minilm", "mpnet", "smollm2", "minilm_l3", "random_bert")


@dataclass(frozen=True)
class SelectionSpec:
    """The ``selection=`` group: ``name`` is the method (``none``: fine-tune ``model=`` as is).

    ``candidates`` are what the user named (model config names, hub directory names or paths)
    until ``vista.build`` resolves them into :class:`ModelSpec` s; drivers get resolved ones.
    """

    name: str = "none"
    candidates: tuple[ModelSpec | str, ...] = DEFAULT_CANDIDATES
    # hybrid's seeding score (default gbc_prior, design notes 70, 89); the method's own otherwise
    metric: str | None = None
    scores: tuple[str, ...] = ()  # extra statistics scores to record alongside (e.g. all of them)
    # None: the ranking score's own (the registry's: gbc_prior_mean's is mean), else auto | cls | mean | last
    # (auto: what each candidate's classifier reads; vista.selection.features)
    pooling: str | None = None
    batch_size: int = 32  # feature extraction batch on the clients
    max_seq_len: int | None = None  # None: fl.max_seq_len
    clients: int | None = None  # clients in the statistics round (seeded sample); None: all
    client_fraction: float = 1.0  # or this share of them (seeded sample, at least 1); not with clients
    max_texts_per_client: int | None = None  # each client encodes at most this many of its texts (seeded)
    # the cap rises to ceil(this / clients scored) when cap x clients would score fewer texts in all: a
    # small federation (or a client_fraction) keeps the round's size (design note 71); None: no floor
    min_texts_per_round: int | None = None
    # features projected onto a public seeded random k-dim basis before any statistic (every
    # candidate at the same k): with DP the noise on the k x k moments is what D x D's was at k = D
    project_dim: int | None = None
    # the federated head probe (head scores: head_probe): a softmax layer trained by FedAvg on the
    # clients' cached features for head_rounds rounds at head_lr (None: fl.lr; fl's batch, local
    # epochs and weight decay), scored on head_val_fraction of each client's sampled texts held out
    head_rounds: int = 6
    head_lr: float | None = None
    head_val_fraction: float = 0.2
    # under DP the probe trains by DP-FedSGD (vista.selection.head_dp): the server's Adam at this rate,
    # one step a round on the noisy mean gradient of the clients' clipped rows (design note 97)
    head_dp_lr: float = 0.03
    # the probe on features less their pooled mean, which the statistics round's summed moments give the
    # server (sent down with the layer: D floats a candidate; a run of head scores alone then uploads
    # moments); not with project_dim, whose statistics hold the projected mean only (design note 93)
    head_centre: bool = False
    # a client's features kept for the PCA round (GBC), on the host's disk, at most this many MB (0: re-encode)
    feature_cache_mb: int = 1024
    # a directory that keeps the clients' round-1 features across runs, read back by later runs
    # (a study re-scoring the same clients: a DP sweep, new scores); they derive from the clients'
    # private texts: a simulation tool, never a deployment setting. None: features live for one run
    feature_store: str | None = None
    then_finetune: bool = False  # FedPEFT of the chosen candidate after selection (a search's run is reused)
    # budgeted search (successive_halving, hybrid; brute_force uses max_rounds)
    r0: int = 1  # rounds of the first rung
    eta: int = 2  # keep the best 1/eta each rung, multiply the rounds by eta
    top_k: int = 2  # hybrid: candidates kept by the score (design note 69)
    max_rounds: int | None = None  # None: fl.rounds (brute force trains every candidate this long)
    # the searches train on each client's train split less a validation split of this fraction
    # (seeded by the run seed, at least 1 text of a client with 2) and rank on it: never on the test split
    val_fraction: float = 0.1
    validation_key: str = "client_val_accuracy_mean"  # the FedPEFT validation metric the searches rank by
    privacy: PrivacySpec = GUARDED  # the privacy guard, on unless told otherwise
    score_modules: tuple[str, ...] = ()  # modules to import first: they register more scores (@score)

    def __post_init__(self) -> None:
        for module in self.score_modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise FieldError("score_modules", f"cannot import {module!r}: {err}", "selection") from None
        if self.name not in METHODS and self.name != "none":
            raise FieldError("name", f"unknown method {self.name!r}; known: none, {', '.join(METHODS)}", "selection")
        names = [c if isinstance(c, str) else c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FieldError("candidates", f"duplicate names {dupes}", "selection")
        for field_name in ("batch_size", "r0", "top_k"):
            at_least(self, field_name, 1)
        at_least(self, "eta", 2)
        if self.name == "none":
            return
        if len(names) < 2:
            raise FieldError("candidates", f"need at least 2 candidate models, got {names}; "
                             "e.g. selection.candidates=[minilm,mpnet,smollm2]", "selection")
        for field_name, wanted in (("metric", [self.metric] if self.metric else []), ("scores", self.scores)):
            unknown = [s for s in wanted if s not in registry.SCORES]
            if unknown:
                raise FieldError(field_name, f"unknown score {unknown[0]!r}; known: {list(registry.names())}",
                                 "selection")
        for s in (self.ranking_score, *self.scores):
            if s in registry.SCORES:
                try:
                    registry.check_uses(s)
                except ValueError as err:
                    raise FieldError("name" if s == self.name else "scores", str(err), "selection") from None
        if self.pooling is not None:
            one_of(self, "pooling", POOLINGS)
        if self.max_rounds is not None and self.max_rounds < self.r0:
            raise FieldError("max_rounds", f"must be >= selection.r0={self.r0}, got {self.max_rounds}", "selection")
        check_range("SelectionSpec", "val_fraction", self.val_fraction, 0.0, 1.0, lo_open=True)
        if not self.validation_key.startswith(VALIDATION_PREFIXES):
            raise FieldError("validation_key", f"must be a validation metric ({'*, '.join(VALIDATION_PREFIXES)}*: "
                             f"the split held out of training), got {self.validation_key!r}; the test split is "
                             "what the results are judged on", "selection")
        if self.clients is not None and self.clients < 1:
            raise FieldError("clients", f"must be >= 1 or null (all), got {self.clients}", "selection")
        check_range("SelectionSpec", "client_fraction", self.client_fraction, 0.0, 1.0, lo_open=True, hi_open=False)
        if self.clients is not None and self.client_fraction < 1:
            raise FieldError("client_fraction", f"cannot be {self.client_fraction} while selection.clients="
                             f"{self.clients} is set: sample by count or by share, not both", "selection")
        for field_name in ("max_seq_len", "max_texts_per_client", "min_texts_per_round", "project_dim"):
            if getattr(self, field_name) is not None:
                at_least(self, field_name, 1)
        at_least(self, "feature_cache_mb", 0)
        at_least(self, "head_rounds", 1)
        if self.head_lr is not None:
            check_range("SelectionSpec", "head_lr", self.head_lr, 0.0, None, lo_open=True)
        check_range("SelectionSpec", "head_val_fraction", self.head_val_fraction, 0.0, 1.0, lo_open=True)
        check_range("SelectionSpec", "head_dp_lr", self.head_dp_lr, 0.0, None, lo_open=True)
        fixed = tuple(s for s in self.head_scores() if registry.SCORES[s].centre)
        if self.head_centre and fixed and len(self.head_scores()) > len(fixed):
            raise FieldError("head_centre", f"would centre both probes that selection.{self._field_bringing(fixed)} "
                             f"reads, the flag's and the centred one ({', '.join(fixed)}): set "
                             "selection.head_centre=false", "selection")
        if self.head_centre and self.head_scores() and self.project_dim is not None:
            raise FieldError("head_centre", "centres the head probe's features on their pooled mean, which "
                             f"selection.project_dim={self.project_dim} projects away (the statistics hold the "
                             "projected mean only): set selection.project_dim=null or selection.head_centre=false",
                             "selection")
        if fixed and self.project_dim is not None:
            raise FieldError("project_dim", f"projects away the pooled mean that {', '.join(fixed)} centres on "
                             "(the statistics hold the projected mean only): set selection.project_dim=null",
                             "selection")
        if self.feature_store is not None and self.feature_cache_mb == 0:
            raise FieldError("feature_store", "needs selection.feature_cache_mb > 0 (the store's size cap), got 0",
                             "selection")

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """The candidates as model specs (``vista.build`` resolves names into them)."""
        unresolved = [c for c in self.candidates if not isinstance(c, ModelSpec)]
        if unresolved:
            raise TypeError(f"selection.candidates {unresolved} are names: resolve them with vista.build.candidate_spec")
        return self.candidates  # type: ignore[return-value]

    @property
    def method(self) -> Method:
        return METHODS[self.name]

    @property
    def ranking_score(self) -> str | None:
        """The statistics score that ranks (or seeds hybrid's top-k)."""
        return self.metric or self.method.score

    @property
    def feature_pooling(self) -> str:
        """The pooling the statistics round encodes with: ``pooling`` where set, else the ranking
        score's own (:attr:`ScoreDef.pooling <vista.selection.scores.ScoreDef.pooling>`), else
        ``auto`` (what each candidate's classifier reads)."""
        if self.pooling is not None:
            return self.pooling
        own = registry.SCORES[self.ranking_score].pooling if self.ranking_score in registry.SCORES else None
        return own or "auto"

    def cohort_size(self, available: int) -> int | None:
        """Clients the statistics round samples out of ``available``; None: all of them."""
        if self.clients is not None:
            return self.clients
        if self.client_fraction < 1:
            return max(1, math.floor(self.client_fraction * available + 0.5))
        return None

    def texts_cap(self, scored_clients: int) -> int | None:
        """Each client's text cap in a round scoring ``scored_clients``: ``max_texts_per_client``,
        raised so the round scores at least ``min_texts_per_round`` texts (as far as the clients
        hold them). None: every text."""
        if self.max_texts_per_client is None or self.min_texts_per_round is None:
            return self.max_texts_per_client
        return max(self.max_texts_per_client, -(-self.min_texts_per_round // max(scored_clients, 1)))

    def wanted_scores(self) -> tuple[str, ...]:
        """Every score the run records: the ranking one first, then the extras, then the
        components of combined ones."""
        wanted = dict.fromkeys(s for s in (self.ranking_score, *self.scores) if s in registry.SCORES)
        for s in list(wanted):
            wanted.update(dict.fromkeys(registry.SCORES[s].uses))
        return tuple(wanted)

    def statistics_scores(self) -> tuple[str, ...]:
        """The wanted scores of the statistics round (exact, client and head scores: the head probe
        runs after it on the features it cached)."""
        kinds = (registry.EXACT, registry.CLIENT, registry.HEAD)
        return tuple(s for s in self.wanted_scores() if registry.SCORES[s].kind in kinds)

    def _field_bringing(self, wanted: tuple[str, ...]) -> str:
        """Which field asks for any of ``wanted`` (a score or a component of one): scores, metric or name."""
        def brings(s: str | None) -> bool:
            return s in registry.SCORES and bool({s, *registry.SCORES[s].uses} & set(wanted))
        if any(brings(s) for s in self.scores):
            return "scores"
        return "metric" if brings(self.metric) else "name"

    @property
    def uploads_moments(self) -> bool:
        """Whether the statistics round's clients send their moments: some exact or client score
        reads them, or a centred probe reads their mean (``head_centre``). A run of head scores alone
        sends the counts (the probe reads cached features)."""
        if True in self.head_centrings():
            return True
        return any(registry.SCORES[s].kind in (registry.EXACT, registry.CLIENT) for s in self.statistics_scores())

    def head_scores(self) -> tuple[str, ...]:
        """The wanted head scores: the probe's rounds run when there is one."""
        return tuple(s for s in self.wanted_scores() if registry.SCORES[s].kind == registry.HEAD)

    def head_centrings(self) -> tuple[bool, ...]:
        """Which probes run: uncentred (False) and/or centred (True), in that order, as the wanted head
        scores read them (a score's own ``centre``, else ``head_centre``); one run trains them side by side."""
        return tuple(sorted({registry.SCORES[s].reads_centred(self.head_centre) for s in self.head_scores()}))

    def head_spec(self, fl: FLSpec) -> HeadSpec:
        """How the head probe trains: this spec's rounds, rate and held-out share, ``fl``'s batch,
        local epochs and weight decay (the fine-tune's own)."""
        return HeadSpec(rounds=self.head_rounds, lr=self.head_lr if self.head_lr is not None else fl.lr,
                        local_epochs=fl.local_epochs, batch_size=fl.batch_size, weight_decay=fl.weight_decay,
                        val_fraction=self.head_val_fraction, centre=self.head_centre, dp_lr=self.head_dp_lr)

    @property
    def reuses_features(self) -> bool:
        """A later round reads the statistics round's features again (GBC's PCA round, the head probe)."""
        return self.rounds == 2 or bool(self.head_scores())

    @property
    def needs_statistics(self) -> bool:
        return bool(self.statistics_scores())

    @property
    def per_class(self) -> bool:
        """Round 1 uploads per-class Gram matrices (a one-round score needs them)."""
        return any(registry.SCORES[s].per_class and registry.SCORES[s].rounds == 1 for s in self.statistics_scores())

    @property
    def client_logme(self) -> bool:
        """Clients also send their own LogME (a client score needs it)."""
        return any("client_logme" in registry.SCORES[s].needs for s in self.statistics_scores())

    @property
    def rounds(self) -> int:
        """Statistics rounds: 2 when a wanted score is scored on the PCA round."""
        return max((registry.SCORES[s].rounds for s in self.statistics_scores()), default=0)
