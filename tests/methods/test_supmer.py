"""SUPMER on a slice of real BBC text with a tiny model: FoMAML equivalence, exact φ gradients,
curriculum switches, exact resumption, learning, and ψ in downstream tuning."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.meta import MetaTask as SourceMetaTask
from promptinit.methods import build_method, load_checkpoint, make_config, save_checkpoint
from promptinit.methods.common import QUERY_LOSS
from promptinit.methods.supmer import CURRICULUM_S, GATE, LAMBDA, SUPMER  # noqa: F401 (registers supmer)
from promptinit.selfsup import clustering
from promptinit.selfsup.clustering import ClusterConfig, cluster_corpus
from promptinit.selfsup.corpus import CorpusConfig, build_corpus
from promptinit.selfsup.formats import SelfSupTaskSampler
from tests.conftest import CAUSAL, fresh_cache, keyword_task, tiny_backbone

SLICE = CorpusConfig(sources=("bbc",), max_sentences=480, max_doc_sentences=12, seed=0)
K = 8
SHORT = ("nsp", "scsp", "scc")  # two-sentence inputs: cheap steps
# Small tasks and the tiny model's scale (its embeddings have std ~0.3: Adam steps of 0.03).
CHEAP = {"num_clusters": K, "meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2,
         "outer_lr": 0.03, "formats": SHORT, "max_option_words": 12}


def hashed_bow(texts) -> np.ndarray:
    """A fast deterministic sentence encoder (hashed bag of words): clusters by shared words."""
    out = np.zeros((len(texts), 64), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1
    return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9)


@pytest.fixture(scope="module", autouse=True)
def supmer_cache(tmp_path_factory):
    """A fresh cache (BIG-bench files and built models linked in); the sentence encoder is
    replaced by ``hashed_bow`` (the real one is tested in tests/selfsup)."""
    path = tmp_path_factory.mktemp("supmer-cache")
    with fresh_cache(path) as mp:
        mp.setattr(clustering, "encode_sentences", lambda texts, *a, **k: hashed_bow(texts))
        yield path


@pytest.fixture(scope="module")
def corpus(supmer_cache):
    return build_corpus(SLICE)


@pytest.fixture(scope="module")
def clusters(corpus):
    return cluster_corpus(corpus, ClusterConfig(k=K, seed=0), progress=False)



def supmer(bb, corpus, clusters, seed=0, **settings):
    return build_method("supmer", bb, [], {**CHEAP, **settings}, seed=seed, corpus=corpus, clusters=clusters)


def peek(m):
    """The meta-batch ``m.step()`` draws next, without advancing the sampler."""
    state = m.sampler.state_dict()
    tasks = m.sample()
    m.sampler.load_state_dict(state)
    return tasks


def test_without_mgr_and_mixup_supmer_is_first_order_maml(corpus, clusters):
    bb = tiny_backbone(CAUSAL, "float64", prompt_length=3)
    m = supmer(bb, corpus, clusters, use_mgr=False, curriculum="none", formats=("nsp", "scsp", "scss"),
               inner_lr=0.1, meta_batch_size=3)
    tasks = peek(m)
    assert len({t.format for t in tasks}) > 1
    fomaml = build_method("fomaml", bb, [keyword_task()], {"inner_lr": 0.1, "meta_batch_size": 3}, seed=0)
    assert torch.equal(fomaml.prompt, m.prompt)
    as_source = [SourceMetaTask(t.name, 0, (t.support,), t.query) for t in tasks]
    g_ref, metrics_ref = fomaml.meta_gradient(as_source)
    g, metrics = m.meta_gradient(tasks)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-13)
    assert metrics[QUERY_LOSS] == pytest.approx(metrics_ref[QUERY_LOSS], rel=1e-12)
    # a step draws λ = 1 and applies that gradient (clipped to max_grad_norm) with Adam
    ref = m.prompt.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=CHEAP["outer_lr"])
    ref.grad = g_ref * min(1.0, 1.0 / float(g_ref.norm() + 1e-6))
    opt.step()
    metrics = m.step()
    assert metrics[LAMBDA] == 1.0
    torch.testing.assert_close(m.prompt, ref.detach(), rtol=1e-9, atol=1e-12)


def test_batched_and_task_by_task_agree_with_mgr_and_mixing(corpus, clusters):
    bb = tiny_backbone(CAUSAL, "float64", prompt_length=3)
    m = supmer(bb, corpus, clusters, meta_batch_size=3)
    tasks, lambdas = peek(m), [0.3, 1.0, 0.8]
    a = m.outer_gradients(tasks, lambdas, task_batched=True)
    b = m.outer_gradients(tasks, lambdas, task_batched=False)
    torch.testing.assert_close(a.theta_grad, b.theta_grad, rtol=1e-9, atol=1e-12)
    for k in a.phi_grads:
        torch.testing.assert_close(a.phi_grads[k], b.phi_grads[k], rtol=1e-8, atol=1e-12)
    assert a.metrics == pytest.approx(b.metrics, rel=1e-9)
    plain = m.outer_gradients(tasks)
    assert plain.metrics[QUERY_LOSS] != pytest.approx(a.metrics[QUERY_LOSS])  # mixing changes the loss


def _query_loss_at(m, tasks, phi_params):
    """Mean query loss at θ' = θ - α ψ_φ(g), recomputed from scratch for given φ."""
    from promptinit.methods.mixup import mixed_task_losses

    bb, T = m.backbone, len(tasks)
    support, query = m._encode(tasks, "support"), m._encode(tasks, "query")
    p = m.prompt.expand(T, *m.prompt.shape).clone().requires_grad_(True)
    s_losses, s_h = mixed_task_losses(bb, p, support)
    (g,) = torch.autograd.grad(s_losses.sum(), p)
    names = [n for n, _ in m.psi.named_parameters()]
    step, _ = torch.func.functional_call(m.psi, dict(zip(names, phi_params)), (g, s_h))
    with torch.no_grad():
        return mixed_task_losses(bb, p.detach() - m.config.inner_lr * step, query)[0].mean()


