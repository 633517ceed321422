"""TIGER's token layout and its T5 (methods.semantic_ids.trie constrains its beams to the catalogue).

Tokens: 0 = padding (and the decoder's start), 1 = end of input, then one range per ID level
(level l of `levels` codebooks: K tokens; the collision digit: D tokens), then hashed user buckets.
An item is its ID's tokens in order; a request is [user bucket] + its history's item tokens + end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
