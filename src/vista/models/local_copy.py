"""Copy a local Hugging Face model directory into the hub, with safetensors weights.

The hub only ever holds safetensors (no pickle on load, and headers give parameter counts
without loading); a directory that has only ``pytorch_model.bin`` is converted once here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vista.models.hub import TOKENIZER_FILES, ModelNotFoundError

# weights in formats the hub does not keep when safetensors are there (or after converting)
OTHER_WEIGHTS = ("pytorch_model*.bin", "pytorch_model*.bin.index.json", "*.pt", "*.pth", "tf_model*.h5",
                 "flax_model*.msgpack", "*.onnx", "*.gguf", "rust_model.ot", "model.ckpt*")
# any one of these: without them transformers 5 silently builds an empty tokenizer (specials only)
NOT_MODEL_FILES = (".*", "__pycache__", "desktop.ini", "Thumbs.db")  # .git, .cache, .gitattributes, OS junk


def check_model_dir(src: Path) -> Path:
    """``src`` if it holds config.json, weights (safetensors or .bin) and a tokenizer, else a loud error."""
    if not src.is_dir():
        raise ModelNotFoundError(f"{src} is not a directory")
    if not (src / "config.json").is_file():
        raise ModelNotFoundError(f"{src} has no config.json: not a Hugging Face model directory "
                                 "(expected config.json, weights and tokenizer files)")
    if not any(src.glob("*.safetensors")) and not any(src.glob("pytorch_model*.bin")):
        raise ModelNotFoundError(f"{src} has config.json but no weights (*.safetensors or pytorch_model*.bin)")
    if not any((src / name).is_file() for name in TOKENIZER_FILES):
        raise ModelNotFoundError(f"{src} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); copy the "
                                 f"tokenizer that belongs to this model into it")
    return src


def copy_model_dir(src: Path, target: Path) -> None:
    """Copy ``src`` into ``target`` (which may exist, empty), converting .bin weights to safetensors."""
    check_model_dir(src)
    has_safetensors = any(src.glob("*.safetensors"))
    shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*NOT_MODEL_FILES, *OTHER_WEIGHTS))
    if not has_safetensors:
        _save_as_safetensors(src, target)


def _save_as_safetensors(src: Path, target: Path) -> None:
    """Load the .bin checkpoint with its own architecture class and save it back as safetensors."""
    import transformers

    config = json.loads((src / "config.json").read_text())
    arch = (config.get("architectures") or ["AutoModel"])[0]
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise ModelNotFoundError(f"{src}: cannot convert pytorch_model.bin to safetensors, transformers has no "
                                 f"class {arch!r} (custom code?); convert it yourself and add the result")
    model = cls.from_pretrained(str(src), local_files_only=True, use_safetensors=False)
    model.save_pretrained(str(target))
