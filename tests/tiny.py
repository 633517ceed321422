"""Tiny things the tests build in memory in well under a second, so learning tests need neither files nor
SmolLM2: rule datasets whose next item is learnable (or not), readable synthetic titles, a word-level
tokenizer and a randomly initialised two-layer Llama over it.

    model, tokenizer = tiny_backbone(["Here is a list", 'red lipstick "0"'])
"""

from __future__ import annotations

import random
from typing import Any

from bench.data.split import leave_one_out
from bench.data.types import Catalogue, Dataset
from bench.train.backbone import prepare_tokenizer, tiny_llama

COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "coral", "ivory", "olive", "slate"]
THINGS = ["lipstick", "serum", "brush", "mask", "cream", "polish", "soap", "lotion", "comb", "oil"]


def synthetic_titles(num_items: int) -> list[str]:
    """Distinct readable titles ("red lipstick 0", ...)."""
    return [f"{COLOURS[i % 10]} {THINGS[(i // 10) % 10]} {i}" for i in range(num_items)]


def rule_dataset(
    num_items: int = 20,
    num_users: int = 200,
    length: int = 6,
    rule: str = "next",
    seed: int = 0,
) -> Dataset:
    """Users walk a deterministic chain: after item i comes item (i + 1) mod N.

    rule="next": the chain holds, so a model can learn it (HR@1 near 1).
    rule="random": the next item is uniformly random, so nothing beyond chance is learnable.
    """
    rng = random.Random(seed)
    sequences = []
    for _ in range(num_users):
        item = rng.randrange(num_items)
        seq = [item]
        for _ in range(length - 1):
            item = (item + 1) % num_items if rule == "next" else rng.randrange(num_items)
            seq.append(item)
        sequences.append(seq)
    catalogue = Catalogue([f"A{i:05d}" for i in range(num_items)], list(synthetic_titles(num_items)))
    return Dataset(f"synthetic-{rule}", catalogue, leave_one_out(sequences))


def word_tokenizer(texts: list[str]) -> Any:
    """A word-level PreTrainedTokenizerFast over the words and punctuation runs of `texts`.

    Offline and instant; ids 0/1/2 are <pad>/<eos>/<unk>; left padding like the real loader.
    Tokens added later with `add_tokens` (e.g. item tokens) are matched before splitting.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = splitter
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    return prepare_tokenizer(fast)


def tiny_backbone(texts: list[str], seed: int = 0, hidden: int = 64, layers: int = 2) -> tuple[Any, Any]:
    """(tiny_llama, word_tokenizer) over the vocabulary of `texts`: a drop-in for load_backbone in tests."""
    tokenizer = word_tokenizer(texts)
    return tiny_llama(len(tokenizer), seed=seed, hidden=hidden, layers=layers), tokenizer


def killed_at_step(monkeypatch: Any, trainer_class: type, step: int) -> None:
    """Patch `trainer_class.step` to raise KeyboardInterrupt (a Ctrl-C) when called the `step`-th time, as a
    kill in the middle of a training; `monkeypatch.undo()` or the test's end restores it."""
    real_step, calls = trainer_class.step, []

    def killed(self: Any, window: Any) -> Any:
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_step(self, window)

    monkeypatch.setattr(trainer_class, "step", killed)
