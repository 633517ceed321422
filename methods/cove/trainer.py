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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.method import nothing_to_load
from bench.train.batching import epoch_batches
from bench.train.checkpoints import CheckpointDir
from bench.train.distributed import (
    average_gradients,
    barrier,
    gather,
    is_main,
    my_slice,
    past_deadline_everywhere,
    share_weight,
    world,
)
from bench.train.precision import autocast
from bench.train.progress import progress_bar
from bench.train.resources import trim_heap
from methods.cove.model import CoVEModel
from methods.cove.sharding import full_tensors, is_sharded, local_optimizer_state, reshard_optimizer_state

PROGRESS = "cove_progress.json"
# Work dirs written before the progress file named its files.
LEGACY_FILES = {"last": "cove_last.safetensors", "best": "cove_best.safetensors", "optimizer": "cove_optimizer.pt"}


@dataclass(frozen=True)
class Sample:
    """One training example: the prompt ids, the target item and the full text's ids."""

    prompt: list[int]
    target: int
    sequence: list[int]


@dataclass(frozen=True)
class TrainSettings:
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"  # cosine | linear | constant (after warm-up)
    batch_size: int = 8
    grad_accum: int = 4
    epochs: int = 3
    patience: int = 2  # epochs without a better validation score before stopping; 0 = never stop early
    loss: str = "item"  # item | all_tokens
    max_train_minutes: float = 0.0  # 0 = no budget
    max_grad_norm: float = 1.0  # Hugging Face Trainer's default, which the authors' script used
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (CPU autocast; CUDA always runs bf16 autocast)
    length_buckets: bool = False  # batches of similar length (less padding), order still seeded


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
    def __init__(self, model: CoVEModel, samples: list[Sample], settings: TrainSettings, *, work_dir: Path,
                 device: str, pad_id: int, validate: Callable[[], float] | None, log: Callable[[str], None],
                 fingerprint: dict[str, Any], resume_only: bool = False) -> None:
        self.resume_only = resume_only
        self.model, self.samples, self.s = model, samples, settings
        self.work_dir, self.device, self.pad_id = Path(work_dir), device, pad_id
        self.validate, self.log, self.fingerprint = validate, log, fingerprint
        self.sharded = is_sharded(model)  # FSDP (methods/cove/sharding.py): gradients arrive averaged
        self.checkpoints = CheckpointDir(self.work_dir, legacy=LEGACY_FILES, state_name=PROGRESS)
        self.files: dict[str, str] = {}
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        batches = math.ceil(len(samples) / settings.batch_size)
        self.steps_per_epoch = math.ceil(batches / settings.grad_accum)
        total = self.steps_per_epoch * settings.epochs
        warmup = math.ceil(settings.warmup_ratio * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, settings.scheduler))
        self.progress: dict[str, Any] = {"epochs_done": 0, "best_epoch": None, "best_score": None,
                                         "bad_epochs": 0, "finished": False, "stopped_by": None,
                                         "epoch_scores": [], "optimizer_steps": 0, "train_seconds": 0.0,
                                         "real_tokens": 0, "padded_tokens": 0}

    # -- checkpoints ----------------------------------------------------------------------

    def _optimizer_role(self) -> str:
        """FSDP: each rank's optimizer holds the state of its own shards, so each rank keeps a file."""
        return f"optimizer.rank{world()[0]}" if self.sharded else "optimizer"

    def _save(self, best: bool) -> None:
        """One commit per epoch: every file of the epoch, then the progress file naming them."""
        # Sharded (FSDP) tensors are gathered whole first: a collective every rank joins.
        state = {k: v.detach().cpu().contiguous() for k, v in full_tensors(self.model.trainable_state()).items()}
        tag = f"e{self.progress['epochs_done']:04d}"
        optimizer = {"optimizer": local_optimizer_state(self.optimizer.state_dict()) if self.sharded
                     else self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        written: dict[str, str] = {}
        if self.sharded:  # each rank its own shard's file, before rank 0 commits the epoch
            mine = self.checkpoints.write_file(self._optimizer_role(), tag, ".pt", lambda path: torch.save(optimizer,
                                                                                                          path))
            written = dict(gather((self._optimizer_role(), mine)))
        if not is_main():  # under torchrun every rank holds the same weights; rank 0 writes them
            barrier()
            return
        writers = {"last": (".safetensors", lambda path: save_file(state, path))}
        if best:
            writers["best"] = (".safetensors", lambda path: save_file(state, path))
        if not self.sharded:
            writers["optimizer"] = (".pt", lambda path: torch.save(optimizer, path))
        committed = self.checkpoints.commit({**self.progress, "fingerprint": self.fingerprint,
                                             "settings": asdict(self.s)}, tag, writers, written)
        self.files = committed["files"]
        barrier()

    def _resume(self) -> bool:
        """Load the last completed epoch if this work_dir holds a run with the same fingerprint. Only
        loading a finished run (resume_only: rescore, speed --trained) needs no optimizer, so an FSDP
        run's per-rank files are not read then."""
        record = self.checkpoints.read_state()
        if record is None or "fingerprint" not in record:
            return False
        if record.get("fingerprint") != self.fingerprint or record.get("settings") != asdict(self.s):
            self.log(f"cove: {self.work_dir} holds a run with another config; starting afresh")
            return False
        self.files = record["files"]
        load_checkpoint(self.model, self.checkpoints.path(record, "last"))
        if not self.resume_only:
            optimizer_file = self.checkpoints.path(record, self._optimizer_role())
            extra = torch.load(optimizer_file, weights_only=True)  # our own file: tensors and numbers
            self.optimizer.load_state_dict(extra["optimizer"])
            if self.sharded:
                reshard_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(extra["scheduler"])
        self.progress = {k: record.get(k, v) for k, v in self.progress.items()}
        self.log(f"cove: resumed after epoch {self.progress['epochs_done']} from {self.work_dir}")
        return True

    def load_best(self) -> None:
        # From the committed state on disk: every rank reads what rank 0 committed (only rank 0 commits).
        best = self.checkpoints.path(self.checkpoints.read_state(), "best")
        if best is not None and best.exists():
            load_checkpoint(self.model, best)

    # -- training -------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        # A resumed run's earlier epochs were trained by an earlier call: say so in the record.
        resumed_after = self.progress["epochs_done"] if self._resume() else None
        if self.resume_only and not self.progress["finished"]:
            raise nothing_to_load(self.work_dir, "cove", "its progress file is missing, unfinished or from other "
                                  "settings")
        budget = self.s.max_train_minutes * 60 if self.s.max_train_minutes > 0 else None
        started = time.perf_counter() - self.progress["train_seconds"]
        epoch = self.progress["epochs_done"]
        ranks = world()[1]
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        while not self.progress["finished"] and epoch < self.s.epochs:
            torch.manual_seed(self.s.seed * 1_000_003 + epoch + 7919 * world()[0])  # dropout repeats after a resume
            self.model.train()
            batches = epoch_batches([len(s.sequence) for s in self.samples], self.s.batch_size,
                                    self.s.seed * 1_000_003 + epoch, self.s.length_buckets)
            bar = progress_bar(batches, desc=f"cove epoch {epoch + 1}/{self.s.epochs}", unit="batch",
                               enabled=is_main())
            out_of_time = False
            for index, batch in enumerate(bar):
                # The micro-batches of this optimizer step: grad_accum, fewer in an epoch's last window.
                window = min(self.s.grad_accum, len(batches) - index // self.s.grad_accum * self.s.grad_accum)
                mine = [self.samples[i] for i in my_slice(batch)]  # empty when ranks outnumber samples
                # FSDP's gathers need every rank in every pass: an idle rank runs a stand-in, weighted 0.
                chosen = mine or ([self.samples[batch[0]]] if self.sharded else [])
                loss = batch_loss(self.model, chosen, self.s.loss, self.pad_id, self.device, self.s.precision) \
                    if chosen else torch.zeros(())
                if mine:
                    widths = [len(s.sequence if self.s.loss != "item" else s.prompt) for s in mine]
                    self.progress["real_tokens"] += sum(widths)
                    self.progress["padded_tokens"] += max(widths) * len(widths)
                if ranks > 1:  # weight = this rank's share of the global batch's loss terms
                    weight = share_weight(loss_terms(mine, self.s.loss, self.model.base_vocab))
                    if chosen and (weight or self.sharded):
                        (loss * weight / window).backward()
                else:
                    (loss / window).backward()
                if (index + 1) % self.s.grad_accum == 0 or index + 1 == len(batches):
                    if not self.sharded:  # FSDP's reduce-scatter has averaged them already
                        average_gradients(trainable)
                    torch.nn.utils.clip_grad_norm_(trainable, self.s.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.progress["optimizer_steps"] += 1
                    if budget is not None and past_deadline_everywhere(time.perf_counter() - started > budget):
                        out_of_time = True
                        break
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if index % TRIM_EVERY == TRIM_EVERY - 1 and self.device == "cpu":
                    trim_heap()
            bar.close()
            self.optimizer.zero_grad(set_to_none=True)
            epoch += 1
            self.progress["train_seconds"] = time.perf_counter() - started
            improved = self._after_epoch(epoch, partial=out_of_time)
            if out_of_time:
                self.progress.update(finished=True, stopped_by="max_train_minutes")
            elif self.s.patience > 0 and self.progress["bad_epochs"] >= self.s.patience:
                self.progress.update(finished=True, stopped_by="early_stopping")
            elif epoch >= self.s.epochs:
                self.progress.update(finished=True, stopped_by="epochs")
            self._save(best=improved)
        if self.validate is not None:
            self.load_best()
        self.model.eval()
        return {**self.progress, "resumed_after_epoch": resumed_after}

    def _after_epoch(self, epoch: int, partial: bool) -> bool:
        """Validate (if the harness lent a validator); True when this epoch is the best so far."""
        self.progress["epochs_done"] = epoch
        if self.validate is None:
            self.progress["best_epoch"] = epoch
            return True
        self.model.eval()
        with torch.no_grad():
            score = float(self.validate())
        self.progress["epoch_scores"].append(round(score, 6))
        best = self.progress["best_score"]
        note = " (partial epoch: time budget)" if partial else ""
        if best is None or score > best:
            self.progress.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            self.log(f"cove: epoch {epoch} validation NDCG@10 {score:.4f} (best){note}")
            return True
        self.progress["bad_epochs"] += 1
        self.log(f"cove: epoch {epoch} validation NDCG@10 {score:.4f} (best {best:.4f} at epoch "
                 f"{self.progress['best_epoch']}){note}")
        return False
