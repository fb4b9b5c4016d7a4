"""Put a model into the hub all-or-nothing: build in a hidden directory, check it loads, rename.

Other runs read the hub while `add` works (and a conversion can fail half-way), so a model
directory appears under its name only once it is complete and loads as a classifier.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vista.models.local_copy import check_model_dir
from vista.models.sources import AddOptions, resolve


class ModelCheckError(ValueError):
    """A built directory does not load as a classifier; nothing was added."""


def add(source: str, hub: Path, name: str | None = None, force: bool = False,
        options: AddOptions | None = None, check: bool = True) -> Path:
    """Build SOURCE into ``<hub>/<name>`` and return that directory."""
    default_name, build = resolve(source)
    name = name or default_name
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"--name {name!r}: give a plain directory name (no slashes, not hidden)")
    target = hub / name
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; pass --force to replace it")
    new_hub = not hub.exists()
    hub.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=hub, prefix=f".{name}.adding-"))
    try:
        build(staging, options or AddOptions())
        check_model_dir(staging)
        if not any(staging.glob("*.safetensors")):
            raise RuntimeError(f"building {source!r} wrote no safetensors weights (a bug in its source)")
        if check:
            check_loads(staging)
        share(staging)
        replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if new_hub and not any(hub.iterdir()):
            hub.rmdir()  # a failed first `add` leaves no empty hub behind
        raise
    return target


def share(directory: Path) -> None:
    """Make everything readable by all: mkdtemp and transformers' writers leave 0700/0600 behind."""
    for path in [directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def replace(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an old ``target`` is moved aside first, then deleted."""
    if not target.exists() and not target.is_symlink():
        staging.rename(target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-")) / target.name
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old.parent)


def check_loads(model_dir: Path) -> None:
    """Load the tokenizer and a 2-label classifier offline and run one padded batch through it."""
    import torch

    from vista.models.hub import load_classifier, load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
        model = load_classifier(model_dir, num_labels=2, pad_token_id=tokenizer.pad_token_id)
        batch = tokenizer(["a short text", "a somewhat longer text to pad against"], padding=True,
                          return_tensors="pt")
        with torch.no_grad():
            shape = tuple(model(**batch).logits.shape)
    except Exception as err:  # whatever transformers raises, the answer is the same: not added
        raise ModelCheckError(f"the result does not load as a classifier ({type(err).__name__}: {err}); nothing "
                              f"was added (--no-check adds it anyway)") from err
    if shape != (2, 2):
        raise ModelCheckError(f"the result's classifier gave logits of shape {shape}, not (2, 2); nothing was added")
