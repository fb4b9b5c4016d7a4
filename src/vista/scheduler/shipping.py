"""``scheduler.ship_data=true``: the data and model files travel through Ray's object store.

Without shared storage a node cannot read ``paths.data_dir`` or the model hub. The parent
puts each file a runtime needs (the FedNLP data and partition files, each model directory)
into the object store once per run; each node materialises them once, in a cache directory
named by their content's identity (path, size, mtime), shared by the actors of that node;
each actor's runtime arguments are rewritten to point there. What a runtime needs is found
in its arguments: every :class:`~vista.models.hub.ModelSpec` and
:class:`~vista.data.fednlp.FederatedDataSpec` inside them (dataclasses, tuples, lists).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from vista.data.fednlp import FederatedDataSpec
from vista.models.hub import ModelSpec

CACHE_DIR_ENV = "VISTA_SHIP_CACHE"  # where nodes keep shipped files (default: <tmp>/vista-shipped)


def _identity(path: Path) -> str:
    """A name for the content at ``path``: its resolved path, and each file's size and mtime."""
    h = hashlib.sha256(str(path.resolve()).encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _read(path: Path) -> dict[str, bytes]:
    """The files at ``path`` by relative name ("" for a single file)."""
    if path.is_dir():
        return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}
    return {"": path.read_bytes()}


def _walk(value: Any, visit: Callable[[Any], Any]) -> Any:
    """``value`` with every ModelSpec / FederatedDataSpec inside replaced by ``visit(it)``."""
    if isinstance(value, (ModelSpec, FederatedDataSpec)):
        return visit(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _walk(getattr(value, f.name), visit) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, (tuple, list)):
        return type(value)(_walk(v, visit) for v in value)
    return value


def _paths_of(spec: ModelSpec | FederatedDataSpec) -> list[Path]:
    if isinstance(spec, ModelSpec):
        return [Path(spec.resolve())]
    return [Path(spec.data_file), Path(spec.partition_file)]


@dataclasses.dataclass(frozen=True)
class Shipment:
    """Object refs of the files a runtime's arguments name, by original path, with their
    identities. Built in the parent (:func:`ship`), used in the actors (:meth:`materialize`)."""

    refs: dict[str, tuple[str, Any]]  # original path -> (identity, object ref of {relname: bytes})

    def materialize(self, args: Any, get: Callable[[Any], Any]) -> Any:
        """``args`` pointing at this node's copies (fetched with ``get``, e.g. ``ray.get``, the
        first time a node needs them)."""
        root = Path(os.environ.get(CACHE_DIR_ENV) or Path(tempfile.gettempdir()) / "vista-shipped")

        def local(original: str) -> str:
            ident, ref = self.refs[original]
            name = Path(original).name
            target = root / ident / name
            if not target.exists():
                _unpack(get(ref), target)
            return str(target)

        def visit(spec: ModelSpec | FederatedDataSpec) -> Any:
            if isinstance(spec, ModelSpec):
                return ModelSpec(name=spec.name, path=local(str(Path(spec.resolve()))),
                                 trust_remote_code=spec.trust_remote_code)
            return dataclasses.replace(spec, data_file=local(spec.data_file),
                                       partition_file=local(spec.partition_file))

        return _walk(args, visit)


def ship(args: Any, put: Callable[[Any], Any]) -> Shipment:
    """Put every file ``args`` names into the object store (``put``, e.g. ``ray.put``), once."""
    refs: dict[str, tuple[str, Any]] = {}

    def visit(spec: ModelSpec | FederatedDataSpec) -> Any:
        for path in _paths_of(spec):
            if str(path) not in refs:
                refs[str(path)] = (_identity(path), put(_read(path)))
        return spec

    _walk(args, visit)
    return Shipment(refs)


def _unpack(files: dict[str, bytes], target: Path) -> None:
    """Write ``files`` at ``target`` atomically: a half-written copy is never seen, and two
    actors of one node racing to write it end with one complete copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if list(files) == [""]:
            staged = tmp / "file"
            staged.write_bytes(files[""])
        else:
            staged = tmp / "dir"
            for rel, data in files.items():
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                (staged / rel).write_bytes(data)
        try:
            os.rename(staged, target)
        except OSError:
            if not target.exists():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
