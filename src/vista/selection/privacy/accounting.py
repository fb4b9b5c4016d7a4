"""Privacy accounting of a selection run: one ``(dp_epsilon, dp_delta)`` budget for all it releases.

With DP a run releases Gaussian mechanisms, and one example of one client touches every one
of them (its features go through every candidate), so they compose:

* ``statistics``: per candidate and statistics round, the noisy merged sum (GBC's PCA round
  is a second one per candidate). Released even when only a client score is wanted: the
  server receives the sums either way.
* ``client_scores``: per candidate, the voting clients' own noisy LogMEs (avg_logme, borda;
  ``dp.guard_client_score``).
* ``client_weights``: once, the voting clients' noisy example counts (the same noise for
  every candidate, so releasing it M times reveals it once).
* ``head``: the head probe's noisy sums under DP (:mod:`vista.selection.head_dp`): per candidate
  and probe, one gradient sum a training round and the held-out report.

:func:`plan` counts them. The budget is split equally: every release gets the multiplier
``z_1 sqrt(R)`` (``dp.release_multiplier``), which composes back to exactly
``(dp_epsilon, dp_delta)``. :func:`composed_epsilon` composes any multipliers with
dp-accounting's PLD accountant (tight for Gaussian mechanisms; its RDP accountant reports
about 9 % more at epsilon 1); :func:`privacy_report` is what ``selection.json`` records,
including the larger epsilon of sums that lost dropped clients' noise shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from vista.selection.privacy.dp import epsilon_for, release_multiplier, sensitivities
from vista.selection.privacy.spec import PrivacySpec, _check_cohort_size

__all__ = ["ACCOUNTANT", "Releases", "composed_epsilon", "plan", "privacy_report"]

ACCOUNTANT = "dp_accounting PLD (PLDAccountant, add/remove one example)"
_REL_ACCURACY = 1e-4  # PLD value discretisation, relative to the epsilon it computes


@dataclass(frozen=True)
class Releases:
    """How many Gaussian releases of each kind a run makes (module doc)."""

    statistics: int = 1
    client_scores: int = 0
    client_weights: int = 0
    head: int = 0

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Releases.{name} must be an integer >= 0, got {v!r}")
        if self.total < 1:
            raise ValueError("Releases needs at least one release")

    @property
    def total(self) -> int:
        return self.statistics + self.client_scores + self.client_weights + self.head


def plan(candidates: int, rounds: int, client_scores: bool, head: int = 0) -> Releases:
    """What a statistics round of ``candidates`` models releases: a sum per candidate and
    round; with client scores, a score vector per candidate and the weights once; ``head``:
    the head probe's releases (``head_dp.releases_per_probe`` per candidate and probe)."""
    for name, v in (("candidates", candidates), ("rounds", rounds)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return Releases(candidates * rounds, candidates if client_scores else 0, 1 if client_scores else 0, head)


def composed_epsilon(multipliers: Sequence[tuple[float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of the composition of Gaussian mechanisms, ``(z, count)`` each:
    ``count`` releases of noise multiplier ``z`` (std / L2 sensitivity), by the PLD accountant.

    The PLD grid is ``1e-4`` x the exact composed epsilon (Gaussians compose into one of
    multiplier ``(sum count / z^2)^-1/2``), so large budgets stay fast (0.2 s); the answer is
    an upper bound within 1e-3 relative of the exact one (1e-12 for budgets up to 100).
    """
    import dp_accounting  # a 1-2 s import, here: only reports need it
    from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

    events, inv = [], 0.0
    for z, count in multipliers:
        if not (0 < z < math.inf) or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"need (noise multiplier > 0, count >= 0) pairs, got {(z, count)!r}")
        if count:
            events.append(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(float(z)), count))
            inv += count / float(z) ** 2
    if not events:
        raise ValueError("composed_epsilon needs at least one release")
    exact = epsilon_for(inv**-0.5, delta)
    acc = PLDAccountant(value_discretization_interval=_REL_ACCURACY * max(exact, 1e-2))
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return float(acc.get_epsilon(delta))


def privacy_report(
    spec: PrivacySpec, cohort_size: int, per_class: bool, releases: Releases | None = None,
    missing_shares: Sequence[int] = (),
) -> dict:
    """A json-serialisable description of the guarantee ``spec`` gives a run of ``releases``
    (default: one statistics release) over a cohort of ``cohort_size``.

    ``epsilon``: of everything released, composed (``budget``: ``dp_epsilon``; larger only
    when ``missing_shares``, the number of dropped clients of each noisy sum, statistics or
    head probe, that lost any, is non-empty). ``local_epsilon``: of one client's uploads on their own (what the
    server learns without secure aggregation, or with all other clients colluding).
    ``client_scores``: how the clients' own scores leave them (``None``: not sent).
    """
    m = _check_cohort_size(cohort_size)
    rel = releases or Releases()
    missing = [int(d) for d in missing_shares]
    sums = rel.statistics + rel.head  # the noisy sums every cohort member adds a share to
    if len(missing) > sums or any(not 0 < d < m for d in missing):
        raise ValueError(f"missing_shares must hold at most {sums} counts in [1, {m}), got {missing}")
    rep: dict = {
        "secure_agg": bool(spec.secure_agg),
        "frac_bits": int(spec.frac_bits) if spec.secure_agg else None,
        "min_examples": int(spec.min_examples),
        "min_per_class": int(spec.min_per_class),
        "cohort_size": m,
        "dp": spec.dp,
        "epsilon": None,
        "budget": None,
        "local_epsilon": None,
        "delta": None,
        "noise_multiplier": None,
        "effective_noise_multiplier": None,
        "clip_norm": None,
        "sigma": None,
        "sigma_per_client": None,
        "client_scores": None if not rel.client_scores else ("noised" if spec.dp else "clear"),
        "composition": {"releases": asdict(rel), "total": rel.total, "split": None, "accountant": None,
                        "release_noise_multiplier": None, "release_epsilon": None, "missing_shares": missing},
    }
    if not spec.dp:
        return rep
    sens = sensitivities(spec.clip_norm, per_class)
    z_eff = release_multiplier(spec, rel.total)
    z = z_eff * math.sqrt(len(sens))
    delta = float(spec.dp_delta)
    stats_z = [(z_eff, sums - len(missing))]
    stats_z += [(z_eff * math.sqrt((m - d) / m), 1) for d in missing]
    clients_z = (z_eff, rel.client_scores + rel.client_weights)
    rep.update(
        epsilon=composed_epsilon([*stats_z, clients_z], delta),
        budget=float(spec.dp_epsilon),
        local_epsilon=composed_epsilon([(z_eff / math.sqrt(m), sums), clients_z], delta),
        delta=delta,
        noise_multiplier=z,
        effective_noise_multiplier=z_eff,
        clip_norm=float(spec.clip_norm),
        sigma={b: z * v for b, v in sens.items()},
        sigma_per_client={b: z * v / math.sqrt(m) for b, v in sens.items()},
    )
    if rel.client_scores:
        rep.update(score_range=[float(spec.score_min), float(spec.score_max)],
                   score_sigma=z_eff * (spec.score_max - spec.score_min), weight_sigma=z_eff)
    rep["composition"].update(
        split=f"equal: each of the {rel.total} releases gets noise multiplier z_1 sqrt({rel.total}), z_1 the "
              "analytic Gaussian multiplier of the whole budget",
        accountant=ACCOUNTANT, release_noise_multiplier=z_eff, release_epsilon=epsilon_for(z_eff, delta))
    return rep
