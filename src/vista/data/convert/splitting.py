"""The train/test split, the label vocabulary and the writing of the FedNLP data file
(layout: ``shared/design/FEDNLP_FORMAT.md``) for ``vista-data convert``.

The train/test split comes from, in this order: a separate test input (``--test``),
a split column (values ``train`` / ``test``; ``validation``, ``valid``, ``val`` and
``dev`` count as test), the splits of a DatasetDict (``train``; ``test``, or
``validation`` when ``test`` is unlabelled), or a seeded random ``--test-fraction``.

Sentence-pair tasks (RTE, MRPC, QNLI, ...): with a second text column the file gets an
extra group ``X_b/<idx>`` (scalar utf-8 strings, like ``X``) and ``"text_b": true`` in
``attributes``. This is a Vista extension: FedNLP's single-text readers ignore it.

Labels are stored by name; ``label_vocab`` maps the names, sorted (numerically when
every name is an integer, so ``"2" < "10"``), to ids ``0..C-1``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vista.data.convert.readers import TEST, TRAIN, read_table
from vista.data.fednlp_writer import write_data_file

__all__ = ["ConvertResult", "convert"]


@dataclass
class ConvertResult:
    path: Path
    label_vocab: dict[str, int]
    train_index_list: list[int]
    test_index_list: list[int]
    counts: dict[str, Counter]  # split -> label name -> count
    text_b: bool


# ---------------------------------------------------------------------------- writing


def _sorted_labels(names: Iterable[str]) -> list[str]:
    uniq = set(names)
    if all(re.fullmatch(r"[-+]?\d+", n) for n in uniq):
        return sorted(uniq, key=lambda n: (int(n), n))
    return sorted(uniq)


def _random_split(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    if test_fraction > 0 and n_test == 0 and n > 1:
        n_test = 1
    return sorted(int(i) for i in perm[n_test:]), sorted(int(i) for i in perm[:n_test])


def convert(
    input_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    text_column: str,
    label_column: str,
    text_b_column: str | None = None,
    split_column: str | None = None,
    test_path: str | os.PathLike[str] | None = None,
    test_fraction: float | None = None,
    seed: int = 42,
    overwrite: bool = False,
    task_type: str = "text_classification",
) -> ConvertResult:
    """Read ``input_path`` (and ``test_path``) and write the FedNLP data file ``out``."""
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    if test_path is not None and split_column:
        raise ValueError("give either a separate test input or a split column, not both")
    if test_fraction is not None and (test_path is not None or split_column):
        raise ValueError("a test fraction cannot be combined with a separate test input or a split column")
    table = read_table(input_path, text_column, label_column, text_b_column, split_column)
    texts, labels = list(table.texts), list(table.labels)
    texts_b = list(table.texts_b) if table.texts_b is not None else None
    if test_path is not None:
        if table.splits is not None:
            raise ValueError(f"{table.source} already has train/test splits; do not pass a separate test input")
        test = read_table(test_path, text_column, label_column, text_b_column)
        n_train = len(table)
        texts += test.texts
        labels += test.labels
        if texts_b is not None:
            texts_b += test.texts_b or []
        train_idx, test_idx = list(range(n_train)), list(range(n_train, len(texts)))
    elif table.splits is not None:
        if test_fraction is not None:
            raise ValueError(f"{table.source} already has train/test splits; do not pass a test fraction")
        train_idx = [i for i, s in enumerate(table.splits) if s == TRAIN]
        test_idx = [i for i, s in enumerate(table.splits) if s == TEST]
    else:
        train_idx, test_idx = _random_split(len(texts), 0.2 if test_fraction is None else test_fraction, seed)
    if not train_idx:
        raise ValueError(f"{table.source}: no training examples after the split")

    vocab = {name: i for i, name in enumerate(_sorted_labels(labels))}
    # build under a temporary name, add X_b, then move into place: atomic like the writer
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".convert.tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_data_file(tmp, texts, labels, vocab, train_idx, test_idx, task_type=task_type, overwrite=True)
        if texts_b is not None:
            _add_text_b(tmp, texts_b)
        if out.exists() and not overwrite:  # appeared meanwhile
            raise FileExistsError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
        os.replace(tmp, out)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    counts = {
        TRAIN: Counter(labels[i] for i in train_idx),
        TEST: Counter(labels[i] for i in test_idx),
    }
    return ConvertResult(out, vocab, train_idx, test_idx, counts, texts_b is not None)


def _add_text_b(path: Path, texts_b: list[str]) -> None:
    import h5py

    str_dtype = h5py.string_dtype(encoding="utf-8")
    with h5py.File(path, "a") as f:
        raw = f["attributes"][()]
        attrs = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        attrs["text_b"] = True
        del f["attributes"]
        f.create_dataset("attributes", data=json.dumps(attrs), dtype=str_dtype)
        g = f.create_group("X_b")
        for i, t in enumerate(texts_b):
            g.create_dataset(str(i), data=t, dtype=str_dtype)
