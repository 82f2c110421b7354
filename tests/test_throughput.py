"""The pass-size rule: the probe, its choice, its on-disk cache, the setting, the meta-batch groups."""
from __future__ import annotations

import json

import pytest
import torch

from promptinit import throughput
from promptinit.errors import PromptinitError
from promptinit.methods import build_method
from promptinit.paths import CACHE_ENV
from tests.conftest import CAUSAL, tiny_backbone


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty throughput cache and an empty in-process memo."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(throughput, "_MEMO", {})
    return tmp_path


def test_choose_rows_takes_the_least_time_per_row_and_the_smaller_on_a_tie():
    assert throughput.choose_rows({1: 3.0, 2: 2.0, 4: 1.5, 8: 1.6}) == 4
    assert throughput.choose_rows({1: 2.0, 2: 1.0, 4: 1.0}) == 2
    with pytest.raises(PromptinitError, match="rows_per_pass"):
        throughput.choose_rows({})


def test_probe_goes_on_while_bigger_passes_pay_and_stops_when_they_cost_more():
    seen = []

    def saturating(rows):  # a fixed cost per pass: bigger passes always pay
        seen.append(rows)
        return 1e-4 + 1e-6 * rows

    per_row = throughput.probe(saturating)
    assert list(per_row) == list(throughput.CANDIDATES)
    assert throughput.choose_rows(per_row) == throughput.CANDIDATES[-1]

    def thrashing(rows):  # per-row cost grows past 4 rows (cache misses)
        return 1e-4 * rows * (1 if rows <= 4 else rows / 2)

    per_row = throughput.probe(thrashing)
    assert throughput.choose_rows(per_row) in (1, 2, 4)
    assert max(per_row) == 16, "two candidates in a row worse than the best end the probe"


def test_probe_stops_after_a_long_pass(monkeypatch):
    monkeypatch.setattr(throughput, "PASS_LIMIT_S", 0.3)
    per_row = throughput.probe(lambda rows: 0.2 * rows)  # fake seconds, nothing sleeps
    assert list(per_row) == [1, 2, 4], "the first three candidates are always measured"
    monkeypatch.setattr(throughput, "PASS_LIMIT_S", 1.0)
    assert list(throughput.probe(lambda rows: 0.2 * rows)) == [1, 2, 4, 8]


def test_a_probe_whose_timings_move_afterwards_is_unstable():
    assert throughput.stable(lambda rows: 1e-3 * (1 + rows), {1: 2e-3, 2: 1.5e-3, 4: 1.25e-3})
    calls = []

    def loaded_later(rows):  # the same passes take 3 times longer once the probe is over
        calls.append(rows)
        return 1e-3 * (1 + rows) * (3 if len(calls) > 3 else 1)

    per_row = {r: loaded_later(r) / r for r in (1, 2, 4)}
    assert not throughput.stable(loaded_later, per_row)


def test_a_probe_that_sees_the_load_change_runs_again_then_is_kept_with_a_warning(fresh, monkeypatch):
    bb = tiny_backbone(CAUSAL)
    verdicts = [False, True]
    monkeypatch.setattr(throughput, "stable", lambda timer, per_row: verdicts.pop(0))
    throughput.tokens_per_pass(bb, "score")
    assert not verdicts, "probed again after an unsteady probe"
    monkeypatch.setattr(throughput, "stable", lambda timer, per_row: False)
    with pytest.warns(RuntimeWarning, match="rows_per_pass"):
        tokens = throughput.tokens_per_pass(bb, "train")
    record = json.loads(next((fresh / "throughput").glob("train-*.json")).read_text())
    assert record["tokens_per_pass"] == tokens and record["steady"] is False


def test_rows_per_pass_is_measured_once_then_read_from_disk(fresh, monkeypatch):
    bb = tiny_backbone(CAUSAL)
    calls = []
    real = throughput.probe
    monkeypatch.setattr(throughput, "probe", lambda timer: calls.append(1) or real(timer))
    monkeypatch.setattr(throughput, "stable", lambda timer, per_row: True)  # a busy machine must not skip the cache
    rows = throughput.rows_per_pass(bb, "train", 40)
    files = list((fresh / "throughput").glob("train-*.json"))
    assert len(calls) == 1 and len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["fingerprint"] == bb.fingerprint and "threads" in record["device"]
    assert rows == max(1, record["tokens_per_pass"] // 40)
    assert throughput.rows_per_pass(bb, "train", 40) == rows and len(calls) == 1  # memo
    monkeypatch.setattr(throughput, "_MEMO", {})
    assert throughput.rows_per_pass(bb, "train", 40) == rows and len(calls) == 1  # disk
    throughput.rows_per_pass(bb, "score", 40)
    assert len(calls) == 2, "scoring passes (no backward) are measured apart"
    with pytest.raises(PromptinitError, match="kind"):
        throughput.tokens_per_pass(bb, "backward")


def test_the_rule_never_goes_below_the_one_by_one_pass_and_the_setting_overrides_it(fresh, monkeypatch):
    bb = tiny_backbone(CAUSAL)
    monkeypatch.setattr(throughput, "tokens_per_pass", lambda *a, **k: 320)
    assert throughput.rows_per_pass(bb, "train", 40) == 8
    assert throughput.rows_per_pass(bb, "train", 40, floor=12) == 12
    assert throughput.rows_per_pass(bb, "train", 1000) == 1
    assert throughput.rows_per_pass(bb, "train", 40, override=3) == 3
    with pytest.raises(PromptinitError, match="rows_per_pass"):
        throughput.rows_per_pass(bb, "train", 40, override=-2)


def test_a_real_probe_on_a_tiny_model_takes_seconds(fresh):
    import time

    bb = tiny_backbone(CAUSAL)
    start = time.perf_counter()
    tokens = throughput.tokens_per_pass(bb, "train", use_cache=False)
    assert time.perf_counter() - start < 3 * throughput.PROBE_BUDGET_S
    row = bb.config.prompt_length + throughput.PROBE_TOKENS
    assert tokens % row == 0 and tokens // row in throughput.CANDIDATES


@pytest.mark.parametrize("rows_per_pass,groups", [(2, [1, 1, 1]), (4, [2, 1]), (6, [3])])
def test_meta_batch_groups_follow_rows_per_pass_and_give_the_task_by_task_gradient(rows_per_pass, groups):
    from tests.methods.conftest import peek, source_tasks

    bb = tiny_backbone(CAUSAL, "float64")
    cfg = {"inner_lr": 0.1, "inner_batch_size": 2, "query_batch_size": 2, "meta_batch_size": 3}
    m = build_method("maml", bb, source_tasks(), {**cfg, "rows_per_pass": rows_per_pass}, seed=0)
    tasks = peek(m)
    assert [len(g) for g in m._task_groups(tasks, None, 2)] == groups
    g1, _ = m.meta_gradient(tasks)
    g2, _ = m.meta_gradient(tasks, task_batched=False)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-9)


def test_rows_per_pass_setting_of_a_method_is_checked():
    from promptinit.methods.base import make_config

    with pytest.raises(PromptinitError, match="rows_per_pass"):
        make_config("maml", {"rows_per_pass": -1})
    with pytest.raises(PromptinitError, match="rows_per_pass"):
        make_config("supmer", {"rows_per_pass": "many"})
    assert make_config("metapt", {"rows_per_pass": 8}).rows_per_pass == 8
