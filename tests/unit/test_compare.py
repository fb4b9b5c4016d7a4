"""``vista compare``: configurations from overrides minus seed, mean +/- std over seeds."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import yaml

from vista.compare import Run, compare, main, run_values


def _run_dir(root: Path, num: int, overrides: list[str], accs: list[float], status: str = "finished",
             seed: int = 0) -> Path:
    d = root / f"{num}_{','.join(overrides)}"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = {"seed": seed, "peft": {"name": next((o.split("=")[1] for o in overrides if o.startswith("peft=")), "lora")},
           "paths": {"model_hub": str(root)}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"round": r + 1, "test_accuracy": a, "test_loss": 1.0 - a, "clients": [0, 1]} for r, a in enumerate(accs)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"status": status, "seed": seed}
    if status == "failed":
        summary["error"] = "RuntimeError: boom"
    (d / "summary.json").write_text(json.dumps(summary))
    return d


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01_10-00-00"
    common = ["paths.model_hub=/hub", "fl.rounds=3"]
    n = 0
    for peft, curves in {"lora": [[0.5, 0.7, 0.6], [0.5, 0.8, 0.8]], "ia3": [[0.4, 0.5, 0.6], [0.4, 0.5, 0.6]]}.items():
        for seed, accs in zip((1, 2), curves):
            _run_dir(root, n, [*common, f"peft={peft}", f"seed={seed}"], accs, seed=seed)
            n += 1
    _run_dir(root, n, [*common, "peft=ia3", "seed=3"], [0.1], status="failed", seed=3)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_final_and_best_per_run_loss_is_minimised():
    run = Run("r", {}, [{"round": 1, "test_accuracy": 0.5, "test_loss": 0.9}, {"round": 2, "test_accuracy": 0.4,
                                                                                "test_loss": 0.7}])
    assert run_values(run, "test_accuracy") == (0.4, 0.5)
    assert run_values(run, "test_loss") == (0.7, 0.7)


def test_groups_by_overrides_minus_seed_with_mean_and_std(sweep):
    from vista.compare import find_run_dirs, load_run

    runs = [load_run(d) for d in find_run_dirs(sweep)]
    assert len(runs) == 5
    results = compare(runs, ["test_accuracy"])
    assert [c.label for c in results] == ["peft=lora", "peft=ia3"]  # sorted by final accuracy; common part dropped
    lora, ia3 = results
    assert lora.stats["final_test_accuracy"][0] == pytest.approx(0.7)
    assert lora.stats["final_test_accuracy"][1] == pytest.approx(0.1414213, rel=1e-5)  # sample std of 0.6, 0.8
    assert lora.stats["best_test_accuracy"][0] == pytest.approx(0.75)
    assert ia3.stats["final_test_accuracy"] == (pytest.approx(0.6), 0.0)
    assert len(ia3.runs) == 2 and len(ia3.failed) == 1 and sorted(ia3.seeds) == [1, 2]


def test_cli_writes_csv_markdown_and_pngs(sweep, capsys):
    assert main([str(sweep), "--metric", "test_accuracy"]) == 0
    out = sweep / "compare"
    printed = capsys.readouterr().out
    assert "peft=lora" in printed and "0.7000 ± 0.1414" in printed and "1 failed" in printed
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["configuration"] for r in rows] == ["peft=lora", "peft=ia3"]
    assert float(rows[0]["final_test_accuracy_mean"]) == pytest.approx(0.7) and rows[1]["failed"] == "1"
    md = (out / "compare.md").read_text()
    assert "| peft=lora | 2 | 0 | 0.7000 ± 0.1414 | 0.7500 ± 0.0707 |" in md
    assert "fl.rounds=3" in md.splitlines()[0]  # the common overrides, once
    for png in ("curves_test_accuracy.png", "final_test_accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_finds_a_group_by_name_under_root(sweep, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([sweep.name, "--root", str(sweep.parent), "--out", str(out), "--no-plots"]) == 0
    assert (out / "compare.csv").is_file() and not list(out.glob("*.png"))
    assert "test_loss" in capsys.readouterr().out  # default metrics: those present


def test_runs_without_hydra_overrides_group_by_the_config_keys_that_vary(tmp_path):
    for i, (peft, seed, acc) in enumerate([("lora", 1, 0.5), ("lora", 2, 0.7), ("ia3", 1, 0.2)]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "peft": {"name": peft}, "paths": {"x": str(d)}}))
        (d / "metrics.jsonl").write_text(json.dumps({"round": 1, "test_accuracy": acc}) + "\n")
        (d / "summary.json").write_text(json.dumps({"status": "finished"}))
    from vista.compare import find_run_dirs, load_run

    results = compare([load_run(d) for d in find_run_dirs(tmp_path)], ["test_accuracy"])
    assert [(c.label, len(c.runs)) for c in results] == [("peft.name=lora", 2), ("peft.name=ia3", 1)]
    assert results[1].stats["final_test_accuracy"] == (0.2, None)  # one seed: no std


def test_unknown_group_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert main(["no-such-sweep", "--root", str(tmp_path)]) == 1
    assert "neither a path nor a sweep group" in capsys.readouterr().err


def test_wandb_group_is_read_through_the_api(tmp_path, monkeypatch, capsys):
    import wandb

    class FakeRun:
        def __init__(self, name, seed, accs, state="finished"):
            self.name, self.state = name, state
            self.config = {"seed": seed, "peft": {"name": "lora"}}
            self.summary = {"test_accuracy": accs[-1], "_runtime": 3}
            self._rows = [{"_step": i + 1, "round": i + 1, "test_accuracy": a} for i, a in enumerate(accs)]

        def scan_history(self, keys=None):
            return iter(self._rows)

    class FakeApi:
        default_entity = "me"

        def runs(self, path, filters):
            assert path == "me/vista" and filters == {"group": "g1"}
            return [FakeRun("seed=1", 1, [0.5, 0.6]), FakeRun("seed=2", 2, [0.5, 0.8])]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    out = tmp_path / "out"
    assert main(["g1", "--wandb", "--out", str(out), "--metric", "test_accuracy"]) == 0
    assert "0.7000 ± 0.1414" in capsys.readouterr().out and (out / "curves_test_accuracy.png").is_file()


def test_a_groups_target_reads_as_the_group_and_class_name():
    from vista.compare import item

    assert item("peft._target_", "vista.peft.LoraSpec") == "peft=LoraSpec"
    assert item("fl.lr", 0.002) == "fl.lr=0.002"


# -- the packaged config as the one source of ignored keys and option names -------------------------
def _packaged_yaml(*parts: str):
    from importlib.resources import files

    node = files("vista.conf")
    for p in parts:
        node = node / p
    return yaml.safe_load(node.read_text())


@pytest.fixture
def fake_conf(tmp_path, monkeypatch):
    """``vista.conf`` replaced by a directory of our own, as ``importlib.resources`` sees it."""
    from vista.compare import group
    from vista.config import packaged

    conf = tmp_path / "conf"
    (conf / "peft").mkdir(parents=True)
    caches = (group.ignored_keys, group.is_config_group, group.options_by_target, packaged.run_independent_keys)
    for cache in caches:
        cache.cache_clear()
    for module in (group, packaged):
        monkeypatch.setattr(module, "files", lambda package: conf if package == "vista.conf" else None)
    yield conf
    for cache in caches:
        cache.cache_clear()


def test_ignored_keys_are_the_configs_exclude_keys_plus_compares_own():
    from vista.compare import COMPARE_IGNORED_KEYS, ignored_keys

    exclude = _packaged_yaml("config.yaml")["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert set(ignored_keys()) == {*exclude, *COMPARE_IGNORED_KEYS}
    assert not set(exclude) & set(COMPARE_IGNORED_KEYS)  # said once
    for key in ("seed", "paths.model_hub", "paths.anything", "hydra.job.num", "recorder.mode", "scheduler.x",
                "dataset.data_file", "model.hub_dir", "experiment_name"):
        assert any(key == p or key.startswith(p if p.endswith(".") else p + ".") for p in ignored_keys()), key


def test_ignored_keys_are_read_from_the_packaged_config(fake_conf):
    from vista.compare import compare, ignored_keys

    (fake_conf / "config.yaml").write_text(
        "paths: {x: '${oc.env:NOPE}'}\n"  # read, not resolved
        "hydra: {job: {config: {override_dirname: {exclude_keys: [fl.lr, recorder]}}}}\n")
    assert "fl.lr" in ignored_keys() and "dataset.data_file" not in ignored_keys()
    runs = [Run(f"r{i}", {}, [{"round": 1, "acc": i}], {"status": "finished"}, [f"fl.lr={lr}", f"peft={p}", "seed=1"])
            for i, (lr, p) in enumerate([(0.1, "lora"), (0.2, "lora"), (0.1, "ia3")])]
    assert sorted(c.label for c in compare(runs, ["acc"])) == ["peft=ia3", "peft=lora"]


def test_a_target_names_the_packaged_option_that_has_it():
    from vista.compare import group_option, options_by_target

    for option in ("lora", "ia3", "p_tuning"):
        target = _packaged_yaml("peft", f"{option}.yaml")["_target_"]
        assert options_by_target("peft")[target] == (option,)
        assert group_option(Run("r", {"peft._target_": target}, []), "peft") == option
    assert group_option(Run("r", {"aggregator._target_": "vista.fl.aggregators.FFALoRA"}, []), "aggregator") == "ffa_lora"
    # every dataset option has the same _target_: no option to name, the class name as before
    assert group_option(Run("r", {"dataset._target_": "vista.data.fednlp.FedNLPDataSpec"}, []),
                        "dataset") == "FedNLPDataSpec"
    assert group_option(Run("r", {"peft._target_": "mine.MySpec"}, []), "peft") == "MySpec"  # not packaged
    assert group_option(Run("r", {}, []), "peft") is None


def test_options_are_looked_up_through_importlib_resources(fake_conf):
    from vista.compare import group_option

    (fake_conf / "peft" / "mine.yaml").write_text("_target_: vista.peft.LoraSpec\nr: 2\n")
    assert group_option(Run("r", {"peft._target_": "vista.peft.LoraSpec"}, []), "peft") == "mine"


def test_runs_without_overrides_are_labelled_by_option_not_class(tmp_path):
    from vista.compare import find_run_dirs, load_run

    for i, (peft, seed, acc) in enumerate([("LoraSpec", 1, 0.5), ("LoraSpec", 2, 0.7), ("IA3Spec", 1, 0.2)]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        cfg = {"seed": seed, "peft": {"_target_": f"vista.peft.{peft}"}, "fl": {"lr": 0.002}}
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        (d / "metrics.jsonl").write_text(json.dumps({"round": 1, "test_accuracy": acc}) + "\n")
    runs = [load_run(d) for d in find_run_dirs(tmp_path)]
    assert [(c.label, len(c.runs)) for c in compare(runs, ["test_accuracy"])] == [("peft=lora", 2), ("peft=ia3", 1)]
    for by in (["peft"], ["peft._target_"]):
        assert [c.label for c in compare(runs, ["test_accuracy"], by)] == ["peft=lora", "peft=ia3"]
    assert [c.label for c in compare(runs, ["test_accuracy"], ["peft", "fl.lr"])] == ["peft=lora", "peft=ia3"]


def _hydra_run(root: Path, num: int, overrides: list[str], acc: float) -> Path:
    """A run directory as Hydra leaves it: config.yaml and .hydra/{overrides,hydra}.yaml composed
    by Hydra itself from the packaged config."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="vista.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    d = root / f"{num}_{','.join(overrides)}"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"hydra": cfg.hydra})))
    task = OmegaConf.to_container(cfg, resolve=False)
    task.pop("hydra")
    (d / "config.yaml").write_text(yaml.safe_dump(task))
    (d / "metrics.jsonl").write_text(json.dumps({"round": 1, "test_accuracy": acc}) + "\n")
    (d / "summary.json").write_text(json.dumps({"status": "finished"}))
    return d