def test_phi_gets_the_exact_gradient_of_the_query_loss(corpus, clusters):
    bb = tiny_backbone(CAUSAL, "float64", prompt_length=3)
    m = supmer(bb, corpus, clusters, gate_loss_weight=0.0, inner_lr=5.0, formats=("nsp", "scsp"))
    with torch.no_grad():
        for p in (m.psi.b1, m.psi.b2):
            p.normal_(std=0.5)
    tasks = peek(m)
    out = m.outer_gradients(tasks)
    params = [p.detach().clone() for p in m.psi.parameters()]
    grads = [out.phi_grads[n] for n, _ in m.psi.named_parameters()]
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for _ in range(2):
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        fd = (_query_loss_at(m, tasks, [p + eps * d for p, d in zip(params, v)])
              - _query_loss_at(m, tasks, [p - eps * d for p, d in zip(params, v)])) / (2 * eps)
        analytic = sum((g * d).sum() for g, d in zip(grads, v))
        assert abs(fd - analytic) <= 1e-5 * abs(analytic) + 1e-12


def test_gate_loss_trains_only_the_gate(corpus, clusters):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    with_aux = supmer(bb, corpus, clusters, gate_loss_weight=1.0)
    without = supmer(bb, corpus, clusters, gate_loss_weight=0.0)
    tasks = peek(with_aux)
    a, b = with_aux.outer_gradients(tasks), without.outer_gradients(tasks)
    for name in a.phi_grads:
        same = torch.allclose(a.phi_grads[name], b.phi_grads[name], rtol=1e-5, atol=1e-9)
        assert same == (name not in ("W1", "W2")), name
    assert 0 < a.metrics[GATE] < 1


