"""What a run's config hash covers: everything that decides its numbers (not threads, not paths), the
backbone by its content."""

from __future__ import annotations

from typing import Any

from bench.config import hashed_config
from bench.data.types import Dataset


def run_identity(config: dict[str, Any], effective: dict[str, Any], method: str, dataset: Dataset, *, seed: int,
                 device: str, budget: float | None, world_size: int = 1,
                 backbone: dict[str, str] | None = None) -> dict[str, Any]:
    """What a run's config hash covers: everything that decides its numbers (not threads, not paths)."""
    identity = {"method": method, "dataset": dataset.name, "split_hash": dataset.split.hash,
                "config": hashed_config(effective, config.get("hash_neutral", {})), "seed": seed,
                "device": device, "max_train_minutes": budget}
    catalogue = dataset.catalogue.hash
    if config.get("catalogue_hash_neutral", {}).get(dataset.name) != catalogue:
        # Item ids, titles and text (the split hash covers the sequences): another catalogue is another run.
        # Left out where it is the catalogue the records made before this key were trained on (bench.toml).
        identity["catalogue_hash"] = catalogue
    if world_size > 1:  # data-parallel training is another computation (batch split, reduction order)
        identity["world_size"] = world_size
    if backbone is not None:  # the model's content, not only its path
        identity["model_identity"] = backbone
    return identity


def backbone_identity(section: dict[str, Any]) -> dict[str, str] | None:
    """Content fingerprint of the section's `model` (methods without a backbone: None)."""
    if not isinstance(section.get("model"), str):
        return None
    from bench.train.backbone import model_identity

    return model_identity(section["model"])
