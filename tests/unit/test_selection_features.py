"""vista.selection.features: frozen-encoder features and a client's sufficient statistics."""

from __future__ import annotations

import json
import shutil
import types
import warnings

import numpy as np
import pytest
import torch

from vista.data.encoding import collate, encode
from vista.models.hub import load_classifier
from vista.selection.features import (
    POOLINGS,
    FrozenEncoder,
    auto_pooling,
    client_statistics,
)
from vista.selection.privacy import clip_rows
from vista.selection.stats import SufficientStats

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = ("bert", "roberta", "distilbert", "mpnet", "gpt2", "llama")
AUTO = {"bert": "pooler", "roberta": "cls", "distilbert": "cls", "mpnet": "cls", "gpt2": "last", "llama": "last"}
# mixed lengths, so a batch of them is padded
TEXTS = [
    "team game",
    "the atom cell energy physics lab theory experiment data molecule gene",
    "vote law senate party",
    "score",
    "coach win league ball the a of and to in is it that was season",
    "lab theory",
    "election policy minister court tax debate",
]
LABELS = np.array([0, 1, 2, 0, 0, 1, 2])


@pytest.fixture(scope="module")
def encoders(arch_hub):
    cache: dict[tuple[str, str], FrozenEncoder] = {}

    def get(arch: str, pooling: str = "auto") -> FrozenEncoder:
        if (arch, pooling) not in cache:
            cache[arch, pooling] = FrozenEncoder(arch_hub / arch, pooling=pooling)
        return cache[arch, pooling]

    return get


def _stack(encoder: FrozenEncoder, texts, batch_size: int, max_seq_len: int = 32) -> np.ndarray:
    return np.concatenate(list(encoder.features(texts, batch_size, max_seq_len)))


