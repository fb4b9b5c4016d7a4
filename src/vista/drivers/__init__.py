"""Drivers: the pipeline runner functions that assemble an experiment's Tasks.

``DRIVERS`` names the config's ``driver`` options and where each runner lives,
``(parts, run_dir, config, from_checkpoint=False) -> summary``: ``fedpeft`` fine-tunes
``model=`` (:mod:`vista.drivers.fedpeft`), ``selection`` chooses among
``selection.candidates`` first (:mod:`vista.drivers.selection`). ``driver=auto`` (the
default) is ``selection`` exactly when a ``selection=`` method is chosen. Runners are
imported when asked for (:func:`driver`), so naming them costs no import of torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

DRIVERS: dict[str, str] = {"fedpeft": "vista.drivers.fedpeft:run_fedpeft",
                           "selection": "vista.drivers.selection:run_selection"}


def driver(name: str) -> Callable[..., dict[str, Any]]:
    module, _, attr = DRIVERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["DRIVERS", "driver"]
