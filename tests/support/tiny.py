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


# -- more tiny architectures: each saves a base model (no head) and its tokenizer, offline ----------

def _bpe(corpus: list[str], specials: list[str]) -> object:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=specials, show_progress=False)
    return bpe._tokenizer


def _wordpiece(corpus: list[str], specials: list[str]) -> object:
    from tokenizers import BertWordPieceTokenizer

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus, vocab_size=200, min_frequency=1, special_tokens=specials, show_progress=False)
    return wp._tokenizer


_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _save(model_cls: type, cfg: object, directory: Path, seed: int) -> Path:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    model_cls(cfg).save_pretrained(str(directory))
    return directory


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (the MiniLM architecture) with a WordPiece tokenizer; pooler included."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_texts(20, seed)
    tok = BertTokenizerFast(tokenizer_object=_wordpiece(corpus, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
                            pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            mask_token="[MASK]")
    tok.save_pretrained(str(directory))
    cfg = BertConfig(vocab_size=len(tok), max_position_embeddings=64, pad_token_id=tok.pad_token_id, **_SMALL)
    return _save(BertModel, cfg, directory, seed)


def build_tiny_distilbert(directory: Path, seed: int = 0) -> Path:
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_texts(20, seed)
    tok = DistilBertTokenizerFast(tokenizer_object=_wordpiece(corpus, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
                                  pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                  mask_token="[MASK]")
    tok.save_pretrained(str(directory))
    cfg = DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                           max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    return _save(DistilBertModel, cfg, directory, seed)


def build_tiny_mpnet(directory: Path, seed: int = 0) -> Path:
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_texts(20, seed)
    tok = MPNetTokenizerFast(tokenizer_object=_wordpiece(corpus, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
                             bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                             mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    tok.save_pretrained(str(directory))
    cfg = MPNetConfig(vocab_size=len(tok), max_position_embeddings=80, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **_SMALL)
    return _save(MPNetModel, cfg, directory, seed)


def build_tiny_gpt2(directory: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 whose tokenizer, like the real one, has no pad token (the runtime pads with eos)."""
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_texts(20, seed)
    tok = GPT2TokenizerFast(tokenizer_object=_bpe(corpus, ["<|endoftext|>"]), bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(str(directory))
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_inner=64, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return _save(GPT2Model, cfg, directory, seed)


def build_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """A 2-layer Llama shaped like SmolLM2 (GQA, tied embeddings, a GPT-2 style BPE tokenizer, no pad token)."""
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaModel

    directory.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_texts(20, seed)
    tok = GPT2TokenizerFast(tokenizer_object=_bpe(corpus, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
                            bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(str(directory))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return _save(LlamaModel, cfg, directory, seed)


TINY_BUILDERS = {
    "bert": build_tiny_bert, "distilbert": build_tiny_distilbert, "mpnet": build_tiny_mpnet,
    "roberta": build_tiny_roberta, "gpt2": build_tiny_gpt2, "llama": build_tiny_llama,
}


def tiny_lora(hub: Path, dropout_off: bool = False):
    """(build, encoded examples, pad id) for local-training tests: ``build()`` gives a fresh
    tiny RoBERTa + LoRA r=4 (seeded) and its trainable parameters; ``dropout_off`` also zeroes
    the model's own dropout, for tests that compare training paths number for number."""
    import torch

    from vista.data.encoding import encode
    from vista.models.hub import load_classifier, load_tokenizer
    from vista.peft.lora import LoraSpec
    from vista.peft.state import trainable_parameters

    tok = load_tokenizer(hub / "roberta-base")
    texts, names = make_texts(6, seed=3)
    vocab = {n: i for i, n in enumerate(sorted(set(names)))}
    data = encode(tok, texts, np.array([vocab[n] for n in names]), 32)

    def build():
        torch.manual_seed(0)
        model = LoraSpec(r=4, alpha=8, dropout=0.0).apply(load_classifier(hub / "roberta-base", 3, tok.pad_token_id))
        if dropout_off:
            no_dropout(model)
        return model, trainable_parameters(model)

    return build, data, tok.pad_token_id


def no_dropout(model):
    """Zero every dropout module's p: dropout masks are drawn per forward call, so only a
    dropout-free model gives the same numbers whatever the micro-batch or training path."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def tiny_runtime_args(hub: Path, data_pair: tuple[Path, Path], dropout: float = 0.0, **fl):
    """A FedPEFT worker's RuntimeArgs on the tiny RoBERTa hub and FedNLP pair (3 labels, seed 7):
    LoRA r 4 (``dropout``), one client a round, batch 8, length 32, lr 5e-3 unless ``fl`` says otherwise."""
    from vista.data.fednlp import FederatedDataSpec
    from vista.fl.runtime import RuntimeArgs
    from vista.fl.spec import FLSpec
    from vista.models.hub import ModelSpec
    from vista.peft.lora import LoraSpec

    data, part = data_pair
    spec = FLSpec(**{"rounds": 1, "clients_per_round": 1, "batch_size": 8, "lr": 5e-3, "max_seq_len": 32, **fl})
    return RuntimeArgs(ModelSpec(name="roberta", hub_dir=str(hub), hub_name="roberta-base"),
                       LoraSpec(r=4, alpha=8, dropout=dropout), FederatedDataSpec(str(data), str(part), "uniform"),
                       spec, 3, 7)
