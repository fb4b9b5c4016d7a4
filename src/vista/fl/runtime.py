"""FedPEFTRuntime: what lives inside one worker process for a whole run.

Built once per process: the tokenizer, the frozen base model wrapped with the PEFT method,
and a reader of the data file. Each job loads the broadcast trainable state, runs, and
returns only trainable tensors and small statistics. Clients' tokenised examples are
cached per worker, so a client that comes back in a later round is not re-read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch

from vista.data.encoding import Encoded, encode
from vista.data.fednlp import FederatedDataSpec, FedNLPData, FedNLPPartition
from vista.data.holdout import hold_out
from vista.fl.client import (
    LocalOptions,
    Predictions,
    TrainStats,
    local_train,
    predict,
    score,
)
from vista.fl.residual import ResidualFolder, split_residuals
from vista.fl.spec import FLSpec
from vista.fl.transfer import to_wire
from vista.models.device_weights import AdoptReport, WeightKeeper, WriteGuard, adopt
from vista.models.hub import ModelSpec, load_classifier, load_tokenizer
from vista.models.shared_weights import share_weights
from vista.peft.base import PeftSpec
from vista.peft.state import (
    count_parameters,
    load_trainable_state,
    trainable_parameters,
    trainable_state,
)
from vista.pipeline.protocol import WorkerEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeArgs:
    model: ModelSpec
    peft: PeftSpec  # LoraSpec, IA3Spec, ...: apply(model), client_rank(client)
    data: FederatedDataSpec
    train: FLSpec
    num_labels: int
    seed: int


def build_model(args: RuntimeArgs) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, the base wrapped with the PEFT method) on the CPU, as every worker builds it;
    the parent builds the same to keep one copy of its frozen weights per GPU (:func:`weight_keeper`)."""
    model_dir = args.model.resolve()
    tokenizer = load_tokenizer(model_dir, args.model.trust_remote_code)
    torch.manual_seed(args.seed)  # the same head and adapter init in every worker
    base = load_classifier(model_dir, args.num_labels, int(tokenizer.pad_token_id), args.model.trust_remote_code)
    if args.model.share_weights:  # frozen tensors: views of the host's one mapped copy of the file
        share_weights(base, model_dir)
    return tokenizer, args.peft.apply(base)


def weight_keeper(args: RuntimeArgs) -> WeightKeeper | None:
    """The parent's keeper of the frozen weights on each GPU (None: ``model.share_weights=false``)."""
    return WeightKeeper(partial(_model_only, args)) if args.model.share_weights else None


def _model_only(args: RuntimeArgs) -> torch.nn.Module:
    return build_model(args)[1]


