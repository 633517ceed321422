"""The epoch loop every small from-scratch model shares: seeded batches per epoch, validation with
early stopping on the harness's NDCG@10, a time budget, and a checkpoint after every epoch so an
interrupted run resumes where it stopped (the same epochs, batches and dropout as without the stop).

A method supplies the model, its optimizer, the batches of an epoch and one training step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.method import nothing_to_load
from bench.train.checkpoints import CheckpointDir
from bench.train.distributed import barrier, is_main, past_deadline_everywhere, sum_gradients, sum_over_ranks, world
from bench.train.progress import progress_bar

LEGACY_FILES = {"last": "last.pt", "best": "best.pt"}  # work dirs from before the state named its files


@dataclass(frozen=True)
class LoopSettings:
    name: str                      # the method's name, for log lines and progress bars
    epochs: int
    patience: int                  # validations without a better score before stopping; 0 = never
    seed: int = 0
    budget_minutes: float | None = None
    resume_only: bool = False      # RunContext.resume_only: load a finished run, never train
    validate_every: int = 1        # epochs between validations (the last epoch is always validated)


def _torch_writer(obj: Any) -> Any:
    return lambda path: torch.save(obj, path)


class EpochTrainer:
    """`step(batch) -> (loss, examples)` trains on one batch, `loss` being a mean over those examples;
    `epoch_batches(epoch)` lists an epoch's batches (seeded by epoch, so a resumed run sees the same)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: LoopSettings, *,
                 work_dir: Path, device: str, validate: Callable[[], float] | None, log: Callable[[str], None],
                 fingerprint: dict[str, Any], scheduler: Any = None) -> None:
        self.model, self.optimizer, self.scheduler, self.s = model, optimizer, scheduler, settings
        self.work_dir, self.device, self.validate, self.log = Path(work_dir), device, validate, log
        self.fingerprint = fingerprint
        self.checkpoints = CheckpointDir(self.work_dir, legacy=LEGACY_FILES)
        self.files: dict[str, str] = {}
        self.progress: dict[str, Any] = {"epochs_done": 0, "best_epoch": None, "best_score": None, "bad_epochs": 0,
                                         "finished": False, "stopped_by": None, "epoch_scores": [],
                                         "validated_epochs": [], "epoch_losses": [], "optimizer_steps": 0,
                                         "train_seconds": 0.0, "validate_seconds": 0.0, "resumed_after_epoch": None,
                                         "calls": 0, "examples_seen": 0}

    # -- checkpoints ----------------------------------------------------------------------

    def _training_state(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def _save(self, best: bool) -> None:
        """One commit per epoch (bench.train.checkpoints): the epoch's files, then the state naming them."""
        if not is_main():  # every rank holds the same weights; rank 0 writes them
            barrier()
            return
        writers = {"last": (".pt", _torch_writer(self._training_state()))}
        if best:
            writers["best"] = (".pt", _torch_writer(self.model.state_dict()))
        committed = self.checkpoints.commit({**self.progress, "fingerprint": self.fingerprint},
                                            f"e{self.progress['epochs_done']:04d}", writers)
        self.files = committed["files"]
        barrier()

    def _resume(self) -> None:
        record = self.checkpoints.read_state()
        if record is None:
            return
        if record.get("fingerprint") != self.fingerprint:
            self.log(f"{self.s.name}: {self.work_dir} holds a run with another config; starting afresh")
            return
        last = self.checkpoints.path(record, "last")
        try:
            if last is None:
                raise OSError("its state names no checkpoint file")
            state = torch.load(last, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (OSError, RuntimeError, KeyError) as error:
            raise BenchError(f"{last or self.work_dir}: cannot resume from it ({str(error)[:160]}); delete "
                             f"{self.work_dir} or run again with --force") from None
        self.files = record["files"]
        self.progress = {k: record.get(k, v) for k, v in self.progress.items()}
        if not self.progress["validated_epochs"]:  # states written when every epoch was validated
            self.progress["validated_epochs"] = list(range(1, len(self.progress["epoch_scores"]) + 1))
        self.progress["resumed_after_epoch"] = self.progress["epochs_done"]
        self.log(f"{self.s.name}: resumed after epoch {self.progress['epochs_done']} from {self.work_dir}")

    def load_best(self) -> None:
        # From the committed state on disk: every rank reads what rank 0 committed (only rank 0 commits).
        best = self.checkpoints.path(self.checkpoints.read_state(), "best")
        if best is not None and best.exists():
            self.model.load_state_dict(torch.load(best, map_location=self.device, weights_only=True))

    # -- training -------------------------------------------------------------------------

    def train(self, epoch_batches: Callable[[int], list[Any]],
              step: Callable[[Any], tuple[torch.Tensor, int]]) -> dict[str, Any]:
        """Under torchrun each global batch is split into one contiguous slice per rank; each rank's loss
        is weighted by its share of the batch's examples and the gradients are summed across ranks,
        so a step is the global batch's mean gradient whatever the number of ranks."""
        self._resume()
        s, p = self.s, self.progress
        if s.resume_only and not p["finished"]:
            raise nothing_to_load(self.work_dir, s.name, "its progress file is missing, unfinished or from other "
                                  "settings")
        rank, ranks = world()
        if not p["finished"]:
            p["calls"] += 1
        trainable = [param for param in self.model.parameters() if param.requires_grad]
        started = time.perf_counter() - p["train_seconds"]
        deadline = started + s.budget_minutes * 60 if s.budget_minutes else None
        while not p["finished"] and p["epochs_done"] < s.epochs:
            epoch = p["epochs_done"]
            torch.manual_seed(s.seed * 1_000_003 + epoch + 7919 * rank)  # dropout repeats after a resume
            self.model.train()
            total, examples, out_of_time = 0.0, 0, False
            bar = progress_bar(epoch_batches(epoch), desc=f"{s.name} epoch {epoch + 1}/{s.epochs}", unit="batch",
                               enabled=is_main())
            for batch in bar:
                mine = batch if ranks == 1 else list(batch)[len(batch) * rank // ranks:len(batch) * (rank + 1) // ranks]
                self.optimizer.zero_grad(set_to_none=True)
                loss, count = step(mine) if mine else (torch.zeros(()), 0)  # an empty slice adds nothing
                if ranks > 1:  # weight = this rank's share of the global batch's examples
                    everyone = sum_over_ranks(count)
                    if count:
                        (loss * (count * ranks / everyone)).backward()
                else:
                    loss.backward()
                if ranks > 1:
                    sum_gradients(trainable)
                    for param in trainable:
                        param.grad /= ranks
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                p["optimizer_steps"] += 1
                total, examples = total + float(loss.detach()) * count, examples + count
                if examples:
                    bar.set_postfix(loss=f"{total / examples:.4f}", refresh=False)  # drawn at tqdm's own pace
                if deadline is not None and past_deadline_everywhere(time.perf_counter() > deadline):
                    out_of_time = True
                    break
            bar.close()
            p["epochs_done"] = epoch + 1
            if ranks > 1:  # every rank's examples, not rank 0's slice alone
                total, examples = sum_over_ranks(total), sum_over_ranks(examples)
            p["epoch_losses"].append(round(total / max(1, examples), 5))
            p["examples_seen"] += int(examples)
            last = out_of_time or p["epochs_done"] >= s.epochs
            due = last or p["epochs_done"] % max(1, s.validate_every) == 0
            improved = self._after_epoch(epoch + 1, partial=out_of_time) if due else False
            p["train_seconds"] = time.perf_counter() - started  # validation included (also in validate_seconds)
            if out_of_time:
                p.update(finished=True, stopped_by="max_train_minutes")
            elif s.patience > 0 and p["bad_epochs"] >= s.patience:
                p.update(finished=True, stopped_by="early_stopping")
            elif p["epochs_done"] >= s.epochs:
                p.update(finished=True, stopped_by="epochs")
            self._save(best=improved)
        if self.validate is not None:
            self.load_best()
        self.model.eval()
        return dict(p)

    def _after_epoch(self, epoch: int, partial: bool) -> bool:
        """Validate (when the harness lent a validator); True when this epoch is the best so far."""
        p = self.progress
        if self.validate is None:
            p["best_epoch"] = epoch
            return True
        clock = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            score = float(self.validate())
        p["validate_seconds"] += time.perf_counter() - clock
        p["epoch_scores"].append(round(score, 6))
        p["validated_epochs"].append(epoch)
        note = " (partial epoch: time budget)" if partial else ""
        head = f"{self.s.name}: epoch {epoch} loss {p['epoch_losses'][-1]:.4f}, validation NDCG@10 {score:.4f}"
        if p["best_score"] is None or score > p["best_score"]:
            p.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            self.log(f"{head} (best){note}")
            return True
        p["bad_epochs"] += 1
        self.log(f"{head} (best {p['best_score']:.4f} at epoch {p['best_epoch']}){note}")
        return False


def training_facts(progress: dict[str, Any], epochs_max: int, patience: int) -> dict[str, Any]:
    """What a record says about a run of this loop: epochs run of the maximum, why it stopped, the
    validation and loss curves, and seconds per epoch without validation."""
    epochs = progress.get("epochs_done") or 0
    loop_seconds = (progress.get("train_seconds") or 0.0) - (progress.get("validate_seconds") or 0.0)
    return {
        "epochs_run": epochs,
        "epochs_max": epochs_max,
        "best_epoch": progress.get("best_epoch"),
        "stopped_by": progress.get("stopped_by"),
        "patience": patience,
        "epoch_scores": progress.get("epoch_scores"),
        "validated_epochs": progress.get("validated_epochs"),
        "training_calls": progress.get("calls"),
        "examples_seen": progress.get("examples_seen"),
        "epoch_losses": progress.get("epoch_losses"),
        "optimizer_steps": progress.get("optimizer_steps"),
        "seconds_per_epoch": round(loop_seconds / epochs, 2) if epochs else None,
        "validate_seconds": round(progress.get("validate_seconds") or 0.0, 1),
        "resumed_after_epoch": progress.get("resumed_after_epoch"),
    }
