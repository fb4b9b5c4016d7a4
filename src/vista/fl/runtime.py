"""FedPEFTRuntime: what lives inside one worker process for a whole run.

Built once per process: the tokenizer, the frozen base model wrapped with the PEFT method,
and a reader of the data file. Each job loads the broadcast trainable state, runs, and
returns only trainable tensors and small statistics. Clients' tokenised examples are
cached per worker, so a client that comes back in a later round is not re-read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vista.data.fednlp import FedNLPData, FedNLPPartition, FederatedDataSpec
from vista.fl.client import Encoded, encode, evaluate, local_train
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec, load_classifier, load_tokenizer
from vista.peft.lora import LoraSpec
from vista.peft.state import count_parameters, load_trainable_state, trainable_parameters, trainable_state
from vista.pipeline.protocol import WorkerEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeArgs:
    model: ModelSpec
    peft: LoraSpec
    data: FederatedDataSpec
    train: FLSpec
    num_labels: int
    seed: int


class FedPEFTRuntime:
    JOBS = ("init_state", "train", "evaluate")

    def __init__(self, args: RuntimeArgs, env: WorkerEnv) -> None:
        self.args, self.device = args, env.device
        model_dir = args.model.resolve()
        self.tokenizer = load_tokenizer(model_dir, args.model.trust_remote_code)
        self.pad_id = int(self.tokenizer.pad_token_id)
        torch.manual_seed(args.seed)  # the same head and adapter init in every worker
        base = load_classifier(model_dir, args.num_labels, self.pad_id, args.model.trust_remote_code)
        self.model = args.peft.apply(base).to(self.device)
        self.params = trainable_parameters(self.model)
        self.data = FedNLPData(args.data.data_file)
        self._partition: FedNLPPartition | None = None
        self._cache: dict[Any, Encoded] = {}
        log.info("runtime ready: %s from %s, %d trainable tensors", args.model.name, model_dir, len(self.params))

    @classmethod
    def create(cls, args: RuntimeArgs, env: WorkerEnv) -> "FedPEFTRuntime":
        return cls(args, env)

    def run(self, fn: str, key: Any, payload: dict[str, Any], shared: Any) -> Any:
        if fn not in self.JOBS:
            raise ValueError(f"unknown job function {fn!r}; this runtime runs {self.JOBS}")
        return getattr(self, fn)(key, payload, shared)

    # -- jobs ------------------------------------------------------------------------------
    def init_state(self, key: Any, payload: dict[str, Any], shared: Any) -> dict[str, Any]:
        trainable, total = count_parameters(self.model)
        return {"state": trainable_state(self.model), "trainable_params": trainable, "total_params": total}

    def train(self, client: int, payload: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
        load_trainable_state(self.params, shared["state"])
        data = self._client_data(client)
        stats = local_train(self.model, self.params, data, self.args.train, payload["seed"], self.pad_id, self.device)
        return {"state": trainable_state(self.model), "num_examples": stats.num_examples,
                "steps": stats.steps, "loss": stats.loss}

    def evaluate(self, shard: Any, payload: dict[str, Any], shared: dict[str, Any]) -> Any:
        load_trainable_state(self.params, shared["state"])
        key = ("eval", shard)
        if key not in self._cache:
            self._cache[key] = self._encode(np.asarray(payload["indices"], dtype=np.int64))
        t = self.args.train
        return evaluate(self.model, self._cache[key], t.eval_batch_size, self.pad_id, self.args.num_labels, self.device)

    # -- data ------------------------------------------------------------------------------
    def _client_data(self, client: int) -> Encoded:
        if client not in self._cache:
            if self._partition is None:
                self._partition = FedNLPPartition(self.args.data.partition_file, self.args.data.method)
            self._cache[client] = self._encode(self._partition.clients[client].train)
        return self._cache[client]

    def _encode(self, indices: np.ndarray) -> Encoded:
        return encode(self.tokenizer, self.data.texts(indices), self.data.labels(indices), self.args.train.max_seq_len)

    def close(self) -> None:
        self.data.close()
