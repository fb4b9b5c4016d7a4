"""Partitions computed on the fly from config (``partition=niid_label`` ...), cached as a
group of a FedNLP partition file so that a later run, or FedNLP's own code, reads the same
clients.

A group is cached under a name that carries every parameter that determines it, seed
included (``uniform_clients=100_seed=42``, ``niid_label_clients=10_alpha=1.0_seed=42``; see
``vista.data.partition_cmd.group_name``, which ``vista-data partition`` uses too): a run with
the same parameters reuses the group, other parameters add a group next to it, so a sweep
over clients, alpha or seed shares one file. FedNLP's own groups (``uniform``, ...) never
match these names, so they are left as FedNLP shipped them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vista.data.fednlp import DataFileError, canonical_method


@dataclass(frozen=True)
class ComputedPartitionSpec:
    kind: str  # uniform | niid_label | niid_quantity | kmeans | natural
    file: str  # the partition file that caches the group (created if absent)
    clients: int | None = None
    alpha: float | None = None
    beta: float | None = None
    min_size: int = 1
    seed: int = 42
    model: str | None = None  # kmeans: local HF model directory for sentence embeddings
    group_column: str | None = None  # natural: the column that names each example's client

    def resolve(self, data_file: str | Path) -> tuple[Path, str]:
        """(partition file, group name); computes and writes the group unless the file
        already holds it (same name up to number spelling: ``alpha=1`` is ``alpha=1.0``)."""
        import numpy as np

        from vista.data.partition_cmd import GroupRequest, build_group, group_name, write_group

        request = GroupRequest(self.kind, self.clients, self.alpha, self.beta, self.min_size, self.seed, self.model,
                               self.group_column)
        path = Path(self.file).expanduser()
        cached = _cached(path, group_name(request))
        if cached is not None:
            return path, cached
        group, test, _ = build_group(data_file, request)
        try:
            write_group(path, group.name, group.train, test, group.params, group.extra)
        except FileExistsError:  # another run wrote the same group meanwhile: it is the same clients
            return path, _cached(path, group.name) or group.name
        sizes = np.array([len(v) for v in group.train.values()])
        print(f"vista: computed partition {group.name!r} ({len(sizes)} clients, {sizes.min()}..{sizes.max()} "
              f"examples each), cached in {path}", flush=True)
        return path, group.name


def _cached(path: Path, name: str) -> str | None:
    """The group of ``path`` named ``name`` (up to number spelling), None if absent."""
    import h5py

    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            return next((g for g in f if canonical_method(g) == canonical_method(name)), None)
    except OSError as err:
        raise DataFileError(f"partition file {path} is not a readable HDF5 file: {err}") from None