def test_by_a_group_names_the_option_hydra_chose(tmp_path, capsys):
    from vista.compare import find_run_dirs, load_run

    sweep = tmp_path / "sweep"
    _hydra_run(sweep / "a", 0, ["peft=lora", "seed=1"], 0.7)
    _hydra_run(sweep / "a", 1, ["peft=ia3", "seed=1"], 0.5)
    _hydra_run(sweep / "b", 0, ["aggregator=fedprox", "dataset=agnews", "seed=1"], 0.6)
    runs = [load_run(d) for d in find_run_dirs(sweep)]
    assert runs[0].choices["peft"] == "lora" and runs[0].choices["aggregator"] == "fedavg"
    want = ["peft=lora,aggregator=fedavg,dataset=20news5", "peft=lora,aggregator=fedprox,dataset=agnews",
            "peft=ia3,aggregator=fedavg,dataset=20news5"]
    for by in ("peft,aggregator,dataset", "peft._target_,aggregator._target_,dataset._target_"):
        assert main([str(sweep), "--by", by, "--no-plots", "--out", str(tmp_path / "out")]) == 0
        with (tmp_path / "out" / "compare.csv").open() as f:
            assert [r["configuration"] for r in csv.DictReader(f)] == want
    assert "peft=lora,aggregator=fedprox" in capsys.readouterr().out
    # without --by: the overrides, as before
    assert [c.label for c in compare(runs, ["test_accuracy"])] == [
        "peft=lora", "aggregator=fedprox,dataset=agnews", "peft=ia3"]


