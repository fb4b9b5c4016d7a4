#!/usr/bin/env bash
# The committed real-model grid: 5 candidates x 3 corpora x 3 partitions x 1 seed, every
# selection method against brute-force federated LoRA (~110 minutes on 2 CPU cores).
# Needs the offline pool in $HUB (`vista-hub add NAME --hub $HUB` for minilm, mpnet, smollm2,
# minilm-l3, random-bert) and the corpora in $SRC (`vista-data import bbc --data-dir $SRC`, same for r8;
# 20news5 ships with Vista).
set -euo pipefail
cd "$(dirname "$0")/../.."
HUB=${HUB:-models}
SRC=${SRC:-data}
WORK=${WORK:-experiments/selection_study/work}
OUT=experiments/selection_study/results
python experiments/selection_study/prepare.py --src "$SRC" --out "$WORK/data" --corpora 20news5 bbc r8 \
  --train 256 --test 160
python experiments/selection_study/run_study.py --data "$WORK/data" --hub "$HUB" --out "$WORK/runs" \
  --corpora 20news5 bbc r8 --partitions iid alpha=1 alpha=0.1 --seeds 0 --rounds 3 || echo "some settings failed"
python experiments/selection_study/table.py "$WORK/runs" --out "$OUT" --tie-tol 0  # exact ties: the README's numbers
# keep each setting's result.json (small) next to the table, for benchmarks/selection_cost.py --results
KEEP="$(pwd)/$OUT/runs"
(cd "$WORK/runs" && find . -name result.json | while read -r f; do mkdir -p "$KEEP/$(dirname "$f")";
  cp "$f" "$KEEP/$f"; done)
python benchmarks/selection_cost.py --results "$OUT/runs"
