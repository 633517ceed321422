#!/usr/bin/env bash
# TIGER with the paper's T5 (4.8M parameters) on all of Beauty on a 2-core CPU (bench.toml
# [tiger.presets.cpu_long]): every prefix of every training sequence, validation NDCG@10 on 2,000 seeded
# users every 2 epochs, early stopping (5 validations) or 60 epochs, then all 22,363 test requests ranked
# by 20-beam constrained search. Runs for many hours: start it in the background at the start of a
# session, run it again in the next one. A checkpoint is committed after every epoch and every 10 minutes
# inside one (bench.train.lifecycle), so an interrupted run resumes at the step after its last commit; the
# record is written only when training has stopped by early stopping or its epoch budget. THREADS=1 leaves
# a core for tests. Stop it with SIGTERM (background jobs ignore SIGINT).
set -euo pipefail
dataset=${1:-beauty}
shift || true
bench=${BENCH:-.venv/bin/bench}
args=(--method tiger --dataset "$dataset" --preset "${PRESET:-cpu_long}" --set eval.max_valid_users=2000 "$@")
record=$("$bench" run "${args[@]}" --dry-run 2>/dev/null | awk '{print $NF}' | head -1 || true)
if [ -n "$record" ] && [ -f "$record" ]; then
  echo "cpu_tiger_full: already recorded at $record"
  exit 0
fi
hash=$(basename "${record:-none}" .json); hash=${hash#tiger-}
work="${BENCH_CACHE_DIR:-.cache}/work/$dataset/tiger-$hash"
if [ -f "$work/progress.json" ]; then
  echo "cpu_tiger_full: resuming from $work ($(python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print(p['epochs_done'], 'epochs done, validation', p['epoch_scores'])" "$work/progress.json"))"
else
  echo "cpu_tiger_full: no checkpoint in $work: starting from the first epoch"
fi
exec "$bench" run "${args[@]}" --threads "${THREADS:-1}"
