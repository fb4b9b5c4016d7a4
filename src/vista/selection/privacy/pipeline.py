"""The pipeline API: what a client uploads and how the server merges the uploads.

The one place that combines the layers: :func:`client_upload` adds the client's DP noise
share (``dp``) and, with ``secure_agg``, ring-encodes and masks the upload
(``secure_agg``); :func:`merge_uploads` sums the uploads, removes dropped clients' masks,
decodes, and repairs the noisy sum (``dp.repair``).

Client side: :func:`~vista.selection.privacy.admission.prepare_stats` then
:func:`client_upload`; server side: :func:`merge_uploads`;
:func:`~vista.selection.privacy.accounting.privacy_report` describes the guarantee.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from vista.selection.privacy.dp import (
    _block_multiplier,
    epsilon_for,
    noise_stds,
    release_multiplier,
    repair,
    sensitivities,
)
from vista.selection.privacy.secure_agg import (
    _check_cohort,
    _layout,
    from_ring,
    mask_upload,
    ring_total,
    to_ring,
)
from vista.selection.privacy.spec import PrivacySpec
from vista.selection.stats import SufficientStats

__all__ = ["client_upload", "merge_uploads"]


# =========================================================================== pipeline API
def client_upload(
    stats: SufficientStats,
    client: int,
    cohort: Sequence[int],
    spec: PrivacySpec,
    seed: int,
    rng_seed: int,
    releases: int = 1,
) -> dict:
    """What one client sends: ``{"kind", "client", "payload", "layout"}`` (picklable).

    ``stats`` must already be admitted and clipped (see :func:`prepare_stats`). With DP the
    client adds its ``1/len(cohort)`` share of the noise of one of ``releases`` releases
    sharing the budget (``rng_seed`` seeds it; keep it secret). With ``secure_agg`` the payload is a masked uint64 vector (``seed``: the
    cohort's shared mask seed); otherwise it is the (noisy) wire dict in the clear.
    """
    members = _check_cohort(client, cohort)
    wire = stats.to_wire()
    if spec.dp:
        if stats.sq4 > stats.n * spec.clip_norm**4 * (1 + 1e-9):
            raise ValueError(
                f"features are not clipped to clip_norm={spec.clip_norm} (sum ||f||^4 = "
                f"{stats.sq4:.4g} > n C^4): build the statistics with prepare_stats or "
                "clip_rows before client_upload"
            )
        rng = np.random.default_rng(rng_seed)
        for b, std in noise_stds(spec, stats.per_class, len(members), releases).items():
            x = np.asarray(wire[b], dtype=np.float64)
            noisy = x + rng.normal(0.0, std, size=x.shape)
            wire[b] = float(noisy) if x.ndim == 0 else noisy
    layout = _layout(wire)
    if spec.secure_agg:
        vec, layout = to_ring(wire, spec.frac_bits, max_clients=len(members))
        payload = mask_upload(vec, client, members, seed)
        return {
            "kind": "ring",
            "client": int(client),
            "payload": payload,
            "layout": layout,
        }
    payload = {b: wire[b] for b, _ in layout.blocks}
    return {
        "kind": "plain",
        "client": int(client),
        "payload": payload,
        "layout": layout,
    }


def merge_uploads(
    uploads: Sequence[dict],
    spec: PrivacySpec,
    *,
    seed: int | None = None,
    cohort: Sequence[int] | None = None,
    dropped: Sequence[int] = (),
    releases: int = 1,
) -> SufficientStats:
    """The server's merged statistics from the uploads that arrived (``releases``: as the
    clients were told in :func:`client_upload`).

    Ring uploads are summed mod 2^64, the masks of ``dropped`` clients (by default: the
    ``cohort`` members with no upload) removed with ``seed``, then decoded; plain ones are
    summed as floats. With DP the sum is post-processed by :func:`repair` (eigenvalue
    floor: one noise std of a Gram entry). If clients dropped, their noise shares are
    missing and the sum's epsilon is larger (warned).
    """
    uploads = list(uploads)
    if not uploads:
        raise ValueError("merge_uploads needs at least one upload")
    kind = "ring" if spec.secure_agg else "plain"
    layout = uploads[0]["layout"]
    for u in uploads:
        if u["kind"] != kind:
            raise ValueError(
                f"upload of client {u.get('client')} is {u['kind']!r} but the spec expects "
                f"{kind!r} (secure_agg={spec.secure_agg}): use one spec on both sides"
            )
        if u["layout"] != layout:
            raise ValueError(
                f"upload of client {u.get('client')} has a different layout: build every "
                "client's statistics with the same num_classes, dim, per_class and shift"
            )
    survivors = [int(u["client"]) for u in uploads]
    if len(set(survivors)) != len(survivors):
        raise ValueError(f"duplicate uploads from clients {survivors}")
    dropped = [int(c) for c in dropped]
    if cohort is not None:
        members = [int(c) for c in cohort]
        stray = sorted(set(survivors) - set(members))
        if stray:
            raise ValueError(
                f"uploads from clients {stray} outside the cohort {members}"
            )
        missing = sorted(set(members) - set(survivors))
        if dropped and sorted(dropped) != missing:
            raise ValueError(
                f"dropped={sorted(dropped)} but cohort members {missing} did not upload"
            )
        dropped = missing
    if spec.dp and dropped:
        m = len(survivors) + len(dropped)
        z_eff = release_multiplier(spec, releases)
        eps = epsilon_for(z_eff * math.sqrt(len(survivors) / m), spec.dp_delta)
        warnings.warn(
            f"{len(dropped)} of {m} clients dropped: the sum lacks their noise shares, "
            f"so its epsilon is {eps:.4g}, not {epsilon_for(z_eff, spec.dp_delta):.4g}",
            RuntimeWarning,
            stacklevel=2,
        )

    if kind == "ring":
        total = ring_total([u["payload"] for u in uploads], survivors, dropped, seed, 2 * layout.size)
        wire = from_ring(total, layout, spec.frac_bits)
    else:
        wire = layout.meta()
        for b, _ in layout.blocks:
            acc = uploads[0]["payload"][b]
            for u in uploads[1:]:
                acc = acc + u["payload"][b]
            wire[b] = acc
    if spec.dp:
        sens = sensitivities(spec.clip_norm, layout.per_class)
        # regularise the Gram directions the noise swamps (one noise std of a Gram entry)
        wire = repair(
            wire, noise_floor=_block_multiplier(spec, len(sens), releases) * sens["G_triu"]
        )
    return SufficientStats.from_wire(wire)
