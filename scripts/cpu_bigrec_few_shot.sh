#!/usr/bin/env bash
# BIGRec with its authors' few-shot recipe on a 2-core CPU (bench.toml [bigrec.presets.cpu_few_shot]): 1,024
# seeded training users, loss on all tokens, batches of 128, up to 50 epochs with early stopping on the loss
# of 512 validation requests, then a seeded 2,000-request test subsample ranked by grounding the top beam.
# Runs for hours, across sessions: scripts/cpu_long_run.sh says how (PARALLEL=1 beside the TIGER run).
set -euo pipefail
dataset=${1:-beauty}
shift || true
exec "$(dirname "$0")/cpu_long_run.sh" bigrec "${PRESET:-cpu_few_shot}" "$dataset" "$@"
