"""Client-side feature extraction for model selection: a frozen encoder's pooled features.

Each client runs every candidate model's *frozen* encoder over its local train texts and
reduces the pooled features to additive :class:`~vista.selection.stats.SufficientStats`
(:func:`client_statistics`); features stream one batch at a time and are never all held.

Pooling (``POOLINGS``):

* ``"auto"``: the representation the fine-tuned ``*ForSequenceClassification`` model built
  by :func:`vista.models.hub.load_classifier` feeds its classification layers, since that is
  what selection should score. It resolves per architecture to

  - ``"pooler"`` for BERT-family models whose classifier reads the pooler output (dense +
    tanh of ``[CLS]``): bert (MiniLM), albert, ernie, megatron-bert, mobilebert, ...;
  - ``"cls"`` for encoders whose classification head reads the first token's last hidden
    state: roberta, xlm-roberta, camembert, mpnet, distilbert, electra, deberta(-v2);
  - ``"last"`` for decoders whose classifier reads the last non-pad token: gpt2, llama
    (SmolLM2), mistral, qwen2, ... (every ``GenericForSequenceClassification``).

  Any other architecture raises: pass an explicit pooling for it.
* ``"cls"``: the first token's last hidden state.
* ``"mean"``: the attention-masked mean of the last hidden states.
* ``"last"``: the last hidden state of the last non-pad token: the rightmost real token
  whose id is not the classifier's pad id, exactly the token a decoder's sequence
  classifier reads (it also skips a trailing pad/eos id that is part of the text).

Batches are built like Vista's training batches (:func:`vista.data.encoding.encode` then
:func:`vista.data.encoding.collate`: truncation to ``max_seq_len``, right padding with the
tokenizer's pad id, an attention mask over the real tokens), so a text's features do not
depend on which other texts share its batch (up to float rounding).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vista.selection.privacy import clip_rows  # the one per-example clip (DP sensitivity)
from vista.selection.stats import SufficientStats

__all__ = ["POOLINGS", "FrozenEncoder", "auto_pooling", "client_statistics"]

POOLINGS = ("auto", "cls", "mean", "last")

# sequence classifiers that read the base model's pooler output (``outputs[1]``)
_POOLER_TYPES = frozenset({
    "bert", "albert", "ernie", "megatron-bert", "mobilebert", "rembert", "roc_bert",
})
# encoders whose classification head reads the first token's last hidden state
_FIRST_TOKEN_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "distilbert", "electra",
    "deberta", "deberta-v2",
})
# decoders whose classifier reads the rightmost non-pad token and are not (yet) a
# GenericForSequenceClassification (those are recognised by their class)
_LAST_TOKEN_TYPES = frozenset({
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "opt", "bloom", "falcon", "mpt", "gpt_bigcode", "biogpt",
    "ctrl", "openai-gpt", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3",
})


def _is_generic_last_token(model_type: str) -> bool:
    """Whether ``AutoModelForSequenceClassification`` maps ``model_type`` onto a subclass of
    transformers' ``GenericForSequenceClassification`` (last non-pad token pooling)."""
    try:
        import transformers
        from transformers.modeling_layers import GenericForSequenceClassification
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        )
    except ImportError:  # an older/newer transformers without these names
        return False
    name = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    if not isinstance(name, str):
        return False
    try:
        cls = getattr(transformers, name)
    except (AttributeError, ImportError):
        return False
    return isinstance(cls, type) and issubclass(cls, GenericForSequenceClassification)


def auto_pooling(model_type: str) -> str:
    """What ``pooling="auto"`` resolves to for a config's ``model_type``: "pooler", "cls" or
    "last"; a ``ValueError`` when Vista does not know what its sequence classifier reads."""
    if model_type in _POOLER_TYPES:
        return "pooler"
    if model_type in _FIRST_TOKEN_TYPES:
        return "cls"
    if model_type in _LAST_TOKEN_TYPES or _is_generic_last_token(model_type):
        return "last"
    raise ValueError(
        f"pooling='auto' does not know which representation the sequence classifier of "
        f"model_type {model_type!r} reads (known: pooler output for {sorted(_POOLER_TYPES)}; first "
        f"token for {sorted(_FIRST_TOKEN_TYPES)}; last non-pad token for decoders such as "
        f"{sorted(_LAST_TOKEN_TYPES)}); pass pooling='cls', 'mean' or 'last' explicitly"
    )


