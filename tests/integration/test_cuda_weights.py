"""One copy of the frozen weights per GPU (CUDA IPC), where a GPU is present (skipped otherwise).

The parent keeps the frozen base once on the GPU; two workers there map it. Each worker's own
allocations (torch's caching allocator: adapters, head, optimizer state) stay far below the
frozen base, every frozen tensor is shared and equal to what the worker loaded, and a whole
federated run gives the numbers it gives without sharing, FedEx-LoRA's residual folding
included (it writes a private copy; the parent's copy is untouched)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def mid_hub(tiny_hub, tmp_path_factory) -> Path:
    """A random RoBERTa of ~19M parameters (75 MB in float32) with the tiny hub's tokenizer."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    hub = tmp_path_factory.mktemp("mid_hub")
    dest = hub / "roberta-base"
    shutil.copytree(tiny_hub / "roberta-base", dest)
    for f in dest.glob("*.safetensors"):
        f.unlink()
    tok = AutoTokenizer.from_pretrained(str(dest))
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                        intermediate_size=2048, max_position_embeddings=80, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    RobertaModel(cfg).save_pretrained(str(dest))
    return hub


def _args(hub: Path, tiny_data, share: bool = True):
    from vista.data.fednlp import FederatedDataSpec
    from vista.fl.runtime import RuntimeArgs
    from vista.fl.spec import FLSpec
    from vista.models.hub import ModelSpec
    from vista.peft.lora import LoraSpec

    model = ModelSpec(name="roberta", hub_dir=str(hub), hub_name="roberta-base", share_weights=share)
    return RuntimeArgs(model, LoraSpec(r=4, alpha=8), FederatedDataSpec(str(tiny_data[0]), str(tiny_data[1]),
                                                                        "uniform"), FLSpec(max_seq_len=32), 3, 0)


def test_two_workers_on_one_gpu_map_the_parents_one_copy(mid_hub, tiny_data, tmp_path):
    from support.runtimes import make_memory_probe

    from vista.fl.runtime import weight_keeper
    from vista.pipeline.protocol import JobRequest
    from vista.scheduler import NodeScheduler, SchedulerSpec

    args = _args(mid_hub, tiny_data)
    keeper = weight_keeper(args)
    spec = SchedulerSpec(num_workers=2, device="cuda", threads_per_worker=1)
    with NodeScheduler(spec, make_memory_probe, args, log_dir=tmp_path, weight_keeper=keeper) as s:
        assert keeper.devices == ["cuda:0"]
        kept = keeper._on["cuda:0"]
        kept_sum = float(sum(t.double().sum() for t in kept.values()))
        kept_bytes = sum(t.numel() * t.element_size() for t in kept.values())
        s.run_jobs([JobRequest(f"a{i}", "g", "memory", i, {}) for i in range(2)], None)
        res = s.run_jobs([JobRequest(f"b{i}", "h", "memory", i, {}) for i in range(2)], None)
    reports = [r.value for r in res]
    assert all(r.ok for r in res), [r.traceback for r in res]
    assert len({r["pid"] for r in reports}) == 2
    assert kept_bytes > 60 * 2**20
    for r in reports:
        assert r["frozen_on"] == ["cuda:0"]
        rep = r["device_report"]
        assert rep is not None and rep["private_tensors"] == 0, rep
        assert rep["shared_bytes"] == r["frozen_bytes"] == kept_bytes
        assert r["checksum"] == pytest.approx(kept_sum, rel=1e-12)
        assert r["cuda_allocated"] < 0.25 * kept_bytes, r  # its own: adapters and head, not the base
    assert not keeper.devices  # released at shutdown, after the workers


def test_a_federated_run_gives_the_same_numbers_with_and_without_sharing(mid_hub, tiny_data, tmp_path):
    from support.experiments import tiny_parts

    from vista.drivers.fedpeft import run_fedpeft
    from vista.fl import aggregators as agg
    from vista.scheduler import SchedulerSpec

    base = tiny_parts(mid_hub, *tiny_data, aggregator=agg.ExactLoRA(), rounds=2)  # residual folding
    spec = SchedulerSpec(num_workers=2, device="cuda", threads_per_worker=1)
    out = {}
    for share in (True, False):
        parts = dataclasses.replace(base, scheduler=spec,
                                    model=dataclasses.replace(base.model, share_weights=share))
        run_dir = tmp_path / f"share_{share}"
        run_fedpeft(parts, run_dir)
        out[share] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(out[True], out[False], strict=True):
        for k in ("test_accuracy", "test_loss", "train_loss", "client_test_accuracy_mean"):
            if k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (k, a, b)
