"""A GGUF checkpoint as a model folder: dequantised once, saved as safetensors, cached by content.

transformers loads a GGUF file (``from_pretrained(folder, gguf_file=name)``) by dequantising
every tensor, which takes 20-80 s for a small model, and then refuses to save it ("quantized
with gguf and is not serializable"). ``converted_folder`` converts a file once into
``$PROMPTINIT_CACHE/models/gguf-<key>`` (config, ``model.safetensors``, tokenizer), which then
loads in well under a second. The key covers what decides the folder's content:

- the SHA-256 of the file's bytes (not its name or path: a file replaced in place is another
  model, and one file reached by two paths is converted once);
- the versions of the libraries that convert it (transformers, gguf, tokenizers, torch,
  safetensors);
- the source of ``convert_gguf``, the code that decides what is saved.

Example:
    >>> folder = converted_folder("~/models/model.gguf")   # minutes the first time, then a lookup
    >>> AutoModelForCausalLM.from_pretrained(folder)
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from promptinit.assets.cached import build_once, stored_sha256
from promptinit.errors import PromptinitError
from promptinit.files import atomic_write_json
from promptinit.fingerprints import digest, library_versions
from promptinit.paths import cache_dir

SUFFIX = ".gguf"
MAGIC = b"GGUF"  # the first four bytes of every GGUF file
CONVERSION_LIBRARIES = ("transformers", "gguf", "tokenizers", "torch", "safetensors")
SOURCE_FILE = "gguf_source.json"  # inside a converted folder: which file, which hash, which libraries


def is_gguf_name(name: str) -> bool:
    """A model name that means a GGUF file (it ends in ``.gguf``, any case)."""
    return str(name).lower().endswith(SUFFIX)


def gguf_file(name: str | Path) -> Path:
    """The GGUF file ``name`` points to (``~`` expanded, relative to the working folder), checked.

    Raises:
        PromptinitError: one line naming the file: missing, a folder, unreadable, or not GGUF.
    """
    path = Path(name).expanduser()
    shown = path if path.is_absolute() else f"{path} (in {Path.cwd()})"
    if not path.exists():
        raise PromptinitError(
            f"model {str(name)!r}: {shown}: no such file; give the path of a .gguf file "
            "(absolute, ~/..., or relative to the working folder)"
        )
    if path.is_dir():
        raise PromptinitError(
            f"model {str(name)!r}: {shown} is a folder without a config.json, not a GGUF file; "
            "give the .gguf file's path"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as err:
        raise PromptinitError(
            f"model {str(name)!r}: {shown}: cannot read it ({err.strerror or err}); check the file's permissions"
        ) from None
    if head != MAGIC:
        raise PromptinitError(
            f"model {str(name)!r}: {shown} is not a GGUF file (it does not start with "
            f"{MAGIC!r}); give a llama.cpp .gguf checkpoint, or a model folder"
        )
    return path.resolve()


def conversion_key(sha256: str) -> str:
    """The cache key of a GGUF file's converted folder (16 hex): content, libraries, converter."""
    return digest(sha256, library_versions(*CONVERSION_LIBRARIES), inspect.getsource(convert_gguf), n=16)


def folder_for(sha256: str) -> Path:
    """Where the GGUF file with this content hash is (or will be) converted to."""
    return cache_dir("models") / f"gguf-{conversion_key(sha256)}"


def converted_folder(name: str | Path, *, model: str | None = None, sha256: str | None = None) -> Path:
    """A GGUF file as a cached safetensors model folder, converted on first use.

    Args:
        name: the .gguf file (``~`` and paths relative to the working folder allowed).
        model: the name error messages give the model (default: ``name``).
        sha256: the file's SHA-256 when the caller has verified it already (skips hashing).

    Returns:
        The folder (config, ``model.safetensors``, tokenizer) that ``from_pretrained`` loads.

    Raises:
        PromptinitError: the file is missing, unreadable or not GGUF, or transformers cannot
            load it; one line naming the file and the fix.
    """
    model = str(model or name)
    path = gguf_file(name)
    sha256 = sha256 or stored_sha256(path)
    dest = folder_for(sha256)

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        print(
            f"[promptinit] converting {path.name} ({path.stat().st_size / 1e6:.1f} MB, GGUF) to a safetensors "
            "folder, once ...",
            flush=True,
        )
        convert_gguf(path, tmp, model=model)
        atomic_write_json(
            tmp / SOURCE_FILE,
            {"gguf": str(path), "sha256": sha256, "libraries": library_versions(*CONVERSION_LIBRARIES)},
            indent=1,
        )
        print(f"[promptinit] converted in {time.perf_counter() - t0:.0f} s; cached in {dest}", flush=True)

    return build_once(dest, build)


def convert_gguf(path: Path, out: Path, model: str | None = None) -> None:
    """Dequantise a GGUF checkpoint to float32 and save it, with its tokenizer, to ``out``.

    Args:
        path: the .gguf file.
        out: an empty folder to write (``save_pretrained`` of model and tokenizer).
        model: the model's name in error messages (default: the path).

    Raises:
        PromptinitError: the ``gguf`` package is missing, or transformers cannot load the file
            (an architecture or tokenizer it does not support, a truncated file).
    """
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    where = f"model {model or str(path)!r}: {path}"
    if importlib.util.find_spec("gguf") is None:
        raise PromptinitError(
            f"{where}: reading GGUF files needs the gguf package; run `pip install gguf` "
            "(or `pip install -r requirements.lock`)"
        )
    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        lm = cls.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - ValueError, KeyError, OSError...: all mean "cannot load this file"
        import transformers

        detail = " ".join(str(err).split())[:240]
        raise PromptinitError(
            f"{where}: transformers {transformers.__version__} cannot load this GGUF file ({type(err).__name__}: "
            f"{detail}); use a complete GGUF of an architecture it supports (llama, mistral, qwen2, qwen3, gemma2, "
            "gemma3, phi3, t5, ...: transformers.modeling_gguf_pytorch_utils.GGUF_SUPPORTED_ARCHITECTURES), or "
            "convert the model to a folder with save_pretrained and pass the folder"
        ) from None
    # The weights are dequantised already; the GGUF quantizer marks only block save_pretrained.
    lm.hf_quantizer = None
    lm.is_quantized = False
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
