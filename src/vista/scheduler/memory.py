"""How much memory one worker needs: the model's parameters counted exactly, activations by formula.

The parameter counts come from building the classifier on the meta device (``AutoConfig`` + the
class ``vista.models.hub.load_classifier`` loads, shapes only: no weight file is read) and applying
the PEFT method to it; peft 0.21 applies every method of ``vista.peft.METHODS`` to a meta-device
model. Should a method refuse meta tensors, the model is built again on the CPU from its config
(random weights, still no weight file) and counted there.

Activations, in float32 (4 bytes a value, dropout masks 1 byte), per transformer layer, for
batch ``b``, sequence ``s``, hidden ``h``, intermediate ``i``, heads ``a``:

* training (the forward pass kept for backward): ``b*s*(ACT_PER_HIDDEN*h + ACT_PER_INTERMEDIATE*i)
  + ACT_PER_SCORE*a*s^2*b`` bytes, summed over the layers, plus the embeddings' output
  (``3*4*h`` bytes a token). This is Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models": ``34*s*b*h + 5*a*s^2*b`` bytes in 16-bit with ``i = 4h``) moved to
  float32 and to any ``i``. Its constants were fitted to the bytes autograd actually saves
  (``torch.autograd.graph.saved_tensors_hooks``, parameters excluded) for MiniLM (h 384, i 1536,
  a 12, 6 layers), torch 2.13 CPU: full fine-tuning saved 42h + 8i bytes a token and 12 a s
  (scores, softmax and dropout outputs, mask) per layer; LoRA r8 on query/value saved less
  (26h + 8i); the estimate uses the full fine-tuning figure for every method that back-propagates
  through the body (for LoRA 15% more than it keeps: a margin, never an under-count). Gated MLPs
  (``gate_proj``: Llama, Mistral, Qwen2) keep twice the intermediate values.
* forward only (``train=False``, or a method that trains only the classification head, so no
  gradient enters the body): the largest single layer's working set, ``4*b*s*(4h + 2i) +
  8*a*s^2*b`` bytes (hidden states, q/k/v, the MLP's intermediate pair, scores and probabilities);
  layers run one after another and nothing is kept.

On the CPU, glibc's allocator keeps much of what the forward pass frees (its mmap threshold rises
to the largest freed block, so later blocks come from the heap and stay there): the peak RSS of a
training step is 1.3x-1.9x the live activations. ``heap_slack_mb`` (``HEAP_SLACK`` x the training
activations) stands for that; it is CPU-side only, like ``overhead_mb`` (``RUNTIME_OVERHEAD_MB``,
the Python/torch runtime of a worker process). :attr:`MemoryEstimate.gpu_mb` is what lives on an
accelerator. ``benchmarks/memory_estimate.py`` checks the totals against measured peak RSS.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: importing vista.scheduler stays light
    import torch

MB = 2**20

# Peak RSS of a fresh process after `import torch, transformers, peft` and resolving the model class
# (`from transformers import BertForSequenceClassification`), which is what a worker holds before it
# loads weights: 381.7 / 381.8 / 381.5 MB (ru_maxrss and VmRSS, 3 runs; torch 2.13 CPU, transformers
# 5.25, peft 0.21; 2-core x86 CPU, 2026-12-03); with vista.fl.runtime and vista.scheduler.worker too:
# 384.6 / 384.6 / 384.7 MB. torch alone: 219.6 MB; torch + transformers: 239.5 MB; the model classes'
# import adds 130 MB (transformers' modeling code pulls in torch.distributed.tensor and torch._dynamo).
RUNTIME_OVERHEAD_MB = 390.0

# Activation constants (float32 bytes per token per layer; see the module docstring)
ACT_PER_HIDDEN = 42
ACT_PER_INTERMEDIATE = 8
ACT_PER_SCORE = 12  # x heads x seq, per token per layer
EMBEDDING_BYTES_PER_HIDDEN = 12  # sum of the three embeddings, layer-norm input, dropout output
FORWARD_PER_HIDDEN = 16  # 4 bytes x (input, q, k, v)
FORWARD_PER_INTERMEDIATE = 8  # 4 bytes x (intermediate, activation)
FORWARD_PER_SCORE = 8  # scores and probabilities
# glibc's retained heap during training, as a fraction of the training activations (CPU only):
# measured RSS minus the live saved tensors was 0.3x-1.5x of them (mostly 0.8x-1.0x for LoRA); 0.5 x the
# full-fine-tuning figure (itself ~1.2x what LoRA keeps) puts MiniLM + LoRA totals at 0.98x-1.10x of the
# measured peak RSS (benchmarks/memory_estimate.py)
HEAP_SLACK = 0.5

ESTIMATE = "estimate"
UPPER_BOUND = "upper bound"
OVERRIDE = "scheduler.gpu_mem_per_worker_mb"


@dataclass(frozen=True)
class MemoryEstimate:
    frozen_mb: float  # the parameters not trained, at the dtype they load in (float32 unless the checkpoint says)
    trainable_mb: float  # trainable parameters x 16 bytes: float32 weights, gradients, two AdamW moments
    activations_mb: float  # one training step at batch x seq (kept for backward), or one forward layer
    source: str  # "estimate", "upper bound" (auto kept the cheap bound) or "scheduler.gpu_mem_per_worker_mb"
    overhead_mb: float = RUNTIME_OVERHEAD_MB  # the worker process's Python/torch runtime (CPU side)
    heap_slack_mb: float = 0.0  # freed activation memory glibc keeps (CPU side)
    # the parent keeps the frozen weights once per GPU for the workers there (models.device_weights)
    frozen_shared: bool = False

    @property
    def gpu_mb(self) -> float:
        """What lives on an accelerator: parameters, optimizer state, activations."""
        return self.frozen_mb + self.trainable_mb + self.activations_mb

    @property
    def worker_gpu_mb(self) -> float:
        """What one worker holds on its GPU itself: :attr:`gpu_mb`, less the frozen weights when
        the parent keeps them for every worker there (:attr:`frozen_shared`)."""
        return self.gpu_mb - (self.frozen_mb if self.frozen_shared else 0.0)

    @property
    def total_mb(self) -> float:
        """A CPU worker's expected peak resident memory."""
        return self.gpu_mb + self.overhead_mb + self.heap_slack_mb

    @classmethod
    def override(cls, mb: float) -> MemoryEstimate:
        """The user's ``scheduler.gpu_mem_per_worker_mb`` standing in for the estimate."""
        return cls(0.0, 0.0, float(mb), OVERRIDE, overhead_mb=0.0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: round(float(getattr(self, k)), 1)
            for k in ("frozen_mb", "trainable_mb", "activations_mb", "overhead_mb", "heap_slack_mb")
        }
        out["source"] = self.source
        out["frozen_shared"] = self.frozen_shared
        out["total_mb"] = round(self.total_mb, 1)
        return out


