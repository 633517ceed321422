"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file, unknown name).

    The message must name the file/field and say what was expected; the CLI shows
    it without a traceback.
    """
