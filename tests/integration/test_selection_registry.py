"""The score registry: a new score is one function (``@score``, declaring the statistics it needs
and its rounds) and one yaml; the config, the statistics pipeline, the ranking and the study read
the registry, so nothing else is edited."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from test_selection_run import _pooled_stats

from vista.build import build_parts
from vista.config import ConfigError, validate
from vista.drivers.selection import run_selection
from vista.drivers.study import stat_methods
from vista.selection.privacy import GUARDED
from vista.selection.ranking import rank_by
from vista.selection.scores import SCORES, unregister
from vista.selection.spec import METHODS, STATS

ROOT = Path(__file__).resolve().parents[2]

TOY = '''
"""Two toy scores; nothing in Vista names them."""
import numpy as np

from vista.selection import score


@score("toy_gap")
def toy_gap(stats):
    """Between-class over total scatter (a trace ratio), from the moments alone."""
    present = np.flatnonzero(stats.counts > 0)
    diff = stats.B[:, present] / stats.counts[present] - stats.offset()[:, None]
    return float(np.sum(diff**2 * stats.counts[present]) / np.trace(stats.centred()))


@score("toy_pca_gap", needs=("moments", "class_grams"), rounds=2)
def toy_pca_gap(stats):
    """The same ratio on the PCA round's features; it asks for the class Grams too."""
    assert stats.Gc is not None
    return toy_gap(stats)
'''


def _compose(*overrides: str):
    with initialize_config_module(config_module="vista.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def toy_scores(tmp_path, monkeypatch):
    (tmp_path / "my_scores.py").write_text(TOY)
    (tmp_path / "conf" / "selection").mkdir(parents=True)
    (tmp_path / "conf" / "selection" / "toy_gap.yaml").write_text(
        "# Toy: between-class over total scatter.\nname: toy_gap\nscore_modules: [my_scores]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    for name in ("toy_gap", "toy_pca_gap"):
        unregister(name)
    sys.modules.pop("my_scores", None)


def test_a_new_score_is_one_function_and_one_yaml(toy_scores, arch_hub, tiny_data, tmp_path, one_torch_thread):
    data, part = tiny_data
    overrides = [toy_scores, "selection=toy_gap", "selection.candidates=[bert,gpt2]",
                 "selection.scores=[toy_pca_gap,logme]", f"paths.model_hub={arch_hub}", "dataset=fednlp",
                 f"dataset.data_file={data}", "partition=fednlp_file", f"partition.file={part}",
                 "partition.method=uniform", "fl.max_seq_len=32", "scheduler.num_workers=0"]
    assert "toy_gap" not in SCORES
    cfg = validate(_compose(*overrides))  # validation imports my_scores: the scores register
    assert cfg["selection"]["name"] == "toy_gap" and cfg["driver"] == "selection"
    assert SCORES["toy_pca_gap"].rounds == 2 and SCORES["toy_pca_gap"].per_class
    assert METHODS["toy_gap"].kind == STATS and "toy_gap" in stat_methods()  # methods and the study read it

    sel = run_selection(build_parts(cfg), tmp_path / "run")["selection"]
    scores = sel["scores"]
    assert set(scores) == {"toy_gap", "toy_pca_gap", "logme"} and sel["ranked_by"] == "toy_gap"
    assert sel["ranking"] == rank_by(scores["toy_gap"]) and sel["chosen"] == sel["ranking"][0]
    assert sel["cost"]["rounds"] == 2 and sel["pca_dims"]["bert"] >= 1  # the PCA round ran for toy_pca_gap
    steps = [s["name"] for s in json.loads((tmp_path / "run" / "event_pipeline.json").read_text())["steps"]]
    assert {"probe", "client_stats", "merge_and_score", "client_gbc_stats"} <= set(steps)
    # the federated values are the functions of the pooled statistics
    mod = sys.modules["my_scores"]
    for name in ("bert", "gpt2"):
        pooled, projected = _pooled_stats(arch_hub, tiny_data, name, GUARDED)
        assert scores["toy_gap"][name] == pytest.approx(mod.toy_gap(pooled), rel=1e-8)
        assert scores["toy_pca_gap"][name] == pytest.approx(mod.toy_gap(projected), rel=1e-6)

    table = _table()  # the study table lists it among the methods
    assert "toy_gap" in table.METHODS and "toy_pca_gap" in table.METHODS


def test_an_unknown_score_module_is_a_config_error(toy_scores):
    with pytest.raises(ConfigError, match="selection.score_modules: cannot import 'no_such_scores'"):
        validate(_compose(toy_scores, "selection=logme", "selection.score_modules=[no_such_scores]"))
    with pytest.raises(ConfigError, match="unknown score 'toy_gap'"):  # not imported: not registered
        validate(_compose("selection=logme", "selection.scores=[toy_gap]"))


def test_registering_a_taken_name_is_refused():
    from vista.selection import score

    with pytest.raises(ValueError, match="already registered"):
        score("logme")(lambda stats: 0.0)
    with pytest.raises(ValueError, match="unknown statistics"):
        score("toy_bad", needs=("gram_of_everything",))
    assert "toy_bad" not in SCORES


def _table():
    spec = importlib.util.spec_from_file_location("table", ROOT / "experiments" / "selection_study" / "table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
