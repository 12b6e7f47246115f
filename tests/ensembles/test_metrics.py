import random
import string

import pytest
import sacrebleu

from ensembles.errors import UnknownNameError
from ensembles.metrics import METRICS, get_metric
from ensembles.metrics.ngrams import _ProfileCache, lcs_length, tokenize_13a, word_profile


def test_all_builtin_metrics_are_registered():
    assert METRICS.names() == ["bleu", "chrf", "code_pass", "embedding_similarity", "exact_match", "f1", "rouge_l"]


def test_only_exact_match_and_code_pass_are_binary():
    assert sorted(name for name, cls in METRICS.items() if cls.binary) == ["code_pass", "exact_match"]


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


def _random_text(rng: random.Random) -> str:
    words = "the cat sat on a mat . , - 3-4 1,000 2.5 &amp; Paris it's don't Straße 北京".split()
    if rng.random() < 0.5:
        return "".join(rng.choices(string.ascii_letters + string.digits + " .,-!?'&;:()é\n\t", k=rng.randint(0, 40)))
    return " ".join(rng.choices(words, k=rng.randint(0, 15)))


@pytest.mark.parametrize(
    ("name", "reference_scorer"),
    [("bleu", sacrebleu.BLEU(effective_order=True)), ("chrf", sacrebleu.CHRF())],
)
def test_fast_bleu_and_chrf_equal_sacrebleu_sentence_scores_exactly(name, reference_scorer):
    metric, rng = get_metric(name), random.Random(7)  # noqa: S311 - test data, not secrets
    for _ in range(3000):
        prediction, reference = _random_text(rng), _random_text(rng)
        if rng.random() < 0.2:
            reference = prediction
        if not prediction.strip() and not reference.strip():
            continue
        expected = min(1.0, reference_scorer.sentence_score(prediction, [reference]).score / 100.0)
        assert metric.score(prediction, reference) == expected, (prediction, reference)


def test_score_batch_matches_scoring_one_by_one():
    f1 = get_metric("f1")
    predictions, references = ["a cat", "dog", ""], ["the cat", "dog", "x"]
    assert f1.score_batch(predictions, references) == [
        f1.score(p, r) for p, r in zip(predictions, references, strict=True)
    ]
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        f1.score_batch(["a", "b"], ["a"])


def _lcs_by_dynamic_programming(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, start=1):
        for j, y in enumerate(b, start=1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_vector_lcs_equals_the_textbook_dynamic_programme():
    rng = random.Random(3)  # noqa: S311 - test data, not secrets
    for _ in range(2000):
        a = rng.choices("abcde", k=rng.randint(0, 40))
        b = rng.choices("abcdef", k=rng.randint(0, 90))
        assert lcs_length(a, b) == _lcs_by_dynamic_programming(a, b), (a, b)


def test_fast_13a_tokenizer_equals_sacrebleus():
    tokenizer, rng = sacrebleu.BLEU().tokenizer, random.Random(11)  # noqa: S311 - test data, not secrets
    samples = ["a-\nb <skipped> &amp; &quot;x&quot; 3-4 1,000.5 end.", "U.S.A., e.g. 3.14 - x", "tab\there"]
    samples += [_random_text(rng) for _ in range(3000)]
    for text in samples:
        assert tokenize_13a(text) == tokenizer(text), text


def test_profile_cache_stays_within_its_character_budget():
    computed = []

    def profile(text):
        computed.append(text)
        return word_profile(text)

    cache = _ProfileCache(profile, budget_chars=160)
    for text in ["alpha", "beta", "alpha"]:
        cache.get(text)
    assert computed == ["alpha", "beta"]
    cache.get("x" * 20)  # over a sixteenth of the budget: computed but never kept
    cache.get("x" * 20)
    assert computed.count("x" * 20) == 2
    for i in range(40):
        cache.get(f"text{i:02d}")
    assert cache._used <= 160 and len(cache._profiles) < 40
