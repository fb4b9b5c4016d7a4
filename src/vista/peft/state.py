"""The trainable part of a model: what a client uploads and the server broadcasts."""

from __future__ import annotations

from typing import Any

import torch


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def frozen_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that do not train, by name (a tied weight once, under its first name)."""
    return {n: p for n, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every trainable tensor, keyed by parameter name."""
    return {n: p.detach().to("cpu", copy=True) for n, p in trainable_parameters(model).items()}


def load_trainable_state(params: dict[str, torch.nn.Parameter], state: dict[str, Any]) -> None:
    """Copy ``state`` into the trainable parameters in place; the names must match exactly."""
    missing = params.keys() - state.keys()
    extra = state.keys() - params.keys()
    if missing or extra:
        raise KeyError(
            f"trainable state does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(extra)[:5]}"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts. ``total`` leaves out peft's frozen ``original_module``
    copy of each module it trains in full (the classification head), which is never used in
    training, so it reads as base model + what the method adds."""
    trainable = total = 0
    for name, p in model.named_parameters():
        if ".original_module." in name:
            continue
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
