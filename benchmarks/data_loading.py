"""Data loading: Vista's FedNLP reader vs a plain h5py loop over the same examples.

Writes a synthetic 20k-example FedNLP data file and a 100-client uniform partition in a
temp dir, then reads every client's train texts and labels (what the workers do) with
Vista's reader and with FedNLP's own per-example h5py idiom. Prints the time ratio
(target <= 1.0: no slower than the naive reader) and each reader's peak Python memory.

    python benchmarks/data_loading.py [--examples 20000] [--clients 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np

from vista.data.fednlp import FedNLPData, FedNLPPartition
from vista.data.fednlp_writer import PartitionGroup, write_data_file, write_partition_file
from vista.data.partition import uniform_partition


def make_files(d: Path, n: int, clients: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    words = np.array("federated learning of language models across many clients with private text data".split())
    texts = [" ".join(rng.choice(words, rng.integers(20, 120))) for _ in range(n)]
    labels = [f"class_{int(c)}" for c in rng.integers(0, 20, n)]
    n_train = int(n * 0.8)
    data, part = d / "bench_data.h5", d / "bench_partition.h5"
    write_data_file(data, texts, labels, {f"class_{i}": i for i in range(20)}, list(range(n_train)), list(range(n_train, n)))
    train = uniform_partition(np.arange(n_train), clients, seed=0)
    test = uniform_partition(np.arange(n_train, n), clients, seed=0)
    write_partition_file(part, {"uniform": PartitionGroup(train, test, {})})
    return data, part


def read_vista(data: Path, part: Path) -> int:
    reader, partition = FedNLPData(data), FedNLPPartition(part, "uniform")
    n = 0
    for split in partition.clients.values():
        n += len(reader.texts(split.train)) + len(reader.labels(split.train))
    reader.close()
    return n


def read_naive(data: Path, part: Path) -> int:
    """FedNLP's idiom: one high-level dataset read per example."""
    n = 0
    with h5py.File(data, "r") as f, h5py.File(part, "r") as p:
        vocab = json.loads(f["attributes"][()])["label_vocab"]
        g = p["uniform"]["partition_data"]
        for cid in sorted(g.keys(), key=int):
            idx = g[cid]["train"][()]
            texts = [f["X"][str(i)][()].decode("utf-8") for i in idx]
            labels = [vocab[f["Y"][str(i)][()].decode("utf-8")] for i in idx]
            n += len(texts) + len(labels)
    return n


def measure(fn, *args, repeats: int) -> tuple[float, int]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        data, part = make_files(Path(d), args.examples, args.clients)
        assert read_vista(data, part) == read_naive(data, part)
        naive_t, naive_mem = measure(read_naive, data, part, repeats=args.repeats)
        vista_t, vista_mem = measure(read_vista, data, part, repeats=args.repeats)
    print(f"{args.clients} clients, {int(args.examples * 0.8)} train examples read (median of {args.repeats})")
    print(f"naive h5py loop: {naive_t:.2f} s, peak {naive_mem / 2**20:.1f} MiB")
    print(f"vista reader:    {vista_t:.2f} s, peak {vista_mem / 2**20:.1f} MiB")
    print(f"ratio vista/naive: {vista_t / naive_t:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
