"""LoRA fine-tuning of a causal LM on (prompt, response) token examples: BIGRec's titles, LC-Rec's item codes.

The harness's one training lifecycle (bench.train.lifecycle) instead of `transformers.Trainer`, so the
budget, early stopping on `context.validate` and mid-epoch resume are every method's. Schedule as BIGRec's
authors' Alpaca-LoRA script: AdamW, linear warm-up for `warmup_steps` optimiser steps, then linear
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.train.batching import epoch_batches
from bench.train.distributed import (
    average_gradients,
    is_main,
    my_slice,
    share_weight,
    sums_over_ranks,
    world,
)
from bench.train.lifecycle import LoopSettings, StepResult, TrainingLoop, Writers
from bench.train.optimizer_step import step_if_finite
from bench.train.precision import attention_kernel, autocast, training_attention
from bench.train.resources import trim_heap

IGNORE_INDEX = -100  # a label that takes no part in the loss (transformers' and F.cross_entropy's default)


@dataclass(frozen=True)
class TrainExample:
    """One tokenised example: the prompt and response ids, and labels (IGNORE_INDEX where no loss)."""

    input_ids: list[int]
    labels: list[int]


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


def setup_key(examples: list[TrainExample], extra: dict[str, Any]) -> str:
    """A checkpoint belongs to these examples and settings; anything else starts afresh."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for example in examples:
        digest.update(json.dumps(example.input_ids).encode())
    return digest.hexdigest()[:16]


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


def mean_token_loss(model: Any, examples: list[TrainExample], pad_id: int, *, batch_size: int, device: str,
                    precision: str) -> float:
    """The mean loss per labelled token over `examples`, without gradients (BIGRec's authors pick the epoch by
    this validation loss); under torchrun each rank takes its slice and the sums are shared. Batches are cut from
    the slice sorted by length, so a batch pads to similar lengths (the sum does not depend on the order)."""
    was_training = model.training
    model.eval()
    totals = [0.0, 0.0]
    mine = sorted(my_slice(list(range(len(examples)))), key=lambda p: len(examples[p].input_ids))
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            batch = collate([examples[p] for p in mine[start:start + batch_size]], pad_id)
            terms = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if terms:
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, precision):
                    totals[0] += float(model(**batch).loss) * terms
                totals[1] += terms
    totals = sums_over_ranks(totals)
    model.train(was_training)
    return totals[0] / max(1.0, totals[1])


