"""The config surface: conf/ at the top, shipped as the package vista.conf; every file a group
offers is an option that validates; one default per fact (the dataclasses'), restated by the
yaml files only where they say the same."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import tomllib
import yaml
from hydra import compose, initialize_config_module

from vista.config import ConfigError, validate
from vista.config.typed import locate
from vista.fl.spec import FLSpec
from vista.recording.checkpoints import CheckpointSpec
from vista.selection.spec import SelectionSpec

ROOT = Path(__file__).resolve().parents[2]
CONF = resources.files("vista.conf")
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
# an option that differs from its dataclass's default on purpose: (group, option, key)
# scheduler=inline names its backend (SchedulerSpec's default backend is process)
DELIBERATE = {("recorder", "wandb", "mode"), ("scheduler", "inline", "backend")}
# groups whose options are a class with its defaults (model/dataset/partition options are instances)
METHOD_GROUPS = ("peft", "aggregator", "scheduler", "recorder")


def _compose(*overrides: str):
    with initialize_config_module(config_module="vista.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _options(group: str) -> list[str]:
    return sorted(f.name[: -len(".yaml")] for f in CONF.joinpath(group).iterdir() if f.name.endswith(".yaml"))


def test_conf_is_the_top_level_folder_and_the_package_vista_conf():
    assert (ROOT / "conf" / "config.yaml").is_file() and not (ROOT / "src" / "vista" / "conf").exists()
    assert Path(str(CONF)).resolve() == (ROOT / "conf").resolve()  # the editable install maps it
    assert set(GROUPS) == {"aggregator", "dataset", "experiment", "model", "partition", "peft", "recorder",
                           "scheduler", "selection"}


def test_packages_listed_in_pyproject_are_exactly_the_source_packages():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    src = ROOT / "src"
    found = {str(p.parent.relative_to(src)).replace("/", ".") for p in (src / "vista").rglob("__init__.py")}
    assert sorted(listed) == sorted(found | {"vista.conf"})


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "experiment"])
def test_every_file_of_a_group_is_an_option_that_validates(group, tmp_path):
    """No base file sits among the choices: each one composes and validates on its own."""
    extra = {"partition": {"kmeans": ["partition.model=/some/model"], "natural": ["partition.group_column=x"]}}
    for option in _options(group):
        cfg = validate(_compose(f"{group}={option}", *extra.get(group, {}).get(option, [])))
        if group == "selection":
            assert cfg["selection"]["name"] == option
            assert cfg["driver"] == ("fedpeft" if option == "none" else "selection")
        else:
            assert cfg[group]["_target_"] == yaml.safe_load(CONF.joinpath(group, f"{option}.yaml").read_text())[
                "_target_"]


@pytest.mark.parametrize("option", _options("experiment"))
def test_every_experiment_preset_validates(option):
    assert validate(_compose(f"experiment={option}"))["experiment_name"] == option


def _default(cls: type, name: str):
    f = next(x for x in dataclasses.fields(cls) if x.name == name)
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else getattr(value, "value", value)


def test_method_options_restate_only_their_dataclass_defaults():
    """One default per fact: a method option's yaml lists its knobs (so they can be overridden
    without '+'), with exactly the values of its _target_ dataclass."""
    checked = 0
    for group in METHOD_GROUPS:
        for option in _options(group):
            node = yaml.safe_load(CONF.joinpath(group, f"{option}.yaml").read_text())
            cls = locate(node.pop("_target_"), group)
            for key, value in node.items():
                if (group, option, key) not in DELIBERATE:
                    assert value == _default(cls, key), f"{group}={option}: {key}: {value!r}"
                    checked += 1
    assert checked > 40


@pytest.mark.parametrize("block,cls", [("fl", FLSpec), ("selection", SelectionSpec), ("checkpoint", CheckpointSpec)])
def test_primary_config_blocks_restate_the_dataclass_defaults(block, cls):
    node = yaml.safe_load(CONF.joinpath("config.yaml").read_text())[block]
    assert set(node) == {f.name for f in dataclasses.fields(cls)} - {"name"}
    for key, value in node.items():
        assert value == _default(cls, key), f"{block}.{key}"


def test_validated_config_fills_every_field_of_the_target():
    cfg = validate(_compose("peft=bitfit", "aggregator=fedadam"))
    assert cfg["aggregator"] == {"_target_": "vista.fl.aggregators.FedAdam", "server_lr": 1e-2, "beta1": 0.9,
                                 "tau": 1e-3, "beta2": 0.99}
    assert cfg["peft"] == {"_target_": "vista.peft.BitFitSpec"}
    assert cfg["selection"]["privacy"]["secure_agg"] is True and cfg["selection"]["name"] == "none"


@pytest.mark.parametrize("override,key", [
    ("aggregator.beta1=1.5", "aggregator.beta1"),  # the aggregator's own range check, now before any run
    ("peft.r=0", "peft.r"),
    ("+peft.rank=4", "peft.rank"),
    ("peft.client_ranks=[9]", "peft.client_ranks"),
    ("driver=fedpeft", "driver"),  # with selection=logme below
    ("fl.transfer_dtype=float8", "fl.transfer_dtype"),
    ("selection.candidates=[minilm]", "selection.candidates"),
])
def test_more_bad_values_are_one_line_errors(override, key):
    extra = ["aggregator=fedadam"] if key.startswith("aggregator") else []
    extra += ["selection=logme"] if key in ("driver", "selection.candidates") else []
    with pytest.raises(ConfigError) as info:
        validate(_compose(*extra, override))
    msg = str(info.value)
    assert msg.startswith(key + ":") and "\n" not in msg, msg


def test_the_wheel_ships_the_configs_and_runs_from_any_directory(tmp_path):
    """A non-editable install: build the wheel, unpack it, compose from another directory."""
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("vista-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"vista/conf/config.yaml", "vista/conf/peft/lora.yaml", "vista/conf/selection/logme.yaml",
            "vista/conf/__init__.py", "vista/assets/20news5_data.h5"} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import vista, vista.main; from importlib import resources; "
            "print(vista.__file__); print(resources.files('vista.conf'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, timeout=120,
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert all(line.startswith(str(site)) for line in p.stdout.split()), p.stdout
    p = subprocess.run([sys.executable, "-m", "vista.main", "--cfg", "job", "peft=ia3"], capture_output=True,
                       text=True, cwd=elsewhere, timeout=120, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "_target_: vista.peft.IA3Spec" in p.stdout


NEW_AGGREGATOR = '''
from dataclasses import dataclass

from vista.checks import check_range
from vista.fl.aggregators import FedAvg


@dataclass(frozen=True)
class ShrunkFedAvg(FedAvg):
    """FedAvg, then every tensor shrunk towards zero by ``shrink``."""

    shrink: float = 0.1

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "shrink", self.shrink, 0.0, 1.0)

    def aggregate(self, global_state, updates, failures=(), state=None):
        new, _ = super().aggregate(global_state, updates, failures, state)
        return {k: v * (1 - self.shrink) for k, v in new.items()}, None
'''


def test_a_new_aggregator_is_two_files(tmp_path, monkeypatch):
    """The recipe in docs/ARCHITECTURE.md: the class and its yaml; validation, the build and
    the FedPEFT driver (through the Aggregator protocol) need nothing else."""
    (tmp_path / "my_aggregators.py").write_text(NEW_AGGREGATOR)
    (tmp_path / "conf" / "aggregator").mkdir(parents=True)
    (tmp_path / "conf" / "aggregator" / "shrunk.yaml").write_text(
        "_target_: my_aggregators.ShrunkFedAvg\nshrink: 0.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    cfg = validate(_compose(search, "aggregator=shrunk", "aggregator.shrink=0.25"))
    assert cfg["aggregator"] == {"_target_": "my_aggregators.ShrunkFedAvg", "shrink": 0.25}
    from vista.build import build_parts

    agg = build_parts(cfg).aggregator
    assert type(agg).__name__ == "ShrunkFedAvg" and agg.client_options() == {} and agg.init_state({}) is None
    with pytest.raises(ConfigError, match=r"^aggregator.shrink: must lie in \[0.0, 1.0\), got 1.5$"):
        validate(_compose(search, "aggregator=shrunk", "aggregator.shrink=1.5"))
    with pytest.raises(ConfigError, match=r"^aggregator.shrnk: not a key of ShrunkFedAvg"):
        validate(_compose(search, "aggregator=shrunk", "+aggregator.shrnk=1"))
