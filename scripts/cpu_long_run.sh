#!/usr/bin/env bash
# One long, resumable `bench run` on a CPU: scripts/cpu_long_run.sh METHOD PRESET [DATASET] [bench run args...].
# Start it in the background at the start of a session and again in the next one: the trainers commit a
# checkpoint after every epoch and every 5 minutes inside one (bench.train.lifecycle), so an interrupted run
# resumes at the step after its last commit (the work dir in .cache is normally kept between sessions; if it
# is gone, the run starts again and says so). The record is written only when training has stopped by early
# stopping or its epoch budget and the test requests are ranked; the ranking commits its ranks every 30 s
# (bench/runs/eval_progress.py), so a run stopped while ranking goes on after its last committed request.
# THREADS=1 leaves a core for tests;
# PARALLEL=1 trains beside another long run instead of waiting for the training slot (timings then share the
# cores, and the record says so). Stop it with SIGTERM (background jobs ignore SIGINT). FINISH=1 ends the run
# where it stands instead (bench run --finish): validated, tested and recorded as stopped on request.
set -euo pipefail
method=$1 preset=$2
dataset=${3:-beauty}
shift 2; shift || true
bench=${BENCH:-.venv/bin/bench}
args=(--method "$method" --dataset "$dataset" --preset "$preset" "$@")
record=$("$bench" run "${args[@]}" --dry-run 2>/dev/null | awk '{print $NF}' | head -1 || true)
if [ -n "$record" ] && [ -f "$record" ]; then
  echo "cpu_long_run: $method already recorded at $record"
  exit 0
fi
hash=$(basename "${record:-none}" .json); hash=${hash#"$method"-}
work="${BENCH_CACHE_DIR:-.cache}/work/$dataset/$method-$hash"
if [ -f "$work/progress.json" ]; then
  echo "cpu_long_run: resuming from $work ($(python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print(p['epochs_done'], 'epochs done, step', p.get('steps_done_in_epoch', 0), 'of the next; validation', p['epoch_scores'])" "$work/progress.json"))"
else
  echo "cpu_long_run: no checkpoint in $work: starting from the first epoch"
fi
for ranked in "$work"/evaluate-*.npz; do
  [ -f "$ranked" ] && echo "cpu_long_run: $(basename "$ranked"): test ranks committed by an earlier call (reused if they reproduce)"
done
extra=()
[ -n "${PARALLEL:-}" ] && extra+=(--parallel)
[ -n "${FINISH:-}" ] && extra+=(--finish)
exec "$bench" run "${args[@]}" --threads "${THREADS:-1}" "${extra[@]}"
