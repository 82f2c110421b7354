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


def read_yaml(path, where: str):
    """Parse a YAML file; bad YAML is a ``PromptinitError`` naming ``where`` and the line."""
    from pathlib import Path

    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        raise PromptinitError(f"{where}: {at}bad YAML ({getattr(e, 'problem', e)})") from None
