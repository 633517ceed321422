"""BIGRec step 1: LoRA fine-tuning of a causal LM on (prompt, quoted next title) examples.

A plain loop instead of `transformers.Trainer` so the harness's budget, early stopping on
`context.validate` and mid-epoch resume are visible in one place. Schedule as the authors'
Alpaca-LoRA script: AdamW, linear warm-up for `warmup_steps` optimiser steps, then linear
decay to zero over all planned steps; the loss is the mean over labelled tokens of a
micro-batch, divided by the accumulation count.

Under torchrun each rank takes its slice of every micro-batch; its token-mean loss is weighted by its
share of the micro-batch's labelled tokens and the gradients are averaged over ranks, so a step is the
one-process step (bench.train.distributed). Rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.method import nothing_to_load
from bench.train.checkpoints import CheckpointDir
from bench.train.distributed import (
    average_gradients,
    is_main,
    my_slice,
    past_deadline_everywhere,
    share_weight,
    sum_over_ranks,
    world,
)
from bench.train.precision import autocast
from bench.train.progress import progress_bar
from bench.train.resources import trim_heap
from methods.bigrec.prompts import IGNORE_INDEX, TrainExample

PROGRESS = "bigrec_progress.json"
# Work dirs written before the progress file named its files (their state file carries the progress).
LEGACY_FILES = {"state": "bigrec_train_state.pt", "best": "bigrec_best_adapter.pt"}
# A mid-epoch checkpoint at most this often, so an interrupted CPU run loses little.
CHECKPOINT_EVERY_SECONDS = 600.0


@dataclass
class TrainSettings:
    learning_rate: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 32
    epochs: int = 50
    patience: int = 5
    warmup_steps: int = 20
    max_train_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 (CPU autocast); CUDA always runs bf16 autocast
    progress: bool = True


@dataclass
class TrainReport:
    epochs_completed: int = 0
    optimizer_steps: int = 0
    best_epoch: float | None = None  # a partial epoch (time budget) is a fraction
    best_valid_ndcg10: float | None = None
    valid_history: list[float] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)
    stopped_by: str = "epochs"
    # Epochs done when the time budget stopped training mid-epoch (e.g. 2.4); that partial state
    # was validated like a finished epoch (as CoVE does) and kept if it was the best.
    partial_epoch: float | None = None
    resumed: bool = False
    train_seconds_this_call: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collate(examples: list[TrainExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding; padded positions are masked out of attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 over `warmup` steps, then 1 -> 0 at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffle of one epoch, reproducible so a resumed run sees the same order."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def setup_key(examples: list[TrainExample], settings: TrainSettings, extra: dict[str, Any]) -> str:
    """A checkpoint belongs to these examples and settings; anything else starts afresh."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    relevant = {k: v for k, v in asdict(settings).items() if k not in ("max_train_minutes", "progress")}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    for example in examples:
        digest.update(json.dumps(example.input_ids).encode())
    return digest.hexdigest()[:16]


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


