"""CoVE inference speed and memory for SmolLM2-135M on Beauty prompts, per compression ratio.

Not a test: prints figures. Speed does not depend on how well the weights are trained, so the
model is built untrained (epochs = 0); ranking is the real path (one forward pass, item head
over all N items) timed by the shared evaluator on seeded test requests.

    .venv/bin/python benchmarks/cove_speed.py --ratios 1 8 --num-prompts 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.config import load_config, resolve_path
from bench.data.prepare import prepare
from bench.method import RunContext, seed_everything
from bench.runs.evaluate import evaluate
from bench.runs.run import subsample_cases
from methods.cove.method import CoVEMethod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--ratios", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if len(args.ratios) > 1:  # one process per ratio: a process's peak memory never goes back down
        for ratio in args.ratios:
            rest = [a for i, a in enumerate(sys.argv[1:]) if not _is_ratio_arg(sys.argv[1:], i)]
            subprocess.run([sys.executable, __file__, *rest, "--ratios", str(ratio)], check=True)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    config = load_config()
    dataset, _ = prepare(args.dataset, resolve_path(config, "data_dir", "BENCH_DATA_DIR", "../shared/data"),
                         resolve_path(config, "cache_dir", "BENCH_CACHE_DIR", ".cache"))
    cases = subsample_cases(dataset.split.test, args.num_prompts)
    print(f"{args.model} on {dataset.name}: {dataset.num_items} items; {len(cases)} test prompts, "
          f"batch {args.batch_size}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    for ratio in args.ratios:
        seed_everything(0)
        section = {**config["cove"], "model": args.model, "compression_ratio": ratio, "epochs": 0,
                   "eval_batch_size": args.batch_size}
        context = RunContext(device=args.device, work_dir=Path(tempfile.mkdtemp()), log=lambda _: None)
        method = CoVEMethod(section, context)
        method.fit(dataset)
        prompt_tokens = statistics.mean(len(method.encoder.prompt(h)) for h in cases.histories)
        evaluate(method, cases.subset(list(range(min(args.batch_size, len(cases))))), dataset.num_items, ks=(10,),
                 batch_size=args.batch_size, device=args.device, progress=False)  # warm-up
        # evaluate() measures each pass's peak from a fresh window (CUDA max allocated or CPU VmHWM).
        runs = [evaluate(method, cases, dataset.num_items, ks=(10,), batch_size=args.batch_size,
                         device=args.device, progress=False) for _ in range(args.repeats)]
        peak = max(r.peak_memory_mb for r in runs)
        info = method.describe()
        print(f"ratio {ratio:>2}: {statistics.median(r.samples_per_sec for r in runs):6.2f} samples/s "
              f"(runs {', '.join(f'{r.samples_per_sec:.2f}' for r in runs)}), peak memory {peak:,.0f} MB "
              f"({runs[0].peak_memory_kind}), "
              f"item tables {info['item_table_bytes'] / 2**20:.2f} MiB ({info['item_table_rows']} rows x 2, "
              f"uncompressed {info['item_table_bytes_uncompressed'] / 2**20:.2f} MiB), "
              f"mean prompt {prompt_tokens:.0f} tokens")
        del method
        gc.collect()


def _is_ratio_arg(argv: list[str], index: int) -> bool:
    """True for "--ratios" and the numbers after it."""
    start = argv.index("--ratios") if "--ratios" in argv else len(argv)
    end = start + 1
    while end < len(argv) and not argv[end].startswith("--"):
        end += 1
    return start <= index < end


if __name__ == "__main__":
    main()
