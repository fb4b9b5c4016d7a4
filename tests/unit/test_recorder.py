"""ExpRecorder: local run directory always; W&B offline by default and never fatal."""

from __future__ import annotations

import json

import pytest

from vista.recording import ExpRecorder, RecorderSpec
from vista.recording.wandb_sink import effective_mode

ROWS = [{"round": 1, "test_accuracy": 0.5, "test_loss": 1.2, "clients": [1, 2]},
        {"round": 2, "test_accuracy": 0.75, "test_loss": 0.9, "clients": [0, 3]}]


@pytest.fixture(autouse=True)
def no_wandb_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def _record(rec: ExpRecorder) -> None:
    rec.write_config({"seed": 1, "fl": {"rounds": 2}})
    for r in ROWS:
        rec.log(r)
    rec.summary({"test_accuracy": 0.75, "best_round": 2})
    rec.close()


def _check_local(run_dir) -> None:
    assert [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == ROWS
    assert json.loads((run_dir / "summary.json").read_text()) == {"test_accuracy": 0.75, "best_round": 2}
    assert "rounds: 2" in (run_dir / "config.yaml").read_text()


def test_disabled_writes_only_the_run_directory(tmp_path):
    _record(ExpRecorder(RecorderSpec(mode="disabled"), tmp_path))
    _check_local(tmp_path)
    assert not (tmp_path / "wandb").exists()


def test_online_without_a_login_falls_back_to_offline():
    assert effective_mode("online") == "offline"
    assert effective_mode("offline") == "offline" and effective_mode("disabled") == "disabled"


def test_online_with_an_api_key_stays_online(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert effective_mode("online") == "online"


def test_offline_creates_a_syncable_wandb_run(tmp_path):
    _record(ExpRecorder(RecorderSpec(mode="offline", project="vista-test"), tmp_path, name="t"))
    _check_local(tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_wandb_that_fails_to_start_never_kills_the_run(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise ConnectionError("no route to W&B")

    monkeypatch.setattr(wandb, "init", broken)
    _record(ExpRecorder(RecorderSpec(mode="offline"), tmp_path))
    _check_local(tmp_path)
    err = capsys.readouterr().err
    assert err.count("W&B failed to start") == 1 and "no route to W&B" in err


def test_wandb_that_fails_mid_run_falls_back_once(tmp_path, capsys):
    rec = ExpRecorder(RecorderSpec(mode="offline"), tmp_path)

    class Broken:
        def log(self, *a, **k):
            raise OSError("disk full")

        def finish(self, *a, **k):
            pass

    rec.wandb.run = Broken()
    _record(rec)
    _check_local(tmp_path)
    assert capsys.readouterr().err.count("W&B failed to log") == 1
