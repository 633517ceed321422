"""CoVE inference against this machine's limit: model FLOPs per token, achieved tokens/s, and the
fraction of the measured matmul peak, in fp32 and in bf16 (where the CPU has native bf16), eager and, with
--compile, through torch.compile (inductor), which must give the same top-20 items.

Not a test: prints figures and writes them to results/perf/cove_flops-<machine>.json. The peak is a large
matmul of the backbone's own shape; the achieved rate is the real CoVE scoring path (CoVEModel.item_scores:
decoder forward over left-padded ID-only prompts, then the item head at the last position), untrained
weights (speed does not depend on them).

    .venv/bin/python benchmarks/cove_flops.py --threads 2 --batch-size 32 --tokens 56 --compile
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.config import load_config, resolve_path
from bench.store.perf import write_perf
from bench.train.backbone import load_backbone
from bench.train.precision import cpu_supports_bf16
from bench.train.resources import busy_cores, matmul_peak
from methods.cove.model import CoVEModel, attach_lora


def flops_per_token(model: CoVEModel, context: int) -> float:
    """2 x the decoder's matmul weights, plus attention scores and values (2 x 2 x layers x context x d).
    Embedding lookups cost no FLOPs; the item head runs at one position per request (counted apart)."""
    config = model.causal_lm.config
    decoder = model.causal_lm.get_decoder()
    weights = sum(p.numel() for n, p in decoder.named_parameters() if p.dim() == 2 and "embed" not in n)
    return 2 * weights + 4 * config.num_hidden_layers * context * config.hidden_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=56, help="prompt length (Beauty ID-only: ~39 + 2 per item)")
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd scoring")
    args = parser.parse_args()
    busy_before = busy_cores()
    torch.set_num_threads(args.threads)
    cache = resolve_path(load_config(), "cache_dir", "BENCH_CACHE_DIR", ".cache")
    lm, _ = load_backbone("smollm2", "cpu", cache)
    lm = attach_lora(lm, 8, 16.0, 0.0, ["q_proj", "v_proj"])
    vocab = lm.get_input_embeddings().weight.shape[0]
    model = CoVEModel(lm, vocab, args.items).eval()
    config = model.causal_lm.config
    per_token = flops_per_token(model, args.tokens)
    head = 2 * config.hidden_size * args.items  # one item-head row product per item, last position only
    print(f"SmolLM2-135M decoder: {per_token / 1e6:.0f} MFLOP/token at context {args.tokens}; item head "
          f"{head / 1e6:.0f} MFLOP/request; {args.threads} threads, batch {args.batch_size} x {args.tokens} tokens")
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    if len(precisions) == 1:
        print("no native bf16 on this CPU (avx512_bf16/amx): fp32 only")
    ids = torch.randint(0, vocab, (args.batch_size, args.tokens))
    ids[:, -1] = vocab + 5  # an item token, as in a real prompt
    mask = torch.ones_like(ids)
    rows = []
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if precision == "bf16":
            for param in model.causal_lm.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
        peak = matmul_peak(config.hidden_size, config.intermediate_size, dtype)
        modes = {"eager": model.item_scores}
        if args.compile:
            modes["compiled"] = torch.compile(model.item_scores, dynamic=False)
        reference = None
        for mode, score in modes.items():
            times = []
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                start = time.perf_counter()
                out = score(ids, mask)  # warm-up (and, compiled, the compilation)
                warmup = time.perf_counter() - start
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    out = score(ids, mask)
                    times.append(time.perf_counter() - start)
            top = out.float().topk(20).indices
            reference = top if reference is None else reference
            shared = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top, reference))
            seconds = sorted(times)[len(times) // 2]
            tokens_per_sec = args.batch_size * args.tokens / seconds
            achieved = (args.batch_size * args.tokens * per_token + args.batch_size * head) / seconds / 1e9
            row = {"precision": precision, "mode": mode, "batch": args.batch_size, "tokens": args.tokens,
                   "tokens_per_s": round(tokens_per_sec, 1), "requests_per_s": round(args.batch_size / seconds, 2),
                   "gflop_per_s": round(achieved, 1), "peak_gflop_per_s": round(peak, 1),
                   "fraction_of_peak": round(achieved / peak, 3), "first_call_s": round(warmup, 2),
                   "same_top20_as_eager": bool(torch.equal(top, reference)),
                   "top20_items_shared_with_eager": round(shared / top.numel(), 3)}
            rows.append(row)
            print(f"{precision} {mode}: matmul peak {peak:.0f} GFLOP/s; CoVE scoring {tokens_per_sec:,.0f} tokens/s "
                  f"= {args.batch_size / seconds:.1f} requests/s = {achieved:.0f} GFLOP/s, {achieved / peak:.0%} of "
                  f"peak (first call {warmup:.1f} s; same top-20 as eager: {row['same_top20_as_eager']}, "
                  f"{row['top20_items_shared_with_eager']:.1%} of its items)",
                  flush=True)
    out = write_perf("cove_flops", rows, busy_before, model="smollm2", threads=args.threads,
                     mflop_per_token=round(per_token / 1e6, 1), item_head_mflop_per_request=round(head / 1e6, 1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
