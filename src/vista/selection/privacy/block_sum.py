"""Exact sums of named float blocks, masked or in the clear: the head probe's FedAvg.

A round of the head probe (:mod:`vista.selection.head_probe`) adds up, per candidate, each
client's layer weighted by its rows and its held-out report. With ``secure_agg`` a client
ring-encodes those blocks and masks them (:func:`masked_blocks`), so the server learns only
their sum (:func:`unmasked_total`); in the clear the server ring-encodes each client's blocks
itself (:func:`exact_total`). Both decode the same integers, so the masked and the clear
round give the same layer bit for bit, whatever order the uploads arrive in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vista.selection.privacy.secure_agg import (
    _check_cohort,
    decode_blocks,
    encode_blocks,
    mask_upload,
    ring_total,
)

__all__ = ["exact_total", "masked_blocks", "unmasked_total"]


def masked_blocks(blocks: Mapping[str, np.ndarray], client: int, cohort: Sequence[int], frac_bits: int,
                  seed: int) -> dict:
    """What a client sends: its blocks ring-encoded and masked with the cohort's pair streams
    (``seed``: the round's mask seed), ``{"client", "payload", "layout"}``. Uniformly random
    on its own; a client with nothing to add sends zeros, so the others' masks still cancel."""
    members = _check_cohort(client, cohort)
    vec, layout = encode_blocks(blocks, frac_bits, len(members))
    return {"client": int(client), "payload": mask_upload(vec, client, members, seed), "layout": layout}


def unmasked_total(uploads: Sequence[dict], cohort: Sequence[int], frac_bits: int, seed: int) -> dict[str, np.ndarray]:
    """The server's sum of :func:`masked_blocks` uploads: added mod 2^64, the masks the
    survivors shared with cohort members that sent nothing (a failed job) removed, decoded."""
    if not uploads:
        raise ValueError("unmasked_total needs at least one upload")
    layout = uploads[0]["layout"]
    if any(u["layout"] != layout for u in uploads):
        raise ValueError("the uploads' blocks differ in names or shapes: every client must send the same blocks")
    survivors = [int(u["client"]) for u in uploads]
    members = [int(c) for c in cohort]
    if len(set(survivors)) != len(survivors) or not set(survivors) <= set(members):
        raise ValueError(f"uploads from clients {survivors} do not match the cohort {members}")
    dropped = sorted(set(members) - set(survivors))
    total = ring_total([u["payload"] for u in uploads], survivors, dropped, seed, 2 * layout.size)
    return decode_blocks(total, layout, frac_bits)


def exact_total(blocks: Sequence[Mapping[str, np.ndarray]], frac_bits: int) -> dict[str, np.ndarray]:
    """The clear path's sum: each client's blocks ring-encoded and added, as the masked path
    adds them, so both decode the same sum (rounded once, not once per addition)."""
    if not blocks:
        raise ValueError("exact_total needs at least one client's blocks")
    encoded = [encode_blocks(b, frac_bits, len(blocks)) for b in blocks]
    layout = encoded[0][1]
    if any(lay != layout for _, lay in encoded):
        raise ValueError("the clients' blocks differ in names or shapes: every client must add the same blocks")
    return decode_blocks(ring_total([vec for vec, _ in encoded], [], [], None, 2 * layout.size), layout, frac_bits)
