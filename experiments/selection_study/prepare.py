"""Subsample FedNLP corpora into small study data files (seeded, the same for every method).

    python experiments/selection_study/prepare.py --src /work/data --out DIR \
        --corpora 20news5 bbc r8 rotten_tomatoes r52 --train 600 --test 400

``20news5`` comes from Vista's own assets; the others from ``vista-data import NAME
--data-dir SRC`` (any corpus it imports: 20news, 20news5, r8, r52, election_tweets, bbc,
rotten_tomatoes). Partitions are computed later by the study (uniform / Dirichlet label
skew) from the subsample's train split, so every method sees the same clients.

The label set is what the subsample holds: a long-tailed corpus keeps only some classes (r52 at
600 + 400 texts: 45 of 52, 7 of them only in the test part, 20 with fewer than 4 train texts).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vista.config.resolvers import asset_path
from vista.data.fednlp import FedNLPData
from vista.data.fednlp_writer import write_data_file


def source_file(corpus: str, src: Path) -> Path:
    return Path(asset_path("20news5_data.h5")) if corpus == "20news5" else src / f"{corpus}_data.h5"


def subsample(corpus: str, src: Path, out: Path, n_train: int, n_test: int, seed: int) -> Path:
    data = FedNLPData(source_file(corpus, src))
    rng = np.random.default_rng(seed)
    train = np.sort(rng.permutation(data.train_indices)[:n_train])
    test = np.sort(rng.permutation(data.test_indices)[:n_test])
    idx = np.concatenate([train, test])
    texts = data.texts(idx)
    labels = [data.label_names[i] for i in data.labels(idx)]
    data.close()
    vocab = {name: i for i, name in enumerate(sorted(set(labels)))}  # classes present in the subsample
    return write_data_file(out / f"{corpus}_data.h5", texts, labels, vocab, range(len(train)),
                           range(len(train), len(idx)), overwrite=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=Path("data"), help="where `vista-data import` wrote the corpora")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--corpora", nargs="+", default=["20news5", "bbc", "r8", "rotten_tomatoes", "r52"])
    p.add_argument("--train", type=int, default=256)
    p.add_argument("--test", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for corpus in a.corpora:
        path = subsample(corpus, a.src, a.out, a.train, a.test, a.seed)
        print(f"{corpus}: {a.train} train + {a.test} test -> {path}")


if __name__ == "__main__":
    main()
