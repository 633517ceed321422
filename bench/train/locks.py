"""Run exclusion: one run per work dir (two identical `bench run`s would train into one checkpoint
folder), and one training per machine unless asked (two would share the cores and spoil both timings)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.errors import BenchError

SLOT_POLL_SECONDS = 2.0  # how often rank 0 retries the training lock; every rank sleeps this long between tries


def work_dir_holder(work_dir: Path) -> str | None:
    """The pid of the process training in `work_dir` now (work_dir_lock held), else None."""
    lock_path = work_dir.with_name(work_dir.name + ".lock")
    if not lock_path.exists():
        return None
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


@contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `work_dir` (`<work_dir>.lock`); a second holder is refused at once
    with a message naming the other process, instead of waiting for hours or sharing checkpoints."""
    lock_path = work_dir.with_name(work_dir.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BenchError(f"{work_dir}: this exact run is already training (pid {holder}); wait for it to finish, "
                         "then run again to reuse its record") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextmanager
def training_slot(cache_dir: Path, label: str, log: Callable[[str], None], holder: bool = True) -> Iterator[None]:
    """One training at a time per cache folder (i.e. per machine in normal use): a second `bench run`
    waits for the first, so two trainings never share the cores and neither record's time is spoiled.
    The holder writes its pid and label into the lock file so the waiter can say whom it waits for.
    Under torchrun every rank enters and rank 0 (`holder`) alone takes the lock, the others waiting with
    it in short collectives (bench.train.distributed.wait_together) instead of in one that times out."""
    from bench.train.distributed import wait_together

    if not holder:
        # The same poll as the holder's: a rank sleeping longer would keep rank 0 waiting inside the
        # collective for the difference, which a short process-group timeout turns into an abort.
        wait_together(lambda: False, poll_seconds=SLOT_POLL_SECONDS)
        yield
        return
    lock_path = cache_dir / "training.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        told = []

        def try_acquire() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not told:
                    handle.seek(0)
                    holder_text = handle.read().strip() or "another run"
                    log(f"waiting for {holder_text} to finish (one training at a time; --parallel runs beside it)")
                    told.append(True)
                return False

        wait_together(try_acquire, poll_seconds=SLOT_POLL_SECONDS)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}: {label}")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
