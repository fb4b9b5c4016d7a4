"""Structured-config schemas: the composed config is checked against these before any
model or data is loaded, so a typo or a wrong type is a one-line error, not a traceback
ten minutes into a run."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from vista.fl.spec import FLSpec


class DeviceKind(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class RecorderMode(str, enum.Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class PathsConf:
    model_hub: str = MISSING
    data_dir: str = MISSING


@dataclass
class ModelConf:
    _target_: str = "vista.models.ModelSpec"
    name: str = MISSING
    hub_dir: str = MISSING
    hub_name: Optional[str] = None
    path: Optional[str] = None
    package: Optional[str] = None
    package_subdir: str = ""
    trust_remote_code: bool = False


@dataclass
class DatasetConf:
    _target_: str = "vista.data.fednlp.FedNLPDataSpec"
    name: str = MISSING
    data_file: Optional[str] = None
    partition_file: Optional[str] = None


@dataclass
class PartitionConf:
    _target_: str = "vista.data.fednlp.FedNLPFilePartitionSpec"
    file: Optional[str] = None
    method: Optional[str] = None
    kind: Optional[str] = None  # uniform | niid_label | niid_quantity | kmeans (parts form of method)
    clients: Optional[int] = None
    alpha: Optional[float] = None
    beta: Optional[float] = None
    min_size: int = 1
    seed: int = 42
    model: Optional[str] = None
    group_column: Optional[str] = None


@dataclass
class PeftConf:
    """The union of every ``peft=`` option's fields (vista.peft.METHODS), for type checking; an
    option keeps only the keys its yaml sets (validate drops the rest)."""

    _target_: str = "vista.peft.LoraSpec"
    # LoRA family: lora, adalora, loha, vera
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Any = "auto"
    extra_trainable: List[str] = field(default_factory=list)
    client_ranks: List[int] = field(default_factory=list)  # lora: heterogeneous ranks
    # adalora
    init_r: int = 12
    target_r: int = 8
    orth_reg_weight: float = 0.5
    allocate: bool = False
    total_step: int = 100
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    # ia3
    feedforward_modules: Any = "auto"
    # loha
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    # vera
    d_initial: float = 0.1
    projection_prng_key: int = 0
    # prefix, prompt, p_tuning
    num_virtual_tokens: int = 16
    prefix_projection: bool = True
    encoder_hidden_size: int = 512
    encoder_reparameterization_type: str = "MLP"


@dataclass
class AggregatorConf:
    # the union of the aggregators' fields; each option sets only its own (None = unused)
    _target_: str = "vista.fl.aggregators.FedAvg"
    mu: Optional[float] = None  # fedprox
    server_lr: Optional[float] = None  # fedavgm, fedadam, fedyogi, fedadagrad
    momentum: Optional[float] = None  # fedavgm
    beta1: Optional[float] = None  # fedadam, fedyogi, fedadagrad
    beta2: Optional[float] = None  # fedadam, fedyogi
    tau: Optional[float] = None  # fedadam, fedyogi, fedadagrad


@dataclass
class PrivacyConf:  # on by default for config runs (PrivacySpec() in Python is off)
    min_examples: int = 8  # a client with fewer admitted examples contributes zeros
    min_per_class: int = 2  # a client's examples of a class it holds fewer of are withheld
    secure_agg: bool = True  # pairwise additive masks (fixed point): the server sees only the sum
    frac_bits: int = 16  # fixed point of secure aggregation: high limb (a low limb adds 40 bits)
    dp_epsilon: Optional[float] = None  # differential privacy of the released sums (None: off)
    dp_delta: float = 1.0e-5
    clip_norm: float = 1.0  # per-example feature L2 clip when DP is on


@dataclass
class SelectionConf:
    name: str = "none"  # none | a vista.selection.spec.METHODS name
    # hub directory names under paths.model_hub, model config names (conf/model/<name>.yaml) or paths
    candidates: List[str] = field(default_factory=lambda: ["minilm", "mpnet", "smollm2", "minilm_l3", "random_bert"])
    metric: Optional[str] = None  # hybrid: the score that picks its top-k (default logme)
    scores: List[str] = field(default_factory=list)  # more statistics scores to record alongside
    pooling: str = "auto"  # auto (what the classifier reads) | cls | mean | last
    batch_size: int = 32
    max_seq_len: Optional[int] = None  # None: fl.max_seq_len
    clients: Optional[int] = None  # clients in the statistics round; None: all
    then_finetune: bool = False
    r0: int = 1
    eta: int = 2
    top_k: int = 3
    max_rounds: Optional[int] = None  # None: fl.rounds
    validation_key: str = "client_test_accuracy_mean"
    privacy: PrivacyConf = field(default_factory=PrivacyConf)


@dataclass
class SchedulerConf:
    _target_: str = "vista.scheduler.SchedulerSpec"
    num_workers: int = 2
    device: DeviceKind = DeviceKind.auto
    gpu_mem_per_worker_mb: int = 0
    threads_per_worker: int = 0
    start_timeout_s: float = 600.0


@dataclass
class RecorderConf:
    _target_: str = "vista.recording.RecorderSpec"
    mode: RecorderMode = RecorderMode.disabled
    project: Optional[str] = None  # None: WANDB_PROJECT, else "vista"
    entity: Optional[str] = None  # None: WANDB_ENTITY, else your default entity
    group: Optional[str] = None  # None: the sweep directory's name in a multirun
    name: Optional[str] = None  # None: the job's overrides (Hydra's override_dirname)
    tags: List[str] = field(default_factory=list)  # experiment_name is always added
    job_type: Optional[str] = None  # None: the driver


@dataclass
class VistaConf:
    seed: int = 42
    driver: str = "fedpeft"
    experiment_name: str = "default"
    paths: PathsConf = field(default_factory=PathsConf)
    fl: FLSpec = field(default_factory=FLSpec)
    model: ModelConf = field(default_factory=ModelConf)
    dataset: DatasetConf = field(default_factory=DatasetConf)
    partition: PartitionConf = field(default_factory=PartitionConf)
    peft: PeftConf = field(default_factory=PeftConf)
    aggregator: AggregatorConf = field(default_factory=AggregatorConf)
    selection: SelectionConf = field(default_factory=SelectionConf)
    scheduler: SchedulerConf = field(default_factory=SchedulerConf)
    recorder: RecorderConf = field(default_factory=RecorderConf)
