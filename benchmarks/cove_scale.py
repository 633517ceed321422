"""CoVE at catalogue scale: item-table bytes, a training step and full-catalogue scoring for synthetic
catalogues of 100k to 10M items, per compression ratio, within this machine's memory.

Not a test: prints figures and writes results/scale/<name>.json plus a plot. Each (items, ratio) point
runs in its own process, so its peak RSS is its own. Interaction sequences are random (cost does not
depend on them); item tokens are mapped to ids arithmetically (base vocabulary + item), since adding
10M tokens through a tokenizer alone takes minutes and gigabytes. Scoring is the harness's streamed
ranking (bench.evaluate.streamed_ranks): the hashed head gathers per item chunk, never N x d.

    .venv/bin/python benchmarks/cove_scale.py --quick                       # tiny random backbone
    .venv/bin/python benchmarks/cove_scale.py --model smollm2 --items 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.evaluate import ITEM_CHUNK, streamed_ranks

BASE_VOCAB = 49152


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Scorer:
    """encode/score_items over a CoVEModel, the protocol bench.evaluate streams."""

    name = "cove"

    def __init__(self, model: object, history: int) -> None:
        self.model, self.history = model, history

    def prompt(self, items: list[int]) -> torch.Tensor:
        return torch.tensor([BASE_VOCAB + i for i in items[-self.history:]])

    def encode(self, users: list[int], histories: list[list[int]]) -> torch.Tensor:
        ids = torch.stack([self.prompt(h) for h in histories])
        with torch.no_grad():
            return self.model.hidden_states(ids, torch.ones_like(ids))[:, -1].float()

    def score_items(self, hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        with torch.no_grad():
            return self.model.item_head.logits(hidden, start, end)


def one_point(items: int, ratio: int, model_spec: str, batch: int, requests: int, history: int) -> dict:
    from bench.backbone import load_backbone, tiny_llama
    from methods.cove.item_layers import item_table_bytes
    from methods.cove.model import CoVEModel, attach_lora
    from methods.cove.trainer import sequence_item_loss

    baseline = rss_mb()
    lm = tiny_llama(BASE_VOCAB, hidden=64, layers=2) if model_spec == "tiny" else \
        load_backbone(model_spec, "cpu", Path(".cache"))[0]
    lm = attach_lora(lm, 8, 16, 0.0, ["q_proj", "v_proj"])
    built = time.perf_counter()
    model = CoVEModel(lm, BASE_VOCAB, items, ratio, 4, 0)
    build_s = time.perf_counter() - built
    loaded = rss_mb()
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randint(0, items, (batch, history + 1), generator=generator).tolist()
    ids = torch.tensor([[BASE_VOCAB + i for i in seq] for seq in sequences])
    model.train()
    started = time.perf_counter()
    loss = sequence_item_loss(model, ids, torch.ones_like(ids))
    loss.backward()
    step_s = time.perf_counter() - started
    trained = rss_mb()
    model.zero_grad(set_to_none=True)
    model.eval()
    scorer = Scorer(model, history)
    histories = torch.randint(0, items, (requests, history), generator=generator).tolist()
    targets = torch.randint(0, items, (requests,), generator=generator).tolist()
    started = time.perf_counter()
    for first in range(0, requests, batch):
        streamed_ranks(scorer, list(range(first, first + batch)), histories[first:first + batch],
                       targets[first:first + batch], items, ITEM_CHUNK, mask_history=False)
    score_s = time.perf_counter() - started
    codes = model.item_head.codes
    return {"items": items, "ratio": ratio, "model": model_spec,
            "item_table_bytes": item_table_bytes(model.item_embedding, model.item_head),
            "hash_code_bytes": 2 * codes.numel() * codes.element_size(), "build_seconds": round(build_s, 2),
            "train_step_seconds": round(step_s, 3), "train_batch": batch, "history_items": history,
            "scoring_samples_per_sec": round(requests / score_s, 2), "scored_requests": requests,
            "rss_mb": {"before_model": round(baseline), "model_built": round(loaded),
                       "after_train_step": round(trained), "peak": round(rss_mb())},
            "torch_threads": torch.get_num_threads()}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, speed) = plt.subplots(1, 2, figsize=(10, 4))
    for ratio in sorted({p["ratio"] for p in points}):
        line = sorted((p for p in points if p["ratio"] == ratio), key=lambda p: p["items"])
        memory.plot([p["items"] for p in line], [p["rss_mb"]["peak"] / 1024 for p in line], marker="o",
                    label=f"ratio {ratio}")
        speed.plot([p["items"] for p in line], [p["scoring_samples_per_sec"] for p in line], marker="o",
                   label=f"ratio {ratio}")
    for axis, label in ((memory, "peak RSS (GB)"), (speed, "scoring requests/s (all items ranked)")):
        axis.set_xscale("log")
        axis.set_xlabel("catalogue items")
        axis.set_ylabel(label)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--ratios", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--model", default="tiny", help="tiny (random d=64 Llama) or smollm2 / a local folder")
    parser.add_argument("--quick", action="store_true", help="tiny backbone, 100k and 1M items")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None, help="results/scale/<name>.json (default: the model)")
    parser.add_argument("--point", nargs=2, type=int, help=argparse.SUPPRESS)  # child process: items ratio
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.point:
        print(json.dumps(one_point(*args.point, args.model, args.batch, args.requests, args.history)))
        return
    if args.quick:
        args.model, args.items = "tiny", [100_000, 1_000_000]
    points = []
    for items in args.items:
        for ratio in args.ratios:
            child = subprocess.run([sys.executable, __file__, "--point", str(items), str(ratio), "--model", args.model,
                                    "--batch", str(args.batch), "--requests", str(args.requests), "--history",
                                    str(args.history), "--threads", str(args.threads)],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                print(f"{items:>10,} items, ratio {ratio:>2}: failed ({child.stderr.strip().splitlines()[-1:]})")
                continue
            point = json.loads(child.stdout.strip().splitlines()[-1])
            points.append(point)
            print(f"{items:>10,} items, ratio {ratio:>2}: tables {point['item_table_bytes'] / 2**20:8.1f} MiB, "
                  f"train step {point['train_step_seconds']:6.2f} s, scoring {point['scoring_samples_per_sec']:7.1f} "
                  f"req/s, peak RSS {point['rss_mb']['peak'] / 1024:5.2f} GB", flush=True)
    out = Path("results/scale") / f"{args.name or Path(args.model).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"points": points, "command": sys.argv, "machine": _machine()}, indent=1) + "\n")
    plot(points, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _machine() -> dict:
    from bench.resources import hardware_info

    return hardware_info("cpu")


if __name__ == "__main__":
    main()
