"""Reading the inputs of ``vista-data convert`` into rows: texts, label names and, when
the input says so, pair texts and per-row train/test splits.

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

Splits read here: a split column (values ``train`` / ``test``; ``validation``, ``valid``,
``val`` and ``dev`` count as test) and the splits of a DatasetDict (``train``; ``test``,
or ``validation`` when ``test`` is unlabelled). :mod:`vista.data.convert.splitting`
decides between these, a separate test input and a random split.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TEST", "TRAIN", "Table", "read_table"]

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

