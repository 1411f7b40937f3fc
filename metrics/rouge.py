"""ROUGE-1/2/L/Lsum with exactly the numbers of Google's `rouge-score`, many times faster.

Same tokenizer semantics as `rouge_score.tokenize.tokenize`: lowercase, every run of characters outside
[a-z0-9] is a separator, nltk's Porter stemmer (NLTK_EXTENSIONS mode, as rouge-score builds it) on tokens
longer than 3 characters, then tokens that are not [a-z0-9]+ are dropped. ROUGE-Lsum splits texts on "\\n"
into sentences, as rouge-score does without `split_summaries`.

Where the speed comes from (tests/metrics/test_metrics_rouge.py proves equality with rouge-score):
- stems are cached per distinct token, so nltk runs once per word form per process, and not at all for
  tokens ending in a digit (order numbers, dates), which Porter's suffix rules never change (tested);
- n-gram overlap uses `collections.Counter`;
- LCS lengths use the bit-parallel algorithm of Allison-Dix / Hyyro with Python ints: one pass per token
  of the prediction, a match bitmask per distinct reference token;
- ROUGE-Lsum needs the actual union-LCS token sets that rouge-score's `_summary_level_lcs` builds from its
  backtrack `_backtrack_norec`. All reference sentences are packed into one int (one block each, a zero
  guard bit between blocks absorbs carries), so one bit-parallel pass per prediction sentence gives the DP
  columns against every reference sentence at once; the backtrack then walks the columns right to left,
  finding each block's next row with a borrow trick on the bit-reversed column (see `_union_lcs_hits`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_VALID_RE = re.compile(r"^[a-z0-9]+$")  # rouge-score's final check, applied to stems
_REV_BYTE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
_STEM_CACHE_LIMIT = 1_000_000
_DIGITS = frozenset("0123456789")


class RougeScore(NamedTuple):
    """Precision, recall and F-measure of one ROUGE type (fields as `rouge_score.scoring.Score`)."""
    precision: float
    recall: float
    fmeasure: float


_ZERO = RougeScore(0, 0, 0)


def _fmeasure(precision: float, recall: float) -> float:
    # rouge_score.scoring.fmeasure, operation for operation, so the floats are identical.
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


class _Tokenizer:
    """rouge-score's DefaultTokenizer with a cache of stems per distinct token."""

    def __init__(self, use_stemmer: bool):
        self._stem = None
        if use_stemmer:
            from nltk.stem import porter

            self._stem = porter.PorterStemmer().stem
        self._cache: dict[str, str] = {}  # token -> stem, "" for a stem that is dropped

    def __call__(self, text: str) -> list[str]:
        raw = _TOKEN_RE.findall(text.lower())
        if self._stem is None:
            return raw
        cache = self._cache
        out: list[str] = []
        for tok in raw:
            stem = cache.get(tok)
            if stem is None:
                # Porter only rewrites letter suffixes: a token ending in a digit comes back unchanged
                stem = self._stem(tok) if len(tok) > 3 and tok[-1] not in _DIGITS else tok
                stem = stem if _VALID_RE.match(stem) else ""
                if len(cache) >= _STEM_CACHE_LIMIT:
                    cache.clear()
                cache[tok] = stem
            if stem:  # a kept stem is never empty: it matches [a-z0-9]+
                out.append(stem)
        return out


_TOKENIZERS: dict[bool, _Tokenizer] = {}


def tokenizer(use_stemmer: bool = True) -> _Tokenizer:
    """The shared (cached) tokenizer: `tokenizer()(text)` gives rouge-score's tokens of text."""
    if use_stemmer not in _TOKENIZERS:
        _TOKENIZERS[use_stemmer] = _Tokenizer(use_stemmer)
    return _TOKENIZERS[use_stemmer]


# ---------------------------------------------------------------- n-grams and LCS

def _ngram_score(target: Counter, prediction: Counter) -> RougeScore:
    # rouge_score.rouge_scorer._score_ngrams
    small, large = (target, prediction) if len(target) <= len(prediction) else (prediction, target)
    overlap = 0
    for gram, count in small.items():
        other = large.get(gram)
        if other:
            overlap += count if count < other else other
    precision = overlap / max(sum(prediction.values()), 1)
    recall = overlap / max(sum(target.values()), 1)
    return RougeScore(precision, recall, _fmeasure(precision, recall))


