#!/usr/bin/env bash
# Ship the SmolLM2 GGUF (98 MB) to the lent GPU machine, which takes at most 64 MiB per call.
# Three parts of ~33 MB, so the last call still has room for the data and wheels it carries
# (scripts/gpu_run.sh). The parts live under .cache/ (git-ignored, carried explicitly).
#
#   here:             scripts/gpu_ship_gguf.sh split            # part1..part3 + sha256
#   device calls 1-2: carry [".cache/gpu_ship/partN", ...], command: scripts/gpu_ship_gguf.sh stash
#   device call 3+:   carry [".cache/gpu_ship/part3", ...], command:
#                     env=$(scripts/gpu_ship_gguf.sh join) && eval "$env"   # re-verifies, prints the export
# scripts/gpu_run.sh wraps these (its header lists what else each call carries: the pinned transformers
# and peft with part 1, the data with part 2, wheels with part 3); use it rather than these by hand.
# The machine keeps files ~30 s after a call, so make the calls back to back.
set -euo pipefail
ship=.cache/gpu_ship
store=.cache/gpu_gguf
name=SmolLM2-135M-Instruct.Q4_1.gguf
parts=3

case "${1:-}" in
  split)
    src=${BENCH_SMOLLM2_GGUF:-$(.venv/bin/python -c 'from bench.train.backbone import smollm2_gguf; print(smollm2_gguf())')}
    rm -rf "$ship" && mkdir -p "$ship"
    size=$(stat -c %s "$src")
    chunk=$(( (size + parts - 1) / parts ))
    for i in $(seq 1 $parts); do
      mkdir -p "$ship/part$i"
      dd if="$src" of="$ship/part$i/gguf.part$i" bs=1M iflag=skip_bytes,count_bytes \
        skip=$(( (i - 1) * chunk )) count="$chunk" status=none
    done
    sha256sum "$src" | cut -d' ' -f1 >"$ship/part$parts/SHA256"
    ls -l "$ship"/part*/ >&2 ;;
  stash)  # device: keep the carried part where the next call's carry does not replace it
    mkdir -p "$store"
    found=0
    for f in "$ship"/part*/gguf.part*; do
      [ -f "$f" ] || continue
      mv "$f" "$store/$(basename "$f")" && found=1 && echo "stashed $(basename "$f")" >&2
    done
    [ -f "$ship/part$parts/SHA256" ] && cp "$ship/part$parts/SHA256" "$store/SHA256"
    [ "$found" = 1 ] || { echo "no GGUF part was carried" >&2; exit 1; } ;;
  join)   # device, last call (or later): reassemble, verify, print the export line for eval
    if [ ! -f "$store/$name" ]; then
      "$0" stash 2>/dev/null || true
      for i in $(seq 1 $parts); do
        [ -f "$store/gguf.part$i" ] || { echo "GGUF part $i missing: carry .cache/gpu_ship/part$i in an earlier call" >&2; exit 1; }
      done
      cat $(for i in $(seq 1 $parts); do echo "$store/gguf.part$i"; done) >"$store/$name.tmp"
      mv "$store/$name.tmp" "$store/$name"
    fi
    [ "$(sha256sum "$store/$name" | cut -d' ' -f1)" = "$(cat "$store/SHA256")" ] \
      || { echo "sha256 mismatch: $store/$name" >&2; rm -f "$store/$name"; exit 1; }
    echo "export BENCH_SMOLLM2_GGUF=$PWD/$store/$name" ;;
  *) echo "usage: $0 split|stash|join" >&2; exit 2 ;;
esac
