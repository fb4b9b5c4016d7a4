"""The composed config surface: keys users rely on, presets, and validation errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from vista.build import build_parts
from vista.config import ConfigError, validate


def _compose(*overrides: str):
    with initialize_config_module(config_module="vista.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_default_config_has_the_documented_keys():
    cfg = validate(_compose())
    for dotted in ["seed", "paths.model_hub", "paths.data_dir", "fl.rounds", "fl.clients_per_round",
                   "fl.local_epochs", "fl.batch_size", "fl.lr", "fl.max_seq_len", "fl.eval_every",
                   "scheduler.num_workers", "scheduler.device", "scheduler.gpu_mem_per_worker_mb", "recorder.mode"]:
        node = cfg
        for part in dotted.split("."):
            node = node[part]
    assert cfg["model"]["name"] == "minilm" and cfg["peft"]["r"] == 8
    assert cfg["partition"]["method"] == "niid_label_clients=10_alpha=1.0"
    assert cfg["scheduler"]["device"] == "auto"


def test_default_parts_point_at_the_shipped_data_and_model():
    parts = build_parts(validate(_compose()))
    from pathlib import Path

    assert Path(parts.data.data_file).name == "20news5_data.h5" and Path(parts.data.data_file).is_file()
    assert (parts.model.resolve() / "model.safetensors").is_file()  # the real MiniLM from its PyPI package
    assert type(parts.aggregator).__name__ == "FedAvg"


@pytest.mark.parametrize("model,hub_name", [("roberta", "roberta-base"), ("distilbert", "distilbert-base-uncased"),
                                            ("bert", "bert-base-uncased")])
def test_hub_models_resolve_under_model_hub(model, hub_name, tmp_path):
    parts = build_parts(validate(_compose(f"model={model}", f"paths.model_hub={tmp_path}")))
    with pytest.raises(FileNotFoundError) as info:
        parts.model.resolve()
    msg = str(info.value)
    assert str(tmp_path / hub_name) in msg and "model.path" in msg and "paths.model_hub" in msg


def test_experiment_preset_overrides_primary_config():
    cfg = validate(_compose("experiment=smoke"))
    assert cfg["fl"]["rounds"] == 2 and cfg["fl"]["clients_per_round"] == 2 and cfg["experiment_name"] == "smoke"


@pytest.mark.parametrize(
    "override,key",
    [
        ("+fl.roundz=3", "fl.roundz"),
        ("fl.rounds=abc", "fl.rounds"),
        ("fl.lr=fast", "fl.lr"),
        ("scheduler.device=gpu", "scheduler.device"),
        ("+model.colour=red", "model.colour"),
        ("fl.rounds=0", "fl.rounds"),
        ("fl.lr=-1", "fl.lr"),
        ("seed=-3", "seed"),
        ("scheduler.num_workers=-2", "scheduler.num_workers"),
        ("recorder.mode=loud", "recorder.mode"),
        ("selection.name=magic", "selection.name"),
        ("selection.eta=1", "selection.eta"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        validate(_compose(override))
    msg = str(info.value)
    assert msg.startswith(key + ":") and "\n" not in msg


@pytest.mark.parametrize("override", ["selection.privacy.dp_epsilon=-1", "selection.privacy.dp_delta=2",
                                      "selection.privacy.clip_norm=0", "selection.privacy.frac_bits=60",
                                      "selection.privacy.min_examples=-1"])
def test_bad_privacy_values_name_their_key(override):
    with pytest.raises(ConfigError) as info:
        validate(_compose("selection=logme", override))
    msg = str(info.value)
    assert msg.startswith(override.split("=")[0] + ":") and "\n" not in msg


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vista.main", *args, f"hydra.run.dir={cwd}/run"],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_rejects_a_wrong_type_before_loading_anything(tmp_path):
    p = _cli("fl.rounds=three", cwd=tmp_path)
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert err == [err[0]] and err[0].startswith("vista: config error: fl.rounds:")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_rejects_an_unknown_key(tmp_path):
    p = _cli("+fl.local_epoch=2", cwd=tmp_path)
    assert p.returncode == 2 and "vista: config error: fl.local_epoch:" in p.stderr
    # without '+', Hydra itself refuses the key and names it
    p = _cli("fl.local_epoch=2", cwd=tmp_path)
    assert p.returncode != 0 and "fl.local_epoch" in p.stderr


def test_cli_missing_model_names_the_directory(tmp_path):
    p = _cli("model=roberta", f"paths.model_hub={tmp_path}/hub", cwd=tmp_path)
    assert p.returncode == 2  # a user error after validation: one line, exit 2
    assert f"{tmp_path}/hub/roberta-base" in p.stderr and "model.path" in p.stderr


def test_partitions_computed_on_the_fly_are_cached_in_a_fednlp_file(tiny_data, tmp_path):
    import h5py

    from vista.data.fednlp import FedNLPPartition

    data, _ = tiny_data
    cache = tmp_path / "tiny_partition.h5"
    common = ["dataset=fednlp", f"dataset.data_file={data}", f"partition.file={cache}"]
    name = "niid_label_clients=4_alpha=0.5_seed=42"  # every parameter of the group in its name, seed too
    parts = build_parts(validate(_compose(*common, "partition=niid_label", "partition.clients=4", "partition.alpha=0.5")))
    assert parts.data.method == name and parts.data.partition_file == str(cache)
    first = FedNLPPartition(cache, name)
    mtime = cache.stat().st_mtime_ns
    build_parts(validate(_compose(*common, "partition=niid_label", "partition.clients=4", "partition.alpha=0.5")))
    assert cache.stat().st_mtime_ns == mtime  # reused, not recomputed
    # other kinds add their own groups next to it
    build_parts(validate(_compose(*common, "partition=niid_quantity", "partition.clients=3", "partition.beta=2")))
    build_parts(validate(_compose(*common, "partition=uniform", "partition.clients=4")))
    assert {"niid_quantity_clients=3_beta=2.0_seed=42", "uniform_clients=4_seed=42"} <= set(h5py.File(cache).keys())
    assert all((first.clients[c].train == FedNLPPartition(cache, name).clients[c].train).all() for c in first.clients)
    # another seed is another group, cached next to the first (which stays as it was)
    parts = build_parts(validate(_compose(*common, "partition=niid_label", "partition.clients=4", "partition.alpha=0.5",
                                          "seed=5")))
    assert parts.data.method == "niid_label_clients=4_alpha=0.5_seed=5"
    assert all((first.clients[c].train == FedNLPPartition(cache, name).clients[c].train).all() for c in first.clients)


def test_fednlp_file_still_reads_the_groups_fednlp_ships(tiny_data):
    """Only the names of groups Vista computes carry parameters: FedNLP's ``uniform`` is read as is."""
    data, part = tiny_data
    parts = build_parts(validate(_compose("dataset=fednlp", f"dataset.data_file={data}", "partition=fednlp_file",
                                          f"partition.file={part}", "partition.method=uniform")))
    assert parts.data.method == "uniform" and parts.data.partition_file == str(part.resolve())
    parts = build_parts(validate(_compose("dataset=fednlp", f"dataset.data_file={data}", "partition=fednlp_file",
                                          f"partition.file={part}", "partition.kind=niid_label", "partition.clients=4",
                                          "partition.alpha=1")))
    assert parts.data.method == "niid_label_clients=4_alpha=1.0"


def test_kmeans_partition_needs_a_model():
    with pytest.raises(ConfigError, match="^partition.model:"):
        validate(_compose("partition=kmeans"))


@pytest.mark.parametrize("name", ["20news", "agnews", "sst_2", "semeval_2010_task8", "sentiment140", "r8", "bbc",
                                  "rotten_tomatoes"])
def test_dataset_presets_say_which_file_is_missing_and_how_to_get_it(name, tmp_path):
    cfg = validate(_compose(f"dataset={name}", f"paths.data_dir={tmp_path}", "partition.method=uniform"))
    from vista.data.fednlp import DataFileError

    with pytest.raises(DataFileError) as info:
        build_parts(cfg)
    msg = str(info.value)
    assert str(tmp_path / f"{name}_data.h5") in msg and ("vista-data import" in msg or "FedNLP" in msg)
