"""BIGRec's decoding speed in fp32 and in bf16 on this CPU (SmolLM2-135M + LoRA, beam search).

Not a test: prints figures. Generation dominates BIGRec's inference; this times `generate()` (the
method's own, with its beams and a fixed number of new tokens, since untrained weights stop anywhere)
on real Beauty prompts, with the frozen weights stored in bf16 and autocast on, as precision="bf16"
runs, against fp32. Grounding (one FAISS search) is left out: it is the same in both.

    .venv/bin/python benchmarks/bigrec_precision.py --prompts 8 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.config import load_config, resolve_path
from bench.data.prepare import prepare
from bench.train.backbone import load_backbone
from bench.train.precision import cpu_supports_bf16, store_frozen_in_bf16
from methods.bigrec.generate import generate
from methods.bigrec.prompts import build_prompt, shorten_title


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=25, help="25 = Beauty's mean title length in tokens")
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config()
    dataset, _ = prepare("beauty", resolve_path(config, "data_dir", "BENCH_DATA_DIR", "../shared/data"),
                         resolve_path(config, "cache_dir", "BENCH_CACHE_DIR", ".cache"))
    titles = [shorten_title(dataset.catalogue.title_or(i), 0) for i in range(dataset.num_items)]
    prompts = [build_prompt([titles[i] for i in h[-10:]]) for h in dataset.split.test.histories[:args.prompts]]
    print(f"bf16 native on this CPU: {cpu_supports_bf16()}; {args.prompts} prompts, {args.beams} beams, "
          f"{args.new_tokens} new tokens, {torch.get_num_threads()} threads")
    for precision in ("fp32", "bf16"):
        from peft import LoraConfig, get_peft_model

        model, tokenizer = load_backbone("smollm2", "cpu", resolve_path(config, "cache_dir", "BENCH_CACHE_DIR",
                                                                        ".cache"))
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM")).eval()
        if precision == "bf16":
            store_frozen_in_bf16(model)
        generate(model, tokenizer, prompts[:1], num_beams=args.beams, max_new_tokens=4, exact_new_tokens=4,
                 precision=precision)  # warm-up
        started = time.perf_counter()
        for prompt in prompts:
            generate(model, tokenizer, [prompt], num_beams=args.beams, max_new_tokens=args.new_tokens,
                     exact_new_tokens=args.new_tokens, precision=precision)
        seconds = time.perf_counter() - started
        print(f"{precision}: {args.prompts / seconds:.3f} requests/s ({seconds / args.prompts:.2f} s each)", flush=True)


if __name__ == "__main__":
    main()
