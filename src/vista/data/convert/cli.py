"""The ``vista-data convert`` subcommand: its argparse parser and the summary it prints."""

from __future__ import annotations

import argparse
from typing import Any

from vista.data.convert.readers import TEST, TRAIN
from vista.data.convert.splitting import convert

__all__ = ["register"]


# ---------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    result = convert(
        args.input,
        args.out,
        text_column=args.text_column,
        label_column=args.label_column,
        text_b_column=args.text_b_column,
        split_column=args.split_column,
        test_path=args.test,
        test_fraction=args.test_fraction,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    n_train, n_test = len(result.train_index_list), len(result.test_index_list)
    pair = " (sentence pairs: X_b written)" if result.text_b else ""
    print(f"wrote {result.path}: {n_train + n_test} examples, {len(result.label_vocab)} labels{pair}")
    names = list(result.label_vocab)
    width = max([len("label"), *(len(n) for n in names)])
    print(f"  {'id':>3}  {'label':<{width}}  {'train':>8}  {'test':>8}")
    for name in names:
        print(
            f"  {result.label_vocab[name]:>3}  {name:<{width}}  "
            f"{result.counts[TRAIN][name]:>8}  {result.counts[TEST][name]:>8}"
        )
    print(f"  {'':>3}  {'total':<{width}}  {n_train:>8}  {n_test:>8}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert",
        help="convert CSV/TSV/JSONL/Parquet/HF datasets data into a FedNLP *_data.h5 file",
        description=(
            "Convert a CSV, TSV, JSONL, Parquet file or Hugging Face datasets directory into a "
            "FedNLP data file. The train/test split comes from --test, --split-column, the "
            "splits of a DatasetDict, or a seeded random --test-fraction (default 0.2)."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="the (train) data: .csv, .tsv, .jsonl, .parquet or a datasets directory")
    p.add_argument("--test", metavar="INPUT", default=None, help="a separate test input (same columns)")
    p.add_argument("--out", required=True, metavar="PATH", help="the FedNLP data file to write (*_data.h5)")
    p.add_argument("--text-column", required=True, metavar="C", help="column holding the text")
    p.add_argument("--label-column", required=True, metavar="C", help="column holding the label")
    p.add_argument("--text-b-column", default=None, metavar="C",
                   help="second text column of a sentence-pair task (written to X_b)")
    p.add_argument("--split-column", default=None, metavar="C", help="column with values train/test")
    p.add_argument("--test-fraction", type=float, default=None, metavar="F",
                   help="random test share when the input has no split (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the random split (default 42)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_run)
    return p
