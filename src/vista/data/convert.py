"""Convert CSV / TSV / JSONL / Parquet / Hugging Face ``save_to_disk`` data into a
FedNLP data file (layout: ``shared/design/FEDNLP_FORMAT.md``).

Inputs, chosen by suffix (or, for a directory, by its contents):

* ``.csv`` (comma), ``.tsv`` / ``.tab`` (tab): a header row names the columns; quoted
  fields may hold commas, quotes and newlines;
* ``.jsonl`` / ``.json``: one JSON object per line (a ``.json`` file holding one JSON
  array of objects is accepted too);
* ``.parquet`` files, a directory of ``.parquet`` files, and a Hugging Face ``datasets``
  directory written by ``save_to_disk`` (``state.json``, ``dataset_info.json``,
  ``data-*.arrow`` in Arrow IPC stream format) or a DatasetDict directory
  (``dataset_dict.json`` + one sub-directory per split). These need ``pyarrow``.
  Integer labels of a ``ClassLabel`` feature are mapped to their names.

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

import argparse
import csv
import json
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp_writer import write_data_file

__all__ = ["ConvertResult", "Table", "convert", "read_table", "register"]

TRAIN, TEST = "train", "test"
_SPLIT_ALIASES = {"train": TRAIN, "test": TEST, "validation": TEST, "valid": TEST, "val": TEST, "dev": TEST}
_DICT_TEST_SPLITS = ("test", "validation", "valid", "dev")


@dataclass
class Table:
    """Rows read from one input: texts, label names and (optionally) pair texts and splits."""

    texts: list[str]
    labels: list[str]
    texts_b: list[str] | None = None
    splits: list[str] | None = None  # TRAIN / TEST per row, when the input says so
    columns: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ConvertResult:
    path: Path
    label_vocab: dict[str, int]
    train_index_list: list[int]
    test_index_list: list[int]
    counts: dict[str, Counter]  # split -> label name -> count
    text_b: bool


# ---------------------------------------------------------------------------- reading


def _raise_csv_field_limit() -> None:
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32 bits on some platforms
            limit //= 10


def _check_columns(available: Sequence[str], needed: Sequence[str], source: str) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        have = ", ".join(repr(c) for c in available) or "(none)"
        raise ValueError(
            f"{source}: column(s) {', '.join(repr(c) for c in missing)} not found; the columns are: {have}"
        )


Record = tuple[str, dict[str, Any]]  # (where, for messages; values by column)


def _read_csv(path: Path, delimiter: str, needed: Sequence[str]) -> tuple[list[str], list[Record]]:
    _raise_csv_field_limit()
    records: list[Record] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        _check_columns(columns, needed, str(path))
        for row, rec in enumerate(reader, start=1):
            records.append((f"row {row} (line {reader.line_num})", rec))
    return columns, records


def _read_jsonl(path: Path, needed: Sequence[str]) -> tuple[list[str], list[Record]]:
    with open(path, encoding="utf-8-sig") as f:
        content = f.read()
    records: list[Record] = []
    if content.lstrip().startswith("["):  # a .json file holding one array
        try:
            items = json.loads(content)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON: {err}") from None
        for i, obj in enumerate(items, start=1):
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: item {i} is not a JSON object")
            records.append((f"row {i}", obj))
    else:
        row = 0
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON: {err}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            row += 1
            records.append((f"row {row} (line {lineno})", obj))
    columns: list[str] = []
    seen: set[str] = set()
    for _, obj in records:
        for k in obj:
            if k not in seen:
                seen.add(k)
                columns.append(k)
    _check_columns(columns, needed, str(path))
    return columns, records


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise ValueError(
            "reading Parquet files and Hugging Face datasets directories needs pyarrow: pip install pyarrow"
        ) from None
    return pyarrow


def _class_label_names(features: Any, column: str) -> list[str] | None:
    """``names`` of a ClassLabel feature in a datasets ``features`` dict, if any."""
    if not isinstance(features, dict):
        return None
    feat = features.get(column)
    if isinstance(feat, dict) and isinstance(feat.get("names"), list):
        return [str(n) for n in feat["names"]]
    return None


def _hf_features_from_schema(table: Any) -> Any:
    meta = table.schema.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return None
    try:
        return json.loads(raw).get("info", {}).get("features")
    except (ValueError, AttributeError):
        return None


def _arrow_records(table: Any, needed: Sequence[str], source: str, label_column: str,
                   features: Any, where_prefix: str = "") -> tuple[list[str], list[Record]]:
    columns = list(table.column_names)
    _check_columns(columns, needed, source)
    if features is None:
        features = _hf_features_from_schema(table)
    names = _class_label_names(features, label_column)
    rows = table.select(list(dict.fromkeys(needed))).to_pylist()
    records: list[Record] = []
    for i, rec in enumerate(rows, start=1):
        if names is not None:
            v = rec.get(label_column)
            if isinstance(v, int) and not isinstance(v, bool):
                rec[label_column] = names[v] if 0 <= v < len(names) else None  # -1: unlabelled
        records.append((f"{where_prefix}row {i}", rec))
    return columns, records


def _read_arrow_stream_files(files: Iterable[Path]) -> Any:
    pa = _pyarrow()
    tables = []
    for p in files:
        with pa.memory_map(str(p), "r") as source:
            try:
                tables.append(pa.ipc.open_stream(source).read_all())
            except pa.ArrowInvalid:  # some writers use the IPC file format
                source.seek(0)
                tables.append(pa.ipc.open_file(source).read_all())
    if not tables:
        raise ValueError("no data-*.arrow files found")
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _load_saved_dataset(directory: Path) -> tuple[Any, Any]:
    """(arrow table, features dict or None) of one ``save_to_disk`` Dataset directory."""
    state_path = directory / "state.json"
    files: list[Path] = []
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        files = [directory / d["filename"] for d in state.get("_data_files", []) if "filename" in d]
    if not files:
        files = sorted(directory.glob("data-*.arrow")) or sorted(directory.glob("*.arrow"))
    if not files:
        raise ValueError(f"{directory}: no data-*.arrow files in this datasets directory")
    table = _read_arrow_stream_files(files)
    features = None
    info_path = directory / "dataset_info.json"
    if info_path.is_file():
        try:
            features = json.loads(info_path.read_text(encoding="utf-8")).get("features")
        except ValueError:
            features = None
    return table, features


def _is_dataset_dir(d: Path) -> bool:
    return (d / "state.json").is_file() or any(d.glob("data-*.arrow"))


def _read_directory(path: Path, needed: Sequence[str], label_column: str) -> tuple[list[str], list[Record], list[str] | None]:
    """(columns, records, per-row split or None) of a datasets / parquet directory."""
    dict_json = path / "dataset_dict.json"
    if dict_json.is_file():
        _pyarrow()
        split_names = json.loads(dict_json.read_text(encoding="utf-8")).get("splits") or sorted(
            p.name for p in path.iterdir() if p.is_dir()
        )
        if TRAIN not in split_names:
            raise ValueError(f"{path}: DatasetDict has no 'train' split; it has: {', '.join(split_names)}")
        loaded: dict[str, tuple[list[str], list[Record]]] = {}
        for name in [TRAIN, *[s for s in _DICT_TEST_SPLITS if s in split_names]]:
            table, features = _load_saved_dataset(path / name)
            loaded[name] = _arrow_records(table, needed, f"{path / name}", label_column, features,
                                          where_prefix=f"split {name!r} ")
        test_name = None
        for name in _DICT_TEST_SPLITS:  # first test-like split whose labels are all present
            if name in loaded and all(_present(r[label_column]) for _, r in loaded[name][1]):
                test_name = name
                break
        columns, records = loaded[TRAIN]
        splits = [TRAIN] * len(records)
        if test_name is not None:
            records = records + loaded[test_name][1]
            splits += [TEST] * len(loaded[test_name][1])
        return columns, records, splits
    if _is_dataset_dir(path):
        _pyarrow()
        table, features = _load_saved_dataset(path)
        columns, records = _arrow_records(table, needed, str(path), label_column, features)
        return columns, records, None
    parquet = sorted(path.glob("*.parquet"))
    if parquet:
        pa = _pyarrow()
        tables = [pa.parquet.read_table(p) for p in parquet]
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        columns, records = _arrow_records(table, needed, str(path), label_column, None)
        return columns, records, None
    raise ValueError(
        f"{path}: directory is not a Hugging Face datasets directory (no dataset_dict.json, "
        f"state.json or data-*.arrow) and holds no .parquet files"
    )


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, str) and not v.strip())


def _text(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


def _label(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip() if isinstance(v, str) else str(v)


def _read_parquet(p: Path, needed: list[str], label_column: str) -> tuple[Any, Any]:
    return _arrow_records(_pyarrow().parquet.read_table(p), needed, str(p), label_column, None)


def _read_arrow(p: Path, needed: list[str], label_column: str) -> tuple[Any, Any]:
    return _arrow_records(_read_arrow_stream_files([p]), needed, str(p), label_column, None)


# file suffix -> reader(path, needed columns, label column) -> (columns, records)
FILE_READERS = {
    ".csv": lambda p, needed, label: _read_csv(p, ",", needed),
    ".tsv": lambda p, needed, label: _read_csv(p, "\t", needed),
    ".tab": lambda p, needed, label: _read_csv(p, "\t", needed),
    ".jsonl": lambda p, needed, label: _read_jsonl(p, needed),
    ".json": lambda p, needed, label: _read_jsonl(p, needed),
    ".ndjson": lambda p, needed, label: _read_jsonl(p, needed),
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
    ".arrow": _read_arrow,
}


def read_table(
    path: str | os.PathLike[str],
    text_column: str,
    label_column: str,
    text_b_column: str | None = None,
    split_column: str | None = None,
) -> Table:
    """Read one input file or directory into a :class:`Table`.

    Missing columns raise ``ValueError`` listing the columns that exist; an empty text
    is kept, a missing (empty) label raises ``ValueError`` naming the row.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    needed = [text_column, label_column]
    if text_b_column:
        needed.append(text_b_column)
    if split_column:
        needed.append(split_column)
    needed = list(dict.fromkeys(needed))
    inherent_splits: list[str] | None = None
    suffix = p.suffix.lower()
    if p.is_dir():
        columns, records, inherent_splits = _read_directory(p, needed, label_column)
    elif suffix in FILE_READERS:
        columns, records = FILE_READERS[suffix](p, needed, label_column)
    else:
        raise ValueError(
            f"{p}: unknown input type {suffix or '(no suffix)'}; use {', '.join(FILE_READERS)} "
            f"or a Hugging Face datasets directory"
        )
    if not records:
        raise ValueError(f"{p}: no rows")
    texts: list[str] = []
    labels: list[str] = []
    texts_b: list[str] | None = [] if text_b_column else None
    splits: list[str] | None = [] if split_column else None
    for where, rec in records:
        label = rec.get(label_column)
        if not _present(label):
            raise ValueError(f"{p}: {where} has no label (column {label_column!r} is empty)")
        texts.append(_text(rec.get(text_column)))
        labels.append(_label(label))
        if texts_b is not None:
            texts_b.append(_text(rec.get(text_b_column)))
        if splits is not None:
            raw = rec.get(split_column)
            value = _SPLIT_ALIASES.get(str(raw).strip().lower()) if raw is not None else None
            if value is None:
                raise ValueError(
                    f"{p}: {where} has split {raw!r} in column {split_column!r}; expected 'train' or 'test'"
                )
            splits.append(value)
    if splits is None:
        splits = inherent_splits
    return Table(texts, labels, texts_b, splits, columns, str(p))


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


