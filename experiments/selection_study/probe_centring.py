"""A diagnostic of the head probe's feature offset: ``python experiments/selection_study/probe_centring.py
SETTING... --data DATA [--lr LR] [--rounds 6]``.

For each setting directory of a study run made with ``--keep-features`` (its ``features/`` store:
every client's admitted training texts, the study's length, the pooling each classifier reads),
runs the head probe in one process (:func:`vista.selection.head_probe.simulate`, the driver's
twin) on those features as they are, centred on their pooled mean (what the server knows from
the statistics round's sums), and standardised per dimension, and prints the last round's
held-out accuracy per candidate beside the run's truth when its ``result.json`` is there.

Not the shipped probe: that one reads auto's sample (48 texts a client at 32 tokens), this one
every admitted text at the study's length. It asks one question: does a large common offset in
the features (an encoder's first token) hold the probe at the majority rate while fine-tuning,
which adapts the encoder, does well? Writes nothing; the README records what it printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from vista.data.fednlp import FedNLPData, FedNLPPartition
from vista.selection.feature_cache import FeatureCache, feature_key
from vista.selection.head_probe import HeadSpec, centred, pooled_mean, simulate
from vista.selection.privacy import GUARDED, admit
from vista.selection.sampling import capped
from vista.selection.spec import SelectionSpec

CANDIDATES = ("minilm", "mpnet", "smollm2", "minilm_l3", "random_bert")
VARIANTS = ("raw", "centred", "standardised")


def client_rows(setting: Path, data: FedNLPData, name: str, length: int, sampled: SelectionSpec | None = None,
                seed: int = 0) -> dict[int, tuple]:
    """Each admitted client's (text indices, kept features as stored, labels) for candidate ``name``
    from ``setting``'s feature store: every train text, or with ``sampled`` the texts a selection run
    of that spec encodes (``StatisticsRuntime._sample``: its seeded cap, ``seed`` the run's)."""
    (part,) = setting.glob("*_partition_seed*.h5")
    with h5py.File(part, "r") as f:
        (method,) = f.keys()  # the study writes one partition method a file
    clients = FedNLPPartition(part, method).clients
    cap = sampled.texts_cap(len(clients)) if sampled is not None else None
    cache = FeatureCache(setting / "features", 2**40)
    rows = {}
    for c in sorted(clients):
        idx = capped(np.asarray(clients[c].train, dtype=np.int64), cap, seed, c)
        y = np.asarray(data.labels(idx), dtype=np.int64)
        adm = admit(y, data.num_labels, GUARDED)
        if adm.eligible:
            kept = idx[adm.keep]
            f = cache.get(feature_key(name, c, "auto", length, kept))
            if f is None:
                raise SystemExit(f"{setting}: no kept features of {name} for client {c} at length {length} (keep "
                                 "them with run_study.py or refresh_head.py --keep-features)")
            rows[c] = (kept, f, y[adm.keep])
    return rows


def variants(rows: dict[int, tuple]) -> dict[str, dict[int, tuple]]:
    """The rows as they are, centred on the pooled mean (as ``selection.head_centre`` centres them:
    :func:`~vista.selection.head_probe.centred` on :func:`~vista.selection.head_probe.pooled_mean`),
    and standardised per dimension."""
    pooled = np.concatenate([np.asarray(f, np.float64) for _, f, _ in rows.values()])
    mu, sd = pooled_mean(rows), pooled.std(0) + 1e-6
    maps = {"raw": lambda f: np.asarray(f, np.float64).astype(np.float32), "centred": lambda f: centred(f, mu),
            "standardised": lambda f: ((np.asarray(f, np.float64) - mu) / sd).astype(np.float32)}
    return {v: {c: (k, maps[v](f), y) for c, (k, f, y) in rows.items()} for v in VARIANTS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", type=Path, nargs="+", help="study run directories with a features/ store")
    p.add_argument("--data", type=Path, required=True, help="the prepared corpora (prepare.py --out)")
    p.add_argument("--lr", type=float, required=True, help="the setting's own rate (the probe's, as shipped)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--length", type=int, default=128, help="the study's max_seq_len the store was kept at")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    a = p.parse_args(argv)
    spec = HeadSpec(rounds=a.rounds, lr=a.lr, batch_size=16)
    for setting in a.settings:
        corpus = next(setting.glob("*_partition_seed*.h5")).name.split("_partition")[0]
        data = FedNLPData(a.data / f"{corpus}_data.h5")
        result = setting / "result.json"
        truth = json.loads(result.read_text())["truth"] if result.exists() else {}
        print(f"## {setting}  (truth {'kept' if truth else 'not yet'})")
        print("| candidate | truth | " + " | ".join(VARIANTS) + " | feature norm | spread |")
        for name in a.candidates:
            rows = client_rows(setting, data, name, a.length)
            pooled = np.concatenate([np.asarray(f, np.float64) for _, f, _ in rows.values()])
            norm = float(np.linalg.norm(pooled, axis=1).mean())
            spread = float(np.sqrt(((pooled - pooled.mean(0)) ** 2).sum(1).mean()))
            acc = {v: simulate(r, data.num_labels, spec, seed=0)[-1]["val_accuracy"] for v, r in variants(rows).items()}
            t = f"{truth[name]:.3f}" if name in truth else "?"
            print(f"| {name} | {t} | " + " | ".join(f"{acc[v]:.3f}" for v in VARIANTS) + f" | {norm:.2f} | {spread:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
