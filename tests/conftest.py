"""Shared fixtures: the real-data dir (skip with a reason when absent) and isolated paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    candidate = Path(os.environ.get("BENCH_DATA_DIR", REPO.parent / "shared" / "data"))
    return candidate if (candidate / "amazon").exists() else None


@pytest.fixture
def real_data_dir() -> Path:
    data_dir = shared_data_dir()
    if data_dir is None:
        pytest.skip("real Amazon data not found: set BENCH_DATA_DIR to the shared data folder")
    return data_dir


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results and cache in a temp folder so tests never touch the repo's results/."""
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def tiny_model_threads() -> int:
    """torch threads for tiny-model tests: 1 by default (a tiny model gains nothing from more, and on a
    shared 2-core machine spinning threads made them ten times slower); BENCH_TEST_THREADS=2 reruns the
    learning tests on another floating-point path, as their robustness check."""
    return int(os.environ.get("BENCH_TEST_THREADS", "1"))