class FrozenEncoder:
    """A candidate model's frozen base encoder (no head) and its tokenizer, for features.

    Loads the tokenizer with :func:`vista.models.hub.load_tokenizer` (which pads decoders
    with eos) and the base model with ``AutoModel`` from safetensors weights, in float32,
    eval mode, every parameter ``requires_grad=False``.

    Attributes: ``dim`` (feature width), ``pooling`` (the resolved pooling: "pooler", "cls",
    "mean" or "last"), ``num_parameters`` (of the loaded base model), ``model_type``,
    ``tokenizer``, ``model``, ``pad_id`` (what batches are padded with).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", pooling: str = "auto",
                 trust_remote_code: bool = False, share_weights: bool = True) -> None:
        import torch
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        from vista.models.hub import load_tokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        model_dir = Path(model_dir)
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True,
                                            trust_remote_code=trust_remote_code)
        self.model_type = str(getattr(config, "model_type", ""))
        resolved = auto_pooling(self.model_type) if pooling == "auto" else pooling

        self.tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer of {model_dir} has neither a pad nor an eos token to pad batches with")
        self.pad_id = int(self.tokenizer.pad_token_id)
        if not any(model_dir.glob("*.safetensors")):
            raise FileNotFoundError(f"{model_dir} has no *.safetensors weights (FrozenEncoder loads only safetensors)")

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "some weights were not used" (a checkpoint's head) is expected
        hf_logging.disable_progress_bar()
        try:
            model, info = AutoModel.from_pretrained(
                str(model_dir), config=config, local_files_only=True, trust_remote_code=trust_remote_code,
                use_safetensors=True, dtype=torch.float32, output_loading_info=True,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        if resolved == "pooler":
            missing = [k for k in info.get("missing_keys", ()) if "pooler" in k]
            if getattr(model, "pooler", None) is None:
                raise ValueError(f"{model_dir}: the {type(model).__name__} has no pooler layer; pass pooling='cls'")
            if missing:
                # the classifier would start from a randomly initialised pooler: not a representation
                # clients could agree on, so read the pooler's input (the first token) instead
                warnings.warn(
                    f"{model_dir} has no trained pooler weights ({', '.join(sorted(missing))}); "
                    "pooling='auto' falls back to 'cls', the pooler's input", stacklevel=2,
                )
                resolved = "cls"

        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        # load_classifier keeps a checkpoint's own pad_token_id and sets the tokenizer's otherwise
        cfg_pad = getattr(text_config, "pad_token_id", None)
        self._last_pad_id = int(cfg_pad) if cfg_pad is not None else self.pad_id

        model.eval()
        model.float()
        for p in model.parameters():
            p.requires_grad_(False)
        if share_weights:  # every worker on the host reads the same copy of the weights
            from vista.models.shared_weights import share_weights as share

            share(model, model_dir)
        self.model = model.to(device)
        self.device = device
        self.pooling = resolved
        self.dim = int(text_config.hidden_size)
        self.num_parameters = int(sum(p.numel() for p in model.parameters()))

    def __repr__(self) -> str:
        return (f"FrozenEncoder(model_type={self.model_type!r}, pooling={self.pooling!r}, dim={self.dim}, "
                f"num_parameters={self.num_parameters})")

    def _pool(self, out: Any, ids: Any, mask: Any) -> Any:
        import torch

        if self.pooling == "pooler":
            return out.pooler_output
        h = out.last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        if self.pooling == "mean":
            m = mask.to(h.dtype).unsqueeze(-1)
            return (h * m).sum(1) / m.sum(1)
        # "last": the rightmost real token whose id is not the pad id, like the classifier's
        # ``(arange * (ids != pad)).argmax(-1)`` but restricted to the real tokens (so it never
        # depends on the batch's padding); 0 when every real token is the pad id, as there
        positions = torch.arange(ids.shape[1], device=ids.device)
        keep = (mask > 0) & (ids != self._last_pad_id)
        idx = (positions * keep).argmax(-1)
        return h[torch.arange(h.shape[0], device=h.device), idx]

    def features(self, texts: Sequence[str], batch_size: int, max_seq_len: int) -> Iterator[np.ndarray]:
        """Yield one float32 (b, dim) array per batch of ``batch_size`` texts, in order."""
        import torch

        from vista.data.encoding import collate, encode

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        for start in range(0, len(texts), batch_size):
            chunk = [str(t) for t in texts[start : start + batch_size]]
            data = encode(self.tokenizer, chunk, np.zeros(len(chunk), dtype=np.int64), max_seq_len)
            empty = [start + i for i, s in enumerate(data.input_ids) if len(s) == 0]
            if empty:
                raise ValueError(f"texts {empty[:10]} tokenize to no tokens at all; drop them (keep=...)")
            batch = collate(data, np.arange(len(chunk)), self.pad_id, self.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            with torch.inference_mode():
                out = self.model(input_ids=ids, attention_mask=mask)
                pooled = self._pool(out, ids, mask)
            yield pooled.float().cpu().numpy()


def client_statistics(
    encoder: FrozenEncoder,
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    *,
    per_class: bool,
    batch_size: int,
    max_seq_len: int,
    clip_norm: float | None = None,
    keep: Sequence[bool] | np.ndarray | None = None,
    shift: np.ndarray | None = None,
) -> tuple[SufficientStats, int]:
    """One client's :class:`SufficientStats` of ``encoder``'s features, streamed batch by batch.

    ``keep``: optional boolean mask over the examples; the others are never encoded.
    ``shift``: the public point the server sent; the statistics are of ``f - shift``.
    ``clip_norm``: when set, every row ``f - shift`` of L2 norm above it is scaled down to it
    before accumulating (bounded sensitivity, for differential privacy).
    Returns the statistics and the number of forward passes (examples encoded).
    """
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != len(texts):
        raise ValueError(f"{len(texts)} texts but {y.shape[0]} labels")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    if keep is None:
        idx = np.arange(len(texts))
    else:
        k = np.asarray(keep)
        if k.dtype != np.bool_ or k.shape != (len(texts),):
            raise ValueError(f"keep must be a boolean mask of shape ({len(texts)},), got {k.dtype} {k.shape}")
        idx = np.flatnonzero(k)
    stats = SufficientStats.empty(num_classes, encoder.dim, per_class, shift)
    kept = [texts[i] for i in idx]
    done = 0
    for f in encoder.features(kept, batch_size, max_seq_len):
        rows = np.asarray(f, dtype=np.float64)
        if stats.shift is not None:
            rows = rows - stats.shift
        if clip_norm is not None:
            rows = clip_rows(rows, clip_norm)
        stats.accumulate(rows, y[idx[done : done + f.shape[0]]], shifted=True)
        done += f.shape[0]
    return stats, done
