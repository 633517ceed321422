"""The native SASRec's batches and training step; the epoch loop (early stopping, budget, a
checkpoint per epoch) is the shared bench.train.lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.train.batching import epoch_batches
from bench.train.lifecycle import EpochTrainer, LoopSettings
from methods.sasrec_native.model import PAD, SASRec, all_position_loss
from methods.sasrec_native.settings import NativeSASRecSettings


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


def train_sasrec(model: SASRec, windows: list[tuple[list[int], list[int]]], s: NativeSASRecSettings, *,
                 seed: int, work_dir: Path, device: str, validate: Callable[[], float] | None,
                 log: Callable[[str], None], budget_minutes: float | None,
                 fingerprint: dict[str, Any], resume_only: bool = False) -> dict[str, Any]:
    """Train in place; returns the loop's progress plus the padding counts of this call."""
    optimizer = torch.optim.Adam(model.parameters(), lr=s.learning_rate, betas=(0.9, 0.98),
                                 weight_decay=s.weight_decay)
    loop = EpochTrainer(model, optimizer, LoopSettings("sasrec_native", s.epochs, s.patience, seed, budget_minutes,
                                                     resume_only),
                        work_dir=work_dir, device=device, validate=validate, log=log, fingerprint=fingerprint)
    lengths = [len(inputs) for inputs, _ in windows]
    counts = {"real_positions": 0, "padded_positions": 0}
    negatives_rng = torch.Generator().manual_seed(seed)
    epoch_negatives: list[torch.Tensor] = []

    def batches(epoch: int) -> list[list[int]]:
        if s.loss == "bce":  # every example's negatives for the epoch, whatever rank its slice lands on
            negatives_rng.manual_seed(seed * 1_000_003 + epoch)
            flat = torch.tensor([t + 1 for _, targets in windows for t in targets], dtype=torch.long)
            epoch_negatives[:] = sampled_negatives(flat, model.config.num_items, negatives_rng).split(lengths)
        return epoch_batches(lengths, s.batch_size, seed * 1_000_003 + epoch, s.length_buckets)

    def step(batch: list[int]) -> tuple[torch.Tensor, int]:
        inputs = right_padded([windows[i][0] for i in batch]).to(device)
        targets = right_padded([windows[i][1] for i in batch]).to(device)
        negatives = None
        if s.loss == "bce":  # padded positions take item row 1; the loss reads real positions only
            negatives = torch.ones_like(targets)
            for row, i in enumerate(batch):
                negatives[row, :lengths[i]] = epoch_negatives[i]
        counts["real_positions"] += int((inputs != PAD).sum())
        counts["padded_positions"] += inputs.numel()
        # The loss is a mean over target positions, so positions are the examples it averages (what the
        # shared loop weights by when a batch is split over ranks).
        return all_position_loss(model, inputs, targets, s.loss, negatives), int((targets != PAD).sum())

    return {**loop.train(batches, step), **counts}
