"""Write data and partition files in the FedNLP h5 layout.

The layout (``shared/design/FEDNLP_FORMAT.md``) is what FedNLP's own loaders read, so
files written here can be used by FedNLP code, and FedNLP's files by Vista:

* data file: ``X/<idx>`` and ``Y/<idx>`` scalar utf-8 strings (text, label *name*),
  ``attributes`` a scalar JSON string;
* partition file: one group per partition method holding ``n_clients``,
  ``partition_data/<cid>/{train,test}`` and the method's parameters.

Strings are stored as variable-length UTF-8 strings, as FedNLP's own files are, so
``f["X"][str(i)][()]`` returns ``bytes`` (``.decode("utf-8")``) and
``json.loads(f["attributes"][()])`` works.

Writes are atomic: the file is built under a temporary name in the target directory
and moved into place with ``os.replace``, so a crash never leaves a truncated file.
An existing file is only replaced when ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

__all__ = ["PartitionGroup", "write_data_file", "write_partition_file"]

_STR = h5py.string_dtype(encoding="utf-8")


@dataclass
class PartitionGroup:
    """One partition method: per-client train/test indices and its parameters.

    ``params`` holds the method's numeric parameters (e.g. ``{"alpha": 1.0}``); each
    is written as a float scalar dataset next to ``n_clients``, as FedNLP does.
    """

    train: dict[int, np.ndarray]
    test: dict[int, np.ndarray]
    params: dict[str, float] = field(default_factory=dict)


def _atomic_h5_write(path: str | os.PathLike[str], overwrite: bool, fill: Callable[[h5py.File], None]) -> Path:
    """Create ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _scalar_str(group: h5py.Group, name: str, value: str) -> None:
    group.create_dataset(name, data=value, dtype=_STR)


def _as_index_list(values: Iterable[int], n: int, what: str) -> list[int]:
    out = [int(v) for v in np.asarray(list(values), dtype=np.int64).reshape(-1)]
    if len(set(out)) != len(out):
        raise ValueError(f"{what} contains duplicate indices")
    bad = [v for v in out if not 0 <= v < n]
    if bad:
        raise ValueError(f"{what} has indices outside [0, {n}): {bad[:5]}")
    return out


def write_data_file(
    path: str | os.PathLike[str],
    texts: list[str],
    label_names: list[str],
    label_vocab: Mapping[str, int],
    train_index_list: Iterable[int],
    test_index_list: Iterable[int],
    task_type: str = "text_classification",
    overwrite: bool = False,
) -> Path:
    """Write a FedNLP text-classification data file; return its path.

    Example ``i`` (``0 <= i < len(texts)``) becomes ``X/<i>`` (its text) and ``Y/<i>``
    (its label name, which must be a key of ``label_vocab``). ``attributes`` records
    ``index_list`` (all indices), the train/test split, ``label_vocab``, ``num_labels``
    (``len(label_vocab)``) and ``task_type``.
    """
    n = len(texts)
    if len(label_names) != n:
        raise ValueError(f"{len(label_names)} label names for {n} texts")
    vocab = {str(k): int(v) for k, v in label_vocab.items()}
    unknown = sorted(set(label_names) - set(vocab))
    if unknown:
        raise ValueError(f"label names not in label_vocab: {unknown[:5]}")
    train = _as_index_list(train_index_list, n, "train_index_list")
    test = _as_index_list(test_index_list, n, "test_index_list")
    if set(train) & set(test):
        raise ValueError("train_index_list and test_index_list overlap")
    attributes = {
        "index_list": list(range(n)),
        "train_index_list": train,
        "test_index_list": test,
        "label_vocab": vocab,
        "num_labels": len(vocab),
        "task_type": task_type,
    }

    def fill(f: h5py.File) -> None:
        _scalar_str(f, "attributes", json.dumps(attributes))
        xg, yg = f.create_group("X"), f.create_group("Y")
        for i, (text, label) in enumerate(zip(texts, label_names)):
            _scalar_str(xg, str(i), text)
            _scalar_str(yg, str(i), label)

    return _atomic_h5_write(path, overwrite, fill)


def write_partition_file(
    path: str | os.PathLike[str],
    groups: Mapping[str, PartitionGroup],
    overwrite: bool = False,
) -> Path:
    """Write a FedNLP partition file with one h5 group per partition method.

    ``groups`` maps the method name (e.g. ``"uniform"``,
    ``"niid_label_clients=10_alpha=1.0"``) to its :class:`PartitionGroup`. Train and
    test must list the same client ids.
    """
    for name, g in groups.items():
        if set(g.train) != set(g.test):
            raise ValueError(f"group {name!r}: train and test client ids differ")
        reserved = {"n_clients", "partition_data"} & set(g.params)
        if reserved:
            raise ValueError(f"group {name!r}: parameter names clash with {sorted(reserved)}")

    def fill(f: h5py.File) -> None:
        for name, g in groups.items():
            grp = f.create_group(name)
            grp.create_dataset("n_clients", data=np.int64(len(g.train)))
            for pname, value in g.params.items():
                grp.create_dataset(pname, data=np.float64(value))
            pdata = grp.create_group("partition_data")
            for cid in sorted(g.train, key=int):
                cg = pdata.create_group(str(int(cid)))
                cg.create_dataset("train", data=np.asarray(g.train[cid], dtype=np.int64).reshape(-1))
                cg.create_dataset("test", data=np.asarray(g.test[cid], dtype=np.int64).reshape(-1))

    return _atomic_h5_write(path, overwrite, fill)
