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


def atomic_write(path: Path, write: Callable[[Path], None], *, sync: bool = False, mode: int | None = None) -> None:
    """`write(tmp)` creates a temp file in `path`'s folder (a unique name, so concurrent writers never
    share one), which then replaces `path`; a writer that writes nothing fails (FileNotFoundError) instead
    of replacing the file with an empty one. A writer that appends an extension to a path it is given
    (np.save, np.savez) must write to an open handle instead. `sync`: flush it to disk before the rename;
    `mode`: its permissions (default: what the writer's umask gave it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # only the name is reserved: the writer creates the file, with the umask's permissions
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """A UTF-8 text file (records, states, tables), synced before it replaces the old one, readable by all
    (results are meant to be read by others)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), sync=True, mode=0o644)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
