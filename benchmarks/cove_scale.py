"""CoVE at catalogue scale: item-table bytes, a training step and full-catalogue scoring for synthetic
catalogues of 100k to 10M items, per compression ratio, within this machine's memory.

Not a test: prints figures and writes results/scale/<name>.json plus a plot (rewritten atomically after every
point, so an interrupted sweep keeps what it measured), and its flat rows to results/perf/. Each (items,
ratio) point runs in its own process, so its peak RSS is its own, under an address-space limit (--memory-gb,
default 20 of this machine's 24): a point that does not fit fails with an allocation error and is recorded as
such, instead of waking the kernel's OOM killer beside other work. Scoring runs before the training step, so
the scoring peak is measured apart from the training step's. The training step is CoVE's sequence loss, an
exact item softmax whose log-sum-exp is chunked past 65,536 items (ItemHead.cross_entropy). Interaction
sequences are random (cost does not depend on them); item tokens are mapped to ids arithmetically (base
vocabulary + item), since adding 10M tokens through a tokenizer alone takes minutes and gigabytes. Scoring is
the harness's streamed ranking (bench.runs.evaluate.streamed_ranks): the hashed head gathers per item chunk,
never N x d.

    .venv/bin/python benchmarks/cove_scale.py --quick                       # tiny random backbone
    .venv/bin/python benchmarks/cove_scale.py --model smollm2 --items 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.runs.evaluate import ITEM_CHUNK, streamed_ranks
from bench.store.perf import write_perf
from bench.train.precision import cpu_supports_bf16
from bench.train.resources import busy_cores

BASE_VOCAB = 49152


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Scorer:
    """encode/score_items over a CoVEModel, the protocol bench.runs.evaluate streams."""

    name = "cove"

    def __init__(self, model: object, history: int) -> None:
        self.model, self.history = model, history

    def prompt(self, items: list[int]) -> torch.Tensor:
        return torch.tensor([BASE_VOCAB + i for i in items[-self.history:]])

    def encode(self, users: list[int], histories: list[list[int]]) -> torch.Tensor:
        ids = torch.stack([self.prompt(h) for h in histories])
        with torch.no_grad():
            return self.model.item_head.project(self.model.hidden_states(ids, torch.ones_like(ids))[:, -1])

    def score_items(self, encoded: torch.Tensor, start: int, end: int) -> torch.Tensor:
        with torch.no_grad():
            return self.model.item_head.logits_from(encoded, start, end)

    def score_targets(self, encoded: torch.Tensor, targets: list[int]) -> torch.Tensor | None:
        with torch.no_grad():
            return self.model.item_head.target_logits_from(encoded, torch.as_tensor(targets))


def one_point(items: int, ratio: int, model_spec: str, batch: int, requests: int, history: int) -> dict:
    from bench.train.backbone import load_backbone, tiny_llama
    from methods.cove.item_layers import item_softmax_form, item_table_bytes
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
    model.eval()
    scorer = Scorer(model, history)
    histories = torch.randint(0, items, (requests, history), generator=generator).tolist()
    targets = torch.randint(0, items, (requests,), generator=generator).tolist()
    started = time.perf_counter()
    for first in range(0, requests, batch):
        streamed_ranks(scorer, list(range(first, first + batch)), histories[first:first + batch],
                       targets[first:first + batch], items, ITEM_CHUNK, mask_history=False)
    score_s = time.perf_counter() - started
    scored = rss_mb()  # ru_maxrss: the peak so far, i.e. of building and scoring
    sequences = torch.randint(0, items, (batch, history + 1), generator=generator).tolist()
    ids = torch.tensor([[BASE_VOCAB + i for i in seq] for seq in sequences])
    model.train()
    started = time.perf_counter()
    loss = sequence_item_loss(model, ids, torch.ones_like(ids))
    loss.backward()
    step_s = time.perf_counter() - started
    trained = rss_mb()
    codes = model.item_head.codes
    return {"items": items, "ratio": ratio, "model": model_spec,
            "item_table_bytes": item_table_bytes(model.item_embedding, model.item_head),
            "hash_code_bytes": 2 * codes.numel() * codes.element_size(), "build_seconds": round(build_s, 2),
            "train_step_seconds": round(step_s, 3), "train_batch": batch, "history_items": history,
            "train_loss": f"sequence item CE, {item_softmax_form(items, 'sequence', ratio)}",
            "scoring_samples_per_sec": round(requests / score_s, 2), "scored_requests": requests,
            "rss_mb": {"before_model": round(baseline), "model_built": round(loaded),
                       "scoring_peak": round(scored), "peak": round(trained)},
            "torch_threads": torch.get_num_threads()}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, speed) = plt.subplots(1, 2, figsize=(10, 4))
    for ratio in sorted({p["ratio"] for p in points}):
        line = sorted((p for p in points if p["ratio"] == ratio), key=lambda p: p["items"])
        drawn = memory.plot([p["items"] for p in line], [p["rss_mb"]["peak"] / 1024 for p in line], marker="o",
                            label=f"ratio {ratio}: training step")
        memory.plot([p["items"] for p in line], [p["rss_mb"].get("scoring_peak", 0) / 1024 for p in line],
                    marker="x", linestyle="--", color=drawn[0].get_color(), label=f"ratio {ratio}: scoring")
        speed.plot([p["items"] for p in line], [p["scoring_samples_per_sec"] for p in line], marker="o",
                   label=f"ratio {ratio}")
    for axis, label in ((memory, "peak RSS (GB)"), (speed, "scoring requests/s (all items ranked)")):
        axis.set_title(f"CoVE, {points[0]['model'] if points else ''} backbone; missing points ran out of memory",
                       fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel("catalogue items")
        axis.set_ylabel(label)
        if points:
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
    parser.add_argument("--memory-gb", type=float, default=20.0, help="address-space limit of each point's process")
    parser.add_argument("--point", nargs=2, type=int, help=argparse.SUPPRESS)  # child process: items ratio
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.point:
        print(json.dumps(one_point(*args.point, args.model, args.batch, args.requests, args.history)))
        return
    if args.quick:
        args.model, args.items = "tiny", [100_000, 1_000_000]
    out = Path("results/scale") / f"{args.name or Path(args.model).name}.json"
    # The machine is a setting too: another machine's points are never taken for this one's.
    settings = {"model": args.model, "batch": args.batch, "requests": args.requests, "history": args.history,
                "threads": args.threads, "memory_limit_gb": args.memory_gb, "machine": _machine()["name"],
                "native_bf16": cpu_supports_bf16()}
    points = earlier_points(out, settings)  # a failed point is a recorded outcome (out of memory), not redone
    if all(any(p["items"] == i and p["ratio"] == r for p in points) for i in args.items for r in args.ratios):
        print(f"every point is in {out} already (an earlier sweep with these settings): nothing measured or "
              f"rewritten; delete it to measure again")
        return
    busy_before = busy_cores()
    for items in args.items:
        for ratio in args.ratios:
            if any(p["items"] == items and p["ratio"] == ratio for p in points):
                continue  # measured by an interrupted earlier sweep with the same settings
            point = run_point(items, ratio, args)
            points.append(point)
            if "failed" in point:
                print(f"{items:>10,} items, ratio {ratio:>2}: failed ({point['failed']})", flush=True)
            else:
                print(f"{items:>10,} items, ratio {ratio:>2}: "
                      f"tables {point['item_table_bytes'] / 2**20:8.1f} MiB, "
                      f"train step {point['train_step_seconds']:6.2f} s, "
                      f"scoring {point['scoring_samples_per_sec']:7.1f} req/s, "
                      f"build + scoring peak RSS {point['rss_mb']['scoring_peak'] / 1024:5.2f} GB, "
                      f"training step peak {point['rss_mb']['peak'] / 1024:5.2f} GB", flush=True)
            write(out, points, settings)
    write(out, points, settings)
    plot([p for p in points if "failed" not in p], out.with_suffix(".png"))
    perf = write_perf("cove_scale", [perf_row(p) for p in sorted(points, key=lambda p: (p["items"], p["ratio"]))],
                      busy_before, variant=out.stem, model=args.model, threads=args.threads, batch=args.batch,
                      requests=args.requests, history=args.history, memory_limit_gb=args.memory_gb,
                      full_record=str(out))
    print(f"wrote {out}, {out.with_suffix('.png')} and {perf}")


def perf_row(point: dict) -> dict:
    """One point as the flat row results/perf keeps: items, ratio, requests/s, peak RSS, train step s."""
    if "failed" in point:
        return {"items": point["items"], "ratio": point["ratio"], "outcome": point["failed"][:80]}
    return {"items": point["items"], "ratio": point["ratio"],
            "scoring_requests_per_sec": point["scoring_samples_per_sec"],
            "build_and_scoring_peak_rss_gb": round(point["rss_mb"]["scoring_peak"] / 1024, 2),
            "train_step_seconds": point["train_step_seconds"],
            "train_step_peak_rss_gb": round(point["rss_mb"]["peak"] / 1024, 2)}


def run_point(items: int, ratio: int, args: argparse.Namespace) -> dict:
    """One point in a child process under an address-space limit; a failure is a recorded outcome."""
    limit = int(args.memory_gb * 2**30)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    child = subprocess.run([sys.executable, __file__, "--point", str(items), str(ratio), "--model", args.model,
                            "--batch", str(args.batch), "--requests", str(args.requests), "--history",
                            str(args.history), "--threads", str(args.threads)],
                           capture_output=True, text=True, preexec_fn=cap_memory,
                           env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if child.returncode == 0:
        return json.loads(child.stdout.strip().splitlines()[-1])
    lines = child.stderr.strip().splitlines()
    reason = lines[-1] if lines else f"exit status {child.returncode}"
    if "alloc" in reason.lower() or "memory" in reason.lower() or child.returncode == -9:
        reason = f"out of memory under the {args.memory_gb:g} GB limit: {reason[:200]}"
    return {"items": items, "ratio": ratio, "model": args.model, "failed": reason}


def earlier_points(out: Path, settings: dict) -> list[dict]:
    if not out.exists():
        return []
    earlier = json.loads(out.read_text())
    return earlier["points"] if earlier.get("settings") == settings else []


def write(out: Path, points: list[dict], settings: dict) -> None:
    from bench.atomic import atomic_write_text
    from bench.store.results import git_revision

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"points": sorted(points, key=lambda p: (p["items"], p["ratio"])),
                                       "settings": settings, "command": sys.argv, "git_rev": git_revision(),
                                       "machine": _machine()}, indent=1) + "\n")


def _machine() -> dict:
    from bench.train.resources import hardware_info

    return hardware_info("cpu")


if __name__ == "__main__":
    main()
