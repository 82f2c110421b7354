"""Fingerprints that key the on-disk caches.

A cache key must cover everything that decides the cached content, or a cache written by an
older build, another library version or other weights is silently trusted. The pieces:

- ``source_fingerprint``: the source code of the modules that compute the content (editing the
  tuning loop invalidates cached baselines; editing a tiny model's config rebuilds it);
- ``library_versions``: the installed versions of the libraries whose numerics decide it;
- ``tensors_fingerprint`` / ``files_fingerprint``: the weights themselves, not their name.

Weights are hashed once per process (a memo keyed by the object or by path, size and mtime):
SmolLM2's 135M fp32 parameters take about a second.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable
from importlib import import_module, metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".h5", ".msgpack")
_FILE_MEMO: dict[tuple, str] = {}


def digest(*parts: object, n: int = 16) -> str:
    """A hex digest of JSON-serialisable parts (dict key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed version of each distribution (``"absent"`` where it is not installed)."""
    out = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def source_fingerprint(*modules: str | ModuleType) -> str:
    """Hash of the source files of ``modules`` (dotted names or module objects)."""
    h = hashlib.sha256()
    for mod in modules:
        mod = import_module(mod) if isinstance(mod, str) else mod
        h.update(mod.__name__.encode() + b"\0")
        source = inspect.getsourcefile(mod)
        if source is None:
            raise ValueError(f"{mod.__name__}: no Python source file to fingerprint (a built-in or compiled module)")
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:16]


def tensors_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Hash of named tensors: names, dtypes, shapes and every byte of the values."""
    import torch

    h = hashlib.sha256()
    for name, t in named_tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """SHA-256 (64 hex) of a file's bytes, memoised per (path, size, mtime) in this process."""
    path = Path(path).resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        _FILE_MEMO[memo] = h.hexdigest()
    return _FILE_MEMO[memo]


def file_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of ``file_sha256``."""
    return file_sha256(path)[:16]


def files_fingerprint(folder: str | Path, suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> str:
    """Hash of every weights file under ``folder`` (relative name and content)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)
    return digest([(str(p.relative_to(folder)), file_fingerprint(p)) for p in files])
