"""``vista-data partition``: every method writes a FedNLP-readable group, groups accumulate."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from vista.data.cli import main
from vista.data.fednlp import FedNLPPartition

WORDS = ["good", "bad", "movie", "film", "great", "awful", "plot", "actor", "the", "a"]
N = 40
TRAIN = list(range(30))
TEST = list(range(30, 40))


def _write_data(path: Path, with_train: bool = True) -> Path:
    rng = np.random.default_rng(0)
    str_dt = h5py.string_dtype(encoding="utf-8")
    attrs = {
        "index_list": list(range(N)),
        "label_vocab": {"neg": 0, "pos": 1, "neu": 2},
        "num_labels": -1,
        "task_type": "text_classification",
        "author": [f"user{i % 4}" for i in range(N)],
    }
    if with_train:
        attrs["train_index_list"] = TRAIN
        attrs["test_index_list"] = TEST
    with h5py.File(path, "w") as f:
        f.create_dataset("attributes", data=json.dumps(attrs), dtype=str_dt)
        for i in range(N):
            text = " ".join(rng.choice(WORDS, size=rng.integers(2, 7)))
            f.create_dataset(f"X/{i}", data=text, dtype=str_dt)
            f.create_dataset(f"Y/{i}", data=["neg", "pos", "neu"][i % 3], dtype=str_dt)
            f.create_dataset(f"site/{i}", data=np.int64(i % 5))
    return path


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return _write_data(tmp_path / "toy_data.h5")


def _run(*argv: str) -> int:
    return main(["partition", *argv])


def _check_plain_h5(path: Path, name: str, n_clients: int) -> dict[int, np.ndarray]:
    """Read as FedNLP's own loader does: f[method]['partition_data'][cid]['train'][()]."""
    with h5py.File(path, "r") as f:
        g = f[name]
        assert int(g["n_clients"][()]) == n_clients
        pdata = g["partition_data"]
        assert sorted(pdata.keys(), key=int) == [str(c) for c in range(n_clients)]
        train = {int(c): pdata[c]["train"][()] for c in pdata}
        test = {int(c): pdata[c]["test"][()] for c in pdata}
    allt = np.concatenate(list(train.values()))
    assert sorted(allt.tolist()) == TRAIN
    assert all(len(v) > 0 for v in train.values())
    assert sorted(np.concatenate(list(test.values())).tolist()) == TEST
    return train


@pytest.mark.parametrize(
    "args,name,n_clients,param",
    [
        (["--method", "uniform", "--clients", "3"], "uniform_clients=3_seed=42", 3, None),
        (["--method", "niid_label", "--clients", "3", "--alpha", "1"], "niid_label_clients=3_alpha=1.0_seed=42", 3,
         ("alpha", 1.0)),
        (
            ["--method", "niid_quantity", "--clients", "4", "--beta", "0.5", "--min-size", "2"],
            "niid_quantity_clients=4_beta=0.5_min_size=2_seed=42",
            4,
            ("beta", 0.5),
        ),
        (["--method", "natural", "--group-column", "author", "--seed", "3"], "natural_author_seed=3", 4, None),
        (["--method", "natural", "--group-column", "site"], "natural_site_seed=42", 5, None),
    ],
)
def test_methods_round_trip(data, tmp_path, capsys, args, name, n_clients, param):
    out = tmp_path / "toy_partition.h5"
    assert _run("--data", str(data), "--out", str(out), *args) == 0
    assert name in capsys.readouterr().out
    part = FedNLPPartition(out, name)
    assert part.method == name and part.client_ids == list(range(n_clients))
    train = _check_plain_h5(out, name, n_clients)
    for c in part.client_ids:
        assert np.array_equal(part.clients[c].train, train[c])
    if param:
        with h5py.File(out, "r") as f:
            assert f[name][param[0]].dtype.kind == "f" and float(f[name][param[0]][()]) == param[1]
    if name.startswith("niid_quantity_"):
        assert min(len(v) for v in train.values()) >= 2
    if name.startswith("natural_author"):  # client k = k-th sorted author
        for c, arr in train.items():
            assert {i % 4 for i in arr.tolist()} == {c}


