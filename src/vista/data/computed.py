"""Partitions computed on the fly from config (``partition=niid_label`` ...), cached as a
group of a FedNLP partition file so that a later run, or FedNLP's own code, reads the same
clients."""

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
        """(partition file, group name); computes and writes the group unless it is cached
        with the same number of clients and seed."""
        import numpy as np

        from vista.data.partition_cmd import GroupRequest, build_group, group_name, write_group

        request = GroupRequest(self.kind, self.clients, self.alpha, self.beta, self.min_size, self.seed, self.model,
                               self.group_column)
        path = Path(self.file).expanduser()
        cached = self._cached(path, group_name(request))
        if cached is not None:
            return path, cached
        group, test, _ = build_group(data_file, request)
        write_group(path, group.name, group.train, test, group.params, group.extra)
        sizes = np.array([len(v) for v in group.train.values()])
        print(f"vista: computed partition {group.name!r} ({len(sizes)} clients, {sizes.min()}..{sizes.max()} "
              f"examples each), cached in {path}", flush=True)
        return path, group.name

    def _cached(self, path: Path, name: str) -> str | None:
        import h5py

        if not path.exists():
            return None
        with h5py.File(path, "r") as f:
            found = [g for g in f if canonical_method(g) == canonical_method(name)]
            if not found:
                return None
            g = f[found[0]]
            seed = float(g["seed"][()]) if "seed" in g else None
            n = int(g["n_clients"][()]) if "n_clients" in g else None
            if seed != float(self.seed) or (self.clients is not None and n != self.clients):
                raise DataFileError(
                    f"{path} already holds a group {found[0]!r} made with seed {seed} and {n} clients, not seed "
                    f"{self.seed} and {self.clients} clients; set partition.file to another file or delete that group"
                )
            return found[0]
