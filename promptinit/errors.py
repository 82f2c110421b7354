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


def read_text(path, where: str | None = None) -> str:
    """A UTF-8 text file's content (a leading BOM dropped).

    A missing file, a folder, an unreadable file or bytes that are not UTF-8 become a
    ``PromptinitError`` naming ``where`` (default: the path) and, for bad bytes, the line.
    """
    from pathlib import Path

    p = Path(path)
    where = where or str(p)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise PromptinitError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise PromptinitError(f"{where}: is a folder, not a file; give the file's path") from None
    except OSError as e:
        raise PromptinitError(f"{where}: cannot read it ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PromptinitError(
            f"{where}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8 text"
        ) from None


def read_yaml(path, where: str):
    """Parse a YAML file; bad YAML is a ``PromptinitError`` naming ``where`` and the line."""
    import yaml

    text = read_text(path, where)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        if isinstance(e, yaml.reader.ReaderError):  # a control character: no mark, a position
            at = f"line {text.count(chr(10), 0, e.position) + 1}: "
            problem = (
                f"unacceptable character #x{ord(e.character) if isinstance(e.character, str) else e.character:04x}"
            )
        else:
            problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise PromptinitError(f"{where}: {at}bad YAML ({problem}); fix the file") from None


def read_json(path, where: str | None = None):
    """Parse a JSON file; bad JSON is a ``PromptinitError`` naming ``where``, the line and column."""
    import json

    where = where or str(path)
    text = read_text(path, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptinitError(f"{where}: line {e.lineno} column {e.colno}: bad JSON ({e.msg}); fix the file") from None
    except RecursionError:
        raise PromptinitError(f"{where}: JSON nested too deeply; fix the file") from None


def flag_error(err: PromptinitError, flags: dict[str, str]) -> PromptinitError:
    """``err`` of a config object, renamed to the command-line options that set its fields.

    ``field 'steps': 0 must be > 0`` with ``{"steps": "--steps"}`` becomes
    ``option '--steps': 0 must be > 0``. An error naming none of ``flags`` is returned as is.
    """
    import re

    msg = str(err)
    named = sorted((msg.index(f"'{f}'"), flag) for f, flag in flags.items() if f"'{f}'" in msg)
    if not named:
        return err
    rest = re.sub(r"^fields? '[^:]*': ", "", msg)
    options = ", ".join(repr(flag) for _, flag in named)
    return PromptinitError(f"option{'s' if len(named) > 1 else ''} {options}: {rest}")


def check_writable(path, what: str, *, folder: bool = False):
    """``path`` can be written later (a file, or a folder with ``folder=True``): no file in the
    way, not a folder where a file goes, the first existing folder on its way writable. Creates
    nothing, so a bad output path fails before any work is done.

    Args:
        path: the output path.
        what: how the message names it, e.g. ``option '--out'``.

    Returns:
        The path.
    """
    import os
    from pathlib import Path

    p = Path(path).expanduser()
    if p.is_dir() and not folder:
        raise PromptinitError(f"{what}: {p} is a folder; give a file name")
    if p.exists() and not p.is_dir() and folder:
        raise PromptinitError(f"{what}: {p} is a file, not a folder; give a folder (it is created if missing)")
    existing = p if p.exists() else p.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PromptinitError(f"{what}: {existing} is a file, not a folder; give a path below a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PromptinitError(f"{what}: {existing} is not writable; choose a folder you can write to")
    return p
