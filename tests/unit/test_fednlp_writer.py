"""FedNLP writer: files read back with plain h5py exactly as FedNLP's loaders read them."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from vista.data.fednlp_writer import PartitionGroup, write_data_file, write_partition_file

TEXTS = ["hello world", "caf\u00e9 na\u00efve \u2014 \u65e5\u672c\u8a9e", "", "third text here"]
LABELS = ["pos", "neg", "pos", "neg"]
VOCAB = {"neg": 0, "pos": 1}


def _groups() -> dict[str, PartitionGroup]:
    return {
        "uniform": PartitionGroup(
            train={0: np.array([0]), 1: np.array([1])}, test={0: np.array([2]), 1: np.array([3])}
        ),
        "niid_label_clients=2_alpha=1.0": PartitionGroup(
            train={1: np.array([0, 1]), 0: np.array([], dtype=np.int64)},
            test={0: np.array([2]), 1: np.array([3])},
            params={"alpha": 1.0},
        ),
    }


def test_data_file_reads_back_as_fednlp_does(tmp_path):
    path = tmp_path / "toy_data.h5"
    write_data_file(path, TEXTS, LABELS, VOCAB, [0, 1], [2, 3])
    with h5py.File(path, "r") as f:
        attrs = json.loads(f["attributes"][()])
        assert attrs == {
            "index_list": [0, 1, 2, 3],
            "train_index_list": [0, 1],
            "test_index_list": [2, 3],
            "label_vocab": VOCAB,
            "num_labels": 2,
            "task_type": "text_classification",
        }
        assert f["attributes"].shape == ()
        for i in attrs["index_list"]:
            assert f["X"][str(i)].shape == () and f["Y"][str(i)].shape == ()
            assert f["X"][str(i)][()].decode("utf-8") == TEXTS[i]
            assert f["Y"][str(i)][()].decode("utf-8") == LABELS[i]
            assert attrs["label_vocab"][f["Y"][str(i)][()].decode("utf-8")] == VOCAB[LABELS[i]]
        assert sorted(f["X"].keys(), key=int) == ["0", "1", "2", "3"]


def test_partition_file_reads_back_as_fednlp_does(tmp_path):
    path = tmp_path / "toy_partition.h5"
    groups = _groups()
    write_partition_file(path, groups)
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == set(groups)
        assert set(f["uniform"].keys()) == {"n_clients", "partition_data"}
        niid = f["niid_label_clients=2_alpha=1.0"]
        assert set(niid.keys()) == {"n_clients", "partition_data", "alpha"}
        assert niid["alpha"][()] == 1.0 and niid["alpha"].dtype.kind == "f" and niid["alpha"].shape == ()
        for name, g in groups.items():
            grp = f[name]
            assert grp["n_clients"][()] == 2 and grp["n_clients"].dtype == np.int64
            assert grp["n_clients"].shape == ()
            assert sorted(grp["partition_data"].keys(), key=int) == ["0", "1"]
            for cid in range(int(grp["n_clients"][()])):
                for split, ref in (("train", g.train), ("test", g.test)):
                    ds = grp["partition_data"][str(cid)][split]
                    assert ds.dtype == np.int64
                    np.testing.assert_array_equal(ds[()], ref[cid])


def test_refuses_to_overwrite_unless_asked(tmp_path):
    data, part = tmp_path / "d.h5", tmp_path / "p.h5"
    write_data_file(data, TEXTS, LABELS, VOCAB, [0, 1], [2, 3])
    write_partition_file(part, _groups())
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_data_file(data, ["x"], ["pos"], VOCAB, [0], [])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_partition_file(part, {})
    with h5py.File(data) as f:  # untouched
        assert len(f["X"]) == 4
    write_data_file(data, ["x"], ["pos"], VOCAB, [0], [], overwrite=True)
    with h5py.File(data) as f:
        assert len(f["X"]) == 1 and f["X"]["0"][()].decode("utf-8") == "x"
    assert sorted(os.listdir(tmp_path)) == ["d.h5", "p.h5"]  # no temp files left behind


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "bad.h5"
    with pytest.raises(ValueError):
        write_data_file(path, TEXTS, LABELS, {"pos": 1}, [0], [1])  # "neg" not in vocab
    bad = {"g": PartitionGroup(train={0: np.array([object()])}, test={0: np.array([1])})}
    with pytest.raises(TypeError):
        write_partition_file(path, bad)
    assert os.listdir(tmp_path) == []


def test_rejects_inconsistent_inputs(tmp_path):
    with pytest.raises(ValueError):
        write_data_file(tmp_path / "a.h5", TEXTS, LABELS[:3], VOCAB, [0], [1])
    with pytest.raises(ValueError):
        write_data_file(tmp_path / "a.h5", TEXTS, LABELS, VOCAB, [0, 1], [1, 2])  # overlap
    with pytest.raises(ValueError):
        write_data_file(tmp_path / "a.h5", TEXTS, LABELS, VOCAB, [0, 9], [2])  # out of range
    with pytest.raises(ValueError):
        write_partition_file(tmp_path / "p.h5", {"u": PartitionGroup({0: np.array([0])}, {1: np.array([1])})})


ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "src", "vista", "assets")


@pytest.mark.skipif(not os.path.exists(os.path.join(ASSETS, "20news5_data.h5")), reason="asset not built")
def test_embedded_20news_asset_layout():
    with h5py.File(os.path.join(ASSETS, "20news5_data.h5"), "r") as f:
        attrs = json.loads(f["attributes"][()])
        assert attrs["label_vocab"] == {name: i for i, name in enumerate(sorted(attrs["label_vocab"]))}
        assert len(attrs["train_index_list"]) == 2000 and len(attrs["test_index_list"]) == 500
        assert len(f["X"]) == len(f["Y"]) == len(attrs["index_list"]) == 2500
        assert f["Y"]["0"][()].decode("utf-8") in attrs["label_vocab"]
        assert 0 < len(f["X"]["0"][()].decode("utf-8")) <= 1000
    with h5py.File(os.path.join(ASSETS, "20news5_partition.h5"), "r") as f:
        assert set(f.keys()) == {"uniform"} | {f"niid_label_clients=10_alpha={a}" for a in ("0.1", "1.0", "10.0")}
        for name in f:
            train = np.concatenate([f[name]["partition_data"][str(c)]["train"][()] for c in range(10)])
            np.testing.assert_array_equal(np.sort(train), np.arange(2000))
