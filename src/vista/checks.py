"""Value checks the spec dataclasses run in ``__post_init__``: one place for each range.

A spec states its own valid values (``FLSpec.rounds >= 1``, ``FedAdam.beta1 in [0, 1)``), so
Python callers and config runs get the same check. A bad value raises :class:`FieldError`,
which names the field: config validation (``vista.config``) turns it into the one-line
``<group>.<field>: <problem>`` a user sees, with exit code 2.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable


class FieldError(ValueError):
    """A dataclass field holds a bad value. ``field`` is its name,
    ``problem`` the rest of the sentence (``must be >= 1, got 0``); ``owner`` (a class name)
    only decorates the Python message."""

    def __init__(self, field: str, problem: str, owner: str | None = None, message: str | None = None) -> None:
        self.field, self.problem, self.owner = field, problem, owner
        super().__init__(message or f"{owner + '.' if owner else ''}{field} {problem}")


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def at_least(owner: Any, field: str, low: float) -> None:
    """``owner.field >= low`` (an int field must hold an int)."""
    v = getattr(owner, field)
    if not is_number(v) or v < low:
        raise FieldError(field, f"must be >= {low}, got {v!r}", type(owner).__name__)


def positive(owner: Any, field: str) -> None:
    v = getattr(owner, field)
    if not is_number(v) or not v > 0:
        raise FieldError(field, f"must be > 0, got {v!r}", type(owner).__name__)


def one_of(owner: Any, field: str, known: Iterable[Any]) -> None:
    v = getattr(owner, field)
    known = list(known)
    if getattr(v, "value", v) not in [getattr(k, "value", k) for k in known]:
        raise FieldError(field, f"must be one of {[getattr(k, 'value', k) for k in known]}, got {v!r}",
                         type(owner).__name__)


def check_range(owner: str, field_name: str, value: Any, lo: float, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = True) -> None:
    """``FedAdam.beta1=1.5 is outside [0, 1)`` (a FieldError), or a TypeError for a non-number."""
    if not is_number(value):
        raise TypeError(f"{owner}.{field_name} must be a number, got {value!r}")
    below = value <= lo if lo_open else value < lo
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        interval = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{')' if hi_open else ']'}"
        raise FieldError(field_name, f"must lie in {interval}, got {value!r}", owner,
                         message=f"{owner}.{field_name}={value!r} is outside {interval}")