class FedPEFTRuntime:
    JOBS = ("init_state", "train", "evaluate")

    def __init__(self, args: RuntimeArgs, env: WorkerEnv) -> None:
        self.args, self.device = args, env.device
        self.tokenizer, model = build_model(args)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.device_report: AdoptReport | None = None
        self._guard: WriteGuard | None = None
        if env.device_weights is not None:  # the GPU's one copy of the frozen weights, kept by the parent
            shared = env.device_weights.open()
            self.device_report = adopt(model, shared)
            self._guard = WriteGuard(model, shared)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the check's transient copies (one tensor at a time; 0.4 GB at 1B)
        self.model = model.to(self.device)
        if args.train.gradient_checkpointing:  # keep each layer's input only; recompute the rest in backward
            checkpoint_activations(self.model)
        self.params = trainable_parameters(self.model)
        self.residuals = ResidualFolder(self.model)
        self.data = FedNLPData(args.data.data_file)
        self._partition: FedNLPPartition | None = None
        self._cache: dict[Any, Encoded] = {}
        log.info("runtime ready: %s, %d trainable tensors", args.model.name, len(self.params))

    @classmethod
    def create(cls, args: RuntimeArgs, env: WorkerEnv) -> FedPEFTRuntime:
        return cls(args, env)

    def run(self, fn: str, key: Any, payload: dict[str, Any], shared: Any) -> Any:
        if fn not in self.JOBS:
            raise ValueError(f"unknown job function {fn!r}; this runtime runs {self.JOBS}")
        out = getattr(self, fn)(key, payload, shared)
        if self._guard is not None:
            self._guard.check()  # a shared frozen weight written in place would change every worker's model
        return out

    # -- jobs ------------------------------------------------------------------------------
    def init_state(self, key: Any, payload: dict[str, Any], shared: Any) -> dict[str, Any]:
        trainable, total = count_parameters(self.model)
        return {"state": trainable_state(self.model), "trainable_params": trainable, "total_params": total,
                "method": self.args.peft.name}

    def train(self, client: int, payload: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
        """Local training from the broadcast state; uploads only what the client trained.

        A client of LoRA rank r < r_max trains the first r components (the rest start and,
        having zero gradients, stay at zero) and uploads A[:r], B[:, :r].
        """
        options = LocalOptions.from_payload(payload.get("options"))
        rank = self.args.peft.client_rank(client)
        data = self._client_data(client)
        spec = self.args.train
        if "lr" in payload:  # the round's rate under fl.lr_schedule (the server's round_lr); the
            # schedule's floor is already in it (and FLSpec wants lr_min below lr)
            spec = replace(spec, lr=float(payload["lr"]), lr_min=0.0)
        stats, micro, retries = self._train_fitting_memory(client, shared["state"], rank, data, payload["seed"],
                                                           options, spec)
        state = {k: v for k, v in trainable_state(self.model).items() if not options.is_frozen(k)}
        if rank is not None:
            from vista.fl.lora_math import truncate_to_rank

            state = truncate_to_rank(state, rank)
        out = {"state": to_wire(state, self.args.train.transfer_dtype), "num_examples": stats.num_examples,
               "steps": stats.steps, "loss": stats.loss, "rank": rank, "micro_batch": micro, "oom_retries": retries}
        if payload.get("personal_eval"):
            test = self._client_test(client)
            if len(test):
                p = predict(self.model, test, self.args.train.eval_batch_size, self.pad_id, self.device)
                out["personal"] = score(test.labels, p.pred, p.loss, self.args.num_labels)
        return out

    def _train_fitting_memory(self, client: int, global_state: dict[str, Any], rank: int | None, data: Encoded,
                              seed: int, options: LocalOptions, spec: FLSpec) -> tuple[TrainStats, int, int]:
        """Local training from the broadcast state, in micro-batches of ``fl.micro_batch_size``
        (gradient accumulation keeps the batch ``fl.batch_size``); on CUDA out of memory, again
        from that state and the same seed with half the micro-batch, down to 1, below which the
        error propagates. Every job starts at the configured micro-batch, so results do not
        depend on which worker ran what before.
        Returns (stats, the micro-batch that fitted, the number of halvings)."""
        micro, retries = spec.micro_batch, 0
        while True:
            self._load_global(global_state, rank)
            try:
                stats = local_train(self.model, self.params, data, spec, seed, self.pad_id, self.device, options,
                                    hooks=self.args.peft, micro_batch=micro)
                return stats, micro, retries
            except torch.cuda.OutOfMemoryError as err:
                fitted = min(micro, max(len(data), 1))  # a smaller client never used the whole batch
                if fitted <= 1:
                    raise
                failed, micro, retries = micro, fitted // 2, retries + 1
                log.warning("client %d: CUDA out of memory at micro-batch %d (%s); retrying at %d with gradient "
                            "accumulation over batch %d", client, failed, str(err)[:200], micro,
                            spec.batch_size)
            # out of the except block: the traceback no longer pins the failed attempt's tensors
            self.model.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def evaluate(self, shard: Any, payload: dict[str, Any], shared: dict[str, Any]) -> Predictions:
        """Per-example predictions of the global model on a fixed shard of test indices."""
        self._load_global(shared["state"], None)
        key = ("eval", shard)
        if key not in self._cache:
            self._cache[key] = self._encode(np.asarray(payload["indices"], dtype=np.int64))
        return predict(self.model, self._cache[key], self.args.train.eval_batch_size, self.pad_id, self.device)

    # -- state -----------------------------------------------------------------------------
    def _load_global(self, state: dict[str, Any], rank: int | None) -> None:
        trainable, residuals = split_residuals(state)
        if residuals:
            self.residuals.apply(residuals)
        load_trainable_state(self.params, trainable)
        if rank is not None:
            self._mask_rank(rank)

    @torch.no_grad()
    def _mask_rank(self, rank: int) -> None:
        for name, p in self.params.items():
            if ".lora_A." in name:
                p[rank:].zero_()
            elif ".lora_B." in name:
                p[:, rank:].zero_()

    # -- data ------------------------------------------------------------------------------
    def _partition_of(self) -> FedNLPPartition:
        if self._partition is None:
            self._partition = FedNLPPartition(self.args.data.partition_file, self.args.data.method, lazy=True)
        return self._partition

    def train_indices(self, client: int) -> np.ndarray:
        """What the client trains on: its train split less the validation split held out of it
        (``fl.val_fraction``; the same draw the server evaluates, see vista.data.holdout)."""
        return hold_out(self._partition_of().clients[client].train, self.args.train.val_fraction, self.args.seed,
                        client).train

    def _client_data(self, client: int) -> Encoded:
        if client not in self._cache:
            self._cache[client] = self._encode(self.train_indices(client))
        return self._cache[client]

    def _client_test(self, client: int) -> Encoded:
        key = ("test", client)
        if key not in self._cache:
            self._cache[key] = self._encode(self._partition_of().clients[client].test)
        return self._cache[key]

    def _encode(self, indices: np.ndarray) -> Encoded:
        return encode(self.tokenizer, self.data.texts(indices), self.data.labels(indices), self.args.train.max_seq_len)

    def close(self) -> None:
        self.data.close()


def checkpoint_activations(model: Any) -> None:
    """Activation (gradient) checkpointing, non-reentrant: transformers 5 renamed the call and deprecates
    the old name (gone in v6); older releases have only the old one."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
