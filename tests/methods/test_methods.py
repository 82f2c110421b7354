"""Properties every method must have: exact resumption, frozen weights, deterministic runs,
task-batched steps equal to task-by-task ones, and config errors that name the field."""
from __future__ import annotations

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods import REGISTRY, Method, build_method, load_checkpoint, make_config, save_checkpoint
from promptinit.methods.checkpoint import STATE, TENSORS, read_checkpoint
from promptinit.selfsup import clustering
from promptinit.selfsup.clustering import ClusterConfig, cluster_corpus
from promptinit.selfsup.corpus import build_corpus
from tests.conftest import CAUSAL, SEQ2SEQ, fresh_cache, tiny_backbone
from tests.methods.conftest import CHEAP, peek, source_tasks
from tests.methods.test_supmer import SLICE, hashed_bow

META = ["mtl", "maml", "fomaml", "reptile"]
# The self-supervised methods: SUPMER meta-trains on a clustered corpus (its BBC slice here,
# given as `corpus=` / `clusters=`), MetaPT on groupings of the source tasks' examples.
SELFSUP = {
    "supmer": {"num_clusters": 8, "meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2,
               "outer_lr": 0.03, "formats": ("nsp", "scsp", "scc"), "max_option_words": 12},
    "metapt": {"num_clusters": 4, "meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2,
               "inner_lr": 0.1, "outer_lr": 0.03, "outer_optimizer": "adam", "pool": "sources", "patience": 0},
}
SETTINGS = {**CHEAP, **SELFSUP}
EVERY = list(SETTINGS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Extra ``build_method`` arguments per method, in a fresh cache (MetaPT caches its
    groupings there) with the fast hashed bag-of-words sentence encoder."""
    with fresh_cache(tmp_path_factory.mktemp("methods-cache")) as mp:
        mp.setattr(clustering, "encode_sentences", lambda texts, *a, **k: hashed_bow(texts))
        corpus = build_corpus(SLICE)
        clusters = cluster_corpus(corpus, ClusterConfig(k=SELFSUP["supmer"]["num_clusters"], seed=0), progress=False)
        yield {"supmer": {"corpus": corpus, "clusters": clusters}}


def build(name, bb, inputs, seed):
    return build_method(name, bb, source_tasks(), SETTINGS[name], seed=seed, **inputs.get(name, {}))


def test_every_registered_method_is_covered():
    assert set(EVERY) == set(REGISTRY) == {m.value for m in Method}


@pytest.mark.parametrize("name", EVERY)
def test_checkpoint_round_trip_resumes_bit_for_bit(name, tmp_path, inputs):
    bb = tiny_backbone()
    straight = build(name, bb, inputs, seed=7)
    for _ in range(10):
        straight.step()

    first = build(name, bb, inputs, seed=7)
    for _ in range(5):
        first.step()
    save_checkpoint(first, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / TENSORS).is_file() and (tmp_path / "ckpt" / STATE).is_file()
    del first
    resumed = build(name, bb, inputs, seed=12345)  # a different start, overwritten
    load_checkpoint(resumed, tmp_path / "ckpt")
    assert resumed.state.step == 5
    for _ in range(5):
        resumed.step()
    assert torch.equal(resumed.prompt, straight.prompt)
    assert resumed.state.step == straight.state.step == 10
    if straight.state.optimizer is not None:
        a, b = straight.state.optimizer.state_dict()["state"], resumed.state.optimizer.state_dict()["state"]
        assert a.keys() == b.keys()
        for k in a:
            for key, value in a[k].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[k][key])), key


def test_checkpoint_round_trip_with_adam_restores_tensor_step(tmp_path):
    bb = tiny_backbone()
    cfg = {**CHEAP["fomaml"], "outer_optimizer": "adam", "outer_lr": 0.01}
    straight = build_method("fomaml", bb, source_tasks(), cfg, seed=3)
    for _ in range(4):
        straight.step()
    m = build_method("fomaml", bb, source_tasks(), cfg, seed=3)
    for _ in range(2):
        m.step()
    save_checkpoint(m, tmp_path)
    fresh = load_checkpoint(build_method("fomaml", bb, source_tasks(), cfg, seed=3), tmp_path)
    for _ in range(2):
        fresh.step()
    assert torch.equal(fresh.prompt, straight.prompt)


def test_checkpoint_is_safetensors_and_json_and_detects_a_torn_write(tmp_path):
    bb = tiny_backbone()
    m = build_method("maml", bb, source_tasks(), CHEAP["maml"], seed=0)
    m.step()
    save_checkpoint(m, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE, TENSORS]  # no temp files left
    state = read_checkpoint(tmp_path)
    assert state["step"] == 1 and state["method"] == "maml"
    assert isinstance(next(iter(state["optimizer"]["state"])), int)  # parameter ids stay ints
    (tmp_path / TENSORS).write_bytes((tmp_path / TENSORS).read_bytes()[:-8])
    with pytest.raises(PromptinitError, match="does not match"):
        read_checkpoint(tmp_path)


def test_loading_a_checkpoint_with_other_settings_is_refused(tmp_path):
    bb = tiny_backbone()
    save_checkpoint(build_method("maml", bb, source_tasks(), CHEAP["maml"]), tmp_path)
    other = build_method("maml", bb, source_tasks(), {**CHEAP["maml"], "inner_lr": 0.2})
    with pytest.raises(PromptinitError, match="inner_lr"):
        load_checkpoint(other, tmp_path)
    with pytest.raises(PromptinitError, match="method 'maml'"):
        load_checkpoint(build_method("reptile", bb, source_tasks(), CHEAP["reptile"]), tmp_path)


@pytest.mark.parametrize("name", EVERY)
def test_runs_are_deterministic(name, inputs):
    bb = tiny_backbone()
    a = build(name, bb, inputs, seed=4)
    b = build(name, bb, inputs, seed=4)
    for _ in range(3):
        assert a.step() == b.step()
    assert torch.equal(a.prompt, b.prompt)


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_frozen_weights_stay_bit_identical(model, inputs):
    bb = tiny_backbone(model)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    for name in EVERY:
        m = build(name, bb, inputs, seed=0)
        start = m.prompt.clone()
        for _ in range(2):
            m.step()
        assert name == "pt" or not torch.equal(m.prompt, start), f"{name} did not move the prompt"
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
@pytest.mark.parametrize("name", META)
def test_task_batched_step_equals_task_by_task(name, model):
    bb = tiny_backbone(model, "float64")
    cfg = {**CHEAP[name], "meta_batch_size": 3}
    if name == "mtl":
        cfg["batch_size"] = 6
    batched = build_method(name, bb, source_tasks(), {**cfg, "task_batched": True}, seed=5)
    separate = build_method(name, bb, source_tasks(), {**cfg, "task_batched": False}, seed=5)
    meta_tasks = peek(batched)
    g1, m1 = batched.meta_gradient(meta_tasks)
    g2, m2 = separate.meta_gradient(meta_tasks)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-9)
    for k in m1:
        assert m1[k] == pytest.approx(m2[k], rel=1e-9)
    for _ in range(2):
        batched.step()
        separate.step()
    assert (batched.prompt - separate.prompt).abs().max() < 1e-9


BAD = [
    ("maml", "inner_lr", -1.0),
    ("maml", "outer_optimizer", "rmsprop"),
    ("maml", "query_batch_size", 0),
    ("fomaml", "task_sampling", "zipf"),
    ("reptile", "inner_steps", 0),
    ("reptile", "meta_batch_size", 2.5),
    ("mtl", "batch_size", 0),
    ("mtl", "lr", 0),
    ("mtl", "seeds", []),
    ("mtl", "epochs", -1),
    ("mtl", "meta_batch_size", 3),
    ("maml", "task_batched", "yes"),
    ("pt", "steps", -1),
    ("maml", "inner_lr_typo", 1e-4),
]


@pytest.mark.parametrize("name,field,value", BAD)
def test_bad_setting_raises_naming_the_field(name, field, value):
    with pytest.raises(PromptinitError, match=field) as err:
        make_config(name, {field: value})
    assert "\n" not in str(err.value)


def test_paper_defaults():
    maml, fomaml, reptile, mtl = (make_config(n) for n in ("maml", "fomaml", "reptile", "mtl"))
    assert (maml.inner_lr, maml.outer_lr, maml.outer_optimizer) == (3e-5, 0.5, "adafactor")
    assert (maml.inner_batch_size, fomaml.inner_batch_size, reptile.inner_batch_size) == (2, 4, 4)
    assert (maml.inner_steps, fomaml.inner_steps, reptile.inner_steps) == (1, 1, 10)
    assert not maml.first_order and fomaml.first_order
    assert (mtl.lr, mtl.batch_size, mtl.epochs, mtl.steps) == (0.5, 4, 20.0, 0)  # Qin §5.3; steps from the epochs
    assert all(c.task_batched for c in (maml, fomaml, reptile, mtl))


def test_pt_is_the_sampled_vocabulary_prompt_and_never_moves():
    bb = tiny_backbone()
    m = build_method("pt", bb, [], seed=13)
    assert torch.equal(m.prompt, bb.init_prompt("vocab", seed=13))
    assert m.step() == {}
    assert torch.equal(m.prompt, bb.init_prompt("vocab", seed=13))


def test_settings_from_yaml_or_search_spaces_get_builtin_types():
    import json

    import numpy as np

    cfg = make_config("maml", {"outer_lr": 1, "meta_batch_size": np.int64(2), "seeds": [np.int64(100), 13]})
    assert type(cfg.outer_lr) is float and type(cfg.meta_batch_size) is int
    assert cfg.seeds == (100, 13) and all(type(s) is int for s in cfg.seeds)
    json.dumps(cfg.__dict__)
