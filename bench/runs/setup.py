"""One run set-up for every command that reads a dataset: config -> registry -> paths -> card -> dataset.
`bench run`, `speed`, `rescore` and `data info` go through it, so they agree on where things are and the
card is read once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import load_config, resolve_path
from bench.data.cards import DatasetCard, load_card
from bench.data.prepare import card_facts, count_mismatches, prepare
from bench.data.types import Dataset
from bench.errors import BenchError
from bench.registry import Registry, configured_registry


@dataclass
class RunPaths:
    data_dir: Path
    cache_dir: Path
    results_dir: Path


def run_work_dir(cache_dir: Path, dataset: str, method: str, config_hash: str) -> Path:
    """Where a run keeps its checkpoints: one folder per dataset, method and config hash (rescore and
    speed --trained find a recorded run's weights by the same rule)."""
    return cache_dir / "work" / dataset / f"{method}-{config_hash}"


def run_paths(config: dict[str, Any], results_dir: Path | None = None) -> RunPaths:
    return RunPaths(
        data_dir=resolve_path(config, "data_dir", "BENCH_DATA_DIR", "../shared/data"),
        cache_dir=resolve_path(config, "cache_dir", "BENCH_CACHE_DIR", ".cache"),
        results_dir=results_dir or resolve_path(config, "results_dir", "BENCH_RESULTS_DIR", "results"),
    )


@dataclass
class Setup:
    """Everything a command needs before it computes: the config, its registry and paths, the card."""

    config: dict[str, Any]
    registry: Registry
    paths: RunPaths
    card: DatasetCard

    def prepare(self, force: bool = False) -> tuple[Dataset, dict[str, Any]]:
        """The dataset split and its facts (cached when the sources are unchanged)."""
        return prepare(self.card.name, self.paths.data_dir, self.paths.cache_dir, force=force, card=self.card)

    def mismatches(self, info: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        return count_mismatches(self.card, info)

    def card_record(self, info: dict[str, Any], allow_count_mismatch: bool = False) -> dict[str, Any]:
        """What a record says of the card; refuses data whose counts differ from it unless allowed."""
        mismatches = self.mismatches(info)
        if mismatches and not allow_count_mismatch:
            raise BenchError(f"dataset {self.card.name}: counts differ from its card (expected, got): {mismatches}; "
                             "fix the card or the data, or pass --allow-count-mismatch (recorded)")
        return {**card_facts(self.card), "count_mismatches": mismatches or None}


def set_up(dataset_name: str, config: dict[str, Any] | None = None, results_dir: Path | None = None,
           device: str = "cpu") -> Setup:
    """Read the config (unless given), the registry of its plugins and the dataset's card: a bad card (an
    unsafe name, a missing file) or a CUDA device this machine lacks fails here, before anything is written."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device is available on this machine")
    config = config if config is not None else load_config()
    paths = run_paths(config, results_dir)
    return Setup(config, configured_registry(config), paths, load_card(dataset_name, paths.data_dir))
