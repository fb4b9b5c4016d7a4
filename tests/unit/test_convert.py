"""``vista-data convert``: CSV/TSV/JSONL/Parquet/datasets inputs into FedNLP data files,
read back both with Vista's reader and with plain h5py as FedNLP's loaders do."""

from __future__ import annotations

import csv
import importlib.util
import json

import h5py
import pytest

from vista.data.cli import main as cli_main
from vista.data.convert import convert, read_table
from vista.data.fednlp import FedNLPData

HAVE_PYARROW = importlib.util.find_spec("pyarrow") is not None
needs_pyarrow = pytest.mark.skipif(not HAVE_PYARROW, reason="pyarrow is not installed (pip install pyarrow)")

ROWS = [
    {"sentence": "plain text", "label": "pos"},
    {"sentence": 'has, commas and "quotes"', "label": "neg"},
    {"sentence": "multi\nline\ntext", "label": "pos"},
    {"sentence": "caf\u00e9 na\u00efve \u2014 \u65e5\u672c\u8a9e \U0001f600", "label": "neu"},
    {"sentence": "", "label": "neg"},
]


def _write_delimited(path, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def _read_h5(path):
    """Read a data file exactly as FedNLP's loaders do."""
    with h5py.File(path, "r") as f:
        attrs = json.loads(f["attributes"][()])
        xs = [f["X"][str(i)][()].decode("utf-8") for i in attrs["index_list"]]
        ys = [f["Y"][str(i)][()].decode("utf-8") for i in attrs["index_list"]]
        xb = [f["X_b"][str(i)][()].decode("utf-8") for i in attrs["index_list"]] if "X_b" in f else None
    return attrs, xs, ys, xb


def _check_round_trip(out, rows, text="sentence", label="label"):
    attrs, xs, ys, xb = _read_h5(out)
    assert xs == [r[text] for r in rows]
    assert ys == [r[label] for r in rows]
    assert xb is None and "text_b" not in attrs
    names = sorted({r[label] for r in rows})
    assert attrs["label_vocab"] == {n: i for i, n in enumerate(names)}
    assert attrs["num_labels"] == len(names)
    assert attrs["index_list"] == list(range(len(rows)))
    assert sorted(attrs["train_index_list"] + attrs["test_index_list"]) == list(range(len(rows)))
    data = FedNLPData(out)
    try:
        assert data.label_names == names
        idx = list(range(len(rows)))
        assert data.texts(idx) == [r[text] for r in rows]
        assert list(data.labels(idx)) == [names.index(r[label]) for r in rows]
    finally:
        data.close()


def test_csv_round_trip_with_unicode_commas_quotes_newlines(tmp_path):
    src = _write_delimited(tmp_path / "in.csv", ROWS)
    out = tmp_path / "toy_data.h5"
    res = convert(src, out, "sentence", "label")
    assert res.path == out
    _check_round_trip(out, ROWS)


def test_tsv_round_trip(tmp_path):
    src = _write_delimited(tmp_path / "in.tsv", ROWS, delimiter="\t")
    out = tmp_path / "toy_data.h5"
    convert(src, out, "sentence", "label")
    _check_round_trip(out, ROWS)


def test_jsonl_round_trip_and_non_string_labels(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "toy_data.h5"
    convert(src, out, "sentence", "label")
    _check_round_trip(out, ROWS)
    # integer labels become names; numeric names sort numerically ("2" < "10")
    rows = [{"t": f"x{i}", "y": y} for i, y in enumerate([10, 2, 0, 2])]
    src2 = _write_jsonl(tmp_path / "ints.json", rows)
    convert(src2, tmp_path / "ints.h5", "t", "y")
    attrs, _, ys, _ = _read_h5(tmp_path / "ints.h5")
    assert ys == ["10", "2", "0", "2"]
    assert attrs["label_vocab"] == {"0": 0, "2": 1, "10": 2}


def test_json_array_file(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(ROWS), encoding="utf-8")
    table = read_table(src, "sentence", "label")
    assert table.texts == [r["sentence"] for r in ROWS]


def test_pair_task_writes_x_b_and_attribute(tmp_path):
    rows = [
        {"s1": "A man plays.", "s2": "Someone plays.", "label": "entailment"},
        {"s1": "It rains, \"hard\".", "s2": "It is dry.", "label": "not_entailment"},
        {"s1": "\u00e9t\u00e9", "s2": "", "label": "entailment"},
    ]
    src = _write_delimited(tmp_path / "rte.csv", rows)
    out = tmp_path / "rte_data.h5"
    res = convert(src, out, "s1", "label", text_b_column="s2", test_fraction=0.34)
    assert res.text_b
    attrs, xs, ys, xb = _read_h5(out)
    assert attrs["text_b"] is True
    assert xs == [r["s1"] for r in rows] and xb == [r["s2"] for r in rows]
    assert ys == [r["label"] for r in rows]
    assert attrs["label_vocab"] == {"entailment": 0, "not_entailment": 1}
    assert len(attrs["test_index_list"]) == 1
    # Vista's reader still works on the extended file
    data = FedNLPData(out)
    assert data.attributes["text_b"] is True
    assert data.texts([0, 1, 2]) == xs
    data.close()


def test_missing_column_lists_existing_columns(tmp_path):
    src = _write_delimited(tmp_path / "in.csv", ROWS)
    with pytest.raises(ValueError) as err:
        convert(src, tmp_path / "o.h5", "text", "label")
    msg = str(err.value)
    assert "'text'" in msg and "'sentence'" in msg and "'label'" in msg
    assert not (tmp_path / "o.h5").exists()
    src2 = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    with pytest.raises(ValueError, match="'sentence', 'label'"):
        read_table(src2, "sentence", "y")


def test_missing_label_names_the_row_but_empty_text_is_kept(tmp_path):
    rows = [{"t": "", "y": "a"}, {"t": "b", "y": ""}]
    src = _write_delimited(tmp_path / "in.csv", rows)
    with pytest.raises(ValueError, match=r"row 2 .*no label"):
        read_table(src, "t", "y")
    src2 = _write_jsonl(tmp_path / "in.jsonl", [{"t": "x", "y": "a"}, {"t": "z"}])
    with pytest.raises(ValueError, match="row 2"):
        read_table(src2, "t", "y")
    table = read_table(_write_delimited(tmp_path / "ok.csv", rows[:1]), "t", "y")
    assert table.texts == [""]


def test_split_by_column(tmp_path):
    rows = [{"t": f"text {i}", "y": "ab"[i % 2], "split": s}
            for i, s in enumerate(["train", "test", "TRAIN", "validation", "train"])]
    src = _write_delimited(tmp_path / "in.csv", rows)
    out = tmp_path / "o.h5"
    convert(src, out, "t", "y", split_column="split")
    attrs, *_ = _read_h5(out)
    assert attrs["train_index_list"] == [0, 2, 4]
    assert attrs["test_index_list"] == [1, 3]
    rows[0]["split"] = "holdout"
    _write_delimited(src, rows)
    with pytest.raises(ValueError, match="row 1 .*'holdout'"):
        convert(src, tmp_path / "o2.h5", "t", "y", split_column="split")


def test_split_by_separate_test_file(tmp_path):
    train_rows = [{"t": f"train {i}", "y": "ab"[i % 2]} for i in range(4)]
    test_rows = [{"t": "test 0", "y": "c"}, {"t": "test 1", "y": "a"}]
    tr = _write_delimited(tmp_path / "train.csv", train_rows)
    te = _write_jsonl(tmp_path / "test.jsonl", test_rows)
    out = tmp_path / "o.h5"
    res = convert(tr, out, "t", "y", test_path=te)
    attrs, xs, _, _ = _read_h5(out)
    assert xs == [r["t"] for r in train_rows + test_rows]
    assert attrs["train_index_list"] == [0, 1, 2, 3]
    assert attrs["test_index_list"] == [4, 5]
    assert attrs["label_vocab"] == {"a": 0, "b": 1, "c": 2}
    assert res.counts["test"] == {"a": 1, "c": 1}


def test_split_by_seeded_fraction_is_deterministic(tmp_path):
    rows = [{"t": f"text {i}", "y": "ab"[i % 2]} for i in range(50)]
    src = _write_delimited(tmp_path / "in.csv", rows)
    splits = []
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        convert(src, tmp_path / f"{name}.h5", "t", "y", test_fraction=0.3, seed=seed)
        attrs, *_ = _read_h5(tmp_path / f"{name}.h5")
        assert len(attrs["test_index_list"]) == 15 and len(attrs["train_index_list"]) == 35
        assert not set(attrs["test_index_list"]) & set(attrs["train_index_list"])
        splits.append(attrs["test_index_list"])
    assert splits[0] == splits[1]
    assert splits[0] != splits[2]
    # default fraction 0.2
    convert(src, tmp_path / "d.h5", "t", "y")
    attrs, *_ = _read_h5(tmp_path / "d.h5")
    assert len(attrs["test_index_list"]) == 10


def test_conflicting_split_options(tmp_path):
    rows = [{"t": "x", "y": "a", "s": "train"}]
    src = _write_delimited(tmp_path / "in.csv", rows)
    with pytest.raises(ValueError):
        convert(src, tmp_path / "o.h5", "t", "y", split_column="s", test_path=src)
    with pytest.raises(ValueError):
        convert(src, tmp_path / "o.h5", "t", "y", split_column="s", test_fraction=0.5)


def test_cli_refuses_to_overwrite_without_flag(tmp_path, capsys):
    src = _write_delimited(tmp_path / "in.csv", ROWS)
    out = tmp_path / "o.h5"
    argv = ["convert", str(src), "--out", str(out), "--text-column", "sentence", "--label-column", "label"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "5 examples" in printed and "neu" in printed and "train" in printed
    before = out.read_bytes()
    assert cli_main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert cli_main([*argv, "--overwrite", "--test-fraction", "0.4", "--seed", "1"]) == 0
    attrs, *_ = _read_h5(out)
    assert len(attrs["test_index_list"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_missing_column_and_pair_task(tmp_path, capsys):
    src = _write_delimited(tmp_path / "in.tsv", [{"a": "x", "b": "y", "l": "1"}, {"a": "z", "b": "w", "l": "0"}], "\t")
    out = tmp_path / "o.h5"
    base = ["convert", str(src), "--out", str(out), "--label-column", "l"]
    assert cli_main([*base, "--text-column", "nope"]) == 1
    assert "'a', 'b', 'l'" in capsys.readouterr().err
    assert cli_main([*base, "--text-column", "a", "--text-b-column", "b", "--test-fraction", "0.5"]) == 0
    attrs, xs, _, xb = _read_h5(out)
    assert attrs["text_b"] is True and xs == ["x", "z"] and xb == ["y", "w"]


def test_unknown_suffix_and_pyarrow_message(tmp_path):
    p = tmp_path / "in.xlsx"
    p.write_text("x")
    with pytest.raises(ValueError, match="unknown input type"):
        read_table(p, "t", "y")
    if not HAVE_PYARROW:
        q = tmp_path / "in.parquet"
        q.write_bytes(b"PAR1")
        with pytest.raises(ValueError, match="pip install pyarrow"):
            read_table(q, "t", "y")


# ---------------------------------------------------------------------------- pyarrow inputs


@needs_pyarrow
def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"sentence": [r["sentence"] for r in ROWS], "label": [r["label"] for r in ROWS],
                      "extra": list(range(len(ROWS)))})
    pq.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "o.h5"
    convert(tmp_path / "in.parquet", out, "sentence", "label")
    _check_round_trip(out, ROWS)
    with pytest.raises(ValueError, match="'sentence', 'label', 'extra'"):
        read_table(tmp_path / "in.parquet", "text", "label")


def _save_to_disk_dir(directory, columns, label_names=None):
    """A minimal ``Dataset.save_to_disk`` directory: one Arrow IPC *stream* file."""
    import pyarrow as pa

    directory.mkdir(parents=True)
    table = pa.table(columns)
    with pa.OSFile(str(directory / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(
        sink, table.schema
    ) as writer:
        writer.write_table(table)
    features = {name: {"dtype": "string", "_type": "Value"} for name in columns}
    if label_names is not None:
        features["label"] = {"names": label_names, "_type": "ClassLabel"}
    (directory / "dataset_info.json").write_text(json.dumps({"features": features}))
    (directory / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "x", "_split": None}
    ))
    return directory


@needs_pyarrow
def test_save_to_disk_dataset_with_class_label(tmp_path):
    d = _save_to_disk_dir(tmp_path / "ds", {"sentence1": ["a b", "c, d", "\u00e9"], "sentence2": ["1", "2", "3"],
                                            "label": [1, 0, 1]}, label_names=["equivalent", "not_equivalent"])
    out = tmp_path / "o.h5"
    convert(d, out, "sentence1", "label", text_b_column="sentence2", test_fraction=0.34, seed=3)
    attrs, xs, ys, xb = _read_h5(out)
    assert xs == ["a b", "c, d", "\u00e9"] and xb == ["1", "2", "3"]
    assert ys == ["not_equivalent", "equivalent", "not_equivalent"]
    assert attrs["label_vocab"] == {"equivalent": 0, "not_equivalent": 1}
    assert attrs["text_b"] is True


@needs_pyarrow
def test_dataset_dict_splits_become_train_test(tmp_path):
    root = tmp_path / "dd"
    _save_to_disk_dir(root / "train", {"text": ["t0", "t1", "t2"], "label": [0, 1, 0]}, ["neg", "pos"])
    _save_to_disk_dir(root / "validation", {"text": ["v0"], "label": [1]}, ["neg", "pos"])
    _save_to_disk_dir(root / "test", {"text": ["u0", "u1"], "label": [-1, -1]}, ["neg", "pos"])  # unlabelled
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation", "test"]}))
    out = tmp_path / "o.h5"
    convert(root, out, "text", "label")
    attrs, xs, ys, _ = _read_h5(out)
    assert xs == ["t0", "t1", "t2", "v0"]  # the unlabelled test split gives way to validation
    assert ys == ["neg", "pos", "neg", "pos"]
    assert attrs["train_index_list"] == [0, 1, 2] and attrs["test_index_list"] == [3]
    # a labelled test split is preferred
    _save_to_disk_dir(root / "test2", {"text": ["u0"], "label": [0]}, ["neg", "pos"])
    import shutil

    shutil.rmtree(root / "test")
    (root / "test2").rename(root / "test")
    convert(root, out, "text", "label", overwrite=True)
    _, xs, _, _ = _read_h5(out)
    assert xs == ["t0", "t1", "t2", "u0"]
