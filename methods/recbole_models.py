"""SASRec and GRU4Rec trained by RecBole 1.2.1's own models and Trainer, on exactly our split.

RecBole gets our split as pre-split atomic files (`benchmark_filename`), so it never splits,
filters or reorders anything itself:
- `bench.train.inter`: one row per training pair, every prefix of each user's training
  sequence -> the next item (RecBole's own sequential augmentation, done by us), history
  truncated to the last `max_seq_length` items as RecBole does;
- `bench.valid.inter` / `bench.test.inter`: one row per request of our valid/test cases;
- `bench.item`: every catalogue item, so items that never occur in training still get an
  id, an (untrained) embedding and a score.
The same files serve leave-one-out and global-time splits. RecBole's ids differ from ours;
`score()` maps columns back to our item order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.types import Dataset, EvalCases, Split
from bench.errors import BenchError
from bench.method import Method, RunContext, nothing_to_load
from bench.store.results import atomic_write_text
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


class _NullWriter:
    """Swallows TensorBoard calls: RecBole's Trainer would write ./log_tensorboard in the cwd."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _BudgetReached(Exception):
    """Raised between batches once the training-time budget is used up."""


class _BudgetedBatches:
    """RecBole's training dataloader, checked against the deadline before every batch (so a budget
    overshoots by one batch, not by a whole epoch plus validation) and shown as a progress bar."""

    def __init__(self, data: Any, deadline: float | None, desc: str) -> None:
        self._data, self._deadline, self._desc = data, deadline, desc
        self.epoch = self.batches = 0

    def __iter__(self) -> Iterator[Any]:
        from bench.train.progress import progress_bar

        self.epoch += 1
        with progress_bar(total=len(self._data), desc=f"{self._desc} epoch {self.epoch}", unit="batch") as bar:
            for batch in self._data:
                if self._deadline is not None and time.time() >= self._deadline:
                    raise _BudgetReached
                yield batch
                self.batches += 1
                bar.update(1)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def _make_trainer(config: Any, model: Any, checkpoint: Path) -> Any:
    """RecBole's own Trainer, without TensorBoard and with a fixed checkpoint name."""
    import recbole.trainer.trainer as trainer_module

    original = trainer_module.get_tensorboard
    trainer_module.get_tensorboard = lambda logger: _NullWriter()
    try:
        trainer = trainer_module.Trainer(config, model)
    finally:
        trainer_module.get_tensorboard = original
    trainer.saved_model_file = str(checkpoint)
    return trainer


# --- resuming across sessions ---------------------------------------------------------------

LAST_EPOCH = "last_epoch.pth"
# Written when a training ends (early stopping, epochs or budget): a later fit() in this work dir (a resumed
# `bench run`, `bench rescore`, `bench speed --trained`) loads the best checkpoint and trains nothing more.
FINISHED = "finished.json"


def _save_last_epoch(trainer: Any, epoch: int, path: Path) -> None:
    """RecBole's own checkpoint format (model, optimizer, epoch, early-stopping counters) after every
    epoch, written atomically; RecBole itself only keeps the best epoch, which cannot resume."""
    tmp = path.with_name(path.name + ".tmp")
    trainer._save_checkpoint(epoch, verbose=False, saved_model_file=str(tmp))
    os.replace(tmp, path)


def _resume(trainer: Any, path: Path, best: Path) -> int | None:
    """Continue after the last finished epoch of an interrupted run in this work dir (None: fresh).
    RecBole's `resume_checkpoint` cannot load under torch >= 2.6 (weights-only default), so this does
    what it does with our own file. The data order of later epochs differs from an uninterrupted run."""
    if not path.exists():
        return None
    state = torch.load(path, map_location=trainer.device, weights_only=False)  # written by us above
    trainer.model.load_state_dict(state["state_dict"])
    trainer.model.load_other_parameter(state.get("other_parameter"))
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.start_epoch = int(state["epoch"]) + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    if not best.exists():  # the best epoch's file is RecBole's; without it the best is unknown
        raise BenchError(f"{path.parent}: an interrupted run left {path.name} but not {best.name}; "
                         "delete the folder or run again with --force")
    return trainer.start_epoch


