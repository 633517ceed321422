#!/usr/bin/env bash
# Ship the SmolLM2 GGUF (98 MB) to the lent GPU machine, which takes at most 64 MiB per call.
# The parts live under .cache/ (git-ignored, so they can be carried and stay on a warm machine).
#
#   here:            scripts/gpu_ship_gguf.sh split           # two halves + sha256
#   device call 1:   carry [".cache/gpu_ship/part1"], command: scripts/gpu_ship_gguf.sh stash
#   device call 2:   carry [".cache/gpu_ship/part2"], command:
#                    eval "$(scripts/gpu_ship_gguf.sh join)" && bench run ... --device cuda
#   later calls:     eval "$(scripts/gpu_ship_gguf.sh join)"  # re-verifies, prints the export again
set -euo pipefail
ship=.cache/gpu_ship
store=.cache/gpu_gguf
name=SmolLM2-135M-Instruct.Q4_1.gguf

case "${1:-}" in
  split)
    src=${BENCH_SMOLLM2_GGUF:-$(.venv/bin/python -c 'from bench.backbone import smollm2_gguf; print(smollm2_gguf())')}
    rm -rf "$ship" && mkdir -p "$ship/part1" "$ship/part2"
    half=$(( ($(stat -c %s "$src") + 1) / 2 ))
    head -c "$half" "$src" >"$ship/part1/gguf.part"
    tail -c +"$((half + 1))" "$src" >"$ship/part2/gguf.part"
    sha256sum "$src" | cut -d' ' -f1 >"$ship/part2/SHA256"
    ls -l "$ship"/part*/ >&2 ;;
  stash)  # device, call 1: keep part 1 where the next call's carry does not replace it
    mkdir -p "$store" && mv "$ship/part1/gguf.part" "$store/part1" && echo "stashed part 1" >&2 ;;
  join)   # device, call 2 (or later): reassemble, verify, print the export line for eval
    if [ ! -f "$store/$name" ]; then
      cat "$store/part1" "$ship/part2/gguf.part" >"$store/$name.tmp"
      cp "$ship/part2/SHA256" "$store/SHA256"
      mv "$store/$name.tmp" "$store/$name"
    fi
    [ "$(sha256sum "$store/$name" | cut -d' ' -f1)" = "$(cat "$store/SHA256")" ] \
      || { echo "sha256 mismatch: $store/$name" >&2; rm -f "$store/$name"; exit 1; }
    echo "export BENCH_SMOLLM2_GGUF=$PWD/$store/$name" ;;
  *) echo "usage: $0 split|stash|join" >&2; exit 2 ;;
esac
