"""Server aggregation: pure functions of (global state, client updates, failures) plus the
aggregator's own state. Each strategy is a frozen dataclass chosen by its config file's
``_target_`` (``conf/aggregator/*.yaml``); the code lives in ``vista.fl.aggregation``.
"""

from __future__ import annotations

from vista.fl.aggregation.base import Aggregator, ClientUpdate, State
from vista.fl.aggregation.lora import RESIDUAL_PREFIX, ExactLoRA, FFALoRA, FlexLoRA, residual_key
from vista.fl.aggregation.mean import FedAvg, FedLC, FedProx, HetLoRA
from vista.fl.aggregation.server_opt import FedAdagrad, FedAdam, FedAvgM, FedYogi

__all__ = [
    "RESIDUAL_PREFIX",
    "Aggregator",
    "ClientUpdate",
    "ExactLoRA",
    "FFALoRA",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedLC",
    "FedProx",
    "FedYogi",
    "FlexLoRA",
    "HetLoRA",
    "State",
    "residual_key",
]
