"""User-facing errors: the CLI prints these as one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file, unknown name).

    The message must name the file/field and say what was expected; the CLI shows
    it without a traceback.
    """


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """" Did you mean 'sasrec'?" for a near miss among `choices`, else ""."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


SHOWN_CHARS = 80


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """repr(value) for an error message, cut to about `limit` characters: a rejected 5,000-character value
    must not bury the one line that says what was wrong with it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
