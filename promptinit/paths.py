"""Where promptinit keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

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
