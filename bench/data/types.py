"""The one prepared form every method sees: an item catalogue and a split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Catalogue:
    """Items with dense indices 0..N-1; `titles[i]` is None when the metadata has none. `text[i]`, where
    the source has it, holds item text beyond the title (brand, categories, description; the card's
    `text_fields`), for methods that read more than titles."""

    asins: list[str]
    titles: list[str | None]
    text: list[dict[str, Any]] | None = None
    # Not an init field: dataclasses.replace() gives a changed catalogue its own hash, never the cached one.
    _hash: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.asins)

    @property
    def hash(self) -> str:
        """Content hash of everything a method can read about the items (ids, titles, item text): the split
        hash covers the sequences, this covers the rest, so a fixed title is another dataset."""
        if not self._hash:
            payload = [self.asins, self.titles, self.text]
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
            self._hash.append(hashlib.sha256(text.encode()).hexdigest()[:16])
        return self._hash[0]

    def title_or(self, index: int, fallback: str = "no title") -> str:
        """CoVE writes "no title" for items without one; every method shares that rule."""
        title = self.titles[index]
        return title if title else fallback

    def describe(self, index: int, fields: tuple[str, ...] | list[str] = ("title",)) -> str:
        """One line of an item's text for an encoder or a prompt: the asked fields it has, in order
        ("title" is the title, or "no title"); lists (category paths) are joined with " > "."""
        extra = self.text[index] if self.text is not None else {}
        parts = []
        for name in fields:
            value = self.title_or(index) if name == "title" else extra.get(name)
            if isinstance(value, list):
                value = " > ".join(str(v) for v in _flatten(value))
            if value:
                parts.append(str(value) if name == "title" else f"{name}: {value}")
        return "; ".join(parts)


def _flatten(value: list[Any]) -> list[Any]:
    """2014 meta files nest category paths as lists of lists."""
    return [leaf for part in value for leaf in (_flatten(part) if isinstance(part, list) else [part])]


@dataclass(frozen=True)
class EvalCases:
    """Requests for the evaluator: predict `targets[j]` from `histories[j]` for `users[j]`."""

    users: list[int]
    histories: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, positions: list[int]) -> EvalCases:
        return EvalCases(
            [self.users[p] for p in positions],
            [self.histories[p] for p in positions],
            [self.targets[p] for p in positions],
        )


@dataclass(frozen=True)
class Split:
    """Training sequences per user plus validation and test requests.

    `train[u]` is user u's chronological training sequence (may be empty for a
    global-time split). Every method trains on `train` only, selects on `valid`
    and is reported on `test`.
    """

    protocol: str
    train: list[list[int]]
    valid: EvalCases
    test: EvalCases
    _hash: list[str] = field(default_factory=list, repr=False, compare=False)

    def cases(self, target: str) -> EvalCases:
        if target not in ("test", "valid"):
            raise ValueError(f"eval.target must be 'test' or 'valid', got {target!r}")
        return self.test if target == "test" else self.valid

    @property
    def hash(self) -> str:
        """Content hash: two runs are comparable only if this matches."""
        if not self._hash:
            digest = hashlib.sha256(self.protocol.encode())
            for part in (self.train, self.valid.histories, self.valid.targets,
                         self.test.histories, self.test.targets):
                digest.update(json.dumps(part, separators=(",", ":")).encode())
            self._hash.append(digest.hexdigest()[:16])
        return self._hash[0]


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: catalogue, full sequences and the split the card names."""

    name: str
    catalogue: Catalogue
    split: Split
    title_kind: str = "title"

    @property
    def num_items(self) -> int:
        return len(self.catalogue)

    @property
    def num_users(self) -> int:
        return len(self.split.train)
