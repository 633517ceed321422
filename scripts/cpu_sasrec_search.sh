#!/usr/bin/env bash
# The recorded search for SASRec at its cross-entropy anchor (issue 26): each point is one `bench run` of
# sasrec_native on all of Beauty with full-catalogue cross-entropy, selected on validation NDCG@10 (the
# record's epoch_scores; never on test). Points, in order of expected value (a research pass against
# RecBole #1290, phonism/genrec and the transformer benchmark, arXiv 2508.06450):
#   c3  dropout 0.2 alone                                  (~1-1.5x the default run)
#   c2  RecBole's step count: batches of 32 users           (~2-3x)
#   c4  the benchmark's shape at d=64: 1 layer, 1 head, dropout 0.2
#   c1  the benchmark's shape: d=256, 1 layer, 1 head, dropout 0.2 (~8-12x on a CPU)
# Every point is recorded in results/ (finished points are reused; an interrupted one resumes at its last
# commit). `--parallel`: it trains beside a long run (TIGER) instead of waiting for it; its timings then
# share the cores (the record says exclusive: false). POINTS="c3 c2" runs a subset.
set -euo pipefail
dataset=${1:-beauty}
shift || true
bench=${BENCH:-.venv/bin/bench}
declare -A point=(
  [c3]="sasrec_native.dropout=0.2 sasrec_native.patience=20"
  [c2]="sasrec_native.batch_size=32 sasrec_native.patience=20"
  [c4]="sasrec_native.n_layers=1 sasrec_native.n_heads=1 sasrec_native.dropout=0.2 sasrec_native.patience=20"
  [c1]="sasrec_native.hidden_size=256 sasrec_native.inner_size=256 sasrec_native.n_layers=1 sasrec_native.n_heads=1 sasrec_native.dropout=0.2 sasrec_native.patience=50"
)
for name in ${POINTS:-c3 c2 c4 c1}; do
  sets=()
  for assignment in ${point[$name]}; do sets+=(--set "$assignment"); done
  echo "== cpu_sasrec_search: $name (${point[$name]})"
  "$bench" run --method sasrec_native --dataset "$dataset" "${sets[@]}" --threads "${THREADS:-1}" --parallel "$@"
done
