"""BLEU, chrF and the length ratio from sacreBLEU segment statistics.

As in sacreBLEU's `metrics/base.py`: each item gives a vector of sufficient statistics (n-gram match and
total counts, lengths); a corpus score is computed from the column sums, never by averaging sentence
scores. Keeping the per-item statistics makes slices and the paired bootstrap exact and cheap: sum the
rows of a group (or of a resample) and compute the score again. The statistics and the scoring formulas
are sacreBLEU's own (`BLEU`, `CHRF` with their defaults), so every number equals `sacrebleu.corpus_bleu`,
`sacrebleu.sentence_bleu`, `sacrebleu.corpus_chrf` and `sacrebleu.sentence_chrf` (see
tests/metrics/test_metrics_bleu.py). One reference per item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

# Defaults as in sacrebleu.corpus_bleu: 13a tokenizer, mixed case, exp smoothing, n-grams up to 4.
_CORPUS_BLEU = BLEU()
_SENTENCE_BLEU = BLEU(effective_order=True)  # sacrebleu.sentence_bleu's settings; same statistics
_CHRF = CHRF()  # chrF2: character 6-grams, beta 2, whitespace removed


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def _signature(metric, num_refs: int = 1) -> str:
    metric.num_refs = num_refs  # sacreBLEU sets this while caching references
    return str(metric.get_signature())


BLEU_SIGNATURE = _signature(_CORPUS_BLEU)
SENTENCE_BLEU_SIGNATURE = _signature(_SENTENCE_BLEU)
CHRF_SIGNATURE = _signature(_CHRF)
LENGTH_RATIO_TOKENIZATION = "sacreBLEU 13a (the tokenization of BLEU's brevity penalty)"


def bleu_stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-item BLEU statistics, int64 array (n, 10): hyp_len, ref_len, matches 1-4, totals 1-4."""
    _check(predictions, references)
    if not len(predictions):
        return np.zeros((0, 2 + 2 * _CORPUS_BLEU.max_ngram_order), dtype=np.int64)
    rows = BLEU()._extract_corpus_statistics(list(predictions), [list(references)])
    return np.asarray(rows, dtype=np.int64)


def chrf_stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-item chrF statistics, int64 array (n, 18): (hyp, ref, match) counts per character n-gram order."""
    _check(predictions, references)
    if not len(predictions):
        return np.zeros((0, 3 * (_CHRF.char_order + _CHRF.word_order)), dtype=np.int64)
    rows = CHRF()._extract_corpus_statistics(list(predictions), [list(references)])
    return np.asarray(rows, dtype=np.int64)


def bleu_from_stats(summed: np.ndarray) -> dict:
    """Corpus BLEU (0-100) and its parts from summed statistics (a row of `bleu_stats(...).sum(0)`)."""
    score = _CORPUS_BLEU._compute_score_from_stats([int(x) for x in summed])
    return {"score": score.score, "precisions": list(score.precisions), "bp": score.bp,
            "sys_len": score.sys_len, "ref_len": score.ref_len, "ratio": score.ratio,
            "signature": BLEU_SIGNATURE}


def bleu_score_from_stats(summed: np.ndarray) -> float:
    return _CORPUS_BLEU._compute_score_from_stats([int(x) for x in summed]).score


def chrf_score_from_stats(summed: np.ndarray) -> float:
    return _CHRF._compute_score_from_stats([int(x) for x in summed]).score


def sentence_bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """Per-item sentence BLEU (sacrebleu.sentence_bleu: effective order, exp smoothing) from `bleu_stats`."""
    return np.array([_SENTENCE_BLEU._compute_score_from_stats([int(x) for x in row]).score for row in stats])


def sentence_chrf_from_stats(stats: np.ndarray) -> np.ndarray:
    return np.array([chrf_score_from_stats(row) for row in stats])


def length_ratio_from_stats(summed: np.ndarray) -> float:
    """Sum of prediction lengths / sum of reference lengths, in sacreBLEU 13a tokens (0.0 without reference
    tokens, as sacreBLEU reports it)."""
    hyp_len, ref_len = int(summed[0]), int(summed[1])
    return hyp_len / ref_len if ref_len else 0.0


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU with sacreBLEU's defaults: {score, precisions, bp, sys_len, ref_len, ratio, signature}."""
    return bleu_from_stats(bleu_stats(predictions, references).sum(axis=0))


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus chrF2 (0-100) with sacreBLEU's defaults: {score, signature}."""
    return {"score": chrf_score_from_stats(chrf_stats(predictions, references).sum(axis=0)),
            "signature": CHRF_SIGNATURE}
