"""BLEU, chrF, length ratio and exact match equal sacreBLEU (and plain Python) on varied inputs."""

import random

import numpy as np
import pytest
import sacrebleu

from metrics import bleu
from metrics.exact_match import exact_match_items

CASES = [
    (["the cat sat on the mat"], ["the cat is on the mat"]),
    (["", "hello"], ["x", "hello"]),
    ([""], [""]),
    (["Hello, World!", "Zoë's café — naïve", "日本語のテキスト"], ["hello world", "Zoë's café", "日本語"]),
    (["a a a a a a a"], ["a a"]),
    (["one two three four five six"] * 3, ["one two three four five six", "six five four", "one"]),
    (["It's 5 p.m. , ok ."], ["It's 5 p.m., ok."]),
]


def _random_corpus(seed: int, n: int):
    rng = random.Random(seed)
    words = "the a to refund order shipped you we thanks , . ! Zoë 42 ORD-1234".split()
    hyps = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(n)]
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(n)]
    return hyps, refs


@pytest.mark.parametrize("hyps,refs", CASES + [_random_corpus(s, 60) for s in range(5)])
def test_corpus_and_sentence_bleu_equal_sacrebleu(hyps, refs):
    expected = sacrebleu.corpus_bleu(hyps, [refs])
    got = bleu.corpus_bleu(hyps, refs)
    assert got["score"] == pytest.approx(expected.score, abs=1e-8)
    assert got["bp"] == pytest.approx(expected.bp, abs=1e-12)
    assert (got["sys_len"], got["ref_len"]) == (expected.sys_len, expected.ref_len)
    assert got["precisions"] == pytest.approx(expected.precisions, abs=1e-8)
    stats = bleu.bleu_stats(hyps, refs)
    sentence = bleu.sentence_bleu_from_stats(stats)
    for h, r, s in zip(hyps, refs, sentence):
        assert s == pytest.approx(sacrebleu.sentence_bleu(h, [r]).score, abs=1e-8)


@pytest.mark.parametrize("hyps,refs", CASES + [_random_corpus(s, 60) for s in range(3)])
def test_chrf_equals_sacrebleu(hyps, refs):
    assert bleu.corpus_chrf(hyps, refs)["score"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score,
                                                                  abs=1e-8)
    for h, r, s in zip(hyps, refs, bleu.sentence_chrf_from_stats(bleu.chrf_stats(hyps, refs))):
        assert s == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score, abs=1e-8)


def test_corpus_bleu_is_not_the_mean_of_sentence_bleu():
    hyps, refs = _random_corpus(9, 40)
    stats = bleu.bleu_stats(hyps, refs)
    assert bleu.corpus_bleu(hyps, refs)["score"] != pytest.approx(bleu.sentence_bleu_from_stats(stats).mean())


def test_signatures_are_sacrebleus():
    metric = sacrebleu.BLEU()
    metric.corpus_score(["a"], [["a"]])
    assert bleu.BLEU_SIGNATURE == str(metric.get_signature())
    assert bleu.BLEU_SIGNATURE.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    chrf = sacrebleu.CHRF()
    chrf.corpus_score(["a"], [["a"]])
    assert bleu.CHRF_SIGNATURE == str(chrf.get_signature())
    assert bleu.corpus_bleu(["a"], ["a"])["signature"] == bleu.BLEU_SIGNATURE


def test_length_ratio_is_sum_of_13a_token_counts():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    hyps, refs = _random_corpus(3, 30)
    tok = Tokenizer13a()
    expected = sum(len(tok(h.rstrip()).split()) for h in hyps) / sum(len(tok(r.rstrip()).split()) for r in refs)
    assert bleu.length_ratio_from_stats(bleu.bleu_stats(hyps, refs).sum(0)) == pytest.approx(expected, abs=1e-12)
    assert bleu.corpus_bleu(hyps, refs)["ratio"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).ratio)
    assert bleu.length_ratio_from_stats(np.zeros(10)) == 0.0


def test_empty_corpus_and_mismatch():
    assert bleu.bleu_stats([], []).shape == (0, 10)
    assert bleu.chrf_stats([], []).shape == (0, 18)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        bleu.bleu_stats(["a", "b"], ["a"])


def test_exact_match_normalises_whitespace_only():
    preds = ["Hello  world\n", "hello world", "Hello world.", ""]
    refs = ["Hello world", "Hello world", "Hello world", "  "]
    assert exact_match_items(preds, refs).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert exact_match_items(preds, refs, ignore_case=True).tolist() == [1.0, 1.0, 0.0, 1.0]
