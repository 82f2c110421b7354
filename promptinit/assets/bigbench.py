"""BIG-bench task files without installing bigbench.

The ``bigbench==1.0.0`` sdist cannot be pip-installed (it declares a direct-URL dependency)
and would pull TensorFlow anyway. We only need its ``task.json`` files, so we download the
sdist, stream it once and keep ``benchmark_tasks/<task>[/<subtask>]/task.json`` in the cache.

Usage::

    python -m promptinit.assets.bigbench      # once; no-op when the cache is complete

Set ``PROMPTINIT_BIGBENCH_SDIST=/path/bigbench-1.0.0.tar.gz`` to use a tarball already on disk.

When the sdist cannot be had (on 4 Dec 2026 the package index stopped serving ``bigbench==1.0.0``
to our machines: it lists only 0.0.1), the cache is filled from ``SUBSET``, the ``task.json`` of
every BIG-bench task the catalog and the default SUPMER corpus use (103 files, unchanged bytes,
12.0 MB as xz; BIG-bench is Apache-2.0), shipped with promptinit. Other BIG-bench tasks then need
the sdist. The subset was written from a cache extracted from the sdist (not from the subset)
with, in ``tasks_cache()``::

    python -c "import yaml; from promptinit.selfsup.corpus import DEFAULT_SOURCES as D
    t = {e['source']['task'] for e in yaml.safe_load(open('CATALOG'))['tasks'] if e['source']['type'] == 'bigbench'}
    t |= {s.removeprefix('bigbench:') for s in D}
    print(''.join(f'{n}/task.json\\n' for n in sorted(t)), end='')" > FILES
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -T FILES | xz -9 > SUBSET

(CATALOG: ``configs/tasks.yaml``.) The tar stream
is reproducible: rerun on the same files it has the same SHA-256 (the xz container may differ
with the xz version and its thread count). When the catalog gains a BIG-bench task, rebuild it:
``tests/tasks/test_bigbench_assets.py`` checks that every catalog task is inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from promptinit.errors import PromptinitError
from promptinit.files import atomic_folder
from promptinit.paths import cache_dir, package_dir

VERSION = "1.0.0"
SDIST_ENV = "PROMPTINIT_BIGBENCH_SDIST"
MARKER = ".complete"
_PREFIX = f"bigbench-{VERSION}/bigbench/benchmark_tasks/"
_HINT = "run `python -m promptinit.assets.bigbench` (once, ~1 min)"
SUBSET = Path(__file__).with_name(f"bigbench_catalog_tasks-{VERSION}.tar.xz")
SUBSET_NOTE = "subset"  # the marker's first word when the cache holds the shipped subset only


def tasks_cache() -> Path:
    """Folder holding the extracted ``<task>[/<subtask>]/task.json`` files."""
    return cache_dir("bigbench") / f"benchmark_tasks-{VERSION}"


def is_extracted() -> bool:
    """True when a complete extraction is in the cache (the marker is written last)."""
    return (tasks_cache() / MARKER).exists()


def bigbench_task_path(name: str) -> Path:
    """Locate a BIG-bench ``task.json``.

    Args:
        name: the task folder, e.g. ``strategyqa`` or ``natural_instructions/subtask001_...``.

    Returns:
        The path of its ``task.json``: from an installed ``bigbench`` package if there is one
        (found without importing it), else from the extraction cache.

    Raises:
        PromptinitError: the task is in neither place.
    """
    rel = Path(name.strip("/")) / "task.json"
    pkg = package_dir("bigbench")
    if pkg is not None and (pkg / "benchmark_tasks" / rel).is_file():
        return pkg / "benchmark_tasks" / rel
    cached = tasks_cache() / rel
    if cached.is_file():
        return cached
    if not is_extracted():
        raise PromptinitError(f"BIG-bench task {name!r}: the task files are not in {tasks_cache()}; {_HINT}")
    if (tasks_cache() / MARKER).read_text().startswith(SUBSET_NOTE):
        raise PromptinitError(
            f"BIG-bench task {name!r}: not among the catalog's tasks that promptinit ships ({tasks_cache()}); "
            "check the name, or, for a task outside the catalog, "
            f"get the bigbench {VERSION} sdist, set {SDIST_ENV} to it, delete {tasks_cache()} and {_HINT}"
        )
    raise PromptinitError(
        f"BIG-bench task {name!r}: no {rel} in {tasks_cache()}; check the name "
        "(folder names under bigbench/benchmark_tasks, subtasks as `task/subtask`)"
    )


def _download_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"bigbench=={VERSION}", "-d", str(dest)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    tarballs = sorted(dest.glob(f"bigbench-{VERSION}.tar.gz"))
    if proc.returncode != 0 or not tarballs:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        # Two causes seen: pip >= 25 rejects this sdist's metadata (23.x accepts it), and since
        # 4 Dec 2026 the index we reach lists only bigbench 0.0.1.
        raise PromptinitError(
            f"`{' '.join(cmd[1:])}` failed ({tail[0]}); the index may not serve it, or pip >= 25 rejects "
            f"its metadata (`python -m pip install 'pip<25'`); or download the sdist elsewhere and set {SDIST_ENV}"
        )
    return tarballs[0]


def extract(sdist: Path, out: Path) -> int:
    """Stream ``sdist`` once and copy every benchmark ``task.json`` under ``out``.

    Args:
        sdist: the ``bigbench-1.0.0.tar.gz`` tarball.
        out: destination folder (created); files land at ``<task>[/<subtask>]/task.json``.

    Returns:
        The number of files extracted.
    """
    n = 0
    # "r|gz" streams: one pass over 358 MB, no random access (no index of 60k members).
    with tarfile.open(sdist, mode="r|gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.startswith(_PREFIX) and member.name.endswith("/task.json")):
                continue
            rel = Path(member.name[len(_PREFIX) :])
            if ".." in rel.parts or rel.is_absolute():  # never trust tarball paths
                continue
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with open(target, "wb") as f:
                shutil.copyfileobj(src, f)
            n += 1
    return n


def ensure_extracted() -> Path:
    """Populate the cache once (download or ``$PROMPTINIT_BIGBENCH_SDIST``, then extract).

    Returns:
        The cache folder with the task files.
    """
    dest = tasks_cache()
    if is_extracted():
        return dest
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigbench-dl-") as dl:
        sdist = Path(os.environ[SDIST_ENV]) if os.environ.get(SDIST_ENV) else None
        if sdist is not None and not sdist.is_file():
            raise PromptinitError(f"{SDIST_ENV}={sdist}: no such file; unset it to download the sdist")
        if sdist is None:
            print(f"[promptinit] downloading bigbench=={VERSION} sdist (358 MB) ...", flush=True)
            try:
                sdist = _download_sdist(Path(dl))
            except PromptinitError as err:
                print(
                    f"[promptinit] {err}\n[promptinit] using the catalog's BIG-bench tasks shipped with promptinit "
                    f"({SUBSET.name}); other BIG-bench tasks need the sdist",
                    flush=True,
                )
                return _extract_subset(dest, t0)
        print(f"[promptinit] extracting BIG-bench task.json files from {sdist.name} ...", flush=True)
        # Extract next to the destination and rename: an interrupted run leaves no half cache.
        with atomic_folder(dest) as tmp:
            n = extract(sdist, tmp)
            if n == 0:
                raise PromptinitError(f"{sdist}: no {_PREFIX}**/task.json inside; is it the bigbench {VERSION} sdist?")
            (tmp / MARKER).write_text(f"{n} files\n")
    print(f"[promptinit] {n} BIG-bench task files in {dest} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return dest


def _extract_subset(dest: Path, t0: float) -> Path:
    """Fill the cache from ``SUBSET`` (the marker says so)."""
    with atomic_folder(dest) as tmp, tarfile.open(SUBSET, mode="r:xz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/task.json")]
        tar.extractall(tmp, members=members, filter="data")  # "data": no absolute paths, links or ..
        (tmp / MARKER).write_text(f"{SUBSET_NOTE}: {len(members)} files from {SUBSET.name}\n")
    print(f"[promptinit] {len(members)} BIG-bench task files in {dest} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return dest


def main() -> int:
    try:
        path = ensure_extracted()
    except PromptinitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[promptinit] BIG-bench task files ready in {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