def _finished(path: Path, best: Path) -> dict[str, Any] | None:
    """What a finished training in this work dir recorded (None: not finished, so train or resume)."""
    if not path.exists():
        return None
    if not best.exists():
        raise BenchError(f"{path.parent}: {path.name} says training finished but {best.name} is missing; "
                         "delete the folder or run again with --force")
    return json.loads(path.read_text(encoding="utf-8"))


# --- the plugins -------------------------------------------------------------------------


class RecBoleMethod(Method):
    """A RecBole sequential model: fit with RecBole's Trainer, score with `full_sort_predict`."""

    name = "recbole"
    model_name = ""
    loads_finished_runs = True  # finished.json: a later fit only loads the best checkpoint

    def __init__(self, config: dict[str, Any], context: RunContext) -> None:
        super().__init__(config, context)
        self.max_seq_length = int(config.get("max_seq_length", 50))
        self.facts: dict[str, Any] = {}

    def fit(self, dataset: Dataset) -> None:
        recbole_compat.apply()
        import recbole

        root = Path(self.context.work_dir) / "recbole"
        checkpoint = root / f"{self.model_name}.pth"
        with recbole_isolated():
            data = load_recbole_data(self.model_name, self.config, dataset.split, dataset.num_items, root,
                                     self.context.device, self.context.seed)
            config = data.config
            from recbole.utils import get_model, init_seed

            init_seed(config["seed"], config["reproducibility"])
            model = get_model(self.model_name)(config, data.train.dataset).to(config["device"])
            trainer = _make_trainer(config, model, checkpoint)
            finished = _finished(root / FINISHED, checkpoint)
            if finished is None and self.context.resume_only:
                raise nothing_to_load(root, self.name, f"no {FINISHED}: the training never finished here")
            if finished is not None:
                self.context.log(f"{self.name}: training in {root} had finished ({finished['stopped_by']}); "
                                 "loading its best checkpoint")
                resumed_after, epochs_run, stopped_by = None, finished["epochs_run"], finished["stopped_by"]
                seconds, self.batches_trained, partial = finished["seconds"], 0, finished["partial"]
            else:
                resumed_after = _resume(trainer, root / LAST_EPOCH, checkpoint)
                if resumed_after is not None:
                    self.context.log(f"{self.name}: resumed after epoch {resumed_after} from {root}")
                epochs_run, stopped_by, seconds = self._train(trainer, data.train, data.valid,
                                                              int(config["epochs"]), root / LAST_EPOCH)
                partial = not checkpoint.exists()
                if partial:  # the budget ran out inside the first epoch: keep what it trained, unvalidated
                    trainer._save_checkpoint(epochs_run, verbose=False)
                atomic_write_text(root / FINISHED, json.dumps({"epochs_run": epochs_run, "stopped_by": stopped_by,
                                                               "seconds": seconds, "partial": partial}))
        counts = data.counts

        state = torch.load(checkpoint, map_location=config["device"], weights_only=False)  # written above
        model.load_state_dict(state["state_dict"])
        model.load_other_parameter(state.get("other_parameter"))
        model.eval()
        self.model = model
        token_id = data.dataset.field2token_id["item_id"]
        # Our item i is RecBole's id recbole_id_of[i]; RecBole's id 0 is its padding item.
        self.recbole_id_of = np.array([token_id[str(item)] for item in range(dataset.num_items)], dtype=np.int64)
        self.recbole_ids = torch.from_numpy(self.recbole_id_of).to(config["device"])
        self.num_items = dataset.num_items
        self.facts = {
            **self.facts,
            "recbole_version": recbole.__version__,
            "model_class": f"recbole.model.sequential_recommender.{self.model_name}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "loss": "CE over all items (full softmax), no negative sampling",
            "train_pairs": counts["train"],
            "max_seq_length": self.max_seq_length,
            "epochs_run": epochs_run,
            "epochs_max": int(config["epochs"]),
            "stopped_by": stopped_by,
            "best_epoch": None if partial else int(state["epoch"]) + 1,
            "checkpoint": ("the partial first epoch (time budget reached before any validation)" if partial
                           else "the best validated epoch"),
            "train_batches": self.batches_trained,
            "recbole_best_valid_ndcg@10": round(float(state["best_valid_score"]), 6),
            "recbole_valid_note": "RecBole's own full-ranking NDCG@10 on our validation requests (padding item "
                                  "masked, history items not masked, RecBole's top-k tie handling); "
                                  "used for early stopping and the checkpoint choice only",
            "valid_empty_history_dropped_for_recbole": counts["valid_empty_history_dropped"],
            "train_loop_seconds": round(seconds, 1),
            "resumed_after_epoch": resumed_after,
            "loaded_finished_training": finished is not None,
            "max_train_minutes": self.context.max_train_minutes,
        }

    def _train(self, trainer: Any, train_data: Any, valid_data: Any, epochs: int,
               last_epoch: Path) -> tuple[int, str, float]:
        """RecBole's fit loop with a progress line per epoch, a resumable state after every epoch
        (`last_epoch`) and an optional time budget.

        The budget is checked before every batch and after each epoch's validation (RecBole's
        callback): training stops within one batch of it; the best validated checkpoint is kept.
        """
        started = time.time()
        budget = self.context.max_train_minutes
        train_data = _BudgetedBatches(train_data, started + budget * 60 if budget else None, self.name)
        self.batches_trained = 0
        epochs_run = trainer.start_epoch
        steps = max(1, len(train_data))

        def after_epoch(epoch: int, valid_score: float) -> None:
            nonlocal epochs_run
            epochs_run = epoch + 1
            _save_last_epoch(trainer, epoch, last_epoch)
            best_epoch = epoch - trainer.cur_step * trainer.eval_step + 1
            elapsed = time.time() - started
            self.context.log(
                f"{self.name} epoch {epoch + 1}/{epochs}: loss {trainer.train_loss_dict[epoch] / steps:.4f}, "
                f"RecBole valid ndcg@10 {valid_score:.4f} (best {trainer.best_valid_score:.4f} at epoch "
                f"{best_epoch}), {elapsed:.0f}s"
            )
            if budget is not None and elapsed >= budget * 60:
                raise _BudgetReached

        try:
            trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False,
                        callback_fn=after_epoch)
        except _BudgetReached:
            self.batches_trained = train_data.batches
            return epochs_run, "max_train_minutes", time.time() - started
        self.batches_trained = train_data.batches
        stopped_by = "epochs" if epochs_run >= epochs else "early_stopping"
        return epochs_run, stopped_by, time.time() - started

    @torch.no_grad()
    def score(self, users: list[int], histories: list[list[int]]) -> torch.Tensor:
        """RecBole's `full_sort_predict` on the last `max_seq_length` items, in our item order.

        An empty history is fed as one padding item with length 1 (RecBole's models index
        position length-1), i.e. the model's answer to "no history"; it never crashes.
        """
        windows = [history[-self.max_seq_length:] for history in histories]
        items = np.zeros((len(windows), max([1, *map(len, windows)])), dtype=np.int64)
        for row, window in enumerate(windows):
            items[row, :len(window)] = self.recbole_id_of[window]
        lengths = np.maximum(1, [len(window) for window in windows])
        from recbole.data.interaction import Interaction

        batch = Interaction({self.model.ITEM_SEQ: torch.from_numpy(items),
                             self.model.ITEM_SEQ_LEN: torch.from_numpy(lengths.astype(np.int64))})
        scores = self.model.full_sort_predict(batch.to(self.recbole_ids.device))
        return scores[:, self.recbole_ids]

    def describe(self) -> dict[str, Any]:
        return dict(self.facts)


class SASRecMethod(RecBoleMethod):
    """SASRec (Kang & McAuley 2018) as implemented in RecBole."""

    name = "sasrec"
    model_name = "SASRec"


class GRU4RecMethod(RecBoleMethod):
    """GRU4Rec (Hidasi et al. 2016) as implemented in RecBole."""

    name = "gru4rec"
    model_name = "GRU4Rec"
