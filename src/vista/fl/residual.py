"""Folding exact-LoRA residuals into the frozen base weights (FedEx-LoRA).

The ``exact_lora`` aggregator keeps, per LoRA module, the cumulative residual
R = Σ_rounds [avg(B·A) − avg(B)·avg(A)] as a global-state entry ``residual:<module>``.
The effective weight a client must start from is W0 + scaling·R + scaling·B·A, so the
worker adds scaling·R to a pristine copy of the base weight before every job.
"""

from __future__ import annotations

import torch

from vista.fl.aggregation.lora import (
    RESIDUAL_PREFIX,  # the one name of a residual entry
)

State = dict[str, torch.Tensor]


def split_residuals(state: State) -> tuple[State, State]:
    """(trainable tensors, residuals keyed by module path)."""
    trainable = {k: v for k, v in state.items() if not k.startswith(RESIDUAL_PREFIX)}
    residuals = {k[len(RESIDUAL_PREFIX):]: v for k, v in state.items() if k.startswith(RESIDUAL_PREFIX)}
    return trainable, residuals


class ResidualFolder:
    """Sets base_layer.weight = W0 + scaling·R for the modules that have a residual."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._pristine: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self, residuals: State) -> None:
        for path, residual in residuals.items():
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                raise KeyError(f"residual for {path!r}, but the model has no such module") from None
            base = module.get_base_layer().weight
            if path not in self._pristine:  # the base may be shared (a file's pages, a GPU's one copy):
                self._pristine[path] = base.detach()  # keep it as W0, and write a private copy
                base.data = base.detach().clone()
            delta = residual.to(base.dtype).to(base.device)
            if getattr(module, "fan_in_fan_out", False):  # GPT-2's Conv1D stores W transposed
                delta = delta.T
            if delta.shape != base.shape:
                raise ValueError(f"residual for {path!r} has shape {tuple(delta.shape)}, base weight {tuple(base.shape)}")
            base.copy_(self._pristine[path] + module.scaling["default"] * delta)
