#!/usr/bin/env bash
# The reduced FedPETuning study (about 45 minutes on 2 CPU cores): every PEFT method, then
# the aggregators with LoRA, on MiniLM + 20news5; then `vista compare` over all runs.
# Learning rates are per method family (one value each, not tuned per method; see README).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-experiments/fedpetuning}
RUNS=$OUT/runs
rm -rf "$RUNS"
common=(experiment=fedpetuning_reduced recorder=local)
sweep() {  # a failed job is recorded (status failed in the table); the other sweeps still run
  python -m vista.main -m "${common[@]}" "hydra.sweep.dir=$RUNS/$1" "${@:2}" || echo "sweep $1: some jobs failed"
}

sweep adapters_lr2e-3   peft=lora,adalora,loha,bitfit fl.lr=2e-3
sweep prompts_lr1e-2    peft=ia3,vera,prefix,prompt,p_tuning,head fl.lr=1e-2
sweep full_lr1e-4       peft=full fl.lr=1e-4
sweep aggregators_lora  peft=lora fl.lr=2e-3 aggregator=fedprox,fedavgm,fedadam,ffa_lora,exact_lora,flexlora

vista compare "$RUNS"/* --by peft,aggregator,fl.lr --out "$OUT/results" \
  --metric test_accuracy --metric test_macro_f1 --metric client_test_accuracy_min
python experiments/fedpetuning/table.py "$RUNS" > "$OUT/results/table.md"
