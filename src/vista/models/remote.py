"""Fetch a model from the Hugging Face Hub when the network allows it.

Most machines that run Vista have no route to the Hub, so every failure ends in one line
that says how to fill the hub by hand instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vista.models.hub import ModelNotFoundError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# only the PyTorch side of a repo: other frameworks' weights and exports are large and unused
SKIP = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf", "*.mlmodel", "onnx/*", "openvino/*",
        "coreml/*", "tf/*", "flax/*"]


class HubUnreachableError(ConnectionError):
    pass


def looks_like_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def by_hand(repo_id: str) -> str:
    return (f"fill the hub by hand: on a machine with internet run `hf download {repo_id} --local-dir DIR`, "
            f"copy DIR here, then `vista-hub add DIR`")


def download(repo_id: str, dest: Path) -> Path:
    """Snapshot ``repo_id`` into ``dest``; a one-line error when offline or unreachable."""
    if offline():
        raise HubUnreachableError(f"the Hugging Face Hub is unreachable (HF_HUB_OFFLINE=1); {by_hand(repo_id)}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snapshot_download(repo_id, local_dir=str(dest), ignore_patterns=SKIP)
    except GatedRepoError as err:
        raise ModelNotFoundError(f"{repo_id!r} is gated on the Hub: accept its terms and `hf auth login`, "
                                 f"or {by_hand(repo_id)}") from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ModelNotFoundError(f"the Hugging Face Hub has no model {repo_id!r}") from err
    except Exception as err:  # connection, DNS, proxy, timeout: huggingface_hub wraps them in many types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HubUnreachableError(f"the Hugging Face Hub is unreachable ({reason}); {by_hand(repo_id)}") from err
    return dest
