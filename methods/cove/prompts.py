"""CoVE prompts as token ids: the authors' wording, item tokens `<|i|>` and quoted titles.

Prompt (from the authors' process_data.py):
    " Instruction: Given a list of items the user has bought before, please recommend a new item
    that the user likes to the user. \\n Here is the list of items that the user has bought: "
    followed by `<|id|>: "title"` pairs joined by ", "; training appends the target `<|id|>: "title"`,
    evaluation stops right before the target's token and scores it.

Ids are built from pieces tokenised once per item (`<|i|>` + `: "title",`), which gives the same
ids as tokenising the whole text (item tokens are added with lstrip=True, so the space before
them is absorbed and they split the text) and makes the evaluation prompt an exact prefix of
the training sequence. (The authors' evaluation prompt had an extra space after the colon for
all but the first item and a trailing space; we do not reproduce that.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.data.types import Catalogue
from bench.errors import BenchError

INSTRUCTION = (
    " Instruction: Given a list of items the user has bought before, please recommend a new item that the user "
    "likes to the user. \n Here is the list of items that the user has bought: "
)


def item_token(item: int) -> str:
    return f"<|{item}|>"


# Above this many items the item tokens are not added to the tokenizer: prompts are built from ids
# (item i = V + i) and never need them, and adding 10M tokens took 154 s and 4 GB.
TOKENIZER_ITEM_LIMIT = 200_000


def add_item_tokens(tokenizer: Any, num_items: int, embedding_rows: int) -> int:
    """Append `<|0|>` .. `<|N-1|>` in item order; returns the base vocabulary size V (the model's
    embedding rows), so that item i has token id V + i.

    Some models pad their embedding table beyond the tokenizer; the gap is filled with unused
    placeholder tokens so item ids still start right after the last embedding row. Catalogues over
    TOKENIZER_ITEM_LIMIT keep the ids V + i without tokenizer entries (decoded text then shows no
    item tokens; nothing else changes).
    """
    from tokenizers import AddedToken

    if len(tokenizer) > embedding_rows:
        raise BenchError(f"tokenizer has {len(tokenizer)} tokens but the model only {embedding_rows} embedding rows")
    if num_items > TOKENIZER_ITEM_LIMIT:
        return embedding_rows
    clash = [item_token(i) for i in range(min(num_items, 50)) if item_token(i) in tokenizer.get_vocab()]
    if clash:
        raise BenchError(f"model tokenizer already has item-like tokens ({clash[0]}); cannot add CoVE item tokens")
    filler = [AddedToken(f"<|cove_unused_{j}|>", special=True, normalized=False)
              for j in range(embedding_rows - len(tokenizer))]
    tokens = [AddedToken(item_token(i), lstrip=True, rstrip=False, normalized=False, special=True)
              for i in range(num_items)]
    added = tokenizer.add_tokens(filler + tokens, special_tokens=True)
    first, last = tokenizer.convert_tokens_to_ids([item_token(0), item_token(num_items - 1)])
    if added != len(filler) + num_items or first != embedding_rows or last != embedding_rows + num_items - 1:
        raise BenchError("tokenizer did not append item tokens contiguously after the model's vocabulary")
    return embedding_rows


def shorten(title: str, max_words: int) -> str:
    """Keep the first `max_words` words (0 = the whole title, as the authors did)."""
    return title if max_words <= 0 else " ".join(title.split()[:max_words])


@dataclass(frozen=True)
class PromptSettings:
    use_titles: bool = True
    max_title_words: int = 0
    max_history: int = 0  # most recent items kept; 0 = all
    max_prompt_tokens: int = 1024  # oldest items are dropped beyond this


class PromptEncoder:
    """Token ids for CoVE prompts (evaluation) and training sequences."""

    def __init__(self, tokenizer: Any, catalogue: Catalogue, base_vocab: int, settings: PromptSettings) -> None:
        self.settings, self.base_vocab = settings, base_vocab
        # The space after "bought:" belongs to the first item token (lstrip), as in the whole text.
        self.head: list[int] = tokenizer(INSTRUCTION.rstrip(" "))["input_ids"]
        if settings.use_titles:
            titles = [shorten(catalogue.title_or(i), settings.max_title_words) for i in range(len(catalogue))]
            in_history = tokenizer([f': "{t}",' for t in titles], add_special_tokens=False)["input_ids"]
            as_target = tokenizer([f': "{t}"' for t in titles], add_special_tokens=False)["input_ids"]
        else:  # ID-only prompts: "<|3|>, <|8|>, ..."
            comma = tokenizer(",", add_special_tokens=False)["input_ids"]
            in_history, as_target = [comma] * len(catalogue), [[] for _ in range(len(catalogue))]
        self.history_piece = [[base_vocab + i, *ids] for i, ids in enumerate(in_history)]
        self.target_tail = as_target

    def token(self, item: int) -> int:
        return self.base_vocab + item

    def prompt(self, history: list[int]) -> list[int]:
        """Instruction + history pieces, ending where the next item's token goes."""
        s = self.settings
        if s.max_history > 0:
            history = history[-s.max_history:]
        pieces = [self.history_piece[i] for i in history]
        length = len(self.head) + sum(len(p) for p in pieces)
        while len(pieces) > 1 and length > s.max_prompt_tokens:
            length -= len(pieces.pop(0))
        return [*self.head, *(t for piece in pieces for t in piece)]

    def training_sequence(self, history: list[int], target: int) -> list[int]:
        """prompt + `<|target|>` + `: "title"` (the whole text is the label under loss = all_tokens)."""
        return [*self.prompt(history), self.token(target), *self.target_tail[target]]


def prompt_texts(catalogue: Catalogue) -> list[str]:
    """Every text piece a CoVE prompt uses: the vocabulary a tiny test tokenizer must cover
    (see tests/tiny.py)."""
    titles = [catalogue.title_or(i) for i in range(len(catalogue))]
    return [INSTRUCTION, ",", *(f': "{t}",' for t in titles)]
