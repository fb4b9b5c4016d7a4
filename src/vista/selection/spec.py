"""What a selection run is asked to do: the typed form of the ``selection=`` config group.

Built at the edge (``vista.build``) from the config; everything downstream takes a
:class:`SelectionSpec` and never the config. ``METHODS`` is the registry of selection
methods and says, per method, which work it needs (client statistics, nothing, or
federated fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vista.models.hub import ModelSpec
from vista.selection.privacy import PrivacySpec

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


@dataclass(frozen=True)
class SelectionSpec:
    name: str
    candidates: tuple[ModelSpec, ...] = ()
    metric: str | None = None  # hybrid's seeding score (default logme); the method's own otherwise
    scores: tuple[str, ...] = ()  # extra statistics scores to record alongside (e.g. all of them)
    pooling: str = "auto"  # auto | cls | mean | last (see vista.selection.features)
    batch_size: int = 32  # feature extraction batch on the clients
    max_seq_len: int | None = None  # None: fl.max_seq_len
    clients: int | None = None  # clients in the statistics round (seeded sample); None: all
    then_finetune: bool = False  # FedPEFT of the chosen candidate after selection
    # budgeted search (successive_halving, hybrid; brute_force uses max_rounds)
    r0: int = 1
    eta: int = 2
    top_k: int = 3
    max_rounds: int | None = None  # None: fl.rounds
    validation_key: str = "client_test_accuracy_mean"
    privacy: PrivacySpec = field(default_factory=PrivacySpec)

    def __post_init__(self) -> None:
        if self.name not in METHODS and self.name != "none":
            raise ValueError(f"selection.name: unknown method {self.name!r}; known: none, {', '.join(METHODS)}")
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"selection.candidates: duplicate names {dupes}")

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
