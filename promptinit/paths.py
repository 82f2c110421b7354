"""Where promptinit keeps its caches."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CACHE_ENV = "PROMPTINIT_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache folder (``$PROMPTINIT_CACHE``, default ``~/.cache/promptinit``), created on use."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "promptinit").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str) -> Path | None:
    """Folder of an installed package found *without importing it* (some asset packages
    import dependencies we do not install)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@contextmanager
def atomic_folder(dest: str | Path) -> Iterator[Path]:
    """Write a folder all at once: yields an empty temporary folder next to ``dest``; when the
    block ends without error it replaces ``dest`` as a whole (by renames), otherwise it is
    removed. An interrupted write never leaves a half-written ``dest`` that a later run trusts.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():  # moved aside, not deleted first: the gap without a `dest` is one rename
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
