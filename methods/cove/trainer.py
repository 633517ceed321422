"""Fine-tuning loop for CoVE: AdamW, warm-up + cosine/linear decay, gradient accumulation,
per-epoch validation with early stopping, and resumable checkpoints of the trainable parts.

Checkpoint files in the run's work_dir (trainable tensors only; the backbone is never copied), one
commit per epoch (bench.train.checkpoints: the files first, then the progress file naming them):
  last-eNNNN.safetensors     state after the last completed epoch (resume point)
  best-eNNNN.safetensors     state with the best validation NDCG@10 so far
  optimizer-eNNNN.pt         AdamW + scheduler state (FSDP: optimizer.rankR-eNNNN.pt, one per rank)
  cove_progress.json         epochs done, best epoch/score, why training stopped, the files above
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.train.batching import epoch_batches
from bench.train.distributed import (
    average_gradients,
    gather,
    is_main,
    my_slice,
    share_weight,
    world,
)
from bench.train.lifecycle import LoopSettings, StepResult, TrainingLoop, Writers
from bench.train.optimizer_step import step_if_finite
from bench.train.precision import attention_kernel, autocast, training_attention
from bench.train.resources import trim_heap
from methods.cove.model import CoVEModel
from methods.cove.sharding import full_tensors, is_sharded, local_optimizer_state, reshard_optimizer_state

PROGRESS = "cove_progress.json"


@dataclass(frozen=True)
class Sample:
    """One training example: the prompt ids, the target item and the full text's ids."""

    prompt: list[int]
    target: int
    sequence: list[int]


MAX_GRAD_NORM = 1.0  # Hugging Face Trainer's default, which the authors' script used
TRIM_EVERY = 25  # batches between heap trims on the CPU (bench.train.resources.trim_heap)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine or linear decay to 0 (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pad_left(rows: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to a (B, T) id tensor and its attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        if tokens:
            ids[row, width - len(tokens):] = torch.tensor(tokens)
            mask[row, width - len(tokens):] = 1
    return ids.to(device), mask.to(device)


def loss_terms(batch: list[Sample], loss: str, base_vocab: int) -> int:
    """How many terms a batch's loss averages (what ranks weight their share by): samples for "item",
    item positions after each sequence's first for "sequence", predicted tokens for "all_tokens"."""
    if loss == "item":
        return len(batch)
    if loss == "sequence":
        return sum(max(0, sum(t >= base_vocab for t in s.sequence) - 1) for s in batch)
    return sum(len(s.sequence) - 1 for s in batch)


