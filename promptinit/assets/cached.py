"""Folders built once into the cache, and file hashes kept across runs.

A cached folder is written through ``atomic_folder`` and marked complete inside it, so a
half-written folder is never a cache hit; a lock beside it makes processes that start together
(Ray trials, parallel test workers) build it once and reuse it, instead of each building its
own copy and renaming it over a folder another process may be reading.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from promptinit.files import atomic_folder, atomic_write, atomic_write_json
from promptinit.fingerprints import digest, file_sha256
from promptinit.paths import cache_dir

COMPLETE = ".complete"  # written last inside a built folder


def is_built(folder: Path) -> bool:
    """``folder`` was built to the end (its completion marker is there)."""
    return (folder / COMPLETE).is_file()


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """``dest``, built by ``build(tmp)`` unless a complete one is there already.

    Args:
        dest: the cache folder; its name must carry a key of everything that decides its content.
        build: fills the empty temporary folder it is given.

    Returns:
        ``dest``.
    """
    if is_built(dest):
        return dest
    with _locked(dest.with_name(f".{dest.name}.lock")):
        if is_built(dest):  # another process built it while this one waited
            return dest
        with atomic_folder(dest) as tmp:
            build(tmp)
            atomic_write(tmp / COMPLETE, "ok\n")
    return dest


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps readers safe
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def stored_sha256(path: str | Path) -> str:
    """SHA-256 (64 hex) of a file's bytes, remembered across runs.

    The hash is stored in the cache under the file's resolved path, size, mtime, ctime and
    inode: any write to the file changes its ctime (which, unlike mtime, cannot be set back),
    so a changed file is hashed again. Hashing reads about 0.5 GB/s on a 2-core machine, which
    for a multi-GB checkpoint would cost seconds in every process that resolves it.

    Args:
        path: the file.

    Returns:
        The hex digest of its bytes.
    """
    path = Path(path).resolve()
    st = path.stat()
    ident = {
        "path": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
    }
    memo = cache_dir("sha256") / f"{digest(ident, n=32)}.json"
    try:
        known = json.loads(memo.read_text())
        if {k: known.get(k) for k in ident} == ident and len(str(known.get("sha256", ""))) == 64:
            return known["sha256"]
    except (OSError, ValueError):
        pass  # no memo yet, or an unreadable one: hash again and rewrite it
    sha = file_sha256(path)
    try:
        atomic_write_json(memo, {**ident, "sha256": sha})
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return sha
