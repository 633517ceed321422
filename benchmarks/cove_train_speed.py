"""CoVE training throughput against this machine's limit: tokens/s of the `cpu` preset's training step
(ID-only sequences, the item loss at every item position, LoRA on q/v, AdamW), in fp32 and in bf16 (where
the CPU has native bf16: frozen weights stored in bf16 once, autocast, fp32 item logits, as the trainer),
with the backbone's attention through PyTorch's SDPA kernel and through Hugging Face's eager matmuls.

Not a test: prints figures and writes them to results/perf/cove_train_speed-<machine>.json. Batches are
synthetic but shaped as Beauty's (16 sequences of ~24 tokens, an item token every other position after a
short preamble); speed does not depend on the weights. The FLOPs count the decoder forward (2 x weights
per token) and the input-gradient backward (another 2 x; frozen weights need no weight gradient), plus the
item softmax (3 x 2 x d x N per target); the peak is a matmul of the backbone's MLP shape.

    .venv/bin/python benchmarks/cove_train_speed.py --threads 2 --steps 12
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.config import load_config, resolve_path
from bench.store.perf import write_perf
from bench.train.backbone import load_backbone
from bench.train.precision import autocast, cpu_supports_bf16, store_frozen_in_bf16
from bench.train.resources import busy_cores, matmul_peak
from methods.cove.model import CoVEModel, attach_lora
from methods.cove.trainer import sequence_item_loss

PREAMBLE_TOKENS = 8  # the ID-only prompt's fixed words before the first item


def beauty_like_batch(batch: int, tokens: int, vocab: int, items: int,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, tokens) ids and mask: a preamble of ordinary tokens, then item token / separator pairs; every
    other row left-padded by 2 tokens, as a length bucket's shorter sequences are (the attention mask then
    takes the masked path, as in training)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, tokens), generator=generator)
    item_positions = torch.arange(PREAMBLE_TOKENS, tokens, 2)
    ids[:, item_positions] = vocab + torch.randint(0, items, (batch, len(item_positions)), generator=generator)
    mask = torch.ones_like(ids)
    mask[1::2, :2] = 0
    return ids, mask


def build(items: int) -> tuple[CoVEModel, int]:
    cache = resolve_path(load_config(), "cache_dir", "BENCH_CACHE_DIR", ".cache")
    lm, _ = load_backbone("smollm2", "cpu", cache)
    lm = attach_lora(lm, 8, 16.0, 0.0, ["q_proj", "v_proj"])
    vocab = lm.get_input_embeddings().weight.shape[0]
    return CoVEModel(lm, vocab, items).train(), vocab


def time_steps(model: CoVEModel, ids: torch.Tensor, mask: torch.Tensor, precision: str,
               steps: int) -> tuple[float, float, float]:
    """Median seconds per optimizer step (forward, backward, AdamW), first step's seconds, last loss."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, loss = [], torch.zeros(())
    for _ in range(steps + 1):
        start = time.perf_counter()
        with autocast("cpu", precision):
            loss = sequence_item_loss(model, ids, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2], times[0], float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the cpu preset's batch")
    parser.add_argument("--tokens", type=int, nargs="+", default=[24, 48], help="sequence lengths (Beauty ~23)")
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--attention", nargs="+", default=["sdpa", "eager"], choices=["sdpa", "eager"],
                        help="the backbone's attention implementations to time (Hugging Face's names)")
    args = parser.parse_args()
    busy_before = busy_cores()
    torch.set_num_threads(args.threads)
    model, vocab = build(args.items)
    config = model.causal_lm.config
    decoder = model.causal_lm.get_decoder()
    weights = sum(p.numel() for n, p in decoder.named_parameters() if p.dim() == 2 and "embed" not in n)
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    if len(precisions) == 1:
        print("no native bf16 on this CPU (avx512_bf16/amx): fp32 only")
    rows = []
    for precision in precisions:
        if precision == "bf16":
            store_frozen_in_bf16(model)
        peak = matmul_peak(config.hidden_size, config.intermediate_size,
                           torch.bfloat16 if precision == "bf16" else torch.float32)
        for tokens, attention in [(t, a) for t in args.tokens for a in args.attention]:
            ids, mask = beauty_like_batch(args.batch_size, tokens, vocab, args.items)
            targets = args.batch_size * (len(range(PREAMBLE_TOKENS, tokens, 2)) - 1)
            model.causal_lm.config._attn_implementation = attention
            seconds, first, loss = time_steps(model, ids, mask, precision, args.steps)
            per_token = 4 * weights + 8 * config.num_hidden_layers * tokens * config.hidden_size
            flops = args.batch_size * tokens * per_token + targets * 6 * config.hidden_size * args.items
            row = {"precision": precision, "attention": attention, "batch": args.batch_size, "tokens": tokens,
                   "item_targets": targets,
                   "step_s": round(seconds, 3), "tokens_per_s": round(args.batch_size * tokens / seconds, 1),
                   "gflop_per_s": round(flops / seconds / 1e9, 1), "peak_gflop_per_s": round(peak, 1),
                   "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3), "first_step_s": round(first, 2),
                   "loss": round(loss, 3)}
            rows.append(row)
            print(f"{precision} {attention} attention, batch {args.batch_size} x {tokens} tokens: "
                  f"{row['tokens_per_s']:,.0f} tokens/s "
                  f"({seconds:.3f} s/step) = {row['gflop_per_s']:.0f} GFLOP/s, {row['fraction_of_peak']:.0%} of "
                  f"the {peak:.0f} GFLOP/s matmul peak; loss {loss:.3f}", flush=True)
    for row in rows:
        fp32 = next(r for r in rows if r["precision"] == "fp32" and r["tokens"] == row["tokens"]
                    and r["attention"] == args.attention[0])
        row[f"speedup_over_fp32_{args.attention[0]}"] = round(row["tokens_per_s"] / fp32["tokens_per_s"], 2)
    out = write_perf("cove_train_speed", rows, busy_before, model="smollm2", threads=args.threads,
                     lora="rank 8 on q_proj, v_proj", loss="sequence item CE (cpu preset)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
