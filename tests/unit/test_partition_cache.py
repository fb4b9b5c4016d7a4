"""Partitions computed from config are cached under names that carry their parameters, so
sweeps over clients, alpha or seed share one partition file without clashing."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from support.tiny import write_fednlp_pair

from vista.data.cli import main as data_cli
from vista.data.computed import ComputedPartitionSpec
from vista.data.fednlp import FedNLPPartition, canonical_method
from vista.data.partition_cmd import GroupRequest, group_name


def _groups(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return sorted(f.keys())


def _run(cache: Path, data: Path, kind: str = "uniform", **params) -> tuple[str, int]:
    """One run's partition step: (the group it trains on, the cache file's mtime after it)."""
    path, name = ComputedPartitionSpec(kind, str(cache), **params).resolve(data)
    assert path == cache
    return name, cache.stat().st_mtime_ns


def test_a_client_sweep_shares_one_file_and_reuses_its_groups(tmp_path, capsys):
    data, _ = write_fednlp_pair(tmp_path / "data", n_per_label=34, n_test_per_label=2)  # 102 train examples
    cache = tmp_path / "tiny_partition.h5"
    ten, _ = _run(cache, data, clients=10)
    hundred, t2 = _run(cache, data, clients=100)
    assert (ten, hundred) == ("uniform_clients=10_seed=42", "uniform_clients=100_seed=42")
    assert _groups(cache) == [hundred, ten]
    assert capsys.readouterr().out.count("computed partition") == 2

    again, t3 = _run(cache, data, clients=10)
    assert again == ten and t3 == t2  # reused: nothing recomputed, the file untouched
    assert "computed partition" not in capsys.readouterr().out
    assert _groups(cache) == [hundred, ten]
    assert FedNLPPartition(cache, ten).client_ids == list(range(10))
    assert FedNLPPartition(cache, hundred).client_ids == list(range(100))


def test_a_seed_sweep_shares_one_file(tiny_data, tmp_path):
    data, _ = tiny_data
    cache = tmp_path / "p.h5"
    names = [_run(cache, data, "niid_quantity", clients=4, beta=1.0, seed=s)[0] for s in (1, 2, 3)]
    assert names == [f"niid_quantity_clients=4_beta=1.0_seed={s}" for s in (1, 2, 3)]
    assert _groups(cache) == sorted(names)
    parts = [FedNLPPartition(cache, n) for n in names]
    sizes = [[len(p.clients[c].train) for c in p.client_ids] for p in parts]
    assert len({tuple(s) for s in sizes}) > 1  # the seeds draw different clients
    mtime = cache.stat().st_mtime_ns
    assert _run(cache, data, "niid_quantity", clients=4, beta=1, seed=2) == (names[1], mtime)  # beta=1 is 1.0
    with h5py.File(cache, "r") as f:
        assert [float(f[n]["seed"][()]) for n in names] == [1.0, 2.0, 3.0]


def test_niid_label_with_two_alphas(tiny_data, tmp_path):
    data, _ = tiny_data
    cache = tmp_path / "p.h5"
    a, _ = _run(cache, data, "niid_label", clients=4, alpha=0.1)
    b, mtime = _run(cache, data, "niid_label", clients=4, alpha=10)
    assert (a, b) == ("niid_label_clients=4_alpha=0.1_seed=42", "niid_label_clients=4_alpha=10.0_seed=42")
    assert _groups(cache) == [a, b]
    with h5py.File(cache, "r") as f:
        assert float(f[a]["alpha"][()]) == 0.1 and float(f[b]["alpha"][()]) == 10.0
    assert _run(cache, data, "niid_label", clients=4, alpha=0.1) == (a, mtime)
    assert _run(cache, data, "niid_label", clients=4, alpha=10.0) == (b, mtime)


def test_fednlp_groups_in_the_same_file_are_left_alone(tiny_data, tmp_path):
    """The default cache is the dataset's own ``*_partition.h5``: a computed group never takes
    (or clashes with) the name of a group FedNLP shipped there."""
    data, part = tiny_data
    cache = tmp_path / "tiny_partition.h5"
    cache.write_bytes(part.read_bytes())
    shipped = _groups(cache)
    assert shipped == ["niid_label_clients=4_alpha=1.0", "uniform"]
    before = {m: FedNLPPartition(cache, m).clients[0].train for m in shipped}
    uniform, _ = _run(cache, data, clients=4)
    niid, _ = _run(cache, data, "niid_label", clients=4, alpha=1.0)
    assert _groups(cache) == sorted([*shipped, uniform, niid])
    for m in shipped:
        assert np.array_equal(FedNLPPartition(cache, m).clients[0].train, before[m])


def test_a_group_written_by_the_cli_is_reused_by_a_run(tiny_data, tmp_path):
    data, _ = tiny_data
    cache = tmp_path / "p.h5"
    argv = ["partition", "--data", str(data), "--out", str(cache), "--method", "niid_label", "--clients", "3",
            "--alpha", "1", "--seed", "9"]
    assert data_cli(argv) == 0
    mtime = cache.stat().st_mtime_ns
    assert _run(cache, data, "niid_label", clients=3, alpha=1.0, seed=9) == ("niid_label_clients=3_alpha=1.0_seed=9",
                                                                             mtime)


@pytest.mark.parametrize("request_,name", [
    (GroupRequest("uniform", 100), "uniform_clients=100_seed=42"),
    (GroupRequest("niid_label", 100, alpha=1), "niid_label_clients=100_alpha=1.0_seed=42"),
    (GroupRequest("niid_quantity", 10, beta=1.0, seed=5), "niid_quantity_clients=10_beta=1.0_seed=5"),
    (GroupRequest("niid_quantity", 10, beta=1.0, min_size=3), "niid_quantity_clients=10_beta=1.0_min_size=3_seed=42"),
    (GroupRequest("kmeans", 10, model="/models/all-MiniLM-L6-v2/"), "kmeans_clusters=10_model=all-MiniLM-L6-v2_seed=42"),
    (GroupRequest("kmeans", 10, model="~/hub/my model", max_seq_len=64),
     "kmeans_clusters=10_model=my-model_max_seq_len=64_seed=42"),
    (GroupRequest("natural", group_column="author", seed=1), "natural_author_seed=1"),
])
def test_group_names_carry_every_parameter(request_, name):
    assert group_name(request_) == name
    assert "/" not in name  # '/' would nest h5 groups


def test_number_spellings_name_the_same_group():
    assert canonical_method("niid_label_clients=100_alpha=1_seed=42") == \
        canonical_method("niid_label_clients=100_alpha=1.0_seed=42.0")
    assert canonical_method("uniform_clients=10_seed=42") != canonical_method("uniform_clients=100_seed=42")
    assert canonical_method("uniform_clients=10_seed=4") != canonical_method("uniform_clients=10_seed=42")
