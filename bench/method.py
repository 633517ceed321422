"""The contract between the harness and a recommender plugin.

The harness owns data, splitting, batching, timing and metrics; a method only learns
from `dataset.split.train` and answers "score every item for these histories".
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.types import Dataset
from bench.errors import BenchError


def harness_cache_dir() -> Path:
    """The cache dir a run uses (BENCH_CACHE_DIR > bench.toml [paths] > .cache), for a context built by hand."""
    from bench.config import load_config, resolve_path

    try:
        config = load_config()
    except BenchError:
        config = {"paths": {}}
    return resolve_path(config, "cache_dir", "BENCH_CACHE_DIR", ".cache")


@dataclass
class RunContext:
    """What the harness lends a method for one run."""

    device: str = "cpu"
    seed: int = 0
    work_dir: Path = Path(".cache/work")
    # Where methods keep what outlives a run (backbones, title embeddings, semantic IDs): the harness's.
    cache_dir: Path = field(default_factory=harness_cache_dir)
    max_train_minutes: float | None = None
    # validate(method) -> validation NDCG@10 with the shared evaluator (for early stopping).
    validate: Callable[[Method], float] | None = None
    log: Callable[[str], None] = print
    notes: dict[str, Any] = field(default_factory=dict)
    # fit() may only load a finished training from work_dir (bench rescore, bench speed --trained): a
    # method that would train instead raises BenchError (see Method.loads_finished_runs).
    resume_only: bool = False
    # The method's [hash_neutral] keys and their neutral values (bench.toml): a work dir's key leaves them out
    # at those values, as run records do (bench.settings.training_identity).
    hash_neutral: dict[str, Any] = field(default_factory=dict)


def nothing_to_load(work_dir: Path, method: str, why: str) -> BenchError:
    """The error of a resume_only fit() that found no finished training to load."""
    return BenchError(f"{work_dir}: no finished {method} training to load ({why}); recorded weights can only be "
                      "reused from the run's own work dir, unchanged since the run")


class Method(ABC):
    """Base class for plugins. Subclasses set `name` and implement fit/score."""

    name: str = "method"
    # True when fit() and score() are correct under torchrun with several ranks (each rank trains on its
    # slice of every batch with summed gradients, or there is nothing to train); others refuse a launch.
    data_parallel: bool = False
    # True when fit() honours RunContext.resume_only: with a finished training in work_dir it only loads,
    # and without one it raises instead of training. Reusing recorded weights needs this (or refits_exactly).
    loads_finished_runs: bool = False
    # False when score() ranks only a shortlist (a beam) and ties every other item below it: masking history
    # items out of the shortlist would leave fewer than K ranked items, so eval.mask_history is refused.
    scores_every_item: bool = True
    # True when fit() reproduces the same model from the data alone (counting): `bench rescore` and
    # `bench speed --trained` then need no saved weights.
    refits_exactly: bool = False
    # True when the method implements encode() and score_items(): the evaluator then ranks huge catalogues
    # in item chunks (memory O(batch x chunk)) instead of asking score() for a batch x N matrix.
    scores_item_slices: bool = False
    # Settings of the method's section that change only how a trained model scores, never its training or the
    # epoch it keeps (BIGRec's grounding gamma): `bench evaluate` may change them on a recorded run's weights.
    evaluation_keys: tuple[str, ...] = ()
    # Settings forced while `bench speed` times the method: a cache that would skip the timed work (BIGRec's
    # reuse_generations) must not turn a decoding speed into a lookup speed.
    timing_overrides: dict[str, Any] = {}

    # A method with a typed settings parser of its own sets this (staticmethod; raises BenchError); its
    # result is `self.settings`.
    settings_parser: Callable[[dict[str, Any]], Any] | None = None

    def __init__(self, config: dict[str, Any], context: RunContext) -> None:
        self.config = config
        self.context = context
        self.settings: Any = self.settings_parser(config) if self.settings_parser is not None else None
        # Running totals a scorer keeps for describe() (requests, prompt tokens, tokens decoded): the
        # evaluator carries them over a resumed ranking's calls and sums them over torchrun ranks, so a
        # record counts every request it ranked, not only the last call's or rank 0's.
        self.scoring_counts: Counter[str] = Counter()

    @classmethod
    def check_config(cls, config: dict[str, Any], defaults: dict[str, Any], source: str) -> None:
        """Refuse a bad section before any data is read (BenchError naming `source` and the key).

        With a `settings_parser`, that parser decides; otherwise each value is checked against the
        type of its bench.toml default."""
        from bench.config import check_like_default
        from bench.errors import BenchError

        if cls.settings_parser is not None:
            try:
                cls.settings_parser(config)
            except BenchError as error:  # the parser's message, named by where the value came from
                raise BenchError(f"{source} {error}".replace(f"bench.toml [{cls.name}].", f"{cls.name}.")) from None
            return
        for key, value in config.items():
            if key in defaults and key not in ("presets", "preset"):
                check_like_default(f"{source} {cls.name}.{key}", defaults[key], value)

    @abstractmethod
    def fit(self, dataset: Dataset) -> None:
        """Train on `dataset.split.train` (validation cases may be used for selection)."""

    @abstractmethod
    def score(self, users: list[int], histories: list[list[int]]) -> Any:
        """Return a (B, num_items) array or tensor: a score for every item, higher is better."""

    def encode(self, users: list[int], histories: list[list[int]]) -> Any:
        """What score_items needs of a batch of requests (e.g. the last hidden states), computed once."""
        raise NotImplementedError(f"{self.name} does not score item slices (scores_item_slices is False)")

    def score_items(self, encoded: Any, start: int, end: int) -> Any:
        """Scores of items start..end-1 for the encoded requests: a (B, end - start) array or tensor."""
        raise NotImplementedError(f"{self.name} does not score item slices (scores_item_slices is False)")

    def score_targets(self, encoded: Any, targets: list[int]) -> Any | None:
        """Each request's score of its own target, (B,), bit for bit what score_items gives that item, or
        None (the default) to have the evaluator find it by scoring the targets' slices. Only worth it
        where an item's score does not depend on which slice it is scored in (a gather, not a matmul)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts worth recording with the result (backbone, parameter counts, training mode)."""
        return {}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (if imported) torch so runs repeat."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return
    torch.manual_seed(seed)
