"""Our split as RecBole 1.2.1 atomic files (`benchmark_filename`), so RecBole never splits, filters or
reorders anything itself (see methods/recbole_models.py for what each file holds), and RecBole's config
and dataloaders built from them in isolation (its logging and global state kept out of ours)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.data.types import EvalCases, Split
from bench.errors import BenchError
from methods import recbole_compat

DATASET_NAME = "bench"
PARTS = ("train", "valid", "test")
# Keys the harness owns: a method section may not set them (they would silently fight us).
RESERVED_KEYS = {
    "model", "dataset", "data_path", "checkpoint_dir", "benchmark_filename", "load_col", "eval_args",
    "device", "gpu_id", "use_gpu", "seed", "USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD",
    "MAX_ITEM_LIST_LENGTH", "alias_of_item_id", "train_neg_sample_args", "valid_metric", "metrics",
    "topk", "show_progress", "save_dataset", "save_dataloaders",
}
# bench.toml spells RecBole's MAX_ITEM_LIST_LENGTH as max_seq_length, as every method does.
RENAMED_KEYS = {"max_seq_length": "MAX_ITEM_LIST_LENGTH"}


# --- atomic files ------------------------------------------------------------------------


def training_pairs(train: list[list[int]], max_seq_length: int) -> EvalCases:
    """Every prefix of every training sequence -> its next item (RecBole's augmentation)."""
    users, histories, targets = [], [], []
    for user, seq in enumerate(train):
        for end in range(1, len(seq)):
            users.append(user)
            histories.append(seq[max(0, end - max_seq_length):end])
            targets.append(seq[end])
    return EvalCases(users, histories, targets)


def _inter_rows(cases: EvalCases, max_seq_length: int) -> Iterator[str]:
    for user, history, target in zip(cases.users, cases.histories, cases.targets):
        yield f"{user}\t{' '.join(map(str, history[-max_seq_length:]))}\t{target}\n"


def write_atomic_files(split: Split, num_items: int, folder: Path, max_seq_length: int) -> dict[str, int]:
    """Write our split as RecBole pre-split atomic files; return the row count per part.

    Tokens are our own user and item indices written as text. Requests with an empty
    history cannot be written (RecBole's reader breaks on empty sequence cells under
    pandas 3) and are left out of RecBole's own validation; they are counted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": training_pairs(split.train, max_seq_length), "valid": split.valid, "test": split.test}
    counts: dict[str, int] = {}
    for part, cases in parts.items():
        kept = [j for j, history in enumerate(cases.histories) if history]
        counts[part] = len(kept)
        counts[f"{part}_empty_history_dropped"] = len(cases) - len(kept)
        if not kept:
            raise BenchError(f"split.{part}: no {part} pairs with a non-empty history; RecBole needs at least one")
        with open(folder / f"{DATASET_NAME}.{part}.inter", "w", encoding="utf-8") as handle:
            handle.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            handle.writelines(_inter_rows(cases.subset(kept) if len(kept) < len(cases) else cases,
                                          max_seq_length))
    with open(folder / f"{DATASET_NAME}.item", "w", encoding="utf-8") as handle:
        handle.write("item_id:token\n")
        handle.writelines(f"{item}\n" for item in range(num_items))
    return counts


# --- RecBole configuration and global state -------------------------------------------------


def recbole_settings(section: dict[str, Any], data_path: Path, checkpoint_dir: Path,
                     device: str, seed: int) -> dict[str, Any]:
    """Our method section translated into RecBole's config dict, plus the keys we own."""
    clash = sorted(set(section) & RESERVED_KEYS)
    if clash:
        raise BenchError(f"bench.toml: {clash[0]!r} is set by the harness for RecBole methods; remove it")
    settings = {RENAMED_KEYS.get(key, key): value for key, value in section.items()}
    if settings.get("loss_type", "CE") != "CE":
        raise BenchError(f"loss_type: only 'CE' (full softmax) is supported, got {settings['loss_type']!r}")
    settings.update(
        data_path=str(data_path),
        checkpoint_dir=str(checkpoint_dir),
        benchmark_filename=list(PARTS),
        load_col={"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
        USER_ID_FIELD="user_id",
        ITEM_ID_FIELD="item_id",
        TIME_FIELD=None,  # the files are already in order and already split
        alias_of_item_id=["item_id_list"],  # history items share the target's id space
        # With benchmark files RecBole does not split; `mode: full` means full-ranking validation.
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        train_neg_sample_args=None,
        metrics=["NDCG", "Hit"],
        topk=[10],
        valid_metric="NDCG@10",
        seed=seed,
        reproducibility=True,
        use_gpu=device.startswith("cuda"),
        show_progress=False,
        save_dataset=False,
        save_dataloaders=False,
        log_wandb=False,
    )
    return settings


@contextlib.contextmanager
def recbole_isolated() -> Iterator[None]:
    """Keep RecBole's global habits out of the host process.

    RecBole's Config reads `--key=value` from sys.argv (so `bench run --seed=3` would leak in)
    and sets CUDA_VISIBLE_DEVICES; its modules log INFO to the root logger and pandas 3 warns
    about its chained assignments. All of that is confined to this block.
    """
    argv, cuda = sys.argv, os.environ.get("CUDA_VISIBLE_DEVICES")
    root = logging.getLogger()
    sys.argv = argv[:1]

    def drop_recbole_info(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}recbole{os.sep}" not in record.pathname

    root.addFilter(drop_recbole_info)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"recbole\.")
            warnings.filterwarnings("ignore", message=".*NumPy array is not writable.*")
            yield
    finally:
        sys.argv = argv
        if cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda
        root.removeFilter(drop_recbole_info)


@dataclass
class RecBoleData:
    """RecBole's view of our split: its Config, Dataset and the three dataloaders."""

    config: Any
    dataset: Any
    train: Any
    valid: Any
    test: Any
    counts: dict[str, int]


def load_recbole_data(model_name: str, section: dict[str, Any], split: Split, num_items: int, root: Path,
                      device: str, seed: int) -> RecBoleData:
    """Write the atomic files under `root` and let RecBole load them (call inside recbole_isolated)."""
    recbole_compat.apply()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    max_seq_length = int(section.get("max_seq_length", 50))
    counts = write_atomic_files(split, num_items, root / "atomic" / DATASET_NAME, max_seq_length)
    config = Config(model=model_name, dataset=DATASET_NAME,
                    config_dict=recbole_settings(section, root / "atomic", root, device, seed))
    config["device"] = torch.device(device)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return RecBoleData(config, dataset, train, valid, test, counts)


