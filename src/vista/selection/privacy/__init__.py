"""Privacy guard for federated model selection (pure numpy + scipy).

Three independent layers, all configured by one :class:`PrivacySpec`:

* **Admission** (``admission``: :func:`admit`, :func:`prepare_stats`): minimum example and
  per-class counts a client needs to contribute; a k-anonymity-style safeguard, outside
  the (epsilon, delta) accounting.
* **Differential privacy** (``dp``): the distributed Gaussian mechanism on the summed
  statistics, calibrated with the analytic Gaussian mechanism (:func:`noise_stds`), the
  clients' own scores clipped and noised (:func:`guard_client_score`), and :func:`repair`,
  the free post-processing of the noisy sum. ``accounting``: ``dp_epsilon`` is the budget
  of all a run releases (:func:`plan`, :class:`Releases`), composed with dp-accounting's
  PLD accountant (:func:`composed_epsilon`, :func:`privacy_report`).
* **Secure aggregation** (``secure_agg``, simulated): fixed-point ring encoding in
  ``Z_2^64`` and pairwise masks that cancel exactly in the sum (:func:`to_ring`,
  :func:`mask_upload`, :func:`recover_dropped`); ``block_sum`` sums any named float blocks
  the same way, masked or in the clear (:func:`masked_blocks`, :func:`unmasked_total`,
  :func:`exact_total`): the head probe's FedAvg.

``spec`` holds :class:`PrivacySpec` and the shared validation helpers; ``pipeline`` is the
only module that combines the layers (:func:`client_upload`, :func:`merge_uploads`). The
imports run one way, ``spec`` <- ``admission``, ``dp`` (<- ``accounting``), ``secure_agg``
<- ``pipeline`` and ``block_sum``, so each layer can be read (and tested) without the others.

Client side: :func:`prepare_stats` then :func:`client_upload`; server side:
:func:`merge_uploads`; :func:`privacy_report` describes the guarantee.
"""

from __future__ import annotations

from vista.selection.privacy.accounting import (
    ACCOUNTANT,
    Releases,
    composed_epsilon,
    plan,
    privacy_report,
)
from vista.selection.privacy.admission import (
    Admission,
    admit,
    clip_rows,
    prepare_stats,
    require_admitted,
)
from vista.selection.privacy.admission import _check_labels as _check_labels
from vista.selection.privacy.block_sum import exact_total, masked_blocks, unmasked_total
from vista.selection.privacy.dp import _block_multiplier as _block_multiplier
from vista.selection.privacy.dp import _check_delta as _check_delta
from vista.selection.privacy.dp import _log_delta as _log_delta
from vista.selection.privacy.dp import _psd as _psd
from vista.selection.privacy.dp import (
    check_budget,
    epsilon_for,
    guard_client_score,
    noise_multiplier_for,
    noise_stds,
    release_multiplier,
    repair,
    sensitivities,
)
from vista.selection.privacy.pipeline import client_upload, merge_uploads
from vista.selection.privacy.secure_agg import _BLOCKS as _BLOCKS
from vista.selection.privacy.secure_agg import _META as _META
from vista.selection.privacy.secure_agg import LO_BITS as LO_BITS
from vista.selection.privacy.secure_agg import (
    Layout,
    from_ring,
    mask_upload,
    pairwise_mask,
    recover_dropped,
    to_ring,
)
from vista.selection.privacy.secure_agg import _check_cohort as _check_cohort
from vista.selection.privacy.secure_agg import _layout as _layout
from vista.selection.privacy.secure_agg import _pair_stream as _pair_stream
from vista.selection.privacy.spec import GUARDED, PrivacySpec
from vista.selection.privacy.spec import _check_cohort_size as _check_cohort_size
from vista.selection.privacy.spec import _is_real as _is_real

# the private helpers above stay importable from here, as from the former single module
__all__ = [
    "ACCOUNTANT",
    "GUARDED",
    "Admission",
    "Layout",
    "PrivacySpec",
    "Releases",
    "admit",
    "check_budget",
    "client_upload",
    "clip_rows",
    "composed_epsilon",
    "epsilon_for",
    "exact_total",
    "from_ring",
    "guard_client_score",
    "mask_upload",
    "masked_blocks",
    "merge_uploads",
    "noise_multiplier_for",
    "noise_stds",
    "pairwise_mask",
    "plan",
    "prepare_stats",
    "privacy_report",
    "recover_dropped",
    "require_admitted",
    "release_multiplier",
    "repair",
    "sensitivities",
    "to_ring",
    "unmasked_total",
]
