"""``vista-data partition``: add a FedNLP-style partition group to a partition file.

Usage::

    vista-data partition --data D_data.h5 --out D_partition.h5 --method uniform --clients 100
    vista-data partition --data D_data.h5 --out D_partition.h5 --method niid_label --clients 100 --alpha 0.1
    vista-data partition --data D_data.h5 --out D_partition.h5 --method niid_quantity --clients 100 --beta 5 [--min-size 1]
    vista-data partition --data D_data.h5 --out D_partition.h5 --method kmeans --clients 10 --model DIR
    vista-data partition --data D_data.h5 --out D_partition.h5 --method natural --group-column author

Group names carry every parameter that determines the group, in FedNLP's style, the seed
included (it draws the clients and cuts the test lists): ``uniform_clients=N_seed=S``,
``niid_label_clients=N_alpha=A_seed=S``, ``niid_quantity_clients=N_beta=B_seed=S`` (with
``_min_size=M`` before the seed when M is not 1), ``kmeans_clusters=N_model=DIRNAME_seed=S``
(with ``_max_seq_len=L`` when L is not 128) and ``natural_<column>_seed=S``; alpha/beta written
as Python floats, e.g. ``alpha=1.0`` (readers accept ``alpha=1`` too). ``partition=<kind>``
computes and caches groups under the same names, so either reuses what the other wrote, and
a sweep over clients, alpha or seed adds groups to one file. The groups FedNLP ships
(``uniform``, ``niid_label_clients=100_alpha=1.0`` ...) keep their names and are read with
``partition=fednlp_file``.
Train indices come from the data file's ``train_index_list``; each client's local
``test`` list is the data file's ``test_index_list`` shuffled with the seed and cut
into near-equal chunks (empty when there are fewer test examples than clients).

If ``--out`` exists the new group is added to it; a group of the same (canonical) name
is only replaced with ``--overwrite``. Writes go to a temporary copy moved into place
with ``os.replace``, so a crash never leaves a half-written file.

``natural`` reads the group value of each example from the data file's attributes:
``attributes[<column>]`` is a list aligned with ``attributes["index_list"]``
(``attributes[<column>][j]`` belongs to example ``index_list[j]``). If attributes have
no such key, a per-example scalar dataset ``<column>/<idx>`` in the data file is used.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp import DataFileError, FedNLPData, canonical_method, method_from_parts
from vista.data.partition import (
    dirichlet_label_partition,
    dirichlet_quantity_partition,
    kmeans_partition,
    natural_partition,
    uniform_partition,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "partition",
        help=f"add a partition group ({', '.join(METHODS)}) to a partition file",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--data", required=True, type=Path, help="FedNLP *_data.h5 file")
    p.add_argument("--out", required=True, type=Path, help="partition file to create or add a group to")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--clients", type=int, help="number of clients (clusters for kmeans)")
    p.add_argument("--alpha", type=float, help="niid_label: Dirichlet concentration (small = skewed)")
    p.add_argument("--beta", type=float, help="niid_quantity: Dirichlet concentration of client sizes")
    p.add_argument("--min-size", type=int, default=1, help="niid_quantity: minimum examples per client")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", type=Path, help="kmeans: local Hugging Face model dir for sentence embeddings")
    p.add_argument("--batch-size", type=int, default=32, help="kmeans: embedding batch size")
    p.add_argument("--max-seq-len", type=int, default=128, help="kmeans: embedding max sequence length")
    p.add_argument("--group-column", help="natural: attribute (or per-example dataset) holding each example's group")
    p.add_argument("--overwrite", action="store_true", help="replace an existing group of the same name")
    p.set_defaults(func=run)


def _natural_groups(data: FedNLPData, column: str, train: np.ndarray) -> np.ndarray:
    attrs = data.attributes
    if column in attrs:
        values = attrs[column]
        index_list = attrs.get("index_list")
        if not isinstance(values, list) or index_list is None or len(values) != len(index_list):
            raise DataFileError(
                f"{data.path}: attributes[{column!r}] must be a list aligned with attributes['index_list']"
            )
        by_index = {int(i): v for i, v in zip(index_list, values)}
        missing = [int(i) for i in train if int(i) not in by_index]
        if missing:
            raise DataFileError(f"{data.path}: train indices {missing[:5]} are not in index_list")
        raw = [by_index[int(i)] for i in train]
    else:
        f = data._file()
        if column not in f:
            raise DataFileError(
                f"{data.path}: no attributes[{column!r}] list and no '{column}/<idx>' datasets; "
                f"--group-column must name one of them"
            )
        g = f[column]
        try:
            raw = [g[str(int(i))][()] for i in train]
        except KeyError as err:
            raise DataFileError(f"{data.path}: example missing from '{column}' ({err})") from None
        raw = [v.decode("utf-8") if isinstance(v, bytes) else v for v in raw]
    # Mixed types do not sort; compare as strings then.
    kinds = {type(v) for v in raw}
    if len(kinds) > 1 or not kinds <= {int, float, str, np.int64, np.float64, np.str_}:
        raw = [str(v) for v in raw]
    return np.asarray(raw)


def write_group(
    path: Path,
    name: str,
    train: dict[int, np.ndarray],
    test: dict[int, np.ndarray],
    params: dict[str, float] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> None:
    """Add group ``name`` to the partition file ``path`` (created if absent), atomically.

    An existing group whose name is the same up to number spelling (``alpha=1`` vs
    ``alpha=1.0``) raises FileExistsError unless ``overwrite``, which deletes it first.
    ``extra`` holds additional int64 arrays (e.g. ``client_assignment``).
    """
    import h5py

    path = Path(path)
    if set(train) != set(test):
        raise ValueError("train and test client ids differ")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            with h5py.File(path, "r") as f:
                clash = [g for g in f if canonical_method(g) == canonical_method(name)]
        except OSError as err:
            raise DataFileError(f"partition file {path} is not a readable HDF5 file: {err}") from None
        if clash and not overwrite:
            raise FileExistsError(
                f"{path} already has a partition group {clash[0]!r}; pass --overwrite to replace it"
            )
    else:
        clash = []
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
            mode = "a"
        else:
            mode = "w"
        with h5py.File(tmp, mode) as f:
            for g in clash:
                del f[g]
            grp = f.create_group(name)
            grp.create_dataset("n_clients", data=np.int64(len(train)))
            for pname, value in (params or {}).items():
                grp.create_dataset(pname, data=np.float64(value))
            for ename, arr in (extra or {}).items():
                grp.create_dataset(ename, data=np.asarray(arr, dtype=np.int64).reshape(-1))
            pdata = grp.create_group("partition_data")
            for cid in sorted(train, key=int):
                cg = pdata.create_group(str(int(cid)))
                cg.create_dataset("train", data=np.asarray(train[cid], dtype=np.int64).reshape(-1))
                cg.create_dataset("test", data=np.asarray(test[cid], dtype=np.int64).reshape(-1))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class GroupRequest:
    """What to partition: the method and its parameters (CLI flags or config keys)."""

    method: str
    clients: int | None = None
    alpha: float | None = None
    beta: float | None = None
    min_size: int = 1
    seed: int = 42
    model: str | None = None
    group_column: str | None = None
    batch_size: int = 32
    max_seq_len: int = 128


@dataclass
class Group:
    name: str
    train: dict[int, np.ndarray]
    params: dict[str, float] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _need_value(value: Any, flag: str, method: str) -> Any:
    if value is None:
        raise ValueError(f"method {method} needs {flag}")
    return value


DEFAULT_MAX_SEQ_LEN = GroupRequest.max_seq_len


def group_name(r: GroupRequest) -> str:
    """The name of the group a request makes: the method and every parameter that
    determines the group, seed last (ValueError naming a missing flag). Not FedNLP's own
    names (``uniform`` has no client count), so computed groups never clash with those."""
    if r.method == "natural":
        return f"natural_{_need_value(r.group_column, '--group-column NAME', r.method)}_seed={int(r.seed)}"
    n = int(_need_value(r.clients, "--clients N", r.method))
    if r.method == "niid_label":
        _need_value(r.alpha, "--alpha", r.method)
    if r.method == "niid_quantity":
        _need_value(r.beta, "--beta", r.method)
    if r.method == "uniform":
        parts = [f"uniform_clients={n}"]
    elif r.method == "kmeans":
        model = _need_value(r.model, "--model DIR (a local Hugging Face model for sentence embeddings)", r.method)
        parts = [method_from_parts(r.method, n), f"model={_model_tag(model)}"]
        if r.max_seq_len != DEFAULT_MAX_SEQ_LEN:
            parts.append(f"max_seq_len={int(r.max_seq_len)}")
    else:
        parts = [method_from_parts(r.method, n, r.alpha, r.beta)]
        if r.method == "niid_quantity" and r.min_size != 1:
            parts.append(f"min_size={int(r.min_size)}")
    return "_".join([*parts, f"seed={int(r.seed)}"])


def _model_tag(model: Any) -> str:
    """A model directory as a group-name part: its last path component, '/'-free."""
    name = Path(str(model)).expanduser().name or str(model)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def _uniform(data: FedNLPData, train: np.ndarray, r: GroupRequest) -> Group:
    return Group(group_name(r), uniform_partition(train, r.clients, r.seed))


def _niid_label(data: FedNLPData, train: np.ndarray, r: GroupRequest) -> Group:
    name = group_name(r)
    parts = dirichlet_label_partition(train, data.labels(train), r.clients, r.alpha, r.seed)
    return Group(name, parts, {"alpha": float(r.alpha)})


def _niid_quantity(data: FedNLPData, train: np.ndarray, r: GroupRequest) -> Group:
    name = group_name(r)
    parts = dirichlet_quantity_partition(train, r.clients, r.beta, r.seed, min_size=r.min_size)
    return Group(name, parts, {"beta": float(r.beta)})


def _kmeans(data: FedNLPData, train: np.ndarray, r: GroupRequest) -> Group:
    name, model = group_name(r), r.model
    from vista.data.embed import embed_texts
    from vista.models.hub import ModelSpec

    model_dir = ModelSpec(name=str(model), path=str(model)).resolve()
    emb = embed_texts(model_dir, data.texts(train), batch_size=r.batch_size, max_seq_len=r.max_seq_len)
    parts, assignment = kmeans_partition(emb, train, r.clients, r.seed)
    return Group(name, parts, extra={"client_assignment": assignment})


def _natural(data: FedNLPData, train: np.ndarray, r: GroupRequest) -> Group:
    name = group_name(r)
    return Group(name, natural_partition(train, _natural_groups(data, r.group_column, train)))


BUILDERS = {"uniform": _uniform, "niid_label": _niid_label, "niid_quantity": _niid_quantity,
            "kmeans": _kmeans, "natural": _natural}
METHODS = tuple(BUILDERS)  # what --method and partition.kind may name


def build_group(data_file: str | Path, request: GroupRequest) -> tuple[Group, dict[int, np.ndarray], int]:
    """Partition a data file's train split; returns the group, per-client test lists, #test."""
    if request.method not in BUILDERS:
        raise ValueError(f"unknown partition method {request.method!r}; known: {', '.join(BUILDERS)}")
    data = FedNLPData(data_file)
    try:
        train = data.train_indices
        if train is None or len(train) == 0:
            raise DataFileError(
                f"{data_file}: attributes has no train_index_list, so there is no train split to partition; "
                f"rebuild the data file with a train/test split (e.g. `vista-data convert`)"
            )
        test = data.test_indices
        if test is None:
            test = np.zeros(0, dtype=np.int64)
        group = BUILDERS[request.method](data, train, request)
    finally:
        data.close()
    group.params["seed"] = float(request.seed)
    return group, uniform_partition(test, len(group.train), request.seed, allow_empty=True), len(test)


def run(args: argparse.Namespace) -> int:
    request = GroupRequest(args.method, args.clients, args.alpha, args.beta, args.min_size, args.seed, args.model,
                           args.group_column, args.batch_size, args.max_seq_len)
    group, test_parts, n_test = build_group(args.data, request)
    write_group(args.out, group.name, group.train, test_parts, group.params, group.extra, overwrite=args.overwrite)
    sizes = np.array([len(v) for v in group.train.values()])
    print(
        f"wrote partition {group.name!r} to {args.out}: {len(sizes)} clients, {int(sizes.sum())} train examples "
        f"(per client min {int(sizes.min())}, median {float(np.median(sizes)):g}, max {int(sizes.max())}), "
        f"{n_test} test examples"
    )
    return 0