class LoRATrainer:
    """Trains the adapter of a peft model in place; checkpoints under `work_dir`."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        examples: list[TrainExample],
        settings: TrainSettings,
        work_dir: Path,
        key_extra: dict[str, Any],
        validate: Callable[[], float] | None = None,
        log: Callable[[str], None] = print,
        resume_only: bool = False,
    ) -> None:
        self.resume_only = resume_only
        self.model = model
        self.pad_id = pad_id
        self.examples = examples
        self.settings = settings
        self.work_dir = Path(work_dir)
        self.key = setup_key(examples, settings, key_extra)
        self.validate = validate
        self.log = log
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        micro_per_epoch = math.ceil(len(examples) / settings.batch_size)
        self.steps_per_epoch = math.ceil(micro_per_epoch / settings.grad_accum)
        total = self.steps_per_epoch * settings.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup_decay(settings.warmup_steps, total))
        self.report = TrainReport()
        self.checkpoints = CheckpointDir(self.work_dir, legacy=LEGACY_FILES, state_name=PROGRESS)
        self.files: dict[str, str] = {}
        self.commits = 0
        self.best_pending = False  # a new best adapter, written with the next commit
        self.best_adapter: dict[str, torch.Tensor] | None = None
        self.epoch = 0
        self.micro = 0  # next micro-batch within the epoch
        self.bad_epochs = 0
        self.done = False

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self) -> None:
        """One commit (bench.train.checkpoints): the training state and any new best adapter, then the progress
        file naming them; a kill in between leaves the previous commit whole."""
        best, self.best_pending = self.best_pending, False
        if not is_main():  # every rank holds the same adapter; rank 0 writes it
            return
        self.commits += 1
        report = {k: v for k, v in self.report.as_dict().items() if k not in ("resumed", "train_seconds_this_call")}
        progress = {"key": self.key, "epoch": self.epoch, "micro": self.micro, "bad_epochs": self.bad_epochs,
                    "done": self.done, "commits": self.commits, "report": json.dumps(report)}
        state = {**progress, "adapter": adapter_state(self.model), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        writers = {"state": (".pt", lambda path: torch.save(state, path))}
        if best and self.best_adapter is not None:
            best_state = self.best_adapter
            writers["best"] = (".pt", lambda path: torch.save(best_state, path))
        committed = self.checkpoints.commit({**progress, "report": report}, f"c{self.commits:06d}", writers)
        self.files = committed["files"]

    def _resume(self) -> bool:
        record = self.checkpoints.read_state()
        path = self.checkpoints.path(record, "state")
        if path is None or not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != self.key:
            self.log(f"bigrec: checkpoint in {self.work_dir} is for other data/settings; starting afresh")
            return False
        try:
            load_adapter_state(self.model, state["adapter"])
        except (ValueError, RuntimeError) as error:
            raise BenchError(f"{path}: this checkpoint does not fit the model being trained ({str(error)[:200]}); "
                             f"delete {self.work_dir} or run again with --force") from None
        self.files = record["files"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.micro = int(state["epoch"]), int(state["micro"])
        self.bad_epochs, self.done = int(state["bad_epochs"]), bool(state["done"])
        self.commits = int(state.get("commits", 0))
        for name, value in json.loads(state["report"]).items():
            setattr(self.report, name, value)
        self.report.resumed = True
        self.log(f"bigrec: resumed from {path} (epoch {self.epoch}, micro-batch {self.micro}, done={self.done})")
        return True

    def _save_best(self) -> None:
        self.best_adapter = adapter_state(self.model)  # every rank keeps it in memory; rank 0 commits it
        self.best_pending = True

    def _load_best(self) -> None:
        if self.report.best_epoch is None:
            return
        path = self.checkpoints.path({"files": self.files}, "best")
        if self.best_adapter is not None:
            load_adapter_state(self.model, self.best_adapter)
        elif path is not None and path.exists():
            load_adapter_state(self.model, torch.load(path, map_location="cpu", weights_only=True))

    # -- loop --------------------------------------------------------------------------------
    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(self.settings.device) for k, v in batch.items()}
        with autocast(self.settings.device, self.settings.precision):
            return self.model(**batch).loss

    def _backward(self, positions: list[int], window: int) -> float | None:
        """This rank's part of one micro-batch: backward of its loss, weighted so the ranks' averaged
        gradients equal one process's; returns its loss (None: no examples here)."""
        mine = my_slice(positions)
        batch = collate([self.examples[p] for p in mine], self.pad_id) if mine else None
        if world()[1] == 1:
            loss = self._loss(batch)
            (loss / window).backward()
            return float(loss.detach())
        # The loss is a mean over labelled next tokens (labels shifted by one, as the model shifts them).
        terms = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) if batch is not None else 0
        weight = share_weight(terms)  # every rank joins this sum, with or without examples
        if batch is None or not terms:
            return None
        loss = self._loss(batch)
        (loss * weight / window).backward()
        return float(loss.detach())

    def train(self) -> TrainReport:
        started = time.perf_counter()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self._resume() and not self.done:
            self.report.stopped_by = "epochs"
        if self.resume_only and not self.done:
            raise nothing_to_load(self.work_dir, "bigrec", "its state file is missing, unfinished or from other "
                                  "settings")
        budget = self.settings.max_train_minutes
        deadline = started + budget * 60.0 if budget else math.inf
        last_checkpoint = time.perf_counter()
        settings = self.settings
        if world()[1] > settings.batch_size:
            self.log(f"bigrec: warning: {world()[1]} ranks share micro-batches of {settings.batch_size} examples, "
                     "so some ranks sit idle in every micro-batch; raise bigrec.batch_size to at least the rank count")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        while not self.done and self.epoch < settings.epochs:
            order = epoch_order(len(self.examples), settings.seed, self.epoch)
            batches = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
            self.model.train()
            bar = progress_bar(total=len(batches), initial=self.micro, unit="batch", enabled=settings.progress,
                               desc=f"bigrec epoch {self.epoch + 1}/{settings.epochs}")
            losses: list[float] = []
            out_of_time = False
            while self.micro < len(batches):
                window = batches[self.micro:self.micro + settings.grad_accum]
                # LoRA dropout seeded by step and rank: a run resumed mid-epoch draws what it would have.
                torch.manual_seed(settings.seed * 1_000_003 + self.epoch * 100_003 + self.micro + 7919 * world()[0])
                for positions in window:
                    loss = self._backward(positions, len(window))
                    if loss is not None:
                        losses.append(loss)
                    bar.update(1)
                average_gradients(trainable)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.micro += len(window)
                self.report.optimizer_steps += 1
                if losses:  # a rank whose slices were all empty has none
                    bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
                if self.report.optimizer_steps % 25 == 0 and settings.device == "cpu":
                    trim_heap()  # prompts of varying length fragment the heap (bench.train.resources.trim_heap)
                now = time.perf_counter()
                if past_deadline_everywhere(now >= deadline):
                    out_of_time = True
                    break
                if now - last_checkpoint > CHECKPOINT_EVERY_SECONDS and self.micro < len(batches):
                    self._save()
                    last_checkpoint = now
            bar.close()
            # Every rank's micro-batch losses, not rank 0's slices alone (every rank joins both sums).
            total, count = sum_over_ranks(sum(losses)), sum_over_ranks(len(losses))
            if count:
                self.report.loss_history.append(total / count)
            if out_of_time:
                self.report.stopped_by = "max_train_minutes"
                self.report.partial_epoch = round(self.epoch + self.micro / max(1, len(batches)), 3)
                self.log(f"bigrec: training budget of {budget} min reached in epoch {self.epoch + 1}")
                self._validate(partial=True)
                self._save()
                break
            self.epoch += 1
            self.micro = 0
            self.report.epochs_completed = self.epoch
            self._end_of_epoch()
            self._save()
            last_checkpoint = time.perf_counter()
        self._load_best()
        self.model.eval()
        self.report.train_seconds_this_call = round(time.perf_counter() - started, 3)
        return self.report

    def _validate(self, partial: bool = False) -> bool | None:
        """Validate the current adapter and keep it if best; None when there is no validator.

        A partial epoch (time budget) is scored like a finished one, so a budget-limited run
        uses what it trained, the same rule as CoVE's trainer."""
        if self.validate is None:
            return None
        self.model.eval()
        score = float(self.validate())
        self.model.train()
        self.report.valid_history.append(score)
        label = f"{self.report.partial_epoch} (partial: time budget)" if partial else f"{self.epoch}"
        self.log(f"bigrec: epoch {label} validation NDCG@10 {score:.4f}")
        if self.report.best_valid_ndcg10 is None or score > self.report.best_valid_ndcg10:
            self.report.best_valid_ndcg10 = score
            self.report.best_epoch = self.report.partial_epoch if partial else self.epoch
            self._save_best()
            return True
        return False

    def _end_of_epoch(self) -> None:
        """Validate, keep the best adapter, stop after `patience` epochs without improvement."""
        improved = self._validate()
        if improved is None:
            self.done = self.epoch >= self.settings.epochs
            return
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.bad_epochs >= self.settings.patience:
            self.report.stopped_by = "patience"
            self.done = True
        elif self.epoch >= self.settings.epochs:
            self.done = True