# -- plots that stay readable with many configurations -------------------------------------------------
def _many(n: int = 17) -> list:
    from vista.compare import ConfigResult

    out = []
    for i in range(n):
        label = f"peft=option_{i:02d},aggregator=a_rather_long_aggregator_name,fl.lr=0.00{i % 3 + 1}"
        runs = [Run(f"{i}_{s}", {"seed": s}, [{"round": r, "test_accuracy": 0.3 + 0.02 * i + 0.05 * r + 0.01 * s}
                                             for r in (1, 2, 3)]) for s in (1, 2)]
        final = 0.3 + 0.02 * i + 0.15 + 0.015
        out.append(ConfigResult(label, runs, [], {"final_test_accuracy": (final, 0.007)}))
    return out[::2] + out[1::2]  # not in order of value


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol and inner.x1 <= outer.x1 + tol
            and inner.y1 <= outer.y1 + tol)


def test_curves_legend_sits_outside_the_axes_with_every_configuration():
    import matplotlib.pyplot as plt

    from vista.compare import curves_figure

    results = _many()
    fig = curves_figure(results, "test_accuracy")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        legend = ax.get_legend()
        assert legend is not None
        assert [t.get_text() for t in legend.get_texts()] == [c.label for c in results]
        box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(axes_box), (box, axes_box)  # not over the curves
        assert _inside(box, fig.bbox)  # and not cut off
        assert axes_box.width / fig.dpi > 4.5  # the figure widened: the axes were not squeezed
        assert len({(str(line.get_color()), line.get_linestyle()) for line in ax.lines}) == 17  # told apart
    finally:
        plt.close(fig)


