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

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.atomic import atomic_write, atomic_write_text
from bench.data.types import Dataset
from bench.errors import BenchError
from bench.method import Method, RunContext, nothing_to_load
from methods import recbole_compat
from methods.recbole_data import (
    load_recbole_data,
    recbole_isolated,
)


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
    atomic_write(path, lambda tmp: trainer._save_checkpoint(epoch, verbose=False, saved_model_file=str(tmp)))


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
