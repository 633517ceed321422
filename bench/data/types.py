"""The one prepared form every method sees: an item catalogue and a split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Catalogue:
    """Items with dense indices 0..N-1; `titles[i]` is None when the metadata has none."""

    asins: list[str]
    titles: list[str | None]

    def __len__(self) -> int:
        return len(self.asins)

    def title_or(self, index: int, fallback: str = "no title") -> str:
        """CoVE writes "no title" for items without one; every method shares that rule."""
        title = self.titles[index]
        return title if title else fallback


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