def test_alpha_spellings_and_groups_accumulate(data, tmp_path, capsys):
    out = tmp_path / "p.h5"
    niid = "niid_label_clients=3_alpha=1.0_seed=42"
    assert _run("--data", str(data), "--out", str(out), "--method", "uniform", "--clients", "2") == 0
    assert _run("--data", str(data), "--out", str(out), "--method", "niid_label", "--clients", "3", "--alpha", "1") == 0
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == [niid, "uniform_clients=2_seed=42"]
    assert FedNLPPartition(out, "niid_label_clients=3_alpha=1_seed=42").method == niid
    assert FedNLPPartition(out, niid).client_ids == [0, 1, 2]

    # same group again (spelled alpha=1.0): refused, file untouched
    capsys.readouterr()
    rc = _run("--data", str(data), "--out", str(out), "--method", "niid_label", "--clients", "3", "--alpha", "1.0")
    assert rc == 1
    err = capsys.readouterr().err
    assert niid in err and "--overwrite" in err
    rc = _run("--data", str(data), "--out", str(out), "--method", "uniform", "--clients", "2")
    assert rc == 1 and "'uniform_clients=2_seed=42'" in capsys.readouterr().err

    # other clients or another seed: a group of its own, next to the others
    assert _run("--data", str(data), "--out", str(out), "--method", "uniform", "--clients", "5") == 0
    assert _run("--data", str(data), "--out", str(out), "--method", "uniform", "--clients", "2", "--seed", "7") == 0
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == [niid, "uniform_clients=2_seed=42", "uniform_clients=2_seed=7",
                                    "uniform_clients=5_seed=42"]
    assert FedNLPPartition(out, "uniform_clients=5_seed=42").client_ids == list(range(5))
    assert not np.array_equal(FedNLPPartition(out, "uniform_clients=2_seed=7").clients[0].train,
                              FedNLPPartition(out, "uniform_clients=2_seed=42").clients[0].train)

    # with --overwrite a group is replaced (here: one damaged by hand), the others kept
    with h5py.File(out, "a") as f:
        del f["uniform_clients=2_seed=42/partition_data/1"]
    rc = _run("--data", str(data), "--out", str(out), "--method", "uniform", "--clients", "2", "--overwrite")
    assert rc == 0
    assert FedNLPPartition(out, "uniform_clients=2_seed=42").client_ids == [0, 1]
    assert FedNLPPartition(out, "niid_label_clients=3_alpha=1_seed=42").client_ids == [0, 1, 2]
    assert FedNLPPartition(out, "uniform_clients=5_seed=42").client_ids == list(range(5))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_seeded_and_deterministic(data, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        assert _run("--data", str(data), "--out", str(out), "--method", "niid_quantity", "--clients", "3", "--beta", "1") == 0
    pa = FedNLPPartition(a, "niid_quantity_clients=3_beta=1_seed=42")
    pb = FedNLPPartition(b, "niid_quantity_clients=3_beta=1.0_seed=42")
    for c in pa.client_ids:
        assert np.array_equal(pa.clients[c].train, pb.clients[c].train)
        assert np.array_equal(pa.clients[c].test, pb.clients[c].test)


def test_errors(tmp_path, capsys):
    nosplit = _write_data(tmp_path / "nosplit.h5", with_train=False)
    out = tmp_path / "p.h5"
    assert _run("--data", str(nosplit), "--out", str(out), "--method", "uniform", "--clients", "2") == 1
    assert "train_index_list" in capsys.readouterr().err
    data = _write_data(tmp_path / "d.h5")
    assert _run("--data", str(data), "--out", str(out), "--method", "niid_label", "--clients", "2") == 1
    assert "--alpha" in capsys.readouterr().err
    assert _run("--data", str(data), "--out", str(out), "--method", "natural", "--group-column", "nope") == 1
    assert "nope" in capsys.readouterr().err
    assert _run("--data", str(data), "--out", str(out), "--method", "kmeans", "--clients", "2", "--model", str(tmp_path / "nomodel")) == 1
    assert "nomodel" in capsys.readouterr().err
    assert not out.exists()


def _tiny_bert(where: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    where.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (where / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(where / "vocab.txt")).save_pretrained(str(where))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(str(where))
    return where


def test_embed_texts_masks_padding(tmp_path):
    from vista.data.embed import embed_texts

    model = _tiny_bert(tmp_path / "bert")
    texts = ["good movie", "bad film the a plot actor great awful", "good movie"]
    emb = embed_texts(model, texts, batch_size=2)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    # "good movie" alone and padded inside a batch with a long text give the same vector
    alone = embed_texts(model, ["good movie"], batch_size=1)
    np.testing.assert_allclose(emb[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(emb[2], alone[0], atol=1e-5)


def test_kmeans_with_tiny_bert(data, tmp_path, capsys):
    model = _tiny_bert(tmp_path / "bert")
    out = tmp_path / "p.h5"
    argv = ("--data", str(data), "--out", str(out), "--method", "kmeans", "--clients", "3", "--model", str(model))
    assert _run(*argv) == 0
    name = "kmeans_clusters=3_model=bert_seed=42"  # the model directory's name
    assert name in capsys.readouterr().out
    part = FedNLPPartition(out, name)
    train = _check_plain_h5(out, name, 3)
    with h5py.File(out, "r") as f:
        assign = f[name]["client_assignment"][()]
    assert assign.dtype == np.int64 and len(assign) == len(TRAIN)
    for c in part.client_ids:  # assignment is in train order
        assert np.array_equal(np.sort(np.asarray(TRAIN)[assign == c]), train[c])
    # deterministic: run again into another file
    out2 = tmp_path / "p2.h5"
    assert _run("--data", str(data), "--out", str(out2), *argv[4:]) == 0
    with h5py.File(out2, "r") as f:
        assert np.array_equal(f[name]["client_assignment"][()], assign)
