"""Errors that reach the user as one line and exit code 2."""
from __future__ import annotations


class PromptinitError(ValueError):
    """A problem with the user's input: a name, a file or a field.

    The message is one line that names the file and field where there is one, and the fix.
    The CLI and ``search/sweep.py`` print it without a traceback and exit with code 2.
    """


def where(path: object | None, field: str | None = None) -> str:
    """Format ``path: field`` for error messages (either part may be missing)."""
    parts = [str(p) for p in (path, field) if p]
    return ": ".join(parts)