def test_curriculum_switches(corpus, clusters):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    beta = supmer(bb, corpus, clusters)
    first = beta.step()
    assert first[LAMBDA] == 1.0 and first[CURRICULUM_S] > 0  # s starts at 0: no mixing at first
    later = [beta.step()[LAMBDA] for _ in range(2)]
    assert all(0 < v < 1 for v in later)
    fixed = supmer(bb, corpus, clusters, curriculum="fixed", fixed_lambda=0.4)
    assert [fixed.step()[LAMBDA] for _ in range(2)] == [pytest.approx(0.4)] * 2
    none = supmer(bb, corpus, clusters, curriculum="none")
    assert [none.step()[LAMBDA] for _ in range(2)] == [1.0, 1.0]


def test_scc_inputs_carry_the_cluster_vectors(corpus, clusters):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    m = supmer(bb, corpus, clusters, formats=("scc",))
    tasks = peek(m)
    tb = m._encode(tasks, "support")
    assert tb.batch.inject is not None and len(tb.batch.inject.rows) == 4 * len(tb.batch)
    with_vectors = bb.loss(m.prompt, tb.batch, per_example=True)
    tb.batch.inject = None
    assert not torch.allclose(with_vectors, bb.loss(m.prompt, tb.batch, per_example=True))
    assert np.isfinite(m.step()[QUERY_LOSS])


def test_checkpoint_round_trip_resumes_bit_for_bit(corpus, clusters, tmp_path):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    straight = supmer(bb, corpus, clusters, seed=7)
    for _ in range(10):
        straight.step()
    first = supmer(bb, corpus, clusters, seed=7)
    for _ in range(5):
        first.step()
    save_checkpoint(first, tmp_path / "ckpt")
    del first
    resumed = load_checkpoint(supmer(bb, corpus, clusters, seed=123), tmp_path / "ckpt")
    assert resumed.state.step == 5
    for _ in range(5):
        resumed.step()
    assert torch.equal(resumed.prompt, straight.prompt)
    assert resumed.curriculum_s == straight.curriculum_s > 0
    a, b = straight.psi.tensors(), resumed.psi.tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = straight.sampler.state_dict(), resumed.sampler.state_dict()
    assert (sa["rng"], sa["count"]) == (sb["rng"], sb["count"])
    assert resumed.state.rng.getstate() == straight.state.rng.getstate()
    sa, sb = straight.psi_optimizer.state_dict()["state"], resumed.psi_optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    other = supmer(bb, corpus, clusters, seed=7, phi_lr=1e-3)
    with pytest.raises(PromptinitError, match="phi_lr"):
        load_checkpoint(other, tmp_path / "ckpt")


def test_a_few_steps_lower_the_query_loss(corpus, clusters):
    """Held-out query loss after/before 48 steps, measured over the method seed (initial prompt,
    meta-batches, λ draws, ψ's init), seeds 0..4, with the meta-batch in one pass: 0.460, 0.351,
    0.461, 0.433, 0.397; split in passes by the measured rows-per-pass rule: 0.494, 0.366, 0.477,
    0.469, 0.412 (rounding alone moves a run by up to 0.04). Range over all ten 0.143, bound
    0.494 + 3 * 0.143 = 0.923 -> 0.92 (no learning: 1). After the former 6 steps the ratio
    ranged 0.68-0.83 over 6 held-out tasks, and before - after 1.5-2.9: no bound with a 3-range
    margin was left.
    """
    bb = tiny_backbone(CAUSAL, prompt_length=8)
    m = supmer(bb, corpus, clusters, meta_batch_size=4, outer_lr=0.1)  # the paper's lr
    held_out = SelfSupTaskSampler(corpus, clusters, SHORT, 2, 2, seed=99, max_option_words=12)
    tasks = [held_out.sample() for _ in range(16)]
    before = m.meta_gradient(tasks)[1][QUERY_LOSS]
    weights = {k: v.clone() for k, v in bb.model.state_dict().items()}
    for _ in range(48):
        m.step()
    after = m.meta_gradient(tasks)[1][QUERY_LOSS]
    assert after < 0.92 * before, (before, after)
    assert all(torch.equal(v, weights[k]) for k, v in bb.model.state_dict().items())  # frozen


