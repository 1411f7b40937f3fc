"""metrics.rouge gives rouge-score's numbers (RougeScorer with stemming) on varied and random inputs."""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer, scoring

from metrics import rouge
from metrics.rouge import ROUGE_TYPES, lcs_length, rouge_corpus, rouge_items, rouge_pair

SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
SCORER_NO_STEM = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)


def assert_same(prediction: str, reference: str, use_stemmer: bool = True):
    expected = (SCORER if use_stemmer else SCORER_NO_STEM).score(reference, prediction)
    got = rouge_pair(prediction, reference, use_stemmer=use_stemmer)
    for t in ROUGE_TYPES:
        for x, y in zip(expected[t], got[t]):
            assert abs(x - y) <= 1e-12, (t, reference, prediction, expected[t], got[t])


LONG = " ".join(f"word{i % 97} running the order {i}" for i in range(160))  # 800 tokens: the reference DP is quadratic
CASES = [
    ("", ""), ("", "the cat"), ("the cat", ""), ("!!! ... ???", "the cat"), ("the cat", "--- ,,,"),
    ("\n\n\n", "a\nb"), ("the cat sat on the mat", "the cat sat on the mat"),
    ("The Cats are RUNNING quickly", "the cat runs quick"),
    ("Zoë's café — naïve façade, İstanbul Straße", "zoe cafe naive facade istanbul strasse"),
    ("日本語のテキスト and some english", "english and 日本語"),
    ("the the the the the", "the the"), ("a a b b a a", "a b a b a b a"),
    ("one two three\nfour five six\nseven", "four five six\none two three\nseven eight"),
    ("first sentence here.\nsecond sentence there.\n\nthird one", "third one\nfirst sentence"),
    ("x\ny\nz\nx\ny\nz", "z\ny\nx\nx y z"),
    ("refund refunds refunded refunding", "refunded the refund"),
    ("Order ORD-12345678 shipped on 2024-03-01 via 1Z999", "order ord 12345678 shipped 2024 03 01"),
    ("tab\tseparated\r\nwindows lines\r\n", "tab separated\nwindows lines"),
    pytest.param(LONG, LONG[::-1], marks=pytest.mark.slow),
    pytest.param(LONG, LONG.replace("order", "refund"), marks=pytest.mark.slow),
    pytest.param("\n".join(LONG.split(" 1")[:200]), "\n".join(LONG.split(" 2")[:150]), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("prediction,reference", CASES)
def test_equal_to_rouge_score_on_hand_picked_cases(prediction, reference):
    assert_same(prediction, reference)
    assert_same(reference, prediction)


@pytest.mark.parametrize("prediction,reference", CASES[:12])
def test_equal_without_stemming(prediction, reference):
    assert_same(prediction, reference, use_stemmer=False)


WORDS = ["the", "a", "to", "refund", "refunds", "order", "orders", "shipping", "shipped", "you", "we",
         "running", "runs", "ran", "é", "naïve", "日本", "x1", "42", "!", ",", ".", "\n", "\n", "\n\n", "  "]


def random_text(rng: random.Random, max_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))


def test_equal_on_many_random_multi_sentence_pairs():
    rng = random.Random(11)
    for _ in range(500):
        reference = random_text(rng, 60)
        prediction = random_text(rng, 60)
        assert_same(prediction, reference)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("abcAB xyz\n\n.,!é日1")), max_size=120),
       st.text(alphabet=st.sampled_from(list("abcAB xyz\n\n.,!é日1")), max_size=120))
def test_property_equal_on_arbitrary_text(prediction, reference):
    assert_same(prediction, reference)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.lists(st.integers(0, 5), max_size=40))
def test_lcs_length_equals_dynamic_programming(a, b):
    table = rouge_scorer._lcs_table(a, b)
    assert lcs_length(a, b) == table[-1][-1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcde"), max_size=12), max_size=6),
       st.lists(st.lists(st.sampled_from("abcde"), max_size=12), max_size=6))
def test_union_lcs_hits_equal_summary_level_lcs(ref_sents, cand_sents):
    """The bit-parallel union-LCS reproduces rouge-score's backtrack-based hits on token lists directly."""
    expected = rouge_scorer._summary_level_lcs(ref_sents, cand_sents)
    m, n = sum(map(len, ref_sents)), sum(map(len, cand_sents))
    got = rouge._lsum_score(ref_sents, cand_sents, lambda: lcs_length([t for s in ref_sents for t in s],
                                                                       [t for s in cand_sents for t in s]))
    assert tuple(got) == tuple(expected)
    if ref_sents and cand_sents and m and n:
        hits = rouge._union_lcs_hits([s for s in ref_sents if s], [s for s in cand_sents if s])
        assert hits == round(expected.recall * m)


def test_tokenizer_matches_rouge_score():
    from rouge_score import tokenizers

    ref = tokenizers.DefaultTokenizer(use_stemmer=True)
    for text in [c for pair in CASES[:-3] for c in pair] + ["İstanbul KELVIN \u212a ﬁne", "ARE generously is was"]:
        assert rouge.tokenizer(True)(text) == ref.tokenize(text)


def test_corpus_is_mean_of_pair_fmeasures_and_items_align():
    preds = ["the cat sat", "a dog\nbarked loudly", "", "same text"]
    refs = ["the cat sat down", "the dog barked", "nothing", "same text"]
    items = rouge_items(preds, refs)
    agg = scoring.BootstrapAggregator()
    for p, r in zip(preds, refs):
        scores = SCORER.score(r, p)
        agg.add_scores(scores)
        for t in ROUGE_TYPES:
            assert tuple(items[t][preds.index(p)]) == tuple(scores[t])
    means = rouge_corpus(items)
    for t in ROUGE_TYPES:
        expected = np.mean([SCORER.score(r, p)[t].fmeasure for p, r in zip(preds, refs)])
        assert means[t] == pytest.approx(expected, abs=1e-12)
        # rouge-score's BootstrapAggregator "mid" is a resampled median of means, random
        # for so few items, so it is only checked to lie inside its own interval around ours
        low, high = agg.aggregate()[t].low.fmeasure, agg.aggregate()[t].high.fmeasure
        assert low - 1e-12 <= expected <= high + 1e-12


def test_unknown_type_and_length_mismatch_raise():
    with pytest.raises(ValueError, match="unknown ROUGE type"):
        rouge_pair("a", "b", rouge_types=["rougeX"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_items(["a", "b"], ["a"])


def test_rouge_n_beyond_two():
    scorer = rouge_scorer.RougeScorer(["rouge3", "rouge4"], use_stemmer=True)
    p, r = "one two three four five six", "one two three four six five"
    expected = scorer.score(r, p)
    got = rouge_pair(p, r, rouge_types=["rouge3", "rouge4"])
    assert tuple(got["rouge3"]) == tuple(expected["rouge3"]) and tuple(got["rouge4"]) == tuple(expected["rouge4"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdeilnostyz")), min_size=0, max_size=10),
       st.text(alphabet=st.sampled_from(list("0123456789")), min_size=1, max_size=3))
def test_porter_leaves_tokens_ending_in_a_digit_unchanged(letters, digits):
    """The stemming shortcut of metrics.rouge: nltk's Porter stemmer (rouge-score's) returns such tokens as is."""
    from nltk.stem import porter

    for token in (letters + digits, digits + letters + digits, letters + "ing" + digits, letters + "ied1"):
        assert porter.PorterStemmer().stem(token) == token