# ------------------------------------------------------------------ the encoder itself
@pytest.mark.parametrize("arch", ARCHS)
def test_encoder_is_frozen_float32_eval(encoders, arch):
    enc = encoders(arch)
    assert enc.pooling == AUTO[arch] == auto_pooling(arch)
    assert enc.dim == 32
    assert not enc.model.training
    params = list(enc.model.parameters())
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in params)
    assert enc.num_parameters == sum(p.numel() for p in params) > 0
    it = enc.features(TEXTS, 3, 32)
    assert isinstance(it, types.GeneratorType)  # streamed, one batch at a time
    shapes = [f.shape for f in it]
    assert shapes == [(3, 32), (3, 32), (1, 32)]
    assert all(f.dtype == np.float32 for f in enc.features(TEXTS[:2], 2, 32))


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_is_what_the_sequence_classifier_reads(encoders, arch_hub, arch):
    """"auto" equals the input of the classification layer of load_classifier's model."""
    enc = encoders(arch)
    texts = list(TEXTS)
    if arch in ("gpt2", "llama"):  # the classifier skips a trailing pad (= eos) id: so must "auto"
        texts.append("team game score" + enc.tokenizer.eos_token)
    clf = load_classifier(arch_hub / arch, num_labels=3, pad_token_id=enc.tokenizer.pad_token_id).eval()
    data = encode(enc.tokenizer, texts, np.zeros(len(texts), dtype=np.int64), 32)
    batch = collate(data, np.arange(len(texts)), enc.pad_id, "cpu")
    layer = {"bert": lambda m: m.classifier, "distilbert": lambda m: m.pre_classifier,
             "roberta": lambda m: m.classifier.dense, "mpnet": lambda m: m.classifier.dense,
             "gpt2": lambda m: m.score, "llama": lambda m: m.score}[arch](clf)
    seen = []
    handle = layer.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            logits = clf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        handle.remove()
    feats = _stack(enc, texts, batch_size=len(texts))  # the same padded batch
    if arch in ("gpt2", "llama"):
        # the score layer sees every position; the classifier then keeps one per row
        with torch.no_grad():
            np.testing.assert_allclose(clf.score(torch.from_numpy(feats)).numpy(), logits.numpy(), atol=1e-5)
        lengths = [len(s) for s in data.input_ids]
        last = [n - 1 for n in lengths[:-1]] + [lengths[-1] - 2]  # the eos-terminated text: one before
        expected = seen[0][torch.arange(len(texts)), torch.tensor(last)].numpy()
    else:
        expected = seen[0].numpy()
    assert expected.shape == feats.shape
    np.testing.assert_allclose(feats, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("arch", ARCHS)
def test_features_do_not_depend_on_the_batch(encoders, arch, pooling):
    enc = encoders(arch, pooling)
    alone = _stack(enc, TEXTS, batch_size=1)
    together = _stack(enc, TEXTS, batch_size=len(TEXTS))
    assert alone.shape == together.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=1e-5)
    # and not on the order of the others either
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    np.testing.assert_allclose(_stack(enc, [TEXTS[i] for i in perm], 4), alone[perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_poolings_read_the_right_positions(encoders, arch):
    text = TEXTS[1]
    enc = encoders(arch, "cls")
    ids = torch.tensor([enc.tokenizer(text, truncation=True, max_length=32)["input_ids"]])
    with torch.no_grad():
        out = enc.model(input_ids=ids)
    h = out.last_hidden_state[0].numpy()
    got = {p: _stack(encoders(arch, p), [text], 1)[0] for p in ("cls", "mean", "last")}
    np.testing.assert_allclose(got["cls"], h[0], atol=1e-5)
    np.testing.assert_allclose(got["mean"], h.mean(0), atol=1e-5)
    np.testing.assert_allclose(got["last"], h[-1], atol=1e-5)
    if arch == "bert":
        assert encoders(arch).pooling == "pooler"
        np.testing.assert_allclose(_stack(encoders(arch), [text], 1)[0], out.pooler_output[0].numpy(), atol=1e-5)
        assert not np.allclose(got["cls"], out.pooler_output[0].numpy(), atol=1e-3)


def test_truncation_to_max_seq_len(encoders):
    enc = encoders("roberta", "mean")
    short = _stack(enc, TEXTS, 2, max_seq_len=4)
    assert not np.allclose(short, _stack(enc, TEXTS, 2, max_seq_len=32))
    np.testing.assert_allclose(short, _stack(enc, TEXTS, 7, max_seq_len=4), atol=1e-5)


def test_unknown_pooling_lists_the_choices(arch_hub):
    with pytest.raises(ValueError, match="auto, cls, mean, last"):
        FrozenEncoder(arch_hub / "roberta", pooling="max")


def test_auto_refuses_an_architecture_it_cannot_place(arch_hub, tmp_path):
    with pytest.raises(ValueError, match="pooling='auto' does not know.*'t5'"):
        auto_pooling("t5")
    model_dir = tmp_path / "odd"
    shutil.copytree(arch_hub / "bert", model_dir)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32}))
    with pytest.raises(ValueError, match="pass pooling='cls', 'mean' or 'last' explicitly"):
        FrozenEncoder(model_dir)


def test_bert_without_trained_pooler_falls_back_to_cls(tmp_path, arch_hub):
    from transformers import BertConfig, BertModel

    model_dir = tmp_path / "nopooler"
    shutil.copytree(arch_hub / "bert", model_dir)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(str(model_dir)), add_pooling_layer=False).save_pretrained(str(model_dir))
    with pytest.warns(UserWarning, match="no trained pooler weights"):
        enc = FrozenEncoder(model_dir)
    assert enc.pooling == "cls"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls = FrozenEncoder(model_dir, pooling="cls")
    np.testing.assert_array_equal(_stack(enc, TEXTS, 3), _stack(cls, TEXTS, 3))


def test_text_without_tokens_is_a_clear_error(encoders):
    with pytest.raises(ValueError, match=r"texts \[1\] tokenize to no tokens"):
        list(encoders("gpt2").features(["team", ""], 2, 16))
    with pytest.raises(ValueError, match="batch_size"):
        list(encoders("gpt2").features(["team"], 0, 16))


