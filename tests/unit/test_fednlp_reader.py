"""The FedNLP reader on files written by hand in FedNLP's layout, good and bad."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from support.tiny import write_fednlp_pair

from vista.data.fednlp import (
    DataFileError,
    FederatedData,
    FederatedDataSpec,
    FedNLPData,
    FedNLPFilePartitionSpec,
    FedNLPPartition,
    canonical_method,
    method_from_parts,
)
from vista.main import unquoted_equals_hint


@pytest.fixture()
def pair(tmp_path):
    return write_fednlp_pair(tmp_path, methods=("uniform", "niid_label_clients=4_alpha=1.0", "niid_label_clients=4_alpha=10"))


def test_texts_and_labels_map_through_label_vocab(pair):
    data = FedNLPData(pair[0])
    with h5py.File(pair[0]) as f:
        attrs = json.loads(f["attributes"][()])
        assert data.texts([0, 5]) == [f["X"]["0"][()].decode(), f["X"]["5"][()].decode()]
        names = [f["Y"][str(i)][()].decode() for i in range(10)]
    assert data.num_labels == 3 and attrs["num_labels"] == -1  # derived, not trusted
    assert list(data.labels(range(10))) == [attrs["label_vocab"][n] for n in names]


@pytest.mark.parametrize("asked,found", [("niid_label_clients=4_alpha=1", "niid_label_clients=4_alpha=1.0"),
                                         ("niid_label_clients=4_alpha=10.0", "niid_label_clients=4_alpha=10"),
                                         ("uniform", "uniform")])
def test_both_alpha_spellings_find_the_group(pair, asked, found):
    assert FedNLPPartition(pair[1], asked).method == found


def test_partition_parts_form():
    assert method_from_parts("niid_label", 100, 1) == "niid_label_clients=100_alpha=1.0"
    assert method_from_parts("niid_quantity", 10, beta=5) == "niid_quantity_clients=10_beta=5.0"
    assert method_from_parts("uniform") == "uniform" and method_from_parts("kmeans", 8) == "kmeans_clusters=8"
    spec = FedNLPFilePartitionSpec(file="x", method="uniform", kind="niid_label", clients=4, alpha=1)
    assert canonical_method(spec.method_name()) == canonical_method("niid_label_clients=4_alpha=1.0")
    with pytest.raises(DataFileError, match="partition.alpha"):
        method_from_parts("niid_label", 4)
    with pytest.raises(DataFileError, match="known: uniform"):
        method_from_parts("dirichlet", 4, 1)


def test_unquoted_equals_gets_a_hint():
    hint = unquoted_equals_hint(["model=roberta", "partition.method=niid_label_clients=100_alpha=1"])
    assert "partition.method=\"niid_label_clients=100_alpha=1\"" in hint and "partition.kind=niid_label" in hint
    assert unquoted_equals_hint(['partition.method="niid_label_clients=100_alpha=1"', "seed=1,2"]) is None


def test_unknown_partition_lists_what_exists(pair):
    with pytest.raises(DataFileError) as info:
        FedNLPPartition(pair[1], "kmeans_clusters=4")
    msg = str(info.value)
    assert "kmeans_clusters=4" in msg and "uniform" in msg and "niid_label_clients=4_alpha=1.0" in msg


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        FedNLPData(tmp_path / "nope_data.h5")


def test_truncated_file(pair, tmp_path):
    bad = tmp_path / "cut_data.h5"
    bad.write_bytes(pair[0].read_bytes()[:2000])
    with pytest.raises(DataFileError, match="truncated or corrupt"):
        FedNLPData(bad)


def test_missing_keys(tmp_path):
    p = tmp_path / "d.h5"
    with h5py.File(p, "w") as f:
        f["X/0"] = "text"
        f["Y/0"] = "a"
    with pytest.raises(DataFileError, match="no 'attributes'"):
        FedNLPData(p)
    with h5py.File(p, "a") as f:
        f["attributes"] = json.dumps({"index_list": [0]})
    with pytest.raises(DataFileError, match="label_vocab"):
        FedNLPData(p)


def test_label_not_in_vocab_and_index_out_of_range(pair):
    with h5py.File(pair[0], "a") as f:
        del f["Y/3"]
        f["Y/3"] = "weather"
    data = FedNLPData(pair[0])
    with pytest.raises(DataFileError, match="'weather'.*not in label_vocab"):
        data.labels([3])
    with pytest.raises(DataFileError, match="missing"):
        data.texts([10_000])
    with pytest.raises(DataFileError, match="10000 missing from Y"):
        data.labels([10_000])


def test_empty_client_and_wrong_client_count(pair):
    with h5py.File(pair[1], "a") as f:
        g = f["uniform"]
        del g["partition_data/2/train"]
        g["partition_data/2/train"] = np.zeros(0, dtype=np.int64)
    with pytest.raises(DataFileError, match=r"clients \[2\].*no training examples"):
        FederatedData(FederatedDataSpec(str(pair[0]), str(pair[1]), "uniform"))
    with h5py.File(pair[1], "a") as f:
        del f["uniform/n_clients"]
        f["uniform/n_clients"] = 7
    with pytest.raises(DataFileError, match="n_clients=7 but holds 4"):
        FedNLPPartition(pair[1], "uniform")


def test_test_split_falls_back_to_client_test_lists(pair):
    with h5py.File(pair[0], "a") as f:
        attrs = json.loads(f["attributes"][()])
        del attrs["test_index_list"]
        del f["attributes"]
        f["attributes"] = json.dumps(attrs)
    fed = FederatedData(FederatedDataSpec(str(pair[0]), str(pair[1]), "uniform"))
    with h5py.File(pair[1]) as f:
        expected = np.unique(np.concatenate([f[f"uniform/partition_data/{c}/test"][()] for c in range(4)]))
    assert np.array_equal(fed.test_indices, expected)


def test_a_lazy_partition_reads_a_client_when_asked_and_equals_the_eager_one(tiny_data):
    import numpy as np

    from vista.data.fednlp import FedNLPPartition

    eager = FedNLPPartition(tiny_data[1], "uniform")
    lazy = FedNLPPartition(tiny_data[1], "uniform", lazy=True)
    assert lazy.client_ids == eager.client_ids and lazy.method == eager.method
    assert lazy.clients._read == {}  # nothing read yet
    c = eager.client_ids[1]
    assert np.array_equal(lazy.clients[c].train, eager.clients[c].train)
    assert np.array_equal(lazy.clients[c].test, eager.clients[c].test)
    assert list(lazy.clients._read) == [c]  # only that client
    with pytest.raises(KeyError):
        lazy.clients[10_000]
    import pickle

    again = pickle.loads(pickle.dumps(lazy))  # the open file handle does not travel; a read reopens it
    assert np.array_equal(again.clients[c].train, eager.clients[c].train)
    lazy.close()
    again.close()


def test_the_parent_checks_a_small_federation_up_front_and_a_large_one_per_client(tiny_data, tmp_path, monkeypatch):
    """At <= EAGER_CHECK_CLIENTS clients every client's lists are read (a client without training
    data is an error at start); above, a client's lists are read when first used and the same
    check fails then: visiting 10,000 groups leaves ~64 MB in HDF5's free lists."""
    import h5py

    from vista.data import fednlp
    from vista.data.fednlp import DataFileError, FederatedData, FederatedDataSpec

    part = tmp_path / "part.h5"
    part.write_bytes(Path(tiny_data[1]).read_bytes())
    with h5py.File(part, "r+") as f:
        g = f["uniform"]["partition_data"]
        victim = sorted(g.keys(), key=int)[0]
        del g[victim]["train"]
        g[victim].create_dataset("train", data=np.zeros(0, np.int64))
    spec = FederatedDataSpec(str(tiny_data[0]), str(part), "uniform")
    with pytest.raises(DataFileError, match=f"clients \\[{int(victim)}\\] of 'uniform' have no training examples"):
        FederatedData(spec)
    monkeypatch.setattr(fednlp, "EAGER_CHECK_CLIENTS", 1)
    fed = FederatedData(spec)
    assert fed.partition.clients._read == {}  # nothing read at start
    other = [c for c in fed.client_ids if c != int(victim)][0]
    assert fed.client_size(other) > 0 and list(fed.partition.clients._read) == [other]
    with pytest.raises(DataFileError, match=f"client {int(victim)} of 'uniform' has no training examples"):
        fed.client_size(int(victim))
    fed.close()