# ---------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    result = convert(
        args.input,
        args.out,
        text_column=args.text_column,
        label_column=args.label_column,
        text_b_column=args.text_b_column,
        split_column=args.split_column,
        test_path=args.test,
        test_fraction=args.test_fraction,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    n_train, n_test = len(result.train_index_list), len(result.test_index_list)
    pair = " (sentence pairs: X_b written)" if result.text_b else ""
    print(f"wrote {result.path}: {n_train + n_test} examples, {len(result.label_vocab)} labels{pair}")
    names = list(result.label_vocab)
    width = max([len("label"), *(len(n) for n in names)])
    print(f"  {'id':>3}  {'label':<{width}}  {'train':>8}  {'test':>8}")
    for name in names:
        print(
            f"  {result.label_vocab[name]:>3}  {name:<{width}}  "
            f"{result.counts[TRAIN][name]:>8}  {result.counts[TEST][name]:>8}"
        )
    print(f"  {'':>3}  {'total':<{width}}  {n_train:>8}  {n_test:>8}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert",
        help="convert CSV/TSV/JSONL/Parquet/HF datasets data into a FedNLP *_data.h5 file",
        description=(
            "Convert a CSV, TSV, JSONL, Parquet file or Hugging Face datasets directory into a "
            "FedNLP data file. The train/test split comes from --test, --split-column, the "
            "splits of a DatasetDict, or a seeded random --test-fraction (default 0.2)."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="the (train) data: .csv, .tsv, .jsonl, .parquet or a datasets directory")
    p.add_argument("--test", metavar="INPUT", default=None, help="a separate test input (same columns)")
    p.add_argument("--out", required=True, metavar="PATH", help="the FedNLP data file to write (*_data.h5)")
    p.add_argument("--text-column", required=True, metavar="C", help="column holding the text")
    p.add_argument("--label-column", required=True, metavar="C", help="column holding the label")
    p.add_argument("--text-b-column", default=None, metavar="C",
                   help="second text column of a sentence-pair task (written to X_b)")
    p.add_argument("--split-column", default=None, metavar="C", help="column with values train/test")
    p.add_argument("--test-fraction", type=float, default=None, metavar="F",
                   help="random test share when the input has no split (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the random split (default 42)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_run)
    return p
