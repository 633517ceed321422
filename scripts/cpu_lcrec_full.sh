#!/usr/bin/env bash
# LC-Rec-style generative retrieval on SmolLM2 over all of Beauty on a 2-core CPU (bench.toml
# [lcrec.presets.cpu]): two epochs over every training user, then a seeded 2,000-request test subsample
# decoded by 20-beam search constrained to the catalogue. Runs for hours, across sessions:
# scripts/cpu_long_run.sh says how (PARALLEL=1 beside another long run).
set -euo pipefail
dataset=${1:-beauty}
shift || true
exec "$(dirname "$0")/cpu_long_run.sh" lcrec "${PRESET:-cpu}" "$dataset" "$@"
