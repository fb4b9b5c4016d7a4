from __future__ import annotations

from pathlib import Path

import pytest

from support.tiny import build_tiny_roberta, write_fednlp_pair


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model hub holding a tiny RoBERTa saved as ``roberta-base``."""
    hub = tmp_path_factory.mktemp("hub")
    build_tiny_roberta(hub / "roberta-base")
    return hub


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_fednlp_pair(tmp_path_factory.mktemp("data"))
