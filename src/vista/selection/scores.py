"""The score registry: every selection score, what statistics it needs and how many rounds.

A new score is one function, registered with :func:`score` next to its definition, and one
yaml (``conf/selection/<name>.yaml`` with ``name: <name>``, plus ``score_modules: [my.module]``
when the function lives outside Vista, so that validation imports it). Everything else reads
:data:`SCORES`: the selection methods (:mod:`vista.selection.spec`), the statistics round of
the driver (which statistics the clients upload, whether there is a second round, how each
score is computed from what arrived), the selection study and the tests.

Three kinds, by what the function takes:

* ``exact``: ``fn(stats: SufficientStats) -> float``, a pure function of the merged additive
  statistics (so the federated score equals the pooled one). ``needs`` names the statistics
  blocks it reads (:data:`STATISTICS`); ``rounds=2`` means it is scored on a second round of
  statistics of the features projected onto the pooled PCA basis of round 1 (GBC).
* ``client``: ``fn(local, weights) -> {candidate: score}`` from the clients' own LogME
  values (``local``: one ``{candidate: value}`` dict per voting client, ``weights``: their
  example counts): the naive federated baselines.
* ``prior``: ``fn(candidates, params, seed) -> {candidate: score}``: no client work.
* ``head``: ``fn(curve) -> float`` of one candidate's federated head probe
  (:mod:`vista.selection.head_probe`: a softmax layer trained by FedAvg on the clients' cached
  features after the statistics round; ``curve``: one ``{round, val_accuracy, val_loss,
  val_examples}`` per round), scored by the driver after the probe's rounds. ``centre``: which
  probe's curve it reads: None the one ``selection.head_centre`` says, True the probe on features
  less their pooled mean whatever the flag (``head_probe_centred``, so that one run can hold both).
* ``combined``: ``fn(table) -> {candidate: score}`` of other registered scores' values
  (``table``: ``{score: {candidate: value}}`` for each name in ``uses``), computed by the
  server after them; a run records the components beside it (:mod:`vista.selection.combine`).

:func:`alias` gives a registered score a second name that says what it is for (``auto``, the
recommended method); ``ScoreDef.alias_of`` names what it resolves to.

An exact score may register a ``caveat``: ``caveat(stats) -> str | None`` says, for one
candidate's merged statistics, when the value says little (H-score at N <= D scores any labels
C - 1); a run records every caveat in ``selection.json`` and warns (:func:`caveats`).

Higher is better for every score; a score that is undefined for a candidate is ``None``
(NaN and infinities are turned into ``None`` by :func:`safe_value`) and ranks last.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CLIENT", "COMBINED", "EXACT", "HEAD", "KINDS", "PRIOR", "SCORES", "STATISTICS", "ScoreDef", "alias", "caveats",
           "check_uses", "get", "names", "ordered", "safe_table", "safe_value", "score", "unregister"]

EXACT, CLIENT, HEAD, PRIOR, COMBINED = "exact", "client", "head", "prior", "combined"
KINDS = (EXACT, CLIENT, HEAD, PRIOR, COMBINED)
# what an exact score may ask the clients for (SufficientStats blocks; see vista.selection.stats)
STATISTICS = {
    "moments": "N, per-class counts n_c, feature sum s, per-class sums B, Gram matrix G",
    "fourth_moments": "sum ||f||^4 and sum ||f||^2 f (Ledoit-Wolf shrinkage)",
    "class_grams": "per-class Gram matrices G_c",
    "client_logme": "each client's own LogME of its statistics (client scores; not masked: with DP clipped and noised)",
}


@dataclass(frozen=True)
class ScoreDef:
    """A registered score. ``fn``'s signature depends on ``kind`` (module doc)."""

    name: str
    fn: Callable[..., Any]
    needs: frozenset[str]
    rounds: int
    kind: str
    doc: str = ""
    uses: tuple[str, ...] = ()  # a combined score's components (registered scores, none combined)
    alias_of: str | None = None  # this name is another name of that score (alias)
    caveat: Callable[[Any], str | None] | None = None  # exact scores: when a value says little (module doc)
    # the features' pooling this score is meant for when it ranks (selection.pooling left unset);
    # None: what each candidate's classifier reads (pooling "auto")
    pooling: str | None = None
    centre: bool | None = None  # head scores: the centred probe's curve (True) or the flag's (None)

    def reads_centred(self, head_centre: bool) -> bool:
        """A head score: whether it reads the centred probe's curve (its own ``centre``, else the flag)."""
        return bool(self.centre or head_centre)

    @property
    def per_class(self) -> bool:
        """Needs per-class Gram matrices (in its last round)."""
        return "class_grams" in self.needs

    @property
    def client_work(self) -> bool:
        """Needs the clients: itself (exact, client) or through a component (combined)."""
        if self.kind == COMBINED:
            return any(u in SCORES and SCORES[u].client_work for u in self.uses)
        return self.kind in (EXACT, CLIENT, HEAD)


SCORES: dict[str, ScoreDef] = {}


