"""LC-Rec's item indices as vocabulary: each semantic-ID level gets its own tokens (`<a_12>`, `<b_7>`, `<c_200>`,
`<d_0>` for the collision digit), so an item is written as one token per level (methods.semantic_ids.trie
keeps decoding inside the catalogue)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.errors import BenchError

LEVEL_LETTERS = "abcdefgh"


def code_token(level: int, code: int) -> str:
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def add_code_tokens(tokenizer: Any, ids: np.ndarray) -> np.ndarray:
    """Add one token per (level, code) value the catalogue uses; returns each item's token ids [items, levels]."""
    from tokenizers import AddedToken

    levels = ids.shape[1]
    if levels > len(LEVEL_LETTERS):
        raise BenchError(f"lcrec: semantic IDs of {levels} levels; at most {len(LEVEL_LETTERS)} are supported")
    names = [[code_token(level, int(code)) for code in np.unique(ids[:, level])] for level in range(levels)]
    clash = [name for level in names for name in level[:5] if name in tokenizer.get_vocab()]
    if clash:
        raise BenchError(f"lcrec: the model's tokenizer already has {clash[0]}; cannot add item-code tokens")
    tokenizer.add_tokens([AddedToken(name, special=True, normalized=False) for level in names for name in level],
                         special_tokens=True)
    vocab = tokenizer.get_vocab()
    return np.array([[vocab[code_token(level, int(code))] for level, code in enumerate(row)] for row in ids],
                    dtype=np.int64)
