#!/usr/bin/env bash
# Every GPU record in one resumable sequence, for the lent GPU machine (no network, 64 MiB and 10 min
# per call, 8 files back per call, 30-45 device-minutes per session).
#
#   here:          scripts/gpu_run.sh pack beauty     # GGUF parts, the dataset's files, wheels
#   device call 1: carry [".cache/gpu_ship/part1", ".cache/gpu_hf"], command: scripts/gpu_run.sh stash
#   device call 2: carry [".cache/gpu_ship/part2", ".cache/gpu_data"], command: scripts/gpu_run.sh stash
#   device call 3+: carry [".cache/gpu_ship/part3", ".cache/gpu_wheels"], command: scripts/gpu_run.sh next beauty
# (each call under 64 MiB with the 5 MiB tree: ~51, ~44, ~55; what a call carried stays on the machine while
# it is warm, 30 s after a call, so make the calls back to back). .cache/gpu_hf holds the transformers and
# peft this checkout pins: the machine's own (5.17 / 0.21.0 in 2026-12) are older than the tested ones.
#   then here:     scripts/gpu_run.sh collect DIR   # DIR = the call's files_at; then commit results/
#
# `next` first runs `bench smoke` (once per machine, about a minute: every LLM method builds on the
# GPU, trains two steps and ranks 8 requests), then the first step of SEQUENCE whose record is not in
# results/ yet, and stops: one long step per 10-minute call. A step whose record is committed is
# skipped, so a later GPU session continues where this one stopped. Steps:
#   cove     CoVE on the full data, bf16, `--preset gpu` with a 4.5-minute training budget (fits a call)
#   speed    `bench speed --trained` for every recorded method on the same 64 requests, batch 32 then 1
#            (trained weights of the runs still on this machine; a method whose work dir is gone gets
#            the quick fit, and the record says so per method; `--precision auto` runs every fitted
#            backbone method in bf16; a trained run keeps its own, and a ratio that mixes formats is not bold)
#   bigrec   BIGRec `--preset gpu` (full training set, 4-minute budget, 4,096 seeded test requests)
#   sasrec   SASRec until RecBole's early stopping (8-minute budget; 3 epochs on the CPU)
#   gru4rec  GRU4Rec likewise (7 epochs on the CPU)
#   tiger    TIGER `--preset gpu` (the paper's T5, 6-minute budget; semantic IDs built by `pack`)
#   lcrec    LC-Rec `--preset gpu` on the same backbone as CoVE (TIGER's semantic IDs as item tokens,
#            4-minute budget, 4,096 seeded test requests)
# `run METHOD DATASET [bench run args]` runs one step by hand. BENCH_GPU_DEVICE=cpu rehearses the
# whole sequence on a CPU (BENCH_GPU_MODEL=PATH swaps in a small local backbone).
set -euo pipefail
data=.cache/gpu_data
wheels=.cache/gpu_wheels
hf=.cache/gpu_hf
site=${BENCH_GPU_SITE:-/tmp/site}  # where carried wheels go on the device
SEQUENCE="cove speed bigrec sasrec gru4rec tiger lcrec"  # speed second: the comparison users come for
device=${BENCH_GPU_DEVICE:-cuda}  # cpu only to rehearse this script without a GPU
model=${BENCH_GPU_MODEL:-}
stamp=/tmp/bench-gpu-stamp

