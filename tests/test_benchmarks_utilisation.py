"""``benchmarks/utilisation.py``: its analytic FLOP counts and its table, on tiny random models."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import CAUSAL, load_benchmark, tiny_backbone


utilisation = load_benchmark("utilisation")


@pytest.mark.parametrize("model", [CAUSAL, "tiny-gpt2"])
@pytest.mark.parametrize("kind", ["tuning", "scoring"])
def test_flop_formula_matches_torch_flop_counter(model, kind):
    """The docstring's formula against an independent count of every matrix product that runs
    (forward and backward): equal on Llama (GQA, RoPE) and GPT-2 (Conv1D) blocks."""
    bb = tiny_backbone(model)
    make = utilisation.tuning_pass if kind == "tuning" else utilisation.scoring_pass
    one = make(bb, rows=3, tokens=20)
    with FlopCounterMode(display=False) as counter:
        one.run()
    assert counter.get_total_flops() == pytest.approx(one.flops, rel=1e-3)


def test_tuning_flops_are_forward_plus_twice_attention_plus_input_gradients():
    s = utilisation.ModelShape(layers=2, linear=100, attn_width=8, vocab=50, hidden=4)
    fwd = utilisation.forward_flops(s, rows=3, tokens=10) + utilisation.head_flops(s, 6)
    attn = 4 * 2 * 3 * 10 * 10 * 8
    assert utilisation.tuning_flops(s, 3, 10, 6) == 2 * fwd + attn


def test_main_prints_the_utilisation_table(capsys):
    rc = utilisation.main(["--model", CAUSAL, "--dtype", "float32", "--attn", "eager", "sdpa", "--rounds", "2",
                           "--threads", "1", "--rows", "2", "--tokens", "12", "--square", "64", "--reps", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    header = "| device | dtype | threads | pass | attention | compiled | GFLOP/s | % of peak |"
    assert header in out
    rows = [ln for ln in out.splitlines() if ln.startswith("| cpu | float32 | 1 | ")]
    kinds = {(ln.split("|")[4].strip(), ln.split("|")[5].strip()) for ln in rows if "%" in ln}
    assert kinds == {(k, a) for k in ("tuning", "scoring") for a in ("eager", "sdpa")}
    assert "| cpu | float32 | 1 | square 64² |" in out
    assert "load average" in out
