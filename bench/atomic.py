"""Files replaced whole: written to a temp file beside the target, then renamed over it.

Readers (another process, a resumed run, a torchrun rank, a fresh checkout) see the old file or the new
one, never half of one, and a kill leaves no partial file under the real name: records, checkpoints, caches,
rankings and plots are all written through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None], *, sync: bool = False) -> None:
    """`write(tmp)` fills a fresh temp file in `path`'s folder (a unique name, so concurrent writers never
    share one), which then replaces `path`. A writer that appends an extension to a path it is given
    (np.save, np.savez) must write to an open handle instead. `sync`: flush it to disk before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; what we write is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """A UTF-8 text file (records, states, tables), synced before it replaces the old one."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), sync=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
