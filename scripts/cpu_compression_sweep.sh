#!/usr/bin/env bash
# CoVE compression sweep on a CPU in about an hour (one core): the recorded Beauty sweep behind
# results/plots/compression-*.png. A 3.2M-parameter randomly initialised Llama (SmolLM2's
# tokenizer, hidden 64, 2 layers) stands in for the LLM, so the curve isolates what hashing the
# item tables costs; its absolute level is not CoVE-with-an-LLM's. ID-only prompts, every prefix
# of each training sequence, 2 epochs, full ranking of all 22,363 test requests.
# Usage: scripts/cpu_compression_sweep.sh [DATASET]   (finished points are reused)
set -euo pipefail
dataset=${1:-beauty}
backbone=.cache/backbones/random-llama-h64-l2
bench=${BENCH:-.venv/bin/bench}
[ -f "$backbone/config.json" ] || "$bench" backbone random "$backbone" --hidden 64 --layers 2 --seed 0
OMP_NUM_THREADS=1 "$bench" sweep --method cove --dataset "$dataset" --model "$backbone" --threads 1 \
  --grid cove.compression_ratio=1,2,4,8,16 \
  --set cove.use_titles=false --set cove.train_samples=all_prefixes --set cove.epochs=2 --set cove.patience=0 \
  --set cove.batch_size=64 --set cove.grad_accum=1 --set cove.learning_rate=3e-3 --set eval.max_valid_users=2000
