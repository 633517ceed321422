"""`bench smoke`: in about a minute, every LLM method builds on a device, trains two steps and ranks.

Why: a GPU is lent to few sessions and a CUDA-only bug (a tensor left on the CPU, a dtype
mismatch) would otherwise surface after loading data and minutes of a long run. Each method runs
through the real harness (`bench.runs.run.run`: config, fit, shared evaluator, record) on the `tiny`
fixture that ships with the repo, with its settings cut to two optimizer steps on 16 training users
and 8 scored requests: two, so weights that the first step left non-finite show as a non-finite loss in
the second, which stops the run (CoVE's first CUDA run trained minutes on NaN weights).
Records go to a temporary folder: a smoke run is a check, not a result.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SMOKE_DATASET = "tiny"
SMOKE_REQUESTS = 8
SMOKE_STEPS = 2
# Applied where a method's bench.toml section has the key (as bench speed's quick fit): one epoch of
# 16 users in batches of 8 is two optimizer steps; short generations keep BIGRec inside seconds.
SMOKE_SETTINGS: dict[str, Any] = {"epochs": 1, "max_train_users": 16, "batch_size": 8, "grad_accum": 1,
                                  "max_new_tokens": 8, "num_beams": 2, "eval_batch_size": 8,
                                  "max_eval_users": SMOKE_REQUESTS, "max_train_minutes": 0.0}


# On CUDA the speed switches the long runs may use are checked too (torch.compile'd scoring), so a compile
# failure on the lent device shows here, not minutes into a run.
CUDA_SMOKE_SETTINGS: dict[str, Any] = {"compile_scoring": True}


def smoke_overrides(method: str, section: dict[str, Any], device: str = "cpu") -> list[str]:
    from bench.config import overrides_where_present

    extra = overrides_where_present(method, section, CUDA_SMOKE_SETTINGS) if device.startswith("cuda") else []
    return [*overrides_where_present(method, section, SMOKE_SETTINGS), *extra,
            f"eval.max_eval_users={SMOKE_REQUESTS}", f"eval.max_valid_users={SMOKE_REQUESTS}"]


def smoke(methods: list[str], device: str, model: str | None = None, config: dict[str, Any] | None = None,
          log: Any = print) -> list[dict[str, Any]]:
    """Run each method once on the tiny fixture; raise BenchError naming the first that misbehaves."""
    from bench.config import load_config
    from bench.runs.run import run

    config = config if config is not None else load_config()
    summaries = []
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as folder:
        for method in methods:
            started = time.perf_counter()
            own_model = model if model is not None and "model" in config.get(method, {}) else None
            outcome = run(method, SMOKE_DATASET, overrides=smoke_overrides(method, config.get(method, {}), device),
                          model=own_model, device=device, force=True, results_dir=Path(folder), config=config,
                          progress=False, log=lambda _: None)
            record = outcome.record
            summary = {"method": method, "device": record["device"], "requests": record["num_eval_requests"],
                       "ndcg@10": record["metrics"]["ndcg@10"], "seconds": round(time.perf_counter() - started, 1),
                       "peak_memory_mb": record["peak_memory_mb"],
                       "optimizer_steps": record.get("method_info", {}).get("optimizer_steps")}
            if (summary["optimizer_steps"] or 0) < SMOKE_STEPS:
                raise BenchError(f"smoke {method} on {device}: expected {SMOKE_STEPS} optimizer steps, got "
                                 f"{summary['optimizer_steps']} (the second step is what catches non-finite weights)")
            values = list(record["metrics"].values())
            if record["num_eval_requests"] != SMOKE_REQUESTS or not all(0.0 <= v <= 1.0 and math.isfinite(v)
                                                                        for v in values):
                raise BenchError(f"smoke {method} on {device}: expected {SMOKE_REQUESTS} scored requests and "
                                 f"metrics in [0, 1], got {record['num_eval_requests']} and {record['metrics']}")
            log(f"smoke {method} on {device}: built, trained, {summary['requests']} requests ranked in "
                f"{summary['seconds']} s (peak {summary['peak_memory_mb']:.0f} MB): ok")
            summaries.append(summary)
    return summaries
