"""One progress rule for every long phase (training, validation, scoring, title embedding): a tqdm bar
when stderr is a terminal; otherwise (a background job, CI, `nohup`) one plain line every
LOG_EVERY_SECONDS with count, rate, ETA and the phase's loss, so a log file shows a run moving instead of
staying silent for an hour or filling with carriage returns.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

LOG_EVERY_SECONDS = 30.0


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr at a terminal, progress lines in a log, nothing when not `enabled`."""
    if not stderr_is_terminal():
        return LineProgress(iterable, enabled=enabled, **kwargs)
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not enabled, file=sys.stderr, **kwargs)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class LineProgress:
    """The part of tqdm's interface the harness uses (iterate, update, set_postfix, close), written as
    one line per LOG_EVERY_SECONDS: `tiger epoch 3/60: 120/450 batch, 2.1 batch/s, ETA 2m37s, loss=0.81`."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, enabled: bool = True, desc: str = "",
                 total: int | None = None, initial: int = 0, unit: str = "it", every: float | None = None,
                 **_: Any) -> None:
        self.iterable, self.enabled, self.desc, self.unit = iterable, enabled, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.start_n = total, initial, initial
        self.every = LOG_EVERY_SECONDS if every is None else every
        self.started = self.last = time.monotonic()
        self.postfix: dict[str, Any] = {}
        self.lines = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._emit(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **values: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **values}

    def close(self) -> None:
        if self.lines:  # a phase that logged while running also says when it ended
            self._emit(time.monotonic(), done=True)
            self.lines = 0

    def line(self, now: float, done: bool = False) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.n - self.start_n) / elapsed
        count = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        parts = [f"{self.desc}: {count} {self.unit}", f"{rate:.3g} {self.unit}/s"]
        if done:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _emit(self, now: float, done: bool = False) -> None:
        if self.enabled:
            print(self.line(now, done), file=sys.stderr, flush=True)
            self.lines += 1


def quiet_third_party_output() -> None:
    """In a log (stderr not a terminal), keep other libraries' bars ("Loading weights", "Writing model
    shards") and warnings already known here out of it. Call before transformers is imported."""
    if stderr_is_terminal():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # bars of libraries that use tqdm directly
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)