@dataclass(frozen=True)
class Shape:
    """What the activation formula reads from a model config."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    gated: bool = False  # a gated MLP (gate_proj): two intermediate projections

    @classmethod
    def of(cls, config: Any, gated: bool = False) -> Shape:
        hidden = int(config.hidden_size)
        inter = next(
            (
                v
                for v in (getattr(config, k, None) for k in ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim"))
                if v
            ),
            4 * hidden,
        )
        return cls(hidden, int(config.num_hidden_layers), int(config.num_attention_heads), int(inter), gated)


def training_activation_bytes(shape: Shape, batch: int, seq: int, checkpointing: bool = False) -> int:
    """Saved for backward over one step: every layer, plus the embeddings' output. With gradient
    checkpointing, each layer's input (float32) and one layer's activations, recomputed in backward."""
    inter = shape.intermediate * (2 if shape.gated else 1)
    per_layer = (
        batch * seq * (ACT_PER_HIDDEN * shape.hidden + ACT_PER_INTERMEDIATE * inter)
        + ACT_PER_SCORE * shape.heads * seq * seq * batch
    )
    kept = shape.layers * batch * seq * 4 * shape.hidden + per_layer if checkpointing else shape.layers * per_layer
    return kept + batch * seq * EMBEDDING_BYTES_PER_HIDDEN * shape.hidden


def forward_activation_bytes(shape: Shape, batch: int, seq: int) -> int:
    """The largest working set of one layer when nothing is kept for backward."""
    inter = shape.intermediate * (2 if shape.gated else 1)
    return (
        batch * seq * (FORWARD_PER_HIDDEN * shape.hidden + FORWARD_PER_INTERMEDIATE * inter)
        + FORWARD_PER_SCORE * shape.heads * seq * seq * batch
    )


def estimate_worker_memory(
    model_dir: Path,
    peft_apply: Callable[[torch.nn.Module], torch.nn.Module] | None,
    num_labels: int,
    batch_size: int,
    max_seq_len: int,
    train: bool = True,
    trust_remote_code: bool = False,
    checkpointing: bool = False,
) -> MemoryEstimate:
    """The memory one worker needs to hold ``model_dir``'s classifier with ``peft_apply`` (None:
    full fine-tuning when ``train``, else inference) and run one step at ``batch_size`` x
    ``max_seq_len``. Reads config.json (and a safetensors header for the dtype), never weights."""
    import torch

    config = _config(Path(model_dir), num_labels, trust_remote_code)
    itemsize = torch.empty((), dtype=_load_dtype(Path(model_dir), config)).element_size()
    with torch.random.fork_rng(devices=[]):  # peft initialises adapters: leave the caller's RNG alone
        model, backprop = _applied(config, peft_apply, train, trust_remote_code)
    trainable = frozen = 0
    for p in model.parameters():
        if train and p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    shape = Shape.of(config, gated=any(n.endswith("gate_proj") for n, _ in model.named_modules()))
    if train and backprop:
        act = training_activation_bytes(shape, batch_size, max_seq_len, checkpointing)
        slack = HEAP_SLACK * act
    else:
        act, slack = forward_activation_bytes(shape, batch_size, max_seq_len), 0.0
    return MemoryEstimate(
        frozen_mb=frozen * itemsize / MB,
        trainable_mb=trainable * 16 / MB,
        activations_mb=act / MB,
        source=ESTIMATE,
        heap_slack_mb=slack / MB,
    )


# config.json's names for what Shape reads (GPT-2 and others spell them their own way)
_CONFIG_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
}


def upper_bound_memory(model_dir: Path, batch_size: int, max_seq_len: int, train: bool = True,
                       num_labels: int = 2) -> MemoryEstimate | None:
    """A bound on :func:`estimate_worker_memory` read from config.json and the safetensors headers
    alone (no torch, no transformers: milliseconds): every parameter's bytes as stored, and, when
    training, every parameter trained (16 bytes each, as full fine-tuning) with activations kept
    for backward. ``num_workers=auto`` takes it when it does not change the plan (memory does not
    limit the workers), and builds the exact estimate only when it would. None when the model's
    files do not say enough (no safetensors, an unknown config layout)."""
    model_dir = Path(model_dir)
    try:
        raw = json.loads((model_dir / "config.json").read_text())
        values = {k: next(raw[n] for n in names if raw.get(n)) for k, names in _CONFIG_KEYS.items()}
    except (OSError, ValueError, StopIteration, TypeError):
        return None
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    numel = nbytes = 0
    gated = False
    for path in files:
        try:
            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            lo, hi = entry["data_offsets"]
            nbytes += hi - lo
            count = 1
            for d in entry["shape"]:
                count *= d
            numel += count
            gated = gated or "gate_proj" in name
    head = values["hidden_size"] * (values["hidden_size"] + num_labels + 1)  # a classifier head the checkpoint lacks
    numel, nbytes = numel + head, nbytes + 4 * head
    shape = Shape.of(_Attrs({**raw, **values}), gated=gated)
    act = training_activation_bytes(shape, batch_size, max_seq_len) if train else forward_activation_bytes(
        shape, batch_size, max_seq_len)
    return MemoryEstimate(frozen_mb=nbytes / MB, trainable_mb=(numel * 16 if train else 0) / MB,
                          activations_mb=act / MB, source=UPPER_BOUND,
                          heap_slack_mb=HEAP_SLACK * act / MB if train else 0.0)


class _Attrs:
    """A config.json dict read as a config object (missing keys are None)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        return self._values.get(name)


