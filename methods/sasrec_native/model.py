"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder over the item sequence.

The blocks follow the authors' code (and its PyTorch port): item embedding scaled by sqrt(d) plus a
learned position embedding, then per block `x = LN(x); x = x + MHA(x)` (causal) and
`x = x + FFN(LN(x))` with ReLU, a final LayerNorm, and scores `h . E[item]` with the input embedding
shared as the output layer (Eq. 6 of the paper).

Positions count from the oldest item kept (0, 1, ...), and sequences are right-padded, so with the
causal mask the state after item t depends only on items 0..t: scoring a prefix alone gives exactly
the state that the whole-sequence training pass used for that prefix, and a batch's width never
changes a user's scores (length-bucketed and plain batches agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0  # item row 0 is padding; catalogue item i is row i + 1


@dataclass(frozen=True)
class SASRecConfig:
    num_items: int
    max_seq_length: int = 50
    hidden_size: int = 64
    inner_size: int = 256
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.5  # on embeddings, attention weights and the FFN (the paper's 0.5 for sparse data)


class Block(nn.Module):
    def __init__(self, c: SASRecConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=1e-8)
        self.attn = nn.MultiheadAttention(c.hidden_size, c.n_heads, dropout=c.dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(c.hidden_size, c.inner_size), nn.ReLU(), nn.Dropout(c.dropout),
                                 nn.Linear(c.inner_size, c.hidden_size), nn.Dropout(c.dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        # The authors' block: queries normalised, keys/values the un-normalised input, residual on q.
        x = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        return x + self.ffn(self.ffn_norm(x))


class SASRec(nn.Module):
    def __init__(self, c: SASRecConfig) -> None:
        super().__init__()
        self.config = c
        self.item_embedding = nn.Embedding(c.num_items + 1, c.hidden_size, padding_idx=PAD)
        self.position_embedding = nn.Embedding(c.max_seq_length, c.hidden_size)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.hidden_size, eps=1e-8)
        for module in self.modules():  # the authors' PyTorch port: xavier-normal for every matrix
            for name, param in module.named_parameters(recurse=False):
                if param.dim() > 1 and "norm" not in name:
                    nn.init.xavier_normal_(param)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def hidden_states(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded item rows (0 = pad) -> (B, T, d); pad positions are zeroed."""
        width = items.shape[1]
        real = (items != PAD).unsqueeze(-1)
        positions = torch.arange(width, device=items.device)
        x = self.item_embedding(items) * self.config.hidden_size ** 0.5 + self.position_embedding(positions)
        x = self.dropout(x) * real
        causal = torch.triu(torch.ones(width, width, dtype=torch.bool, device=items.device), diagonal=1)
        for block in self.blocks:
            x = block(x, causal) * real
        return self.final_norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the catalogue (pad row excluded): column i is catalogue item i."""
        return hidden @ self.item_embedding.weight[1:].T

    def last_states(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The state after each sequence's last real item (lengths >= 1)."""
        hidden = self.hidden_states(items)
        return hidden[torch.arange(items.shape[0], device=items.device), lengths - 1]


def all_position_loss(model: SASRec, inputs: torch.Tensor, targets: torch.Tensor, loss: str = "ce",
                      negatives: torch.Tensor | None = None) -> torch.Tensor:
    """The loss at every real position of every sequence, averaged over positions: one pass trains
    each prefix's next item (the paper's training). `targets` are item rows (0 = no target).

    loss = "ce": softmax cross-entropy over all items; "bce": the paper's binary loss with one sampled
    negative per position (`negatives`, item rows)."""
    hidden = model.hidden_states(inputs)
    real = targets != PAD
    states = hidden[real]
    if loss == "ce":
        return F.cross_entropy(model.item_logits(states), targets[real] - 1)
    if negatives is None:
        raise ValueError("loss='bce' needs one negative item per position")
    table = model.item_embedding.weight
    positive = (states * table[targets[real]]).sum(-1)
    negative = (states * table[negatives[real]]).sum(-1)
    return (F.softplus(-positive) + F.softplus(negative)).mean()  # -log s(p) - log(1 - s(n))
