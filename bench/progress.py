"""One progress-bar rule for every long phase (training, validation, scoring, title embedding)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, drawn only when stderr is a terminal (tqdm's disable=None), so piped
    output, logs and CI stay clean while a person at a terminal sees every phase move."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=None if enabled else True, file=sys.stderr, **kwargs)