def _config(model_dir: Path, num_labels: int, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        str(model_dir), num_labels=num_labels, local_files_only=True, trust_remote_code=trust_remote_code
    )
    if getattr(config, "pad_token_id", None) is None:  # load_classifier sets the tokenizer's (eos for decoders)
        eos = getattr(config, "eos_token_id", None)
        config.pad_token_id = (eos[0] if isinstance(eos, (list, tuple)) and eos else eos) or 0
    return config


_SAFETENSORS_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def _load_dtype(model_dir: Path, config: Any) -> torch.dtype:
    """The dtype ``from_pretrained`` (dtype="auto" in transformers 5) loads: the config's, else the
    checkpoint's first floating tensor (from the safetensors header alone), else float32."""
    import torch

    declared = config.dtype if hasattr(config, "dtype") else getattr(config, "torch_dtype", None)
    if isinstance(declared, torch.dtype):
        return declared
    if isinstance(declared, str) and isinstance(getattr(torch, declared, None), torch.dtype):
        return getattr(torch, declared)
    for path in sorted(model_dir.glob("*.safetensors")):
        try:
            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            continue
        for name, entry in header.items():
            if name != "__metadata__" and entry.get("dtype") in _SAFETENSORS_FLOATS:
                return getattr(torch, _SAFETENSORS_FLOATS[entry["dtype"]])
    return torch.float32