def _bigrams(tokens: list[str]) -> Counter:
    return Counter(zip(tokens, tokens[1:]))


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of a and b (bit-parallel, O(len(b) * len(a) / 64))."""
    if len(a) < len(b):
        a, b = b, a  # bits over the longer one: fewer Python-level steps
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = v = (1 << len(a)) - 1
    for tok in b:
        m = masks.get(tok)
        if m is not None:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _lcs_score(target: list[str], prediction: list[str]) -> RougeScore:
    # rouge_score.rouge_scorer._score_lcs
    if not target or not prediction:
        return _ZERO
    lcs = lcs_length(target, prediction)
    precision = lcs / len(prediction)
    recall = lcs / len(target)
    return RougeScore(precision, recall, _fmeasure(precision, recall))


def _union_lcs_hits(ref_sents: list[list[str]], cand_sents: list[list[str]]) -> int:
    """The `hits` of rouge-score's `_summary_level_lcs`: union-LCS tokens, clipped by token counts.

    For each reference sentence r, rouge-score takes the union over candidate sentences c of the LCS index
    set that `_backtrack_norec` reads out of the DP table of (r, c); a token then counts at most as often
    as it occurs in the candidate. Because the union indices are distinct reference positions, the
    sequential clipping of rouge-score adds up to sum over tokens t of min(union count of t, count of t in
    the candidate), which is what we return.

    Bit layout ("natural"): reference sentence k is a block with a zero guard bit at off_k and its
    positions q at off_k + 1 + q. Column j of the DP against all blocks is the Hyyro vector V_j: bit of
    position q is 0 exactly where t[q+1][j] = t[q][j] + 1. Backtrack rule of `_backtrack_norec` at cell
    (i, j): a match takes the diagonal; otherwise it goes up when t[i-1][j] == t[i][j] (bit i-1 of V_j
    set) and left otherwise. So in column j each block walks up to its highest row q < i that is either a
    match or a zero bit of V_j. Bit-reversing V_j turns "highest row below i" into "lowest bit at or above
    a pointer", which a subtraction finds in every block at once (guards stop the borrows).
    """
    masks: dict[str, int] = {}
    ones = guards = tops = 0
    off = 0
    for toks in ref_sents:
        guards |= 1 << off
        for q, tok in enumerate(toks):
            masks[tok] = masks.get(tok, 0) | (1 << (off + 1 + q))
        ones |= ((1 << len(toks)) - 1) << (off + 1)
        tops |= 1 << (off + len(toks))
        off += len(toks) + 1
    nbytes = (off + 7) // 8
    from_bytes = int.from_bytes

    def rev(x: int) -> int:  # bit b -> bit 8*nbytes-1-b
        return from_bytes(x.to_bytes(nbytes, "little").translate(_REV_BYTE), "big")

    common = {tok for sent in cand_sents for tok in sent if tok in masks}
    if not common:
        return 0
    masks_r = {tok: rev(masks[tok]) for tok in common}
    ones_r, guards_r, start = rev(ones), rev(guards), rev(tops)
    union = 0
    for cand in cand_sents:
        if common.isdisjoint(cand):
            continue  # no common token: every LCS with this sentence is empty
        columns = []  # V_j as little-endian bytes; reversed all at once below
        v = ones
        for tok in cand:
            m = masks.get(tok)
            if m is not None:
                u = v & m
                v = ((v + u) | (v - u)) & ones
            columns.append(v.to_bytes(nbytes, "little"))
        flipped = b"".join(columns).translate(_REV_BYTE)
        pointer = start  # per block, the bit of the highest row still open (a guard bit once done)
        previous_matchless = False
        for j in range(len(cand) - 1, -1, -1):
            m_r = masks_r.get(cand[j], 0)
            if not m_r:
                if previous_matchless:
                    continue  # same column as the one just walked and no match: the walk would not move
                previous_matchless = True
            else:
                previous_matchless = False
            column_r = from_bytes(flipped[j * nbytes:(j + 1) * nbytes], "big")
            z = ((m_r | (column_r ^ ones_r)) & (guards_r - pointer)) | guards_r
            first = z & ~(z - pointer)  # per block, the lowest set bit at or above its pointer
            if m_r:
                hit = first & m_r
                union |= hit
                pointer = (hit << 1) | (first ^ hit)  # a match moves past its row; an increment stays
            else:
                pointer = first
            if pointer == guards_r:
                break
    if not union:
        return 0
    cand_counts = Counter(tok for sent in cand_sents for tok in sent)
    hits = 0
    for tok in common:
        used = (union & masks_r[tok]).bit_count()
        if used:
            hits += min(used, cand_counts[tok])
    return hits


def _lsum_score(ref_sents: list[list[str]], cand_sents: list[list[str]], whole_lcs) -> RougeScore:
    m = sum(map(len, ref_sents))
    n = sum(map(len, cand_sents))
    if not m or not n:
        return _ZERO
    ref_sents = [s for s in ref_sents if s]
    cand_sents = [s for s in cand_sents if s]
    if len(ref_sents) == 1 and len(cand_sents) == 1:
        hits = whole_lcs()  # one LCS: its tokens are distinct candidate positions, nothing to clip
    else:
        hits = _union_lcs_hits(ref_sents, cand_sents)
    recall = hits / m
    precision = hits / n
    return RougeScore(precision, recall, _fmeasure(precision, recall))


# ---------------------------------------------------------------- public API

def rouge_pair(prediction: str, reference: str, *, rouge_types: Sequence[str] = ROUGE_TYPES,
               use_stemmer: bool = True) -> dict[str, RougeScore]:
    """ROUGE of one prediction against one reference; equals
    `RougeScorer(rouge_types, use_stemmer=use_stemmer).score(reference, prediction)` (note the order)."""
    tokenize = tokenizer(use_stemmer)
    ref_sents = [tokenize(line) for line in reference.split("\n") if line]
    cand_sents = [tokenize(line) for line in prediction.split("\n") if line]
    ref = [t for s in ref_sents for t in s]
    cand = [t for s in cand_sents for t in s]
    out: dict[str, RougeScore] = {}
    lcs_cache: list[int] = []

    def whole_lcs() -> int:
        if not lcs_cache:
            lcs_cache.append(lcs_length(ref, cand))
        return lcs_cache[0]

    for rouge_type in rouge_types:
        if rouge_type == "rougeL":
            if not ref or not cand:
                out[rouge_type] = _ZERO
            else:
                lcs = whole_lcs()
                precision, recall = lcs / len(cand), lcs / len(ref)
                out[rouge_type] = RougeScore(precision, recall, _fmeasure(precision, recall))
        elif rouge_type == "rougeLsum":
            out[rouge_type] = _lsum_score(ref_sents, cand_sents, whole_lcs)
        elif rouge_type == "rouge1":
            out[rouge_type] = _ngram_score(Counter(ref), Counter(cand))
        elif rouge_type == "rouge2":
            out[rouge_type] = _ngram_score(_bigrams(ref), _bigrams(cand))
        elif re.fullmatch(r"rouge[0-9]", rouge_type) and rouge_type != "rouge0":
            n = int(rouge_type[5:])
            grams = [Counter(zip(*(toks[k:] for k in range(n)))) for toks in (ref, cand)]
            out[rouge_type] = _ngram_score(*grams)
        else:
            raise ValueError(f"unknown ROUGE type {rouge_type!r}; expected rouge1..rouge9, rougeL or rougeLsum")
    return out


def rouge_items(predictions: Sequence[str], references: Sequence[str], *,
                rouge_types: Sequence[str] = ROUGE_TYPES, use_stemmer: bool = True,
                progress=None) -> dict[str, np.ndarray]:
    """Per-item ROUGE: {type: float array of shape (n, 3)} with columns precision, recall, F."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out = {t: np.zeros((len(predictions), 3)) for t in rouge_types}
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        for t, score in rouge_pair(pred, ref, rouge_types=rouge_types, use_stemmer=use_stemmer).items():
            out[t][i] = score
        if progress is not None and i % 500 == 499:
            progress((i + 1) / len(predictions), f"ROUGE {i + 1:,}/{len(predictions):,}")
    return out


def rouge_corpus(items: dict[str, np.ndarray], weights: np.ndarray | None = None) -> dict[str, float]:
    """Corpus ROUGE as rouge-score users usually report it: the mean over items of each per-pair F-measure
    (`weights`, e.g. bootstrap counts, make it a weighted mean). There is no pooled-statistics ROUGE here."""
    out = {}
    for t, arr in items.items():
        f = arr[:, 2]
        if weights is None:
            out[t] = float(f.mean()) if len(f) else 0.0
        else:
            total = weights.sum()
            out[t] = float(weights @ f / total) if total else 0.0
    return out
