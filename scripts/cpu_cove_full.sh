#!/usr/bin/env bash
# CoVE with the pretrained SmolLM2-135M on all of Beauty on a 2-core CPU: every training user, every
# test request ranked over all items, and the second-to-last (valid) position scored by the same model
# (bench.toml [cove.presets.cpu]: ID-only prompts, bf16 where the CPU has it, the item loss at every
# position of a user's sequence, length-bucketed batches). Resumable: run it again after an
# interruption and training continues after the last finished epoch. PRESET=cpu_titles runs the
# title ablation on its subsample.
set -euo pipefail
dataset=${1:-beauty}
shift || true
bench=${BENCH:-.venv/bin/bench}
exec "$bench" run --method cove --dataset "$dataset" --preset "${PRESET:-cpu}" --threads "${THREADS:-2}" \
  --set eval.max_valid_users=2000 --set 'eval.extra_targets=["valid"]' "$@"
