"""Metrics against hand-computed cases."""
import pytest

from promptinit.metrics import compute, normalize_answer


def test_accuracy_by_hand():
    assert compute("accuracy", ["a", "b", "a", "c"], [["a"], ["a"], ["a"], ["c"]]) == 0.75


def test_macro_f1_by_hand():
    # gold a a b b, pred a b b b: class a P=1 R=.5 F=2/3; class b P=2/3 R=1 F=.8 -> mean 11/15
    got = compute("macro_f1", ["a", "b", "b", "b"], [["a"], ["a"], ["b"], ["b"]])
    assert got == pytest.approx((2 / 3 + 0.8) / 2)


def test_exact_match_normalises_and_takes_best_reference():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert compute("exact_match", ["the Paris.", "London"], [["paris"], ["Rome", "london"]]) == 1.0
    assert compute("exact_match", ["Paris France"], [["paris"]]) == 0.0


def test_token_f1_by_hand():
    # pred "big red dog" vs ref "red dog runs": common 2, P=2/3, R=2/3 -> F1 2/3
    assert compute("token_f1", ["big red dog"], [["red dog runs"]]) == pytest.approx(2 / 3)
    assert compute("token_f1", ["cat"], [["dog", "a cat"]]) == 1.0


def test_rouge_l_by_hand():
    # LCS("a b c d", "a c d e") = "a c d" = 3; P = 3/4, R = 3/4 -> F = 0.75
    assert compute("rouge_l", ["a b c d"], [["a c d e"]]) == pytest.approx(0.75)