def sequence_item_loss(model: CoVEModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Item cross-entropy at every item position of a user's sequence in one pass (as SASRec trains):
    the state before item j's token predicts item j, for every item after the first (which has no
    history). One forward pass trains as many targets as the sequence has items, not one."""
    hidden = model.hidden_states(ids, mask)[:, :-1]
    following = ids[:, 1:]
    is_item = (following >= model.base_vocab) & (mask[:, 1:] == 1) & (mask[:, :-1] == 1)
    targets = is_item & (is_item.long().cumsum(-1) > 1)
    # Exact CE; beyond ITEM_CHUNK items without a (targets, N) logit matrix (ItemHead.cross_entropy).
    return model.item_head.cross_entropy(hidden[targets], following[targets] - model.base_vocab)


def batch_loss(model: CoVEModel, batch: list[Sample], loss: str, pad_id: int, device: str,
               precision: str = "fp32") -> torch.Tensor:
    """loss = "item": cross-entropy of the target item at the prompt's last position (items only).
    loss = "sequence": the item cross-entropy at every item position of the sequence (one pass).
    loss = "all_tokens": causal-LM loss on every token of prompt + target over V + N tokens
    (the authors' labels = the whole text)."""
    with autocast(device, precision):
        if loss == "sequence":
            ids, mask = pad_left([s.sequence for s in batch], pad_id, device)
            return sequence_item_loss(model, ids, mask)
        if loss == "item":
            ids, mask = pad_left([s.prompt for s in batch], pad_id, device)
            targets = torch.tensor([s.target for s in batch], device=device)
            return model.item_head.cross_entropy(model.hidden_states(ids, mask)[:, -1], targets)
        ids, mask = pad_left([s.sequence for s in batch], pad_id, device)
        logits = model.token_logits(model.hidden_states(ids, mask)[:, :-1]).float()
        # Position t predicts token t + 1 only when both are real: with left padding the first real
        # token would otherwise be a target predicted from a pad position.
        labels = ids[:, 1:].masked_fill((mask[:, 1:] == 0) | (mask[:, :-1] == 0), -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def load_checkpoint(model: CoVEModel, path: Path) -> None:
    """Load trainable tensors; one that does not fit this model (another backbone or catalogue) is a
    one-line error naming the folder, not a size-mismatch traceback."""
    try:
        model.load_trainable_state(load_file(path))
    except (ValueError, RuntimeError) as error:
        raise BenchError(f"{path}: this checkpoint does not fit the model being trained ({str(error)[:200]}); "
                         f"delete {path.parent} or run again with --force") from None


class Trainer:
    """CoVE's hooks on the shared lifecycle (bench.train.lifecycle): a step is `grad_accum` micro-batches
    (fewer in an epoch's last window), each rank trains its slice of every micro-batch, the gradients are
    averaged over ranks (FSDP's reduce-scatter has done so already), clipped, then one AdamW step."""

    def __init__(self, model: CoVEModel, samples: list[Sample], settings: Any, *, seed: int, precision: str,
                 budget_minutes: float | None, work_dir: Path, device: str, pad_id: int,
                 validate: Callable[[], float] | None, log: Callable[[str], None], fingerprint: dict[str, Any],
                 resume_only: bool = False) -> None:
        """`settings`: the [cove] section (methods.cove.settings.CoVESettings); `precision` as resolved."""
        self.model, self.samples, self.s, self.device, self.pad_id = model, samples, settings, device, pad_id
        self.seed, self.precision = seed, precision
        self.attention = training_attention(settings.train_attention, device, precision, left_padded=True)
        self.sharded = is_sharded(model)  # FSDP (methods/cove/sharding.py): gradients arrive averaged
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        batches = math.ceil(len(samples) / settings.batch_size)
        self.steps_per_epoch = math.ceil(batches / settings.grad_accum)
        total = self.steps_per_epoch * settings.epochs
        warmup = math.ceil(settings.warmup_ratio * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, settings.scheduler))
        loop = LoopSettings("cove", settings.epochs, settings.patience, seed, budget_minutes, resume_only)
        training = {"seed": seed, "precision": precision, "budget_minutes": budget_minutes}
        self.loop = TrainingLoop(self, loop, model=model, work_dir=work_dir, validate=validate, log=log,
                                 fingerprint={"fingerprint": fingerprint, "training": training},
                                 state_name=PROGRESS,
                                 extra_state={"real_tokens": 0, "padded_tokens": 0})
        self.micro_done = 0

    def train(self) -> dict[str, Any]:
        return self.loop.train()

    # -- TrainingHooks --------------------------------------------------------------------

    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        batches = epoch_batches([len(s.sequence) for s in self.samples], self.s.batch_size,
                                self.seed * 1_000_003 + epoch, self.s.length_buckets > 0)
        return [batches[i:i + self.s.grad_accum] for i in range(0, len(batches), self.s.grad_accum)]

    def micro_batches(self, window: list[list[int]]) -> int:
        return len(window)

    def step(self, window: list[list[int]]) -> StepResult:
        ranks, state = world()[1], self.loop.state
        losses, examples = [], 0
        for batch in window:
            mine = [self.samples[i] for i in my_slice(batch)]  # empty when ranks outnumber samples
            # FSDP's gathers need every rank in every pass: an idle rank runs a stand-in, weighted 0.
            chosen = mine or ([self.samples[batch[0]]] if self.sharded else [])
            # The forward with the kernel train_attention picks (validation and scoring keep the model's own).
            with attention_kernel(self.model.causal_lm, self.attention) as state["train_attention"]:
                loss = batch_loss(self.model, chosen, self.s.loss, self.pad_id, self.device, self.precision) \
                    if chosen else torch.zeros(())
            if mine:
                widths = [len(s.sequence if self.s.loss != "item" else s.prompt) for s in mine]
                state["real_tokens"] += sum(widths)
                state["padded_tokens"] += max(widths) * len(widths)
                losses.append(float(loss.detach()))
                examples += len(mine)
            if ranks > 1:  # weight = this rank's share of the global batch's loss terms
                weight = share_weight(loss_terms(mine, self.s.loss, self.model.base_vocab))
                if chosen and (weight or self.sharded):
                    (loss * weight / len(window)).backward()
            else:
                (loss / len(window)).backward()
            self.micro_done += 1
            if self.micro_done % TRIM_EVERY == 0 and self.device == "cpu":
                trim_heap()
        if not self.sharded:  # FSDP's reduce-scatter has averaged them already
            average_gradients(self.trainable)
        stepped = step_if_finite(self.optimizer, self.trainable, MAX_GRAD_NORM)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(sum(losses), len(losses), examples, finite_gradients=stepped)

    def _optimizer_role(self) -> str:
        """FSDP: each rank's optimizer holds the state of its own shards, so each rank keeps a file."""
        return f"optimizer.rank{world()[0]}" if self.sharded else "optimizer"

    def checkpoint_files(self, best: bool, tag: str) -> tuple[Writers, dict[str, str]]:
        # Sharded (FSDP) tensors are gathered whole first: a collective every rank joins.
        state = {k: v.detach().cpu().contiguous() for k, v in full_tensors(self.model.trainable_state()).items()}
        optimizer = {"optimizer": local_optimizer_state(self.optimizer.state_dict()) if self.sharded
                     else self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        written: dict[str, str] = {}
        if self.sharded:  # each rank its own shard's file, before rank 0 commits
            mine = self.loop.checkpoints.write_file(self._optimizer_role(), tag, ".pt",
                                                    lambda path: torch.save(optimizer, path))
            written = dict(gather((self._optimizer_role(), mine)))
        if not is_main():  # under torchrun every rank holds the same weights; rank 0 writes them
            return {}, written
        writers: Writers = {"last": (".safetensors", lambda path: save_file(state, path))}
        if best:
            writers["best"] = (".safetensors", lambda path: save_file(state, path))
        if not self.sharded:
            writers["optimizer"] = (".pt", lambda path: torch.save(optimizer, path))
        return writers, written

    def load_checkpoint(self, path: Callable[[str], Path | None], resume_only: bool) -> None:
        """Only loading a finished run (resume_only: rescore, speed --trained) needs no optimizer, so an
        FSDP run's per-rank files are not read then."""
        load_checkpoint(self.model, path("last"))
        if not resume_only:
            extra = torch.load(path(self._optimizer_role()), weights_only=True)  # our own file
            self.optimizer.load_state_dict(extra["optimizer"])
            if self.sharded:
                reshard_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(extra["scheduler"])

    def load_best(self, path: Path) -> None:
        load_checkpoint(self.model, path)
