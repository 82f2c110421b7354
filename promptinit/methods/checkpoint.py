"""Method checkpoints on disk: tensors in safetensors, everything else in JSON, no pickles.

A checkpoint folder holds ``tensors.safetensors`` (the prompt and the optimizer's tensors)
and ``state.json`` (step, generator state, config, the optimizer's scalars and structure, and
the SHA-256 of the tensor file). Each file is written to a temporary name and renamed into
place; ``state.json`` is written last and names the tensor file's hash, so a crash between
the two renames is detected on load instead of resuming from a mixed checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from promptinit.errors import PromptinitError
from promptinit.files import atomic_write, atomic_write_json

TENSORS = "tensors.safetensors"
STATE = "state.json"
FORMAT = 1


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Plain JSON for ``value``; tensors are moved to ``tensors`` and referenced by key."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, dict):
        # Optimizer state is keyed by int parameter ids; keep key types exact.
        return {
            "__dict__": [
                [_encode(k, f"{path}/key", tensors), _encode(v, f"{path}/{k}", tensors)] for k, v in value.items()
            ]
        }
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__} at {path!r}: only tensors and plain values")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__dict__"]}
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(method: Any, folder: str | Path) -> Path:
    """Write ``method.state_dict()`` to ``folder`` atomically.

    Args:
        method: an upstream method (anything with ``state_dict()``).
        folder: created if missing; an older checkpoint there is replaced.

    Returns:
        The folder.
    """
    from safetensors.torch import save

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(method.state_dict(), "", tensors)
    atomic_write(folder / TENSORS, save(tensors))
    doc = {"format": FORMAT, "tensors": TENSORS, "sha256": _sha256(folder / TENSORS), "state": tree}
    atomic_write_json(folder / STATE, doc, indent=1)
    return folder


def read_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The state dict stored in ``folder`` (checked against its hash).

    Raises:
        PromptinitError: one line naming the file (and field): a missing, unreadable or
            malformed ``state.json``, or a tensor file that is missing, does not match its
            sha256 there, or does not load.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from promptinit.errors import read_json

    folder = Path(folder)
    state_file = folder / STATE
    afresh = "delete the folder to start afresh"
    if not state_file.is_file():
        raise PromptinitError(f"{folder}: no checkpoint ({STATE} missing)")
    doc = read_json(state_file)  # bytes that are not UTF-8, or bad JSON: the file and the line
    if not isinstance(doc, dict):
        raise PromptinitError(f"{state_file}: expected a JSON object (format, tensors, sha256, state); {afresh}")
    if doc.get("format") != FORMAT:
        raise PromptinitError(
            f"{state_file}: field 'format': checkpoint format {doc.get('format')!r}, this version reads {FORMAT}"
        )
    for key in ("tensors", "sha256", "state"):
        if key not in doc or (key != "state" and not isinstance(doc[key], str)):
            raise PromptinitError(f"{state_file}: field {key!r}: missing or malformed; {afresh}")
    tensor_file = folder / doc["tensors"]
    if not tensor_file.is_file() or _sha256(tensor_file) != doc["sha256"]:
        raise PromptinitError(
            f"{tensor_file}: missing, or its sha256 does not match {STATE} (interrupted save?); {afresh}"
        )
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise PromptinitError(
            f"{tensor_file}: not a readable safetensors file ({' '.join(str(err).split())}); {afresh}"
        ) from None
    try:
        return _decode(doc["state"], tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise PromptinitError(
            f"{state_file}: field 'state': malformed ({type(err).__name__}: {err}); {afresh}"
        ) from None


def load_checkpoint(method: Any, folder: str | Path) -> Any:
    """Restore ``method`` from ``folder`` (see ``save_checkpoint``).

    Returns:
        The method, restored in place.
    """
    method.load_state_dict(read_checkpoint(folder))
    return method
