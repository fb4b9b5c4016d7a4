"""Drivers: the pipeline runner functions that assemble an experiment's Tasks.

``DRIVERS`` maps the config's ``driver`` to its runner, ``(parts, run_dir, config) -> summary``:
``fedpeft`` fine-tunes ``model=`` (:mod:`vista.drivers.fedpeft`), ``selection`` chooses among
``selection.candidates`` first (:mod:`vista.drivers.selection`). ``driver=auto`` (the
default) is ``selection`` exactly when a ``selection=`` method is chosen.
"""

from __future__ import annotations

from typing import Any, Callable

from vista.drivers.fedpeft import run_fedpeft
from vista.drivers.selection import run_selection

DRIVERS: dict[str, Callable[..., dict[str, Any]]] = {"fedpeft": run_fedpeft, "selection": run_selection}

__all__ = ["DRIVERS", "run_fedpeft", "run_selection"]