class LoRATrainer:
    """Trains the adapter of a peft model in place on the shared lifecycle (bench.train.lifecycle), with a
    commit every COMMIT_EVERY_SECONDS inside an epoch too (bench.train.lifecycle), so an interrupted CPU run
    loses little."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        examples: list[TrainExample],
        settings: Any,
        work_dir: Path,
        key_extra: dict[str, Any],
        *,
        name: str,
        seed: int,
        device: str,
        precision: str,
        budget_minutes: float | None,
        validate: Callable[[], float] | None = None,
        log: Callable[[str], None] = print,
        resume_only: bool = False,
        metric: str = "validation NDCG@10",
    ) -> None:
        """`settings`: the method's parsed section (learning_rate, batch_size, grad_accum, warmup_steps, epochs,
        patience); `name` labels its progress and checkpoints; `precision` as resolved; `metric` names what
        `validate` returns (higher is better)."""
        self.name = name
        self.model, self.pad_id, self.examples, self.settings, self.log = model, pad_id, examples, settings, log
        self.seed, self.device, self.precision = seed, device, precision
        self.attention = training_attention(getattr(settings, "train_attention", "auto"), device, precision)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # Labelled next tokens per example (labels shifted by one, as the model shifts them): what a micro-batch
        # weighs in its step when micro-batches are grouped by length (token_weighted_steps).
        self.labelled = [sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=settings.learning_rate, weight_decay=0.0)
        micro_per_epoch = math.ceil(len(examples) / settings.batch_size)
        self.steps_per_epoch = math.ceil(micro_per_epoch / settings.grad_accum)
        total = self.steps_per_epoch * settings.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup_decay(settings.warmup_steps, total))
        loop = LoopSettings(name, settings.epochs, settings.patience, seed, budget_minutes, resume_only,
                            metric=metric)
        # The device's kind, not its index: under torchrun each rank trains on its own cuda:N, one shared state.
        setup = {"seed": seed, "device": torch.device(device).type, "precision": precision}
        self.loop = TrainingLoop(self, loop, model=model, work_dir=work_dir, validate=validate, log=log,
                                 fingerprint={"key": setup_key(examples, {**key_extra, **setup})}, described=setup)

    def train(self) -> dict[str, Any]:
        ranks = world()[1]
        if ranks > self.settings.batch_size:
            self.log(f"{self.name}: warning: {ranks} ranks share micro-batches of {self.settings.batch_size} examples, "
                     f"so some ranks sit idle in every micro-batch; raise {self.name}.batch_size to at least the rank "
                     "count")
        return self.loop.train()

    # -- TrainingHooks --------------------------------------------------------------------

    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        size, accum = self.settings.batch_size, self.settings.grad_accum
        if getattr(self.settings, "length_buckets", False):
            # Micro-batches of similar length, shuffled (bench.train.batching, as CoVE and SASRec): LC-Rec's Beauty
            # sequences (4 tokens per item) are 64 % padding in random micro-batches of 16, ~4 % bucketed.
            batches = epoch_batches([len(e.input_ids) for e in self.examples], size, self.seed * 1_000_003 + epoch,
                                    bucket=True)
            return [batches[i:i + accum] for i in range(0, len(batches), accum)]
        order = epoch_order(len(self.examples), self.seed, epoch)
        if getattr(self.settings, "length_sorted_steps", False):
            # The same examples per optimizer step, regrouped by length into its micro-batches: far less
            # padding at the same step (each micro-batch weighs its labelled tokens: micro_batch_shares).
            steps = [order[i:i + size * accum] for i in range(0, len(order), size * accum)]
            return [[ranked[j:j + size] for j in range(0, len(ranked), size)]
                    for ranked in (sorted(step, key=lambda e: len(self.examples[e].input_ids)) for step in steps)]
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        return [batches[i:i + accum] for i in range(0, len(batches), accum)]

    def micro_batches(self, window: list[list[int]]) -> int:
        return len(window)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # The kernel train_attention picks, for the training forward only (validation keeps the model's own).
        with autocast(self.device, self.precision), \
                attention_kernel(self.model, self.attention) as self.loop.state["train_attention"]:
            return self.model(**batch).loss

    def token_weighted_steps(self) -> bool:
        """Micro-batches grouped by length hold similar sequences, so a micro-batch of short ones would weigh as
        much as one of long ones (up to ~50x per token for LC-Rec's 1- and 50-item users): each then weighs its
        labelled tokens' share of the step, and the step's loss is its token mean whatever the grouping. Random
        micro-batches keep the mean of their means (Hugging Face's gradient accumulation of the authors' time)."""
        return bool(getattr(self.settings, "length_buckets", False) or getattr(self.settings, "length_sorted_steps",
                                                                               False))

    def micro_batch_shares(self, window: list[list[int]]) -> list[float]:
        """The weight of each micro-batch's token-mean loss in its optimizer step (they sum to 1)."""
        counts = [sum(self.labelled[p] for p in positions) for positions in window]
        total = sum(counts)
        if not self.token_weighted_steps() or not total:
            return [1 / len(window)] * len(window)
        return [count / total for count in counts]

    def _backward(self, positions: list[int], share: float) -> tuple[float, int] | None:
        """This rank's part of one micro-batch: backward of its loss times the micro-batch's `share` of the step,
        weighted so the ranks' averaged gradients equal one process's; returns (its loss, its examples), None
        without examples here."""
        mine = my_slice(positions)
        batch = collate([self.examples[p] for p in mine], self.pad_id) if mine else None
        if world()[1] == 1:
            loss = self._loss(batch)
            (loss * share).backward()
            return float(loss.detach()), len(mine)
        # The loss is a mean over labelled next tokens (labels shifted by one, as the model shifts them).
        terms = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) if batch is not None else 0
        weight = share_weight(terms)  # every rank joins this sum, with or without examples
        if batch is None or not terms:
            return None
        loss = self._loss(batch)
        (loss * weight * share).backward()
        return float(loss.detach()), len(mine)

    def step(self, window: list[list[int]]) -> StepResult:
        done = [self._backward(positions, share) for positions, share in zip(window, self.micro_batch_shares(window))]
        done = [d for d in done if d is not None]  # a rank whose slices were all empty has none
        average_gradients(self.trainable)
        stepped = step_if_finite(self.optimizer, self.trainable)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.loop.state["optimizer_steps"] % 25 == 24 and self.device == "cpu":
            trim_heap()  # prompts of varying length fragment the heap (bench.train.resources.trim_heap)
        return StepResult(sum(loss for loss, _ in done), len(done), sum(count for _, count in done),
                          finite_gradients=stepped)

    def checkpoint_files(self, best: bool, tag: str) -> tuple[Writers, dict[str, str]]:
        if not is_main():  # every rank holds the same adapter; rank 0 writes it
            return {}, {}
        adapter = adapter_state(self.model)
        state = {"adapter": adapter, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        writers: Writers = {"last": (".pt", lambda path: torch.save(state, path))}
        if best:
            writers["best"] = (".pt", lambda path: torch.save(adapter, path))
        return writers, {}

    def load_checkpoint(self, path: Callable[[str], Path | None], resume_only: bool) -> None:
        state = torch.load(path("last"), map_location="cpu", weights_only=True)
        self._load_adapter(state["adapter"], path("last"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def load_best(self, path: Path) -> None:
        self._load_adapter(torch.load(path, map_location="cpu", weights_only=True), path)

    def _load_adapter(self, adapter: dict[str, torch.Tensor], path: Path | None) -> None:
        try:
            load_adapter_state(self.model, adapter)
        except (ValueError, RuntimeError) as error:
            raise BenchError(f"{path}: this checkpoint does not fit the model being trained ({str(error)[:200]}); "
                             f"delete {path.parent if path else 'the work dir'} or run again with --force") from None