setup() {  # device: wheels, GGUF, data, revision; results/ holds the committed records (reused)
  python=${PYTHON:-python3}
  install_wheels "$wheels"
  [ -d "$site" ] && export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  if [ -d .cache/gpu_ship ] || [ -d .cache/gpu_gguf ]; then
    local gguf_env; gguf_env=$(scripts/gpu_ship_gguf.sh join) && eval "$gguf_env"
  fi
  check_pins
  if [ -d "$data/tiger_ids" ]; then  # TIGER's semantic IDs, built by `pack` (no room for the text encoder)
    mkdir -p .cache/tiger/semantic_ids && cp "$data"/tiger_ids/* .cache/tiger/semantic_ids/
  fi
  [ -d "$data/amazon" ] && export BENCH_DATA_DIR=$PWD/$data
  export PYTHONUNBUFFERED=1
  [ -f "$data/GIT_REV" ] && export BENCH_GIT_REV="$(cat "$data/GIT_REV") (copy on the GPU machine)"
  touch "$stamp"
}

install_wheels() {  # carried wheels into $site (kept on the machine for the later calls)
  if compgen -G "$1/*.whl" >/dev/null; then
    "${python:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$1"/*.whl
  fi
}

check_pins() {  # the transformers/peft the tests passed with (pack's PINS), installed by the stash calls
  [ -f "$data/PINS" ] || return 0
  local have; have=$("$python" -c 'import transformers, peft; print(f"transformers=={transformers.__version__} peft=={peft.__version__}")')
  if [ "$have" != "$(cat "$data/PINS")" ]; then
    echo "gpu_run.sh: $have here, $(cat "$data/PINS") pinned: carry .cache/gpu_hf in a call running \`$0 stash\` first" >&2
    exit 2
  fi
}

bench() { "$python" -m bench.cli "$@"; }

has_method() {  # not `bench list | grep -q`: grep leaving early breaks the pipe, and pipefail then says no
  local listed; listed=$(bench list)
  grep -q "^methods:.*\b$1\b" <<<"$listed"
}

step() {  # one step of the sequence (or any method) with the GPU settings; records go to results/
  local name=$1 dataset=$2; shift 2
  local common=(--dataset "$dataset" --device "$device" --results-dir results)
  case "$name" in
    cove|bigrec|lcrec) bench run --method "$name" "${common[@]}" --preset gpu --set eval.max_valid_users=1000 \
                   $(call_budget "$name") ${model:+--model "$model"} "$@" ;;
    sasrec|gru4rec) bench run --method "$name" "${common[@]}" --max-train-minutes 8 "$@" ;;
    tiger) if has_method tiger; then bench run --method tiger "${common[@]}" --preset gpu "$@"
           else echo "tiger: not in methods/ yet, skipped" >&2; fi ;;
    speed) local methods=cove,bigrec,sasrec
           has_method tiger && methods=$methods,tiger
           has_method lcrec && methods=$methods,lcrec
           for batch in 32 1; do  # batch 32 first: the headline, and what done_already checks
             bench speed --dataset "$dataset" --device "$device" --methods "$methods" --num-prompts 64 \
               --repeats 3 --batch-size "$batch" --trained --precision auto --results-dir results \
               ${model:+--model "$model"} "$@"
             keep_new  # each batch size's record comes back even if the call is cut during the next
           done ;;
    *) bench run --method "$name" "${common[@]}" "$@" ;;
  esac
}

call_budget() {  # CoVE's 6-minute preset budget does not fit one call after the smoke step: 4.5 minutes did
  # (about 6 min in all on an H200: load, 4.5 min of training, validation, the 22,363-request test ranking)
  [ "$1" = cove ] && echo "--max-train-minutes 4.5" || true
}

done_already() {  # is this step's record in results/ (committed, or made earlier on this machine)?
  local name=$1 dataset=$2
  case "$name" in
    # batch 32 is the step's record; batch 1 is best effort (a call cut during it keeps the b32 record)
    speed) compgen -G "results/speed/$dataset-${device}-b32*.json" >/dev/null ;;
    tiger) step_recorded tiger "$dataset" --preset gpu ;;
    cove|bigrec|lcrec) step_recorded "$name" "$dataset" --preset gpu --set eval.max_valid_users=1000 \
                   $(call_budget "$name") ${model:+--model "$model"} ;;
    *) step_recorded "$name" "$dataset" --max-train-minutes 8 ;;
  esac
}

step_recorded() {  # bench run --dry-run: exit 0 when the identical config is already recorded
  local name=$1 dataset=$2; shift 2
  bench run --method "$name" --dataset "$dataset" --device "$device" --results-dir results --dry-run "$@" \
    >/dev/null 2>&1
}

keep_new() {  # copy what this call recorded into $OUT (runs/DATASET/x.json and its x.ranks.npz)
  [ -n "${OUT:-}" ] || return 0
  find results/runs results/speed \( -name '*.json' -o -name '*.npz' \) -newer "$stamp" 2>/dev/null |
    while read -r f; do
      rel=${f#results/}; mkdir -p "$OUT/$(dirname "$rel")"; cp "$f" "$OUT/$rel"; echo "kept $OUT/$rel" >&2
    done
}

case "${1:-}" in
  pack)
    dataset=${2:?usage: $0 pack DATASET}
    scripts/gpu_ship_gguf.sh split
    src=${BENCH_DATA_DIR:-../shared/data}
    rm -rf "$data" && mkdir -p "$data/amazon"
    cp -r "$src/amazon/$dataset" "$data/amazon/"
    # The device gets a copy of the tree without .git: the record's git_rev comes from here.
    echo "$(git rev-parse HEAD)$([ -n "$(git status --porcelain --untracked-files=no)" ] && echo +dirty)" \
      >"$data/GIT_REV"
    mkdir -p "$data/tiger_ids"
    for named in "$dataset" tiny; do  # tiny: `bench smoke` builds LC-Rec on it
      ids=$(.venv/bin/python scripts/tiger_semantic_ids.py "$named" | tail -1)
      cp "$ids" "${ids%.npy}.json" "$data/tiger_ids/"
    done
    rm -rf "$wheels" "$hf" && mkdir -p "$wheels" "$hf"
    pins=$(.venv/bin/python -c 'import transformers, peft; print(f"transformers=={transformers.__version__} peft=={peft.__version__}")')
    # shellcheck disable=SC2086
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$hf" $pins
    echo "$pins" >"$data/PINS"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$wheels" gguf==0.19.0 faiss-cpu==1.15.1
    du -sh .cache/gpu_ship/part* "$hf" "$data" "$wheels" >&2
    echo "calls carry: part1 + $hf; part2 + $data; part3 + $wheels (each under 64 MiB with the tree)" >&2 ;;
  stash)  # device, calls 1-2: keep the carried GGUF part; install the carried transformers/peft
    scripts/gpu_ship_gguf.sh stash
    install_wheels "$hf" ;;
  run)
    method=${2:?usage: $0 run METHOD DATASET [bench run args]}
    dataset=${3:?usage: $0 run METHOD DATASET [bench run args]}
    shift 3
    setup
    step "$method" "$dataset" "$@"
    keep_new ;;
  next)
    dataset=${2:-beauty}
    setup
    if [ ! -f /tmp/bench-smoke-ok ]; then
      bench smoke --device "$device" ${model:+--model "$model"}
      touch /tmp/bench-smoke-ok
    fi
    for name in $SEQUENCE; do
      if [ "$name" = tiger ] && ! has_method tiger; then echo "== tiger: not in methods/ yet, skipped" >&2; continue; fi
      if done_already "$name" "$dataset"; then echo "== $name: recorded, skipped" >&2; continue; fi
      echo "== $name on $dataset ($device)" >&2
      step "$name" "$dataset"
      keep_new
      exit 0
    done
    echo "== every step of the sequence is recorded for $dataset" >&2 ;;
  collect)  # here: copy a call's returned records into results/
    from=${2:?usage: $0 collect FILES_AT}
    find "$from" \( -name '*.json' -o -name '*.npz' \) | while read -r f; do
      rel=${f#"$from"/}; mkdir -p "results/$(dirname "$rel")"; cp "$f" "results/$rel"; echo "results/$rel"
    done ;;
  *) echo "usage: $0 pack DATASET | stash | next [DATASET] | run METHOD DATASET [bench run args] | collect DIR" >&2
     exit 2 ;;
esac
