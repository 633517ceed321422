"""Reading the text files people hand us (data files, cards, bench.toml, records): UTF-8, with or without
a byte-order mark, or one BenchError naming the file and the first line that is not UTF-8.

Every reader goes through here, so an encoding problem reads the same wherever it is met.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from bench.errors import BenchError

# utf-8-sig reads plain UTF-8 as well, and drops the byte-order mark that spreadsheet exports put first
# (read as plain UTF-8 it would stick to the first column's name: '\ufeffuser').
ENCODING = "utf-8-sig"


def not_utf8(path: Path) -> BenchError:
    """The error for a file that does not decode: the file is read again as bytes to name the first bad
    line (UTF-8 never puts a newline byte inside a character, so lines decode on their own)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    return BenchError(f"{path}:{number}: not UTF-8 text (byte {line[error.start]:#04x} at column "
                                      f"{error.start + 1}); expected UTF-8: save the file as UTF-8")
    except (OSError, EOFError, zlib.error):
        pass
    return BenchError(f"{path}: not UTF-8 text; expected UTF-8: save the file as UTF-8")


def unreadable(path: Path, error: OSError) -> BenchError:
    """A missing file, a folder or a file without read permission, in one line."""
    if isinstance(error, FileNotFoundError):
        return BenchError(f"{path}: file not found")
    return BenchError(f"{path}: cannot read it ({error.strerror or error})")


def read_text(path: Path) -> str:
    """The whole file as text."""
    try:
        return path.read_text(encoding=ENCODING)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except OSError as error:
        raise unreadable(path, error) from None


@contextmanager
def open_text(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text handle (of a .gz file too) for readers that go line by line: a line that does not decode,
    wherever the reader meets it, becomes the one error of `not_utf8`."""
    try:
        handle = (gzip.open(path, "rt", encoding=ENCODING, newline=newline) if path.suffix == ".gz"
                  else open(path, encoding=ENCODING, newline=newline))
    except OSError as error:
        raise unreadable(path, error) from None
    with handle:
        try:
            yield handle
        except UnicodeDecodeError:
            raise not_utf8(path) from None
