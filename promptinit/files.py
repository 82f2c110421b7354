"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

Every file promptinit writes for a later run to trust (caches, checkpoints, prompts, exports)
goes through here, so an interrupted run never leaves a truncated file under the real name.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` all at once.

    The bytes go to a temporary file in the same folder (``<name>.<random>.tmp``), are flushed
    to disk, and the file is then renamed over ``path``. On any error the temporary file is
    removed and an older ``path`` is left untouched.

    Args:
        path: the file to write; missing parent folders are created.
        data: text (written as UTF-8) or bytes.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=TEMP_SUFFIX, delete=False)
    try:
        with tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())  # the bytes are on disk before the name points at them
        # tempfile creates files private (0600); give the file the mode a plain open() would
        os.chmod(tmp.name, _default_file_mode())
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` all at once (see ``atomic_write``).

    Args:
        path: the file to write; missing parent folders are created.
        obj: anything ``json.dumps`` accepts with ``dumps_kwargs``.
        **dumps_kwargs: passed to ``json.dumps`` (``indent``, ``sort_keys``, ``default``, ...).

    Returns:
        ``path`` as a ``Path``.
    """
    return atomic_write(path, json.dumps(obj, **dumps_kwargs))


@contextmanager
def atomic_folder(dest: str | Path) -> Iterator[Path]:
    """Write a folder all at once.

    Yields an empty temporary folder next to ``dest``; when the block ends without error it
    replaces ``dest`` as a whole (by renames), otherwise it is removed. An interrupted write
    never leaves a half-written ``dest`` that a later run trusts.

    Args:
        dest: the folder to create or replace; missing parent folders are created.

    Returns:
        A context manager yielding the temporary folder to fill.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=TEMP_SUFFIX, dir=dest.parent))
    try:
        yield staging
        old = None
        if dest.exists():  # moved aside, not deleted first: the gap without a `dest` is one rename
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        staging.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@functools.cache
def _default_file_mode() -> int:
    # os.umask can only be read by setting it; done once, so the window where another thread
    # could create a file under umask 0 is a single instant at the first write
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
