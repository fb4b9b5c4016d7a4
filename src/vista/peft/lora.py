"""LoRA and AdaLoRA through the peft library, with target modules resolved per architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from vista.checks import FieldError
from vista.peft.base import PeftSpec, arch
from vista.peft.targets import (
    FAN_IN_FAN_OUT,
    head_module_names,
    model_type,
    resolve_target_modules,
    target_paths,
)

__all__ = ["AdaLoraSpec", "LoraSpec", "peft_wrap", "resolve_target_modules"]


def peft_wrap(spec: PeftSpec, model: Any, config: Any) -> Any:
    """``get_peft_model`` for sequence classification; what peft refuses for this architecture
    (e.g. LoHa on GPT-2's Conv1D layers) becomes one error naming the method and the model."""
    import warnings

    from peft import get_peft_model

    where = arch(model)
    try:
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecated: noise in every worker's log
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            wrapped = get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ValueError(f"{spec.name} is not supported on {where}: {err}") from err
    frozen_head = [n for n, p in wrapped.named_parameters() if ".modules_to_save." in n and not p.requires_grad]
    if frozen_head:
        raise RuntimeError(f"{spec.name}: peft left the classification head frozen: {frozen_head[:3]}")
    return wrapped


def _common(model: Any, method: str, requested: Any, extra_trainable: list[str]) -> dict[str, Any]:
    """target_modules (full module paths, outside the head) and modules_to_save (head + extras)."""
    head = head_module_names(model)
    targets = target_paths(model, resolve_target_modules(model, requested, method), head, method)
    return {"target_modules": targets, "modules_to_save": head + list(extra_trainable)}


@dataclass(frozen=True)
class LoraSpec(PeftSpec):
    """LoRA (Hu et al. 2021) on the attention projections: peft's per-architecture defaults
    (query/value on BERT, RoBERTa; q_lin/v_lin on DistilBERT; q/v on MPNet; c_attn on GPT-2;
    q_proj/v_proj on Llama) unless ``target_modules`` names others.

    ``client_ranks`` makes ranks heterogeneous: client ``c`` trains at rank
    ``client_ranks[c % len(client_ranks)]`` (each in 1..r) of the rank-``r`` global adapter;
    empty means everyone at ``r``. The runtime applies the rank; this spec only says which.
    """

    name: ClassVar[str] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # "auto": peft's per-architecture defaults; or an explicit list of module names.
    target_modules: Any = "auto"
    extra_trainable: list[str] = field(default_factory=list)  # e.g. ["pooler"]
    client_ranks: list[int] = field(default_factory=list)
    at_least_one: ClassVar[tuple[str, ...]] = ("r",)

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [k for k in self.client_ranks if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.r]
        if bad:
            raise FieldError("client_ranks", f"must be integers in 1..r={self.r}, got {bad} in {list(self.client_ranks)}",
                             "lora")

    def client_rank(self, client: int) -> int | None:
        """The rank client ``client`` trains at, or None when every client trains at ``r``."""
        if not self.client_ranks:
            return None
        return int(self.client_ranks[client % len(self.client_ranks)])

    def apply(self, model: Any) -> Any:
        from peft import LoraConfig, TaskType

        config = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
            fan_in_fan_out=model_type(model) in FAN_IN_FAN_OUT,
            **_common(model, self.name, self.target_modules, self.extra_trainable),
        )
        return peft_wrap(self, model, config)


@dataclass(frozen=True)
class AdaLoraSpec(PeftSpec):
    """AdaLoRA (Zhang et al. 2023): LoRA in SVD form, ``P diag(E) Q``, with an orthogonality
    penalty on P and Q that peft adds to ``outputs.loss`` itself whenever labels are passed
    (``orth_reg_weight``), so ``loss_extra`` stays None.

    Rank reallocation is the awkward part in FL: peft's allocator keeps per-step importance
    averages inside the model and prunes ``E`` on a global-step schedule. Vista therefore offers:

    * ``allocate: false`` (default): no reallocation. Every client trains the SVD-form adapter
      at ``init_r`` with the orthogonal penalty; ``on_step`` does nothing. This is the
      deterministic, worker-count-independent option, and it is AdaLoRA's parameterisation
      rather than full AdaLoRA.
    * ``allocate: true``: each client runs peft's budget schedule over its own local training:
      ``on_step(model, step)`` resets the importance averages at step 1 and calls
      ``update_and_allocate(step)``, so ``total_step`` (and ``tinit``, ``tfinal``, ``deltaT``) are
      counted in local steps of one client round. Each client masks entries of ``E`` to its own
      budget; FedAvg then averages the masked ``E``, so the global adapter is not pruned to
      ``target_r``: a per-client heuristic, not a federated rank allocation.
    """

    name: ClassVar[str] = "adalora"
    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    orth_reg_weight: float = 0.5
    target_modules: Any = "auto"
    extra_trainable: list[str] = field(default_factory=list)
    allocate: bool = False
    total_step: int = 100
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85

    at_least_one: ClassVar[tuple[str, ...]] = ("init_r", "target_r")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_r <= self.init_r:
            raise FieldError("target_r", f"must be <= init_r={self.init_r}, got {self.target_r}", "adalora")
        if self.orth_reg_weight <= 0:
            raise FieldError("orth_reg_weight", f"must be > 0 (peft requires it), got {self.orth_reg_weight}",
                             "adalora")
        if self.allocate and self.tinit >= self.total_step - self.tfinal:
            raise FieldError("tinit", f"must be < total_step - tfinal, got tinit={self.tinit}, "
                             f"total_step={self.total_step}, tfinal={self.tfinal}", "adalora")

    def apply(self, model: Any) -> Any:
        from peft import AdaLoraConfig, TaskType

        config = AdaLoraConfig(
            task_type=TaskType.SEQ_CLS, init_r=self.init_r, target_r=self.target_r, lora_alpha=self.alpha,
            lora_dropout=self.dropout, orth_reg_weight=self.orth_reg_weight,
            total_step=self.total_step, tinit=self.tinit, tfinal=self.tfinal, deltaT=self.deltaT,
            beta1=self.beta1, beta2=self.beta2, fan_in_fan_out=model_type(model) in FAN_IN_FAN_OUT,
            **_common(model, self.name, self.target_modules, self.extra_trainable),
        )
        return peft_wrap(self, model, config)

    def on_step(self, model: Any, step: int) -> None:
        if not self.allocate:
            return
        tuner = model.base_model
        if any(p.grad is None for n, p in model.named_parameters() if p.requires_grad and ".lora_E." in n):
            raise RuntimeError("adalora with allocate=true scores ranks by |weight * grad|: the local trainer "
                               "must call on_step after optimizer.step() and before zero_grad()")
        if step == 1:  # a fresh importance estimate for each client's local training
            tuner.rankallocator.reset_ipt()
        tuner.update_and_allocate(step)
