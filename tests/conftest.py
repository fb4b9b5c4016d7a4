from __future__ import annotations

from pathlib import Path

import pytest
from support.tiny import TINY_BUILDERS, build_tiny_roberta, write_fednlp_pair


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model hub holding a tiny RoBERTa saved as ``roberta-base``."""
    hub = tmp_path_factory.mktemp("hub")
    build_tiny_roberta(hub / "roberta-base")
    return hub


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_fednlp_pair(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def arch_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model hub with one tiny model per architecture Vista supports, each under its
    ``model_type``: bert (MiniLM's), distilbert, mpnet, roberta, gpt2, llama (SmolLM2's)."""
    hub = tmp_path_factory.mktemp("arch_hub")
    for name, build in TINY_BUILDERS.items():
        build(hub / name)
    return hub


@pytest.fixture(scope="module")
def one_torch_thread():
    """Models this small train 2-3x faster on one thread than on two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
