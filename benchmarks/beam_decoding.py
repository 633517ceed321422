"""Beam search with the prompt shared by the beams (bench.train.beam_search) against Hugging Face's plain
beam search, on the same model, the same requests and in the same process: seconds per request at batch 1
and batch B, and whether both return the same beams.

Not a test: prints figures and writes them to results/perf/beam_decoding-<machine>.json. Two shapes:
`bigrec` (a ~300-token title prompt, 4 beams, 16 new tokens: a title's length) and `lcrec` (an ID-only prompt
of ~60 tokens, 20 beams, 4 new tokens: one semantic ID). Untrained weights: decoding cost does not depend
on them, since the lengths are fixed here.

    .venv/bin/python benchmarks/beam_decoding.py --threads 1 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.config import load_config, resolve_path
from bench.store.perf import write_perf
from bench.train.backbone import load_backbone
from bench.train.beam_search import beam_generate
from bench.train.resources import busy_cores

SHAPES = {"bigrec": {"prompt": 300, "beams": 4, "new": 16}, "lcrec": {"prompt": 60, "beams": 20, "new": 4}}


def requests(count: int, length: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab - 100, (count, length), generator=generator)
    return ids, torch.ones_like(ids)


def timed(decode, ids: torch.Tensor, mask: torch.Tensor, batch: int) -> tuple[float, list[torch.Tensor]]:
    outputs, start = [], time.perf_counter()
    for first in range(0, len(ids), batch):
        outputs.append(decode(ids[first:first + batch], mask[first:first + batch]))
    return time.perf_counter() - start, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16, help="requests per measurement (a multiple of B)")
    parser.add_argument("--shapes", default="bigrec,lcrec")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config()
    model, tokenizer = load_backbone(args.model, "cpu", resolve_path(config, "cache_dir", "BENCH_CACHE_DIR", ".cache"))
    model.eval()
    rows, busy_before = [], busy_cores()
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        ids, mask = requests(args.requests, shape["prompt"], len(tokenizer), seed=0)
        settings = dict(num_beams=shape["beams"], num_return_sequences=shape["beams"], max_new_tokens=shape["new"],
                        min_new_tokens=shape["new"], do_sample=False, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        def plain(i: torch.Tensor, m: torch.Tensor, s: dict = settings) -> torch.Tensor:
            return model.generate(input_ids=i, attention_mask=m, **s)

        def shared(i: torch.Tensor, m: torch.Tensor, s: dict = settings) -> torch.Tensor:
            return beam_generate(model, i, m, **s)

        with torch.no_grad():
            for batch in sorted({1, args.batch_size}):
                plain_s, plain_out = timed(plain, ids, mask, batch)
                shared_s, shared_out = timed(shared, ids, mask, batch)
                same = all(torch.equal(a, b) for a, b in zip(plain_out, shared_out))
                row = {"shape": name, **shape, "batch": batch, "requests": len(ids),
                       "plain_s_per_request": round(plain_s / len(ids), 4),
                       "shared_s_per_request": round(shared_s / len(ids), 4),
                       "speedup": round(plain_s / shared_s, 2), "same_beams": same}
                print(json.dumps(row), flush=True)
                rows.append(row)
    out = write_perf("beam_decoding", rows, busy_before, model=args.model, threads=args.threads)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
