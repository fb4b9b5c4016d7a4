"""vista.data.stats: per-client label histograms of a FedNLP partition."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from vista.data.cli import main as cli_main
from vista.data.stats import client_stats, label_entropy

STR = h5py.string_dtype(encoding="utf-8")
# 8 examples; label names as strings, vocab deliberately not alphabetical
LABELS = ["pos", "neg", "pos", "pos", "neu", "neg", "pos", "neu"]
VOCAB = {"neg": 0, "neu": 1, "pos": 2}
METHOD = "niid_label_clients=3_alpha=1.0"
CLIENTS = {0: [0, 2, 3], 1: [1, 5], 2: [4, 6]}  # example 7 is test


@pytest.fixture
def files(tmp_path):
    data, part = tmp_path / "tiny_data.h5", tmp_path / "tiny_partition.h5"
    with h5py.File(data, "w") as f:
        attrs = {"index_list": list(range(8)), "train_index_list": list(range(7)), "test_index_list": [7],
                 "label_vocab": VOCAB, "num_labels": -1, "task_type": "text_classification"}
        f.create_dataset("attributes", data=json.dumps(attrs), dtype=STR)
        for i, lab in enumerate(LABELS):
            f.create_dataset(f"X/{i}", data=f"text {i}", dtype=STR)
            f.create_dataset(f"Y/{i}", data=lab, dtype=STR)
    with h5py.File(part, "w") as f:
        g = f.create_group("niid_label_clients=3_alpha=1")  # old-style name: alpha=1
        g.create_dataset("n_clients", data=np.int64(3))
        g.create_dataset("alpha", data=1.0)
        for cid, idx in CLIENTS.items():
            g.create_dataset(f"partition_data/{cid}/train", data=np.asarray(idx, dtype=np.int64))
            g.create_dataset(f"partition_data/{cid}/test", data=np.asarray([7] if cid == 0 else [], dtype=np.int64))
    return data, part


def test_client_stats_exact(files):
    s = client_stats(*files, METHOD)
    assert s["method"] == "niid_label_clients=3_alpha=1"
    assert s["client_ids"] == [0, 1, 2]
    assert s["label_names"] == ["neg", "neu", "pos"]
    assert s["sizes"].tolist() == [3, 2, 2]
    assert s["test_sizes"].tolist() == [1, 0, 0]
    assert s["histogram"].dtype.kind == "i"
    assert s["histogram"].tolist() == [[0, 0, 3], [2, 0, 0], [0, 1, 1]]
    assert s["entropy"] == pytest.approx([0.0, 0.0, np.log(2)])
    assert s["mean_entropy"] == pytest.approx(np.log(2) / 3)
    assert s["max_entropy"] == pytest.approx(np.log(3))


def test_label_entropy_handles_empty_rows():
    assert label_entropy(np.array([[0, 0], [1, 1], [4, 0]])) == pytest.approx([0.0, np.log(2), 0.0])


def test_cli_prints_table_and_writes_pngs(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    rc = cli_main(["stats", "--data", str(files[0]), "--partition", str(files[1]), "--method", METHOD,
                   "--out-dir", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "labels: 0=neg, 1=neu, 2=pos" in printed
    assert "0 0 3" in printed and "2 0 0" in printed and "0 1 1" in printed
    assert "3 clients, 7 train examples" in printed
    for name in ("niid_label_clients=3_alpha=1_label_heatmap.png", "niid_label_clients=3_alpha=1_sizes.png"):
        p = out / name
        assert p.is_file() and p.stat().st_size > 0
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(p) in printed


def test_cli_unknown_method_exits_1(files, capsys):
    rc = cli_main(["stats", "--data", str(files[0]), "--partition", str(files[1]), "--method", "uniform"])
    assert rc == 1
    assert "uniform" in capsys.readouterr().err
