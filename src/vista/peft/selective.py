"""Methods that pick tensors of the plain model to train, via ``requires_grad``: BitFit, linear
probing of the head, full fine-tuning. No peft wrapper: parameter names stay the model's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vista.peft.base import PeftSpec, arch, in_head, train_only


@dataclass(frozen=True)
class BitFitSpec(PeftSpec):
    """BitFit (Ben Zaken et al. 2022): every bias term of the body (attention, feed-forward and
    LayerNorm biases) plus the head. Architectures without biases (Llama: bias-free linears and
    RMSNorm) are refused, since BitFit would silently reduce to ``head``."""

    name: ClassVar[str] = "bitfit"

    def apply(self, model: Any) -> Any:
        head = in_head(model)
        biases = [n for n, _ in model.named_parameters() if not head(n) and n.rsplit(".", 1)[-1] == "bias"]
        if not biases:
            raise ValueError(f"bitfit is not supported on {arch(model)}: its body has no bias parameters, so "
                             f"BitFit would train the classifier head only; use peft=head (or peft=ia3)")
        return train_only(model, lambda n, p: head(n) or n.rsplit(".", 1)[-1] == "bias")


@dataclass(frozen=True)
class HeadSpec(PeftSpec):
    """Linear probing: only the freshly initialised classification head trains."""

    name: ClassVar[str] = "head"

    def apply(self, model: Any) -> Any:
        return train_only(model, lambda n, p: in_head(model)(n))


@dataclass(frozen=True)
class FullSpec(PeftSpec):
    """Full fine-tuning: every parameter trains and travels (the baseline PEFT is measured against)."""

    name: ClassVar[str] = "full"

    def apply(self, model: Any) -> Any:
        return train_only(model, lambda n, p: True)
