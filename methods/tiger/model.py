"""TIGER's token layout, its T5, and beam search constrained to the catalogue's semantic IDs.

Tokens: 0 = padding (and the decoder's start), 1 = end of input, then one range per ID level
(level l of `levels` codebooks: K tokens; the collision digit: D tokens), then hashed user buckets.
An item is its ID's tokens in order; a request is [user bucket] + its history's item tokens + end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PAD, EOS = 0, 1


@dataclass(frozen=True)
class TokenLayout:
    level_sizes: tuple[int, ...]  # K per codebook level, then the collision digit's range
    user_buckets: int

    @property
    def offsets(self) -> list[int]:
        out, start = [], 2
        for size in self.level_sizes:
            out.append(start)
            start += size
        return out

    @property
    def user_offset(self) -> int:
        return 2 + sum(self.level_sizes)

    @property
    def vocab_size(self) -> int:
        return self.user_offset + self.user_buckets

    def item_tokens(self, ids: np.ndarray) -> np.ndarray:
        """(N, levels + 1) semantic IDs -> (N, levels + 1) token ids."""
        return ids + np.asarray(self.offsets)[None, :]

    def encoder_input(self, user: int, history: list[int], item_tokens: np.ndarray, max_history: int) -> list[int]:
        head = [self.user_offset + user % self.user_buckets] if self.user_buckets else []
        recent = history[-max_history:] if max_history else history
        return head + item_tokens[recent].reshape(-1).tolist() + [EOS]


def build_t5(layout: TokenLayout, d_model: int, num_layers: int, num_heads: int, d_kv: int, d_ff: int,
             dropout: float) -> Any:
    """A randomly initialised T5 sized from the config (TIGER: 4 + 4 layers, d_model 128, 6 heads of 64,
    d_ff 1024, ReLU)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=layout.vocab_size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
                      num_decoder_layers=num_layers, num_heads=num_heads, dropout_rate=dropout,
                      feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    return T5ForConditionalGeneration(config)


class IDTrie:
    """The catalogue's IDs as a trie of token ids: node tables for vectorised constrained decoding.

    `child[node, t]` is the node reached by the level's t-th token (-1: no item continues that way);
    `leaf_item[node]` is the item whose full ID ends at `node` (-1 elsewhere)."""

    def __init__(self, ids: np.ndarray, layout: TokenLayout) -> None:
        self.layout, self.depth = layout, ids.shape[1]
        width = max(layout.level_sizes)
        children: list[dict[int, int]] = [{}]
        leaf: dict[int, int] = {}
        for item, row in enumerate(ids.tolist()):
            node = 0
            for code in row:
                nxt = children[node].get(code)
                if nxt is None:
                    nxt = len(children)
                    children[node][code] = nxt
                    children.append({})
                node = nxt
            leaf[node] = item
        self.child = torch.full((len(children), width), -1, dtype=torch.long)
        for node, kids in enumerate(children):
            for code, nxt in kids.items():
                self.child[node, code] = nxt
        self.leaf_item = torch.full((len(children),), -1, dtype=torch.long)
        for node, item in leaf.items():
            self.leaf_item[node] = item

    def nodes(self, generated: torch.Tensor) -> torch.Tensor:
        """The trie node each row's generated ID tokens lead to ((rows, steps) tokens, start excluded)."""
        node = torch.zeros(generated.shape[0], dtype=torch.long, device=generated.device)
        child = self.child.to(generated.device)
        for level in range(generated.shape[1]):
            node = child[node, (generated[:, level] - self.layout.offsets[level]).clamp(min=0)]
        return node

    def items(self, generated: torch.Tensor) -> torch.Tensor:
        return self.leaf_item.to(generated.device)[self.nodes(generated)]


class CatalogueConstraint:
    """A logits processor: at each step only tokens that continue some item's ID keep their score."""

    def __init__(self, trie: IDTrie) -> None:
        self.trie = trie

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - 1  # tokens generated after the decoder's start token
        out = torch.full_like(scores, float("-inf"))
        if step >= self.trie.depth:
            out[:, EOS] = 0.0
            return out
        nodes = self.trie.nodes(input_ids[:, 1:])
        allowed = self.trie.child.to(scores.device)[nodes] >= 0  # (rows, width)
        start, size = self.trie.layout.offsets[step], self.trie.layout.level_sizes[step]
        window = scores[:, start:start + size]
        out[:, start:start + size] = torch.where(allowed[:, :size], window, torch.full_like(window, float("-inf")))
        return out