# ------------------------------------------------------------------ client statistics
def _assert_stats_close(a: SufficientStats, b: SufficientStats, rtol: float = 1e-10) -> None:
    assert (a.num_classes, a.dim, a.n, a.per_class) == (b.num_classes, b.dim, b.n, b.per_class)
    np.testing.assert_array_equal(a.counts, b.counts)
    for name in ("s", "B", "G", "Gc", "q", "sq4"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None
            continue
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(np.abs(y).max(), 1e-300), err_msg=name)


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_client_statistics_equal_those_of_all_features(encoders, arch, per_class):
    enc = encoders(arch)
    stats, passes = client_statistics(enc, TEXTS, LABELS, 4, per_class=per_class, batch_size=3, max_seq_len=32)
    feats = _stack(enc, TEXTS, 3)
    assert passes == len(TEXTS)
    assert stats.num_classes == 4 and stats.per_class == per_class
    _assert_stats_close(stats, SufficientStats.from_features(feats, LABELS, 4, per_class=per_class))


def test_keep_encodes_only_the_kept_examples(encoders, monkeypatch):
    enc = encoders("roberta")
    feats = _stack(enc, TEXTS, 2)
    keep = np.array([True, False, True, True, False, False, True])
    encoded: list[str] = []
    original = enc.features

    def spy(texts, batch_size, max_seq_len):
        encoded.extend(texts)
        return original(texts, batch_size, max_seq_len)

    monkeypatch.setattr(enc, "features", spy)
    stats, passes = client_statistics(enc, TEXTS, LABELS, 3, per_class=True, batch_size=2, max_seq_len=32, keep=keep)
    assert passes == 4 and stats.n == 4
    assert encoded == [t for t, k in zip(TEXTS, keep) if k]
    _assert_stats_close(stats, SufficientStats.from_features(feats[keep], LABELS[keep], 3, per_class=True))
    none, zero = client_statistics(enc, TEXTS, LABELS, 3, per_class=False, batch_size=2, max_seq_len=32,
                                   keep=np.zeros(len(TEXTS), bool))
    assert zero == 0 and none.n == 0 and not none.G.any()


def test_clip_norm_bounds_every_row(encoders):
    enc = encoders("gpt2")
    feats = _stack(enc, TEXTS, 3).astype(np.float64)
    norms = np.linalg.norm(feats, axis=1)
    c = float(np.median(norms))
    assert (norms > c).any() and (norms < c).any()
    clipped = feats * np.minimum(1.0, c / norms)[:, None]
    np.testing.assert_allclose(clip_rows(feats, c), clipped, rtol=1e-12)
    np.testing.assert_array_equal(clip_rows(feats, c)[norms <= c], feats[norms <= c])  # untouched
    keep = np.array([True] * 6 + [False])
    stats, passes = client_statistics(enc, TEXTS, LABELS, 3, per_class=False, batch_size=3, max_seq_len=32,
                                      clip_norm=c, keep=keep)
    assert passes == 6
    _assert_stats_close(stats, SufficientStats.from_features(clipped[keep], LABELS[keep], 3))
    assert np.trace(stats.G) <= stats.n * c * c * (1 + 1e-9)  # sum of squared norms
    # a bound above every norm changes nothing
    big, _ = client_statistics(enc, TEXTS, LABELS, 3, per_class=False, batch_size=3, max_seq_len=32,
                               clip_norm=2 * norms.max())
    _assert_stats_close(big, SufficientStats.from_features(feats, LABELS, 3))


def test_client_statistics_check_their_arguments(encoders):
    enc = encoders("distilbert")
    kw = {"per_class": False, "batch_size": 2, "max_seq_len": 16}
    with pytest.raises(ValueError, match="7 texts but 6 labels"):
        client_statistics(enc, TEXTS, LABELS[:6], 3, **kw)
    with pytest.raises(ValueError, match="keep must be a boolean mask"):
        client_statistics(enc, TEXTS, LABELS, 3, keep=[1, 0, 1, 1, 0, 0, 1], **kw)
    with pytest.raises(ValueError, match="keep must be a boolean mask"):
        client_statistics(enc, TEXTS, LABELS, 3, keep=np.ones(3, bool), **kw)
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        client_statistics(enc, TEXTS, LABELS, 3, clip_norm=0.0, **kw)
    with pytest.raises(ValueError, match="labels must lie in"):
        client_statistics(enc, TEXTS, LABELS, 2, **kw)
