import pytest

from ensembles.errors import UnknownNameError
from ensembles.metrics import METRICS, get_metric


def test_all_builtin_metrics_are_registered():
    assert METRICS.names() == ["bleu", "chrf", "exact_match", "f1", "rouge_l"]


def test_only_exact_match_is_binary():
    assert [name for name, cls in METRICS.items() if cls.binary] == ["exact_match"]


def test_exact_match_ignores_case_punctuation_and_articles():
    em = get_metric("exact_match")
    assert em.score("The Eiffel Tower.", "eiffel tower") == 1.0
    assert em.score("Eiffel", "eiffel tower") == 0.0


def test_exact_match_compares_numbers_by_value_keeping_the_sign():
    em = get_metric("exact_match")
    assert em.score("12.0", "12") == 1.0
    assert em.score("1,234", "1234") == 1.0
    assert em.score("-5", "5") == 0.0
    assert em.score("12.5", "125") == 0.0


def test_exact_match_never_matches_an_empty_prediction_to_the_option_letter_a():
    em = get_metric("exact_match")
    assert em.score("A", "A") == 1.0
    assert em.score("", "A") == 0.0
    assert em.score("B", "A") == 0.0


def test_f1_is_squad_token_overlap():
    f1 = get_metric("f1")
    # tokens after normalization: [cat, sat, on, mat] vs [cat, is, on, mat] -> 3 shared
    assert f1.score("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    assert f1.score("dog", "cat") == 0.0


def test_rouge_l_uses_the_longest_common_subsequence():
    rouge = get_metric("rouge_l")
    # LCS of 6-token sentences is "the cat on the mat" (5 tokens): P = R = 5/6
    assert rouge.score("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # order matters for ROUGE-L but not for F1: LCS("a b c", "c b a") = 1
    assert rouge.score("x y z", "z y x") == pytest.approx(1 / 3)
    assert rouge.score("", "cat") == 0.0


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_sacrebleu_metrics_are_scaled_to_the_unit_interval(name):
    metric = get_metric(name)
    assert metric.score("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert metric.score("zzzz qqqq", "the cat sat on the mat") == pytest.approx(0.0, abs=0.05)
    partial = metric.score("the cat sat on a mat", "the cat sat on the mat")
    assert 0.0 < partial < 1.0


def test_unknown_metric_suggests_closest_name():
    with pytest.raises(UnknownNameError, match="did you mean 'rouge_l'"):
        get_metric("rougel")
