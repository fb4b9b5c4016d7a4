"""Tiny, offline test assets built on the fly: a 2-layer RoBERTa (hidden 32) with a
byte-level BPE tokenizer, and a small FedNLP data/partition pair written with plain h5py
exactly in FedNLP's layout (not through Vista's writer)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import numpy as np

TOPICS = {
    "sports": "team game score goal match player season coach win league ball",
    "science": "atom cell energy physics lab theory experiment data molecule gene",
    "politics": "vote law senate party election policy minister court tax debate",
}


def make_texts(n_per_label: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    filler = "the a of and to in is it that was".split()
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per_label):
            tokens = [rng.choice(vocab if rng.random() < 0.6 else filler) for _ in range(rng.randint(6, 14))]
            texts.append(" ".join(tokens))
            labels.append(label)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


def build_tiny_roberta(directory: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_texts(20, seed)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                               cls_token="<s>", sep_token="</s>")
    tok.save_pretrained(str(directory))
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    RobertaModel(cfg).save_pretrained(str(directory))
    return directory


def write_fednlp_pair(directory: Path, n_clients: int = 4, n_per_label: int = 16, n_test_per_label: int = 6,
                      seed: int = 0, methods: tuple[str, ...] = ("uniform", "niid_label_clients=4_alpha=1.0")) -> tuple[Path, Path]:
    """``tiny_data.h5`` + ``tiny_partition.h5`` in the FedNLP layout, by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    train_t, train_y = make_texts(n_per_label, seed)
    test_t, test_y = make_texts(n_test_per_label, seed + 1)
    texts, labels = train_t + test_t, train_y + test_y
    n_train = len(train_t)
    vocab = {name: i for i, name in enumerate(sorted(TOPICS))}
    data = directory / "tiny_data.h5"
    with h5py.File(data, "w") as f:
        attrs = {"index_list": list(range(len(texts))), "train_index_list": list(range(n_train)),
                 "test_index_list": list(range(n_train, len(texts))), "label_vocab": vocab,
                 "num_labels": -1, "task_type": "text_classification"}
        f["attributes"] = json.dumps(attrs)
        for i, (t, y) in enumerate(zip(texts, labels)):
            f[f"X/{i}"] = t
            f[f"Y/{i}"] = y
    part = directory / "tiny_partition.h5"
    rng = np.random.default_rng(seed)
    with h5py.File(part, "w") as f:
        for m in methods:
            perm = rng.permutation(n_train)
            test_perm = rng.permutation(np.arange(n_train, len(texts)))
            g = f.create_group(m)
            g["n_clients"] = n_clients
            for c, (tr, te) in enumerate(zip(np.array_split(perm, n_clients), np.array_split(test_perm, n_clients))):
                g[f"partition_data/{c}/train"] = np.sort(tr).astype(np.int64)
                g[f"partition_data/{c}/test"] = np.sort(te).astype(np.int64)
            if "alpha=" in m:
                g["alpha"] = float(m.rsplit("alpha=", 1)[1])
    return data, part