def test_final_bars_are_horizontal_sorted_and_every_label_legible():
    import matplotlib.pyplot as plt

    from vista.compare import final_figure

    results = _many()
    fig = final_figure(results, "test_accuracy")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        ticks = ax.get_yticklabels()
        want = sorted(results, key=lambda c: -c.stats["final_test_accuracy"][0])  # best first
        assert [t.get_text() for t in ticks] == [c.label for c in want]
        boxes = [t.get_window_extent(renderer) for t in ticks]
        assert all(a.y0 > b.y0 for a, b in itertools.pairwise(boxes))  # the best on top
        assert all(_inside(b, fig.bbox) for b in boxes)
        assert all(not a.overlaps(b) for a, b in itertools.pairwise(boxes))
        assert ax.get_window_extent(renderer).width / fig.dpi > 4  # the bars are not squeezed by the labels
        widths = {round(p.get_width(), 6) for p in ax.patches}
        assert widths == {round(c.stats["final_test_accuracy"][0], 6) for c in results}  # bar length = value
    finally:
        plt.close(fig)


def test_plot_writes_the_same_file_names(tmp_path):
    from vista.compare import plot

    written = plot(tmp_path, _many(), "test_accuracy")
    assert [p.name for p in written] == ["curves_test_accuracy.png", "final_test_accuracy.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_python_m_vista_compare_runs_the_cli(sweep):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "vista.compare", str(sweep), "--no-plots", "-m", "test_accuracy"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "peft=lora" in p.stdout and (sweep / "compare" / "compare.csv").is_file()
