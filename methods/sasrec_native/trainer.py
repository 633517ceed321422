"""The native SASRec's training loop: whole-sequence batches, early stopping on the harness's
validation, and a checkpoint after every epoch so an interrupted run resumes where it stopped."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.batching import epoch_batches
from bench.errors import BenchError
from bench.progress import progress_bar
from methods.sasrec_native.model import PAD, SASRec, all_position_loss
from methods.sasrec_native.settings import NativeSASRecSettings

LAST, BEST, PROGRESS = "last.pt", "best.pt", "progress.json"


def training_windows(sequences: list[list[int]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Per user (>= 2 items): inputs = items[:-1], targets = items[1:], both the last `max_len` (the
    paper's window; earlier targets of longer sequences are not trained on)."""
    return [(seq[:-1][-max_len:], seq[1:][-max_len:]) for seq in sequences if len(seq) >= 2]


def right_padded(rows: list[list[int]]) -> torch.Tensor:
    """Catalogue items as model rows (item + 1), right-padded with PAD to the longest row."""
    out = torch.full((len(rows), max(1, max(map(len, rows)))), PAD, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, :len(row)] = torch.tensor(row, dtype=torch.long) + 1
    return out


def sampled_negatives(targets: torch.Tensor, num_items: int, generator: torch.Generator) -> torch.Tensor:
    """One uniform negative row per position, never the position's own target (the paper's sampler
    also avoids the rest of the user's history; with 10k+ items that rarely matters)."""
    negatives = torch.randint(1, num_items + 1, targets.shape, generator=generator)
    clash = negatives == targets
    while clash.any():
        negatives[clash] = torch.randint(1, num_items + 1, (int(clash.sum()),), generator=generator)
        clash = negatives == targets
    return negatives


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class SASRecTrainer:
    def __init__(self, model: SASRec, windows: list[tuple[list[int], list[int]]], settings: NativeSASRecSettings,
                 *, seed: int, work_dir: Path, device: str, validate: Callable[[], float] | None,
                 log: Callable[[str], None], budget_minutes: float | None, fingerprint: dict[str, Any]) -> None:
        self.model, self.windows, self.s = model, windows, settings
        self.seed, self.work_dir, self.device = seed, Path(work_dir), device
        self.validate, self.log, self.budget, self.fingerprint = validate, log, budget_minutes, fingerprint
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.98),
                                          weight_decay=settings.weight_decay)
        self.progress: dict[str, Any] = {"epochs_done": 0, "best_epoch": None, "best_score": None, "bad_epochs": 0,
                                         "finished": False, "stopped_by": None, "epoch_scores": [],
                                         "epoch_losses": [], "optimizer_steps": 0, "train_seconds": 0.0,
                                         "validate_seconds": 0.0, "real_positions": 0, "padded_positions": 0,
                                         "resumed_after_epoch": None}

    # -- checkpoints ----------------------------------------------------------------------

    def _save(self, best: bool) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
                     self.work_dir / LAST)
        if best:
            _atomic_save(self.model.state_dict(), self.work_dir / BEST)
        tmp = self.work_dir / (PROGRESS + ".tmp")
        tmp.write_text(json.dumps({**self.progress, "fingerprint": self.fingerprint}, indent=1))
        os.replace(tmp, self.work_dir / PROGRESS)  # written last: it only names epochs already saved

    def _resume(self) -> None:
        path = self.work_dir / PROGRESS
        if not path.exists():
            return
        record = json.loads(path.read_text())
        if record.get("fingerprint") != self.fingerprint:
            self.log(f"sasrec_native: {self.work_dir} holds a run with another config; starting afresh")
            return
        try:
            state = torch.load(self.work_dir / LAST, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (OSError, RuntimeError, KeyError) as error:
            raise BenchError(f"{self.work_dir / LAST}: cannot resume from it ({str(error)[:160]}); delete "
                             f"{self.work_dir} or run again with --force") from None
        self.progress = {k: record.get(k, v) for k, v in self.progress.items()}
        self.progress["resumed_after_epoch"] = self.progress["epochs_done"]
        self.log(f"sasrec_native: resumed after epoch {self.progress['epochs_done']} from {self.work_dir}")

    def load_best(self) -> None:
        if (self.work_dir / BEST).exists():
            self.model.load_state_dict(torch.load(self.work_dir / BEST, map_location=self.device, weights_only=True))

    # -- training -------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        self._resume()
        s, p = self.s, self.progress
        started = time.perf_counter() - p["train_seconds"]
        deadline = started + self.budget * 60 if self.budget else None
        lengths = [len(inputs) for inputs, _ in self.windows]
        while not p["finished"] and p["epochs_done"] < s.epochs:
            epoch = p["epochs_done"]
            torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout repeats after a resume
            negatives_rng = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            batches = epoch_batches(lengths, s.batch_size, self.seed * 1_000_003 + epoch, s.length_buckets)
            self.model.train()
            total, out_of_time = 0.0, False
            bar = progress_bar(batches, desc=f"sasrec_native epoch {epoch + 1}/{s.epochs}", unit="batch")
            for batch in bar:
                inputs = right_padded([self.windows[i][0] for i in batch]).to(self.device)
                targets = right_padded([self.windows[i][1] for i in batch]).to(self.device)
                negatives = (sampled_negatives(targets, self.model.config.num_items, negatives_rng).to(self.device)
                             if s.loss == "bce" else None)
                loss = all_position_loss(self.model, inputs, targets, s.loss, negatives)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                p["optimizer_steps"] += 1
                p["real_positions"] += int((inputs != PAD).sum())
                p["padded_positions"] += inputs.numel()
                total += float(loss.detach()) * len(batch)
                if deadline is not None and time.perf_counter() > deadline:
                    out_of_time = True
                    break
            bar.close()
            p["epochs_done"] = epoch + 1
            p["epoch_losses"].append(round(total / max(1, len(self.windows)), 5))
            improved = self._after_epoch(epoch + 1, partial=out_of_time)
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
        note = " (partial epoch: time budget)" if partial else ""
        if p["best_score"] is None or score > p["best_score"]:
            p.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            self.log(f"sasrec_native: epoch {epoch} loss {p['epoch_losses'][-1]:.4f}, validation NDCG@10 "
                     f"{score:.4f} (best){note}")
            return True
        p["bad_epochs"] += 1
        self.log(f"sasrec_native: epoch {epoch} loss {p['epoch_losses'][-1]:.4f}, validation NDCG@10 {score:.4f} "
                 f"(best {p['best_score']:.4f} at epoch {p['best_epoch']}){note}")
        return False