def score(name: str | None = None, *, needs: Iterable[str] = ("moments",), rounds: int = 1,
          kind: str = EXACT, uses: Iterable[str] = (),
          caveat: Callable[[Any], str | None] | None = None,
          centre: bool | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the score ``name`` (default: the function's name).

    Re-registering a name replaces it only with the same function (a module imported twice);
    otherwise it is an error, so two scores cannot silently share a name. ``uses``: a combined
    score's components, registered before it and not combined themselves.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    parts = tuple(uses)
    if (kind == COMBINED) != bool(parts):
        raise ValueError("a combined score names the scores it uses (uses=...), and only a combined one does")
    nested = [u for u in parts if u in SCORES and SCORES[u].kind == COMBINED]
    if nested:  # components need not be registered yet (a module imported half-way); check_uses says
        raise ValueError(f"a combined score uses scores that are not combined; {nested[0]!r} is")
    wanted = frozenset(needs)
    unknown = sorted(wanted - set(STATISTICS))
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; known: {sorted(STATISTICS)}")
    if rounds not in (1, 2) or (rounds == 2 and kind != EXACT):
        raise ValueError(f"rounds must be 1, or 2 for an exact score (a PCA round first), got {rounds}")
    if caveat is not None and kind != EXACT:
        raise ValueError("only an exact score has a caveat (a function of its merged statistics)")
    if centre is not None and kind != HEAD:
        raise ValueError("only a head score says which probe's curve it reads (centre=...)")
    if kind == CLIENT and "client_logme" not in wanted:
        wanted = wanted | {"client_logme"}
    if kind in (PRIOR, COMBINED):
        wanted = frozenset()
    if kind == HEAD:  # the probe runs after the statistics round, on the features it cached
        wanted = frozenset({"moments"})

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        old = SCORES.get(key)
        if old is not None and getattr(old.fn, "__qualname__", None) != getattr(fn, "__qualname__", None):
            raise ValueError(f"a score named {key!r} is already registered ({old.fn.__module__}.{old.fn.__qualname__})")
        doc = (fn.__doc__ or "").strip().splitlines()
        SCORES[key] = ScoreDef(key, fn, wanted, rounds, kind, doc[0] if doc else "", parts, caveat=caveat,
                               centre=centre)
        return fn

    return register


def alias(name: str, target: str, doc: str = "", pooling: str | None = None) -> None:
    """Register ``name`` as another name of the score ``target`` (``auto``: the recommended
    method), meant for features pooled by ``pooling`` (None: the classifier's own); calling it
    again re-points the alias, but it never replaces a score of its own."""
    old = SCORES.get(name)
    if old is not None and old.alias_of is None:
        raise ValueError(f"{name!r} is a score of its own, not an alias")
    d = get(target)
    if d.alias_of is not None:
        raise ValueError(f"{target!r} is itself an alias (of {d.alias_of!r}); point {name!r} at that")
    SCORES[name] = dataclasses.replace(d, name=name, doc=doc or d.doc, alias_of=target, pooling=pooling)


def check_uses(name: str) -> None:
    """A combined score's components are registered and not combined (a ValueError otherwise)."""
    for u in get(name).uses:
        if u not in SCORES or SCORES[u].kind == COMBINED:
            raise ValueError(f"score {name!r} uses {u!r}, which is not a registered score of its own kind "
                             f"(exact, client or prior); known: {', '.join(SCORES)}")


def unregister(name: str) -> None:
    """Remove a score (tests that register a temporary one clean up with this)."""
    SCORES.pop(name, None)


def ordered() -> list[ScoreDef]:
    """The registered scores, exact ones first, then client, head, prior; else in registration order."""
    return sorted(SCORES.values(), key=lambda d: KINDS.index(d.kind))


def names(kind: str | None = None, *, rounds: int | None = None, needs: str | None = None) -> tuple[str, ...]:
    """Registered score names (:func:`ordered`), filtered by kind / rounds / a statistic."""
    return tuple(d.name for d in ordered()
                 if (kind is None or d.kind == kind) and (rounds is None or d.rounds == rounds)
                 and (needs is None or needs in d.needs))


def get(name: str) -> ScoreDef:
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; known: {', '.join(SCORES)}") from None


def caveats(scores: Iterable[str], merged: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{score: {candidate: caveat}}`` of the named exact scores for each candidate's merged
    statistics (``merged``), only where a caveat applies; a caveat that fails says so."""
    out: dict[str, dict[str, str]] = {}
    for s in scores:
        d = get(s)
        if d.caveat is None:
            continue
        for cand, stats in merged.items():
            if getattr(stats, "n", 0) < 1:
                continue
            try:
                said = d.caveat(stats)
            except Exception as err:  # noqa: BLE001  a caveat is advice: it never stops a run
                said = f"its caveat could not be computed ({type(err).__name__}: {err})"
            if said:
                out.setdefault(s, {})[cand] = said
    return out


def safe_value(x: Any) -> float | None:
    """A score as recorded: a finite float, or ``None`` (undefined: ranks last)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def safe_table(values: Mapping[str, Any]) -> dict[str, float | None]:
    return {k: safe_value(v) for k, v in values.items()}


# the built-in scores register themselves on import (bottom: they import this module's decorator)
from vista.selection import baselines as _baselines  # noqa: F401
from vista.selection import combine as _combine  # noqa: F401  (combinations of the above, and auto)
from vista.selection import head_scores as _head_scores  # noqa: F401
from vista.selection import metrics as _metrics  # noqa: F401
