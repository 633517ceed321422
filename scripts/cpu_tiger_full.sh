#!/usr/bin/env bash
# TIGER with the paper's T5 (4.8M parameters) on all of Beauty on a 2-core CPU (bench.toml
# [tiger.presets.cpu_long]): every prefix of every training sequence, validation NDCG@10 on 2,000 seeded
# users every 2 epochs, early stopping (5 validations) or 60 epochs, then all 22,363 test requests ranked
# by 20-beam constrained search. Runs for many hours, across sessions: scripts/cpu_long_run.sh says how.
set -euo pipefail
dataset=${1:-beauty}
shift || true
exec "$(dirname "$0")/cpu_long_run.sh" tiger "${PRESET:-cpu_long}" "$dataset" --set eval.max_valid_users=2000 "$@"
