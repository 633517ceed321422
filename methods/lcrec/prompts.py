"""ID-only prompts in token ids, built from pieces so that an evaluation prompt is an exact prefix of the
training sequence it continues (as CoVE's `cpu` preset): the instruction, then every item's code tokens
followed by ", ". Training is sequence-level: one pass over a user's whole training sequence with the loss
on the code tokens of every item after the first (CoVE's `loss = "sequence"`), not one example per prefix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.train.lora_trainer import IGNORE_INDEX, TrainExample

INSTRUCTION = ("Given a list of items the user has bought before, please recommend a new item that the user likes "
               "to the user. Here is the list of items that the user has bought: ")
SEPARATOR = ", "


@dataclass(frozen=True)
class PromptPieces:
    """The instruction's and the separator's token ids, and every item's code tokens."""

    instruction: list[int]
    separator: list[int]
    item_tokens: Any  # np.ndarray [items, levels]

    @classmethod
    def build(cls, tokenizer: Any, item_tokens: Any) -> PromptPieces:
        return cls(tokenizer(INSTRUCTION, add_special_tokens=True)["input_ids"],
                   tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"], item_tokens)

    def request(self, history: list[int], max_history: int) -> list[int]:
        """The prompt that asks for the item after `history` (its last max_history items)."""
        ids = list(self.instruction)
        for item in history[-max_history:]:
            ids += self.item_tokens[item].tolist() + self.separator
        return ids

    def training_sequence(self, sequence: list[int], max_history: int) -> TrainExample:
        """The user's last max_history + 1 items; labels on the codes of every item but the first."""
        items = sequence[-(max_history + 1):]
        ids, labels = list(self.instruction), [IGNORE_INDEX] * len(self.instruction)
        for position, item in enumerate(items):
            codes = self.item_tokens[item].tolist()
            ids += codes
            labels += codes if position else [IGNORE_INDEX] * len(codes)
            if position < len(items) - 1:
                ids += self.separator
                labels += [IGNORE_INDEX] * len(self.separator)
        return TrainExample(ids, labels)