def test_exported_psi_loads_back_and_transforms_downstream_gradients(corpus, clusters, tmp_path):
    from promptinit.evaluation import TuneConfig, _batches, tune_prompt
    from promptinit.export import export_prompt
    from promptinit.methods.mgr import load_regulariser
    from promptinit.tasks.fewshot import sample_few_shot

    bb = tiny_backbone(CAUSAL, prompt_length=4)
    m = supmer(bb, corpus, clusters)
    assert m.grad_transform is None  # no reference context before the first step
    for _ in range(2):
        m.step()
    folder = export_prompt(m.prompt, bb, tmp_path / "export", method="supmer", hyperparameters={}, metrics={},
                           model_name=CAUSAL, task_fingerprints={}, psi_state=m.psi_tensors())
    psi = load_regulariser(folder)
    g = torch.randn(bb.config.prompt_length, bb.hidden_size)
    torch.testing.assert_close(psi.as_grad_transform()(g), m.grad_transform(g), rtol=0, atol=0)

    fs = sample_few_shot(keyword_task(), 100, test_size=8)
    cfg = TuneConfig(optimizer="sgd", lr=0.5, batch_size=4, steps=2, eval_every=2, test_size=8)

    def recorder(transform):
        seen = []

        def record(grad):
            out = transform(grad)
            seen.append((grad.clone(), out.clone()))
            return out

        return seen, record

    with_psi, t_psi = recorder(psi.as_grad_transform())
    plain, t_id = recorder(lambda grad: grad)
    tune_prompt(bb, fs, m.prompt, cfg, grad_transform=t_psi, progress=False)
    tune_prompt(bb, fs, m.prompt, cfg, grad_transform=t_id, progress=False)
    (g0, psi_g0), (g1, _) = with_psi
    torch.testing.assert_close(g0, plain[0][0])  # same start, same first batch
    assert not torch.allclose(psi_g0, g0)  # ψ changes the update ...
    # ... and the update applied is -lr ψ(g): the next gradient is taken at init - lr ψ(g0)
    batches = _batches(fs.train, cfg.batch_size, fs.seed)
    next(batches)
    p1 = (m.prompt - cfg.lr * psi_g0).requires_grad_(True)
    (expected,) = torch.autograd.grad(bb.loss(p1, bb.encode(next(batches))), p1)
    torch.testing.assert_close(g1, expected)
    assert not torch.allclose(g1, plain[1][0])
    no_mgr = build_method("supmer", bb, [], {**CHEAP, "use_mgr": False}, corpus=corpus, clusters=clusters)
    assert no_mgr.grad_transform is None


BAD = [
    ("curriculum", "cosine"),
    ("mixup_m", 1.0),
    ("fixed_lambda", 1.5),
    ("formats", ["nsp", "cloze"]),
    ("phi_lr", 0.0),
    ("num_clusters", 3),
    ("outer_optimizer", "rmsprop"),
    ("use_mgr", "yes"),
    ("max_grad_norm", -1.0),
]


@pytest.mark.parametrize("field,value", BAD)
def test_bad_setting_raises_naming_the_field(field, value):
    with pytest.raises(PromptinitError, match=field):
        make_config("supmer", {field: value})


def test_defaults_and_config_built_corpus(corpus):
    c = make_config("supmer")
    assert (c.outer_lr, c.phi_lr, c.inner_lr, c.max_grad_norm, c.meta_batch_size) == (0.1, 1e-4, 0.1, 1.0, 4)
    assert (c.outer_optimizer, c.curriculum, c.mixup_alpha, c.mixup_m) == ("adam", "beta", 1.0, 2.0)
    assert c.curriculum_decay == 0.5
    assert c.use_mgr and c.formats == ("nsp", "nss", "scsp", "scss", "scc")
    assert make_config("supmer", {"formats": ["nsp", "scc"]}).formats == ("nsp", "scc")  # lists from Tune / YAML
    # built from settings alone: the corpus and its (cached) clusters come from the config
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    m = build_method("supmer", bb, [], {**CHEAP, "corpus_sources": ["bbc"], "max_sentences": 480}, seed=0)
    assert len(m.corpus) > 100 and m.clusters.k == K
