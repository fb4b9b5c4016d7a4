"""What a selection run is asked to do: the typed form of the ``selection=`` config group.

Built at the edge (``vista.build``) from the config; everything downstream takes a
:class:`SelectionSpec` and never the config. ``METHODS`` is the registry of selection
methods and says, per method, which work it needs (client statistics, nothing, or
federated fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

from vista.checks import FieldError, at_least, one_of
from vista.models.hub import ModelSpec
from vista.selection.features import POOLINGS
from vista.selection.privacy import GUARDED, PrivacySpec

STATS, PRIOR, SEARCH = "stats", "prior", "search"


@dataclass(frozen=True)
class Method:
    """A selection method: ``kind`` is the work it needs; ``score`` the score that ranks."""

    name: str
    kind: str  # STATS: one round of client statistics; PRIOR: none; SEARCH: FedPEFT training
    score: str | None = None  # the statistics score that ranks (STATS), or seeds hybrid's top-k


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("logme", STATS, "logme"),
        Method("hscore", STATS, "hscore"),
        Method("reg_hscore", STATS, "reg_hscore"),
        Method("transrate", STATS, "transrate"),
        Method("gbc", STATS, "gbc"),
        Method("avg_logme", STATS, "avg_logme"),  # naive baseline: mean of per-client LogME
        Method("borda", STATS, "borda"),  # baseline: Borda count of per-client LogME rankings
        Method("param_prior", PRIOR, "param_prior"),  # baseline: the bigger model
        Method("random", PRIOR, "random"),  # baseline: a seeded random ranking
        Method("successive_halving", SEARCH),
        Method("hybrid", SEARCH, "logme"),  # metric top-k, then successive halving
        Method("brute_force", SEARCH),  # every candidate for the full budget: the ground truth
    )
}

# every score one statistics round yields (the exact ones and the two per-client baselines)
EXACT_SCORES = ("logme", "hscore", "reg_hscore", "transrate", "gbc")
CLIENT_SCORES = ("avg_logme", "borda")
PRIOR_SCORES = ("param_prior", "random")  # need no client work
SCORES = (*EXACT_SCORES, *CLIENT_SCORES, *PRIOR_SCORES)  # what selection.metric / selection.scores may name
PER_CLASS_SCORES = ("transrate",)  # need per-class Gram matrices in round 1
TWO_ROUND_SCORES = ("gbc",)  # round 2: per-class statistics of features on the pooled PCA basis


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
    metric: str | None = None  # hybrid's seeding score (default logme); the method's own otherwise
    scores: tuple[str, ...] = ()  # extra statistics scores to record alongside (e.g. all of them)
    pooling: str = "auto"  # auto (what the classifier reads) | cls | mean | last (vista.selection.features)
    batch_size: int = 32  # feature extraction batch on the clients
    max_seq_len: int | None = None  # None: fl.max_seq_len
    clients: int | None = None  # clients in the statistics round (seeded sample); None: all
    then_finetune: bool = False  # FedPEFT of the chosen candidate after selection (a search's run is reused)
    # budgeted search (successive_halving, hybrid; brute_force uses max_rounds)
    r0: int = 1  # rounds of the first rung
    eta: int = 2  # keep the best 1/eta each rung, multiply the rounds by eta
    top_k: int = 3  # hybrid: candidates kept by the score
    max_rounds: int | None = None  # None: fl.rounds (brute force trains every candidate this long)
    validation_key: str = "client_test_accuracy_mean"  # the FedPEFT metric the searches rank by
    privacy: PrivacySpec = GUARDED  # the privacy guard, on unless told otherwise

    def __post_init__(self) -> None:
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
            unknown = [s for s in wanted if s not in SCORES]
            if unknown:
                raise FieldError(field_name, f"unknown score {unknown[0]!r}; known: {list(SCORES)}", "selection")
        one_of(self, "pooling", POOLINGS)
        if self.max_rounds is not None and self.max_rounds < self.r0:
            raise FieldError("max_rounds", f"must be >= selection.r0={self.r0}, got {self.max_rounds}", "selection")
        if self.clients is not None and self.clients < 1:
            raise FieldError("clients", f"must be >= 1 or null (all), got {self.clients}", "selection")

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

    def statistics_scores(self) -> tuple[str, ...]:
        """Every score the statistics round computes: the ranking one first, then the extras."""
        wanted = [self.ranking_score, *self.scores]
        return tuple(dict.fromkeys(s for s in wanted if s in (*EXACT_SCORES, *CLIENT_SCORES)))

    @property
    def needs_statistics(self) -> bool:
        return bool(self.statistics_scores())

    @property
    def per_class(self) -> bool:
        return any(s in PER_CLASS_SCORES for s in self.statistics_scores())
