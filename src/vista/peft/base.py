"""What every PEFT method spec offers the runtime.

A spec is a frozen dataclass built from the ``peft=`` config group. ``apply(model)`` takes a
``*ForSequenceClassification`` model straight from ``load_classifier`` and returns the model to
train, with ``requires_grad=True`` on exactly the method's tensors plus the classification head
(freshly initialised, so it always trains). Everything else is frozen; what has
``requires_grad`` is what a client uploads (``vista.peft.state.trainable_state``).

The local trainer adds ``loss_extra(model)`` to the loss when it is not None, and calls
``on_step(model, step)`` after each optimizer step, ``step`` counting the optimizer steps of
this local training from 1. Both are no-ops except AdaLoRA's ``on_step`` with
``allocate=true``, which reads the gradients and so must run before ``zero_grad``.
``describe(model)`` gives the method name and the trainable/total parameter counts to print
and record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vista.checks import at_least
from vista.peft.state import count_parameters
from vista.peft.targets import head_module_names


@dataclass(frozen=True)
class PeftSpec:
    name: ClassVar[str] = "?"
    # integer fields that must be >= 1 (ranks, virtual tokens, widths): checked for every method
    at_least_one: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in self.at_least_one:
            at_least(self, f, 1)

    def client_rank(self, client: int) -> int | None:
        """The LoRA rank ``client`` trains at; None: the method's own (every client the same)."""
        return None

    def apply(self, model: Any) -> Any:
        raise NotImplementedError

    def on_step(self, model: Any, step: int) -> None:
        return None

    def loss_extra(self, model: Any) -> torch.Tensor | None:
        return None

    def describe(self, model: torch.nn.Module) -> dict[str, Any]:
        """Trainable and total parameter counts of an applied model (frozen copies and adapter
        tensors included in ``total``; buffers such as VeRA's shared projections are not)."""
        trainable, total = count_parameters(model)
        return {"method": self.name, "trainable": trainable, "total": total,
                "percent": 100.0 * trainable / max(total, 1)}


def train_only(model: torch.nn.Module, keep: Any) -> torch.nn.Module:
    """``requires_grad`` = ``keep(name, param)`` for every parameter of a plain model."""
    for name, p in model.named_parameters():
        p.requires_grad_(bool(keep(name, p)))
    return model


def in_head(model: torch.nn.Module) -> Any:
    heads = tuple(head_module_names(model))
    return lambda name: name.split(".")[0] in heads


def arch(model: Any) -> str:
    return f"{type(model).__name__} (model_type={getattr(model.config, 'model_type', None)!r})"
