#!/usr/bin/env bash
# One-shot full-data run on the lent GPU machine (no network, 64 MiB per call, 10 min per call).
#
#   here:          scripts/gpu_run.sh pack beauty     # GGUF parts, the dataset's files, wheels
#   device call 1: carry [".cache/gpu_ship/part1"], command: scripts/gpu_ship_gguf.sh stash
#   device call 2: carry [".cache/gpu_ship/part2"], command: scripts/gpu_ship_gguf.sh stash
#   device call 3: carry [".cache/gpu_ship/part3", ".cache/gpu_data", ".cache/gpu_wheels"],
#                  command: scripts/gpu_run.sh run cove beauty      (or: run bigrec beauty)
#   then here:     copy the record from the call's files into results/runs/<dataset>/ and commit.
#
# `run` installs the carried wheels (gguf for the GGUF loader, faiss-cpu for BIGRec; the machine's
# image has torch, transformers, peft, accelerate, pandas and typer), joins and verifies the GGUF,
# and runs `bench run --device cuda --preset gpu` (bf16; the preset's time budget keeps it inside
# one call; validation on a seeded 1,000 requests) with the record written to $OUT. Extra
# arguments go to `bench run`.
set -euo pipefail
data=.cache/gpu_data
wheels=.cache/gpu_wheels

case "${1:-}" in
  pack)
    dataset=${2:?usage: $0 pack DATASET}
    scripts/gpu_ship_gguf.sh split
    src=${BENCH_DATA_DIR:-../shared/data}
    rm -rf "$data" && mkdir -p "$data/amazon"
    cp -r "$src/amazon/$dataset" "$data/amazon/"
    # The device gets a copy of the tree without .git: the record's git_rev comes from here.
    echo "$(git rev-parse HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo +dirty)" \
      >"$data/GIT_REV"
    rm -rf "$wheels" && mkdir -p "$wheels"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$wheels" gguf==0.19.0 faiss-cpu==1.15.1
    du -sh .cache/gpu_ship/part3 "$data" "$wheels" >&2
    echo "last call carries: .cache/gpu_ship/part3 $data $wheels (keep under 64 MiB with the tree)" >&2 ;;
  run)
    method=${2:?usage: $0 run METHOD DATASET [bench run args]}
    dataset=${3:?usage: $0 run METHOD DATASET [bench run args]}
    shift 3
    python=${PYTHON:-python3}
    if compgen -G "$wheels/*.whl" >/dev/null; then
      "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheels"/*.whl
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    eval "$(scripts/gpu_ship_gguf.sh join)"
    export BENCH_DATA_DIR=$PWD/$data PYTHONUNBUFFERED=1
    [ -f "$data/GIT_REV" ] && export BENCH_GIT_REV="$(cat "$data/GIT_REV") (copy on the GPU machine)"
    device=${BENCH_GPU_DEVICE:-cuda}  # cpu only to rehearse this script without a GPU
    "$python" -m bench.cli run --method "$method" --dataset "$dataset" --device "$device" --preset gpu \
      --set eval.max_valid_users=1000 --results-dir "${OUT:-results}" "$@" ;;
  *) echo "usage: $0 pack DATASET | run METHOD DATASET [bench run args]" >&2; exit 2 ;;
esac
