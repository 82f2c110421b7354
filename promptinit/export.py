"""Export a learned prompt as a folder that Hugging Face PEFT loads, and read one back.

An export folder holds:

- ``adapter_model.safetensors``: one tensor ``prompt_embeddings`` of shape [L, d] (PEFT's key);
- ``adapter_config.json``: a PEFT ``PROMPT_TUNING`` config (``task_type`` ``CAUSAL_LM`` or
  ``SEQ_2_SEQ_LM``). ``num_transformer_submodules`` is 1 for seq2seq models too: promptinit's
  prompt goes to the encoder only, and PEFT's default of 2 would also prepend a second block
  of L vectors to the decoder input. ``base_model_name_or_path`` travels: the hub id of a
  packaged model (``HuggingFaceTB/SmolLM2-135M-Instruct`` for ``smollm2-135m``), never a path
  in one machine's cache; a local folder or tiny test model keeps its path (it has no other name);
- ``promptinit.json``: method, hyperparameters, validation and target metrics, model name,
  the model's local path here (``model_path``) and the SHA-256 of its weights files
  (``weights_sha256``, ``weights_fingerprint``: which weights the prompt was learned on),
  task-set and data fingerprints, package versions and the SHA-256 of every tensor file;
- ``psi.safetensors`` (SUPMER only): the meta-gradient regulariser ψ_φ as named tensors.

Every file is written under a temporary name and renamed, inside a temporary folder that is
renamed into place last, so an interrupted export leaves either the old folder or the new one,
never a half-written file.

Example:
    >>> export_prompt(prompt, backbone, "out/maml", method="maml", hyperparameters={"inner_lr": 3e-5},
    ...               metrics={"validation": {"arg": 0.04}}, model_name="smollm2-135m",
    ...               task_fingerprints={"bb_strategyqa": "a24a4d41254a59dd"})
    >>> peft_model = PeftModel.from_pretrained(base_model, "out/maml")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from promptinit.backbones.prompts import PROMPT_KEY
from promptinit.errors import PromptinitError
from promptinit.files import atomic_folder, atomic_write
from promptinit.fingerprints import WEIGHT_SUFFIXES, file_sha256

if TYPE_CHECKING:
    from promptinit.backbones import Backbone

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
METADATA = "promptinit.json"
PSI = "psi.safetensors"
PEFT_TYPE = "PROMPT_TUNING"
TASK_TYPES = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
FORMAT = 1  # version of promptinit.json
VERSIONED_PACKAGES = ("promptinit", "torch", "transformers", "peft", "safetensors", "ray", "optuna", "mlflow")


@dataclass(frozen=True)
class ModelInfo:
    """What an export needs to know about the frozen model (no weights).

    Attributes:
        name: the model's promptinit name (packaged name, tiny model, folder or hub id).
        family: ``causal`` or ``seq2seq``.
        hidden_size: width d of the input embeddings (PEFT's ``token_dim``).
        num_layers: transformer layers (the encoder's for seq2seq models).
        num_attention_heads: attention heads per layer.
        base_model_name_or_path: what ``from_pretrained`` loads anywhere: the hub id of a packaged
            model, else the hub id or folder the model was given as.
        prompt_length: the prompt length L the model is used with, when known.
        local_path: the folder the weights were loaded from on this machine, when local.
    """

    name: str
    family: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    base_model_name_or_path: str
    prompt_length: int | None = None
    local_path: str | None = None

    def __post_init__(self) -> None:
        if self.family not in TASK_TYPES:
            raise PromptinitError(f"field 'family': {self.family!r} is not one of {', '.join(TASK_TYPES)}")

    @classmethod
    def from_hf_config(cls, name: str, config: Any, path: str, prompt_length: int | None = None) -> ModelInfo:
        """From a ``transformers`` config (attribute names as PEFT reads them).

        ``path`` is what ``resolve_model(name)`` gave (a local folder or a hub id); a packaged
        model's ``base_model_name_or_path`` is its hub id instead.
        """
        family = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
        local = Path(str(path)).expanduser()

        def first(*names: str) -> int:
            for n in names:
                value = getattr(config, n, None)
                if isinstance(value, int):
                    return value
            raise PromptinitError(f"model {name!r}: its config has none of {', '.join(names)}")

        return cls(
            name=name,
            family=family,
            hidden_size=first("hidden_size", "d_model", "n_embd"),
            num_layers=first("num_hidden_layers", "num_layers", "n_layer", "encoder_layers"),
            num_attention_heads=first("num_attention_heads", "num_heads", "n_head", "encoder_attention_heads"),
            base_model_name_or_path=hub_id(name) or str(path),
            prompt_length=prompt_length,
            local_path=str(local.resolve()) if local.is_dir() else None,
        )

    @classmethod
    def from_backbone(cls, backbone: Backbone) -> ModelInfo:
        """From a loaded ``Backbone`` (its embedding width and prompt length)."""
        from promptinit.assets import resolve_model

        info = cls.from_hf_config(
            backbone.config.model,
            backbone.model.config,
            resolve_model(backbone.config.model),
            backbone.config.prompt_length,
        )
        # The embedding table is the ground truth for token_dim (configs can disagree).
        return _replace(info, hidden_size=int(backbone.hidden_size))

    @classmethod
    def from_name(cls, name: str, prompt_length: int | None = None) -> ModelInfo:
        """From the model's config file only: no weights are loaded.

        Raises:
            PromptinitError: one line: an unknown name, a folder without a readable
                ``config.json``, a hub id that cannot be reached.
        """
        from promptinit.assets import resolve_model

        path = resolve_model(name)
        return cls.from_hf_config(name, model_config(name, path), path, prompt_length)


def hub_id(name: str) -> str | None:
    """The Hugging Face hub id of a packaged model (``smollm2-135m`` or ``smollm2`` ->
    ``HuggingFaceTB/SmolLM2-135M-Instruct``, ``gemma3-270m`` -> ``google/gemma-3-270m``); None
    for other names (hub ids, folders, .gguf files and tiny test models are recorded as given)."""
    from promptinit.assets import ALIASES, HUB_IDS

    return HUB_IDS.get(ALIASES.get(name, name))


def model_config(name: str, path: str) -> Any:
    """The ``transformers`` config of a resolved model (``resolve_model(name)`` gave ``path``).

    Raises:
        PromptinitError: one line naming the model: a folder without ``config.json``, a config
            that does not load, a hub id that cannot be reached (no retry noise on stderr).
    """
    import logging

    from transformers import AutoConfig

    folder = Path(path)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise PromptinitError(
            f"model {name!r}: {folder} has no config.json; give a folder written by "
            "save_pretrained, a packaged name or a hub id"
        )
    # huggingface_hub logs every retry of an unreachable hub as a warning: the error below says it once.
    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, JSON and hub errors all mean "no config"
        detail = " ".join(str(err).split())
        detail = detail.split(". ")[0][:240]
        if folder.is_dir():
            hint = f"fix {folder / 'config.json'} or save the model again"
        else:
            hint = "check the hub id and that the hub is reachable, or give a local folder"
        raise PromptinitError(
            f"model {name!r}: cannot load its config ({type(err).__name__}: {detail}); {hint}"
        ) from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def packaged_source(name: str) -> str | None:
    """What a packaged model's weights are (e.g. dequantised from a GGUF file); None otherwise."""
    from promptinit.assets import ALIASES, PACKAGED

    return PACKAGED.get(ALIASES.get(name, name))


def weights_sha256(folder: str | Path | None) -> dict[str, str]:
    """SHA-256 of each weights file of a local model folder (``model.safetensors``, shards, ...);
    empty when ``folder`` is None or holds none (a hub id: the weights are not here)."""
    if folder is None or not Path(folder).is_dir():
        return {}
    files = sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES and not p.name.startswith(".")
    )
    # memoised by path, size and mtime: a sweep exports several prompts of one model, hashed once
    return {p.name: file_sha256(p) for p in files}


def _replace(info: ModelInfo, **changes: Any) -> ModelInfo:
    from dataclasses import replace

    return replace(info, **changes)


def model_info(model: Backbone | ModelInfo | Mapping[str, Any]) -> ModelInfo:
    """A ``ModelInfo`` from a Backbone, a ModelInfo or a mapping of its fields."""
    if isinstance(model, ModelInfo):
        return model
    if isinstance(model, Mapping):
        return ModelInfo(**model)
    if hasattr(model, "model") and hasattr(model, "hidden_size"):
        return ModelInfo.from_backbone(model)
    raise TypeError(f"expected a Backbone, ModelInfo or mapping, got {type(model).__name__}")


def peft_config(info: ModelInfo, num_virtual_tokens: int) -> dict[str, Any]:
    """The ``adapter_config.json`` of a shallow prompt of ``num_virtual_tokens`` vectors."""
    return {
        "peft_type": PEFT_TYPE,
        "task_type": TASK_TYPES[info.family],
        "num_virtual_tokens": int(num_virtual_tokens),
        "token_dim": int(info.hidden_size),
        # Our prompt is prepended to the encoder input only (seq2seq) or to the input (causal).
        "num_transformer_submodules": 1,
        "num_attention_heads": int(info.num_attention_heads),
        "num_layers": int(info.num_layers),
        "prompt_tuning_init": "RANDOM",  # irrelevant on load: the saved vectors replace the init
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "base_model_name_or_path": info.base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
    }


def package_versions() -> dict[str, str]:
    """Installed versions of the packages an export depends on."""
    out = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def fingerprint(parts: Mapping[str, str] | list[str]) -> str:
    """A 16-hex-digit hash of names (a list) or of ``name: fingerprint`` pairs (a mapping)."""
    items = sorted(parts.items()) if isinstance(parts, Mapping) else sorted(parts)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _write_json(path: Path, doc: Any) -> None:
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=False, default=_json_default) + "\n")


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    atomic_write(
        path, save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}, metadata=metadata)
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def export_prompt(
    prompt: torch.Tensor,
    backbone_or_model_info: Backbone | ModelInfo | Mapping[str, Any],
    out_dir: str | Path,
    *,
    method: str,
    hyperparameters: Mapping[str, Any],
    metrics: Mapping[str, Any],
    model_name: str,
    task_fingerprints: Mapping[str, str],
    psi_state: Mapping[str, torch.Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a prompt as a PEFT prompt-tuning adapter plus promptinit's metadata.

    Args:
        prompt: the prompt [L, d].
        backbone_or_model_info: the frozen model it belongs to (``Backbone``, ``ModelInfo`` or
            a mapping of ``ModelInfo`` fields); gives ``token_dim``, layers, heads, task type.
        out_dir: the export folder; an existing one is replaced as a whole.
        method: upstream method name (``maml``, ``supmer``, ...).
        hyperparameters: the method's settings.
        metrics: scores, by convention ``{"validation": {...}, "target": {...}}``.
        model_name: the model's promptinit name (recorded as given).
        task_fingerprints: task name -> content fingerprint of every task the prompt depends on
            (source, validation, target); the task-set and data fingerprints are derived from it.
        psi_state: SUPMER's ψ_φ as named tensors, written to ``psi.safetensors``.
        extra: more JSON-serialisable metadata (trial id, partition, sweep, ...).

    Returns:
        The export folder.

    Raises:
        PromptinitError: the prompt's shape does not fit the model.
    """
    info = model_info(backbone_or_model_info)
    out = Path(out_dir).expanduser()
    if prompt.dim() != 2:
        raise PromptinitError(f"{out}: the prompt must be [L, d], got shape {list(prompt.shape)}")
    L, d = prompt.shape
    if d != info.hidden_size:
        raise PromptinitError(
            f"{out}: prompt width {d} does not match {info.name}'s hidden size {info.hidden_size}; "
            "export with the model the prompt was learned on"
        )
    if info.prompt_length is not None and L != info.prompt_length:
        raise PromptinitError(f"{out}: prompt length {L} does not match the model's prompt_length {info.prompt_length}")
    if not bool(prompt.detach().isfinite().all()):
        raise PromptinitError(f"{out}: the prompt holds NaN/inf values; nothing exported")

    with atomic_folder(out) as tmp:
        _write_tensors(tmp / ADAPTER_WEIGHTS, {PROMPT_KEY: prompt}, {"method": method, "model": model_name})
        files = {ADAPTER_WEIGHTS: file_sha256(tmp / ADAPTER_WEIGHTS)}
        if psi_state is not None:
            if not psi_state or not all(isinstance(v, torch.Tensor) for v in psi_state.values()):
                raise PromptinitError(f"{out}: psi_state must be a non-empty dict of tensors")
            _write_tensors(tmp / PSI, psi_state, {"method": method})
            files[PSI] = file_sha256(tmp / PSI)
        _write_json(tmp / ADAPTER_CONFIG, peft_config(info, L))
        names = dict(task_fingerprints)
        weights = weights_sha256(info.local_path)
        doc = {
            "format": FORMAT,
            "method": method,
            "model": model_name,
            "base_model_name_or_path": info.base_model_name_or_path,
            "model_path": info.local_path,
            "weights_sha256": weights,
            "weights_fingerprint": fingerprint(weights) if weights else None,
            **({"model_source": packaged_source(model_name)} if packaged_source(model_name) else {}),
            "family": info.family,
            "prompt_shape": [int(L), int(d)],
            "hyperparameters": dict(hyperparameters),
            "metrics": dict(metrics),
            "task_fingerprints": names,
            "task_set_fingerprint": fingerprint(list(names)),
            "data_fingerprint": fingerprint(names),
            "versions": package_versions(),
            "files": files,
            **({"extra": dict(extra)} if extra else {}),
        }
        _write_json(tmp / METADATA, doc)  # last: names the hashes of the tensor files
    return out


@dataclass
class Export:
    """An export folder read back and checked against a model.

    Attributes:
        path: the folder.
        prompt: [L, d] float32.
        config: ``adapter_config.json``.
        metadata: ``promptinit.json`` (empty for a plain PEFT folder without it).
        psi: ψ_φ tensors (SUPMER) or None.
    """

    path: Path
    prompt: torch.Tensor
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    psi: dict[str, torch.Tensor] | None = None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PromptinitError(
            f"{path}: missing; an export folder holds {ADAPTER_WEIGHTS}, {ADAPTER_CONFIG} and {METADATA}"
        )
    from promptinit.errors import read_json

    try:
        doc = read_json(path)
    except PromptinitError as err:
        raise PromptinitError(f"{err} (or re-export it)") from None
    if not isinstance(doc, dict):
        raise PromptinitError(f"{path}: expected a JSON object")
    return doc


def _read_tensors(path: Path, expected_sha: str | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise PromptinitError(f"{path}: missing; re-export the prompt")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = " ".join(str(err).split())
        raise PromptinitError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {msg}); re-export it"
        ) from None
    if expected_sha is not None and file_sha256(path) != expected_sha:
        raise PromptinitError(
            f"{path}: content does not match the sha256 in {METADATA} (modified or corrupt); re-export it"
        )
    return tensors


def load_psi(path: str | Path) -> dict[str, torch.Tensor] | None:
    """SUPMER's ψ_φ tensors of an export folder, or None when it has none."""
    folder = Path(path).expanduser()
    if not (folder / PSI).exists():
        return None
    meta = _read_json(folder / METADATA) if (folder / METADATA).exists() else {}
    return _read_tensors(folder / PSI, (meta.get("files") or {}).get(PSI))


def load_export(path: str | Path, backbone_or_model_info: Backbone | ModelInfo | Mapping[str, Any]) -> Export:
    """Read an export folder and check it against the model it is meant for.

    Checks ``peft_type``, ``task_type``, ``num_transformer_submodules``, ``token_dim`` and
    ``num_virtual_tokens`` of ``adapter_config.json`` against the model (and its prompt length,
    when known), the tensor's key and shape against the config, and the tensor files against
    their hashes in ``promptinit.json``. A truncated safetensors file is refused.

    Args:
        path: the export folder.
        backbone_or_model_info: the model (``Backbone``, ``ModelInfo`` or a mapping).

    Returns:
        The ``Export``.

    Raises:
        PromptinitError: one line naming the file and the field that do not match.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PromptinitError(f"{folder}: no such export folder")
    info = model_info(backbone_or_model_info)
    cfg_path = folder / ADAPTER_CONFIG
    config = _read_json(cfg_path)
    meta_path = folder / METADATA
    metadata = _read_json(meta_path) if meta_path.exists() else {}

    def bad(field_name: str, expected: Any, fix: str) -> PromptinitError:
        return PromptinitError(
            f"{cfg_path}: field {field_name!r}: {config.get(field_name)!r} does not match {expected}; {fix}"
        )

    if config.get("peft_type") != PEFT_TYPE:
        raise bad(
            "peft_type", f"{PEFT_TYPE!r} (promptinit exports shallow prompts)", "this is not a prompt-tuning export"
        )
    task_type = TASK_TYPES[info.family]
    if config.get("task_type") != task_type:
        raise bad(
            "task_type", f"{task_type!r} of {info.name} ({info.family})", "use the model the prompt was exported for"
        )
    # PEFT reads a missing value as 2 for seq2seq models (a second prompt for the decoder).
    submodules = config.get("num_transformer_submodules")
    if submodules != 1 and not (submodules is None and info.family == "causal"):
        raise bad(
            "num_transformer_submodules",
            "1 (promptinit prompts go to the encoder/input only)",
            "export the prompt with promptinit",
        )
    if config.get("token_dim") != info.hidden_size:
        raise bad(
            "token_dim", f"{info.name}'s hidden size {info.hidden_size}", "use the model the prompt was exported for"
        )
    L = config.get("num_virtual_tokens")
    if not isinstance(L, int) or L < 1:
        raise bad("num_virtual_tokens", "a positive integer", "re-export the prompt")
    if info.prompt_length is not None and L != info.prompt_length:
        raise bad(
            "num_virtual_tokens",
            f"the model's prompt length {info.prompt_length}",
            f"set the prompt length to {L} (--prompt-length) or re-export",
        )

    files = metadata.get("files") or {}
    weights = folder / ADAPTER_WEIGHTS
    tensors = _read_tensors(weights, files.get(ADAPTER_WEIGHTS))
    if PROMPT_KEY not in tensors:
        raise PromptinitError(
            f"{weights}: field {PROMPT_KEY!r}: missing (found {sorted(tensors)}); re-export the prompt"
        )
    prompt = tensors[PROMPT_KEY]
    if tuple(prompt.shape) != (L, info.hidden_size):
        raise PromptinitError(
            f"{weights}: field {PROMPT_KEY!r}: shape {list(prompt.shape)} does not match "
            f"[num_virtual_tokens={L}, token_dim={info.hidden_size}] of {ADAPTER_CONFIG}; re-export the prompt"
        )
    if metadata and metadata.get("prompt_shape") not in (None, [L, info.hidden_size]):
        raise PromptinitError(
            f"{meta_path}: field 'prompt_shape': {metadata.get('prompt_shape')} does not match "
            f"{ADAPTER_WEIGHTS} [{L}, {info.hidden_size}]; re-export the prompt"
        )
    psi = None
    if (folder / PSI).exists():
        psi = _read_tensors(folder / PSI, files.get(PSI))
    return Export(folder, prompt.float(), config, metadata, psi)
