"""Cache keys cover what decides the cached content, so no cache can go stale.

Each test changes one thing that decides a cached file (weights behind the same name, a
library version, the builder's code, an encoder's weights) and checks the cache is not read.
"""
from __future__ import annotations

import importlib.util
import shutil
from importlib import metadata

import numpy as np
import pytest
import torch

import promptinit.assets as assets
from promptinit.backbones import Backbone, BackboneConfig, backbone as backbone_module
from promptinit.evaluation import TuneConfig, pt_baseline
from promptinit.selfsup.clustering import ClusterConfig, cluster_texts
from tests.conftest import CAUSAL, keyword_task, tiny_backbone

TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain", "sun"] * 6)]


def _other_version(monkeypatch, dist: str, version: str = "999.0"):
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: version if name == dist else real(name))


def test_tiny_models_are_rebuilt_for_another_transformers_or_another_builder(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path))
    first = assets.resolve_model(CAUSAL)
    assert assets.resolve_model(CAUSAL) == first  # same code, same libraries: the cache is reused
    with monkeypatch.context() as m:
        _other_version(m, "transformers")
        assert assets.resolve_model(CAUSAL) != first
    # the builder's source decides the folder: an edited copy of tiny.py is another model
    src = tmp_path / "tiny_edited.py"
    src.write_text(open(assets.tiny.__file__).read().replace("initializer_range=0.3", "initializer_range=0.2"))
    spec = importlib.util.spec_from_file_location("tiny_edited", src)
    edited = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(edited)
    monkeypatch.setattr(assets, "tiny", edited)
    assert assets.resolve_model(CAUSAL) != first


def test_backbone_fingerprint_covers_dtype_attention_and_library_versions(monkeypatch):
    prints = {tiny_backbone(CAUSAL).fingerprint, tiny_backbone(CAUSAL, dtype="float64").fingerprint,
              Backbone(BackboneConfig(CAUSAL, prompt_length=4, device="cpu", attn_implementation="sdpa")).fingerprint,
              tiny_backbone(CAUSAL, prompt_length=5).fingerprint}
    assert len(prints) == 4
    base = tiny_backbone(CAUSAL)
    _other_version(monkeypatch, "torch")
    assert base.fingerprint not in prints


def test_a_pt_baseline_is_not_reused_when_the_weights_behind_a_name_change(tmp_path, monkeypatch):
    """A local model folder retrained in place keeps its name; the cached baseline must not."""
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my-model"
    shutil.copytree(assets.resolve_model(CAUSAL), folder)
    config = BackboneConfig(str(folder), prompt_length=4, device="cpu")
    tasks, cfg = [keyword_task()], TuneConfig(steps=2, eval_every=2, test_size=16)
    cached = tmp_path / "cache" / "baselines"
    first = pt_baseline(Backbone(config), tasks, (13,), cfg, progress=False)[("keyword", 13)]
    again = pt_baseline(Backbone(config), tasks, (13,), cfg, progress=False)[("keyword", 13)]
    assert len(list(cached.glob("*.json"))) == 1 and again.curve[-1] == first.curve[-1]  # reused

    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("embed_tokens.weight"))
    weights[name] = weights[name] + 0.5 * torch.randn_like(weights[name])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    backbone_module._load.cache_clear()  # a new process would load the new weights
    retrained = pt_baseline(Backbone(config), tasks, (13,), cfg, progress=False)[("keyword", 13)]
    assert len(list(cached.glob("*.json"))) == 2
    assert retrained.curve[-1]["train_loss"] != first.curve[-1]["train_loss"]


def test_embeddings_are_recomputed_when_the_encoder_weights_change(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path / "cache"))
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "model.safetensors").write_bytes(b"weights v1")
    calls = []

    def fake(texts):
        calls.append(len(texts))
        x = np.random.default_rng(len(calls)).normal(size=(len(texts), 8)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cfg = ClusterConfig(k=3, encoder=str(encoder))
    first = cluster_texts(TEXTS, cfg, progress=False, encode_fn=fake)
    assert cluster_texts(TEXTS, cfg, progress=False, encode_fn=fake).key == first.key and calls == [len(TEXTS)]
    (encoder / "model.safetensors").write_bytes(b"weights v2")
    second = cluster_texts(TEXTS, cfg, progress=False, encode_fn=fake)
    assert calls == [len(TEXTS)] * 2 and second.key != first.key
    with monkeypatch.context() as m:  # another scikit-learn: K-means again, embeddings reused
        _other_version(m, "scikit-learn")
        third = cluster_texts(TEXTS, cfg, progress=False, encode_fn=fake)
    assert calls == [len(TEXTS)] * 2 and third.key != second.key


@pytest.fixture(autouse=True)
def _fresh_loads():
    backbone_module._load.cache_clear()
    yield
    backbone_module._load.cache_clear()