def _build(config: Any, device: str, trust_remote_code: bool) -> torch.nn.Module:
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device(device):
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)


def _applied(
    config: Any, peft_apply: Callable[[torch.nn.Module], torch.nn.Module] | None, train: bool, trust_remote_code: bool
) -> tuple[torch.nn.Module, bool]:
    """(the model as a worker holds it, whether gradients flow through the body)."""
    model = _build(config, "meta", trust_remote_code)
    if peft_apply is None:
        model.requires_grad_(train)  # full fine-tuning, or inference
        return model, train
    try:
        return _with_method(model, peft_apply)
    except (NotImplementedError, RuntimeError) as err:
        if "meta" not in str(err).lower():
            raise
    # a method that refuses meta tensors (none in vista.peft.METHODS today): count a random-weight CPU copy
    return _with_method(_build(config, "cpu", trust_remote_code), peft_apply)


def _with_method(
    model: torch.nn.Module, peft_apply: Callable[[torch.nn.Module], torch.nn.Module]
) -> tuple[torch.nn.Module, bool]:
    """Apply the method; gradients flow through the body when something trains inside it (LoRA,
    IA3, BitFit, ...) or before it (prompt encoders), i.e. anything outside the head trains."""
    import torch

    body = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    heads = {n for n, child in model.named_children() if child is not body and any(True for _ in child.parameters())}
    wrapped = peft_apply(model)
    if not isinstance(body, torch.nn.Module):
        return wrapped, any(p.requires_grad for p in wrapped.parameters())
    in_body = {id(p) for p in body.parameters()}
    backprop = any(
        p.requires_grad and (id(p) in in_body or not heads & set(name.split(".")))
        for name, p in wrapped.named_parameters()
    )
    return wrapped, backprop
