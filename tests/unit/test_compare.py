"""``vista compare``: configurations from overrides minus seed, mean +/- std over seeds."""

from __future__ import annotations

import csv
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
