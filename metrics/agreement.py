"""Inter-annotator agreement: percent agreement, Cohen's kappa (plain and weighted), Fleiss' kappa,
Krippendorff's alpha at four levels, per-label agreement, disputed items, annotator quality and a
Dawid-Skene estimate of annotator accuracy and of each item's most likely label.

Everything starts from a `Ratings` table: one row per item, one column per annotator, each cell the
index of the answer in an ordered list of labels (-1 where that annotator gave no answer). Any number
of annotators and any pattern of missing answers is allowed.

Each coefficient is computed the way sacrebleu computes corpus scores: per-item sufficient statistics
are summed and the coefficient is a function of the sums. That makes the bootstrap cheap: items with
the same labels are grouped into patterns once, a resample of items is a vector of pattern counts
(drawn from a multinomial, or by counting drawn item indices when almost every item is its own pattern),
and the resampled sums are one (dense or sparse) matrix product. Nothing is recomputed from the raw
answers per resample.

A coefficient that cannot be computed (one annotator, every answer the same value, ...) comes back
with `value=None` and a `reason` in words, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import sparse

LEVELS = ("nominal", "ordinal", "interval", "ratio")
KAPPA_WEIGHTS = (None, "linear", "quadratic")
MISSING = -1

# Above this many patterns a resample is drawn as item indices (cost ~ items) instead of a
# multinomial over patterns (cost ~ patterns); both give the same distribution.
_MULTINOMIAL_MAX_PATTERNS = 20_000
_CHUNK_CELLS = 20_000_000  # resamples x patterns held in memory at once
_DENSE_MAX_COLUMNS = 32  # per-pattern statistics wider than this are kept as a sparse matrix


# ---------------------------------------------------------------- the ratings table

@dataclass(frozen=True)
class Ratings:
    """Answers as an item x annotator matrix of label indices (-1 = no answer)."""

    codes: np.ndarray
    """int32 array (n_items, n_annotators): index into `labels`, or -1."""
    labels: tuple
    """The ordered value domain: for ordinal data the order matters, for interval/ratio the values."""
    items: tuple
    annotators: tuple
    order_given: bool = True
    """False when the labels are text sorted alphabetically because no order was given: the ordinal
    level then refuses them rather than invent an order."""

    def __post_init__(self):
        codes = np.asarray(self.codes)
        if codes.ndim != 2:
            raise ValueError(f"codes must be a 2-D item x annotator array, got shape {codes.shape}")
        if codes.shape != (len(self.items), len(self.annotators)):
            raise ValueError(f"codes has shape {codes.shape} but there are {len(self.items)} items and "
                             f"{len(self.annotators)} annotators")
        if codes.size and (codes.min() < MISSING or codes.max() >= len(self.labels)):
            raise ValueError("codes must lie in [-1, number of labels)")

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def counts(self) -> np.ndarray:
        """(n_items, n_labels) int64: how many annotators gave each label to each item."""
        n, v = self.codes.shape[0], self.n_labels
        rows, cols = np.nonzero(self.codes >= 0)
        flat = rows.astype(np.int64) * v + self.codes[rows, cols]
        return np.bincount(flat, minlength=n * v).reshape(n, v)

    @classmethod
    def from_long(cls, items: Sequence, annotators: Sequence, values: Sequence, *,
                  labels: Sequence | None = None) -> Ratings:
        """From parallel sequences (one entry per answer). Each (item, annotator) pair may occur once.

        `labels` fixes the value domain and its order (labels nobody used are kept); without it the
        domain is the values seen, in numeric order when all are numbers, else in text order.
        Items and annotators keep the order in which they first appear.
        """
        item_arr, ann_arr = np.asarray(items, dtype=object), np.asarray(annotators, dtype=object)
        value_arr = np.asarray(values, dtype=object)
        if not len(item_arr) == len(ann_arr) == len(value_arr):
            raise ValueError("items, annotators and values must have the same length")
        item_keys, item_idx = _first_seen(item_arr)
        ann_keys, ann_idx = _first_seen(ann_arr)
        given = labels is not None
        if labels is None:
            labels = ordered_labels(value_arr)
        labels = tuple(labels)
        position = {lab: k for k, lab in enumerate(labels)}
        if len(position) != len(labels):
            raise ValueError("labels must be distinct")
        try:
            val_idx = np.fromiter((position[v] for v in value_arr), dtype=np.int32, count=len(value_arr))
        except KeyError as exc:
            raise ValueError(f"answer {exc.args[0]!r} is not one of the labels {list(labels)}") from None
        codes = np.full((len(item_keys), len(ann_keys)), MISSING, dtype=np.int32)
        flat = item_idx.astype(np.int64) * len(ann_keys) + ann_idx
        if len(np.unique(flat)) != len(flat):
            k = np.nonzero(np.bincount(flat) > 1)[0][0]
            raise ValueError(f"annotator {ann_keys[k % len(ann_keys)]!r} answered item "
                             f"{item_keys[k // len(ann_keys)]!r} more than once; keep one answer per pair")
        codes.reshape(-1)[flat] = val_idx
        return cls(codes, labels, tuple(item_keys), tuple(ann_keys), _order_given(labels, given))

    @classmethod
    def from_matrix(cls, matrix, *, labels: Sequence | None = None, items: Sequence | None = None,
                    annotators: Sequence | None = None) -> Ratings:
        """From an item x annotator array of values with NaN (or None) for a missing answer."""
        matrix = np.asarray(matrix, dtype=object)
        if matrix.ndim != 2:
            raise ValueError("matrix must be 2-D: one row per item, one column per annotator")
        present = np.array([[not _is_missing(x) for x in row] for row in matrix], dtype=bool).reshape(matrix.shape)
        r, c = np.nonzero(present)
        values = [_plain(matrix[i, j]) for i, j in zip(r, c)]
        given = labels is not None
        if labels is None:
            labels = ordered_labels(values)
        labels = tuple(labels)
        position = {lab: k for k, lab in enumerate(labels)}
        codes = np.full(matrix.shape, MISSING, dtype=np.int32)
        try:
            codes[r, c] = [position[v] for v in values]
        except KeyError as exc:
            raise ValueError(f"value {exc.args[0]!r} is not one of the labels {list(labels)}") from None
        return cls(codes, labels, tuple(items if items is not None else range(matrix.shape[0])),
                   tuple(annotators if annotators is not None else range(matrix.shape[1])),
                   _order_given(labels, given))


def _order_given(labels: tuple, given: bool) -> bool:
    return given or all(as_number(x) is not None for x in labels)


def _require_order(ratings: Ratings, level: str) -> None:
    if level == "ordinal" and not ratings.order_given:
        raise ValueError("the ordinal level needs the order of the labels, which are not numbers: pass "
                         "labels=[lowest, ..., highest] (an alphabetical order would be made up)")


def _is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, np.floating) and np.isnan(x))


def _plain(x):
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def _first_seen(values: np.ndarray) -> tuple[list, np.ndarray]:
    """The distinct values in order of first appearance, and each entry's index into them."""
    index: dict = {}
    idx = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return list(index), idx


def as_number(label) -> float | None:
    """The label as a number, or None when it is not one ('3' -> 3.0, '3.5' -> 3.5, 'low' -> None)."""
    if isinstance(label, bool):
        return None
    if isinstance(label, (int, float, np.integer, np.floating)):
        return float(label)
    try:
        x = float(str(label).strip())
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def ordered_labels(values) -> list:
    """Distinct values, numerically ordered when every one is a number, else in text order."""
    distinct = list(dict.fromkeys(values))
    numbers = [as_number(v) for v in distinct]
    finite = [x for x in numbers if x is not None]
    if distinct and len(finite) == len(numbers):
        return [distinct[k] for k in np.argsort(finite, kind="stable")]
    return sorted(distinct, key=str)


# ---------------------------------------------------------------- results

@dataclass
class Coefficient:
    """One agreement coefficient with its bootstrap interval and what it rests on."""

    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_items: int = 0
    """Items that entered the coefficient (for pairwise statistics: items with two or more answers)."""
    n_annotators: int = 0
    reason: str | None = None
    """Why `value` (or the interval) is missing, in words."""
    resamples: int = 0
    """Bootstrap resamples behind the interval (those where the coefficient was defined)."""
    confidence: float = 0.95
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def _clean(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# ---------------------------------------------------------------- the bootstrap over item patterns

def _patterns(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows of a 2-D int key array: (first row of each pattern, pattern of each row, pattern sizes)."""
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    if keys.shape[1] == 0:
        keys = np.zeros((keys.shape[0], 1), dtype=np.int64)
    lo, hi = keys.min(axis=0), keys.max(axis=0)
    spans = (hi - lo + 1).astype(float)
    if np.prod(spans) < 2.0 ** 62:  # one mixed-radix int64 per row: a 1-D unique is much faster
        radix = np.concatenate([[1], np.cumprod(spans[:-1].astype(np.int64))]).astype(np.int64)
        flat = (keys - lo) @ radix
        _, first, inverse, sizes = np.unique(flat, return_index=True, return_inverse=True, return_counts=True)
    else:
        _, first, inverse, sizes = np.unique(keys, axis=0, return_index=True, return_inverse=True,
                                             return_counts=True)
    return first, inverse.reshape(-1), sizes


def resample_counts(inverse: np.ndarray, n_patterns: int, *, resamples: int, seed: int | None
                    ) -> Iterator[np.ndarray]:
    """Bootstrap resamples of items, as (chunk, n_patterns) counts of how often each pattern was drawn.

    Drawing N items with replacement and counting patterns gives multinomial(N, sizes / N) counts;
    that is how they are drawn when there are few patterns, else from item indices directly.
    """
    rng = np.random.default_rng(seed)
    n = len(inverse)
    sizes = np.bincount(inverse, minlength=n_patterns)
    use_multinomial = n_patterns <= _MULTINOMIAL_MAX_PATTERNS
    inverse32 = inverse.astype(np.int32)
    per_chunk = max(1, min(resamples, _CHUNK_CELLS // max(n_patterns if use_multinomial else n, 1)))
    done = 0
    while done < resamples:
        b = min(per_chunk, resamples - done)
        if use_multinomial:
            yield rng.multinomial(n, sizes / n, size=b).astype(np.float64)
        else:
            drawn = rng.integers(0, n, size=(b, n), dtype=np.int32)
            yield np.stack([np.bincount(inverse32[row], minlength=n_patterns) for row in drawn]).astype(np.float64)
        done += b


def _interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None, int]:
    ok = values[np.isfinite(values)]
    if len(ok) < max(1, len(values) // 2):
        return None, None, len(ok)
    tail = (1 - confidence) / 2
    low, high = np.quantile(ok, [tail, 1 - tail])
    return float(low), float(high), len(ok)


def _summed(weights: np.ndarray, stats) -> np.ndarray:
    """(B, P) pattern counts x (P, K) pattern statistics -> (B, K) summed statistics."""
    if isinstance(stats, np.ndarray):
        return weights @ stats
    return np.asarray((stats.T @ weights.T).T)


def _with_interval(coef: Coefficient, codes: np.ndarray, stats_of: Callable[[np.ndarray], np.ndarray],
                   estimate: Callable[[np.ndarray], np.ndarray], *, resamples: int, seed: int | None,
                   confidence: float) -> Coefficient:
    """Fill value and interval for a coefficient that depends only on which labels each item got.

    `codes` holds the items that take part (rows: items). Items are grouped by the multiset of labels they
    got (their sorted row); `stats_of(rows)` gives each pattern's statistics (a dense or sparse matrix),
    `estimate(T)` the coefficient for each row of summed statistics T.
    """
    coef.confidence = confidence
    if len(codes) == 0:
        return coef
    keys = np.sort(codes, axis=1)
    first, inverse, sizes = _patterns(keys)
    stats = stats_of(keys[first])
    if isinstance(stats, np.ndarray) and stats.shape[1] > _DENSE_MAX_COLUMNS:
        stats = sparse.csr_matrix(stats)  # many labels: each item has only a few, so its statistics are sparse
    stats = stats.astype(np.float64) if isinstance(stats, np.ndarray) else stats.tocsr().astype(np.float64)
    coef.value = _clean(estimate(_summed(sizes[None, :].astype(np.float64), stats))[0])
    if coef.value is None or resamples <= 0:
        return coef
    if len(keys) < 2:
        coef.reason = coef.reason or "only one item: there is nothing to resample for an interval"
        return coef
    values = np.concatenate([estimate(_summed(w, stats)) for w in resample_counts(inverse, len(first), resamples=resamples,
                                                                         seed=seed)])
    coef.ci_low, coef.ci_high, coef.resamples = _interval(values, confidence)
    if coef.ci_low is None:
        coef.reason = "the coefficient is undefined in most bootstrap resamples, so no interval is given"
    return coef


# ---------------------------------------------------------------- distances

def distance_matrix(labels: Sequence, level: str, *, counts: np.ndarray | None = None) -> np.ndarray:
    """Krippendorff's squared difference function delta^2 between every pair of labels.

    Ordinal differences depend on how often each value was used (`counts`: pairable values per label).
    Interval and ratio differences use the labels' numeric values.
    """
    v = len(labels)
    if level == "nominal":
        return 1.0 - np.eye(v)
    if level == "ordinal":
        n = np.zeros(v) if counts is None else np.asarray(counts, dtype=np.float64)
        return _ordinal_delta(n[None, :])[0]
    x = numeric_values(labels, level)
    if level == "interval":
        return (x[:, None] - x[None, :]) ** 2
    if level == "ratio":
        total = x[:, None] + x[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(total != 0, (x[:, None] - x[None, :]) / np.where(total != 0, total, 1), 0.0)
        return d ** 2
    raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")


def numeric_values(labels: Sequence, level: str = "interval") -> np.ndarray:
    nums = [as_number(lab) for lab in labels]
    bad = [lab for lab, num in zip(labels, nums) if num is None]
    if bad:
        raise ValueError(f"the {level} level needs numeric answers; {bad[0]!r} is not a number")
    x = np.asarray(nums, dtype=np.float64)
    if level == "ratio" and (x < 0).any():
        raise ValueError(f"the ratio level needs values of 0 or more; {labels[int(np.argmin(x))]!r} is negative")
    return x


def _ordinal_delta(n: np.ndarray) -> np.ndarray:
    """(B, V) pairable value counts -> (B, V, V) ordinal delta^2 = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2."""
    v = n.shape[1]
    cum = np.concatenate([np.zeros((n.shape[0], 1)), np.cumsum(n, axis=1)], axis=1)
    lo = np.minimum.outer(np.arange(v), np.arange(v))
    hi = np.maximum.outer(np.arange(v), np.arange(v))
    between = cum[:, hi + 1] - cum[:, lo]
    return (between - (n[:, :, None] + n[:, None, :]) / 2) ** 2


# ---------------------------------------------------------------- Krippendorff's alpha

def coincidences(ratings: Ratings) -> np.ndarray:
    """Krippendorff's (V, V) coincidence matrix: o_ck = sum over items of n_uc (n_uk - [c=k]) / (m_u - 1)."""
    c = ratings.counts().astype(np.float64)
    m = c.sum(axis=1)
    keep = m >= 2
    c, m = c[keep], m[keep]
    scaled = c / (m - 1)[:, None]
    return scaled.T @ c - np.diag(scaled.sum(axis=0))


def _pairable(counts: np.ndarray) -> np.ndarray:
    return counts.sum(axis=1) >= 2


def _row_counts(rows: np.ndarray, v: int) -> np.ndarray:
    """(P, A) label rows (-1 = none) -> (P, V) float counts."""
    r, c = np.nonzero(rows >= 0)
    flat = r.astype(np.int64) * v + rows[r, c]
    return np.bincount(flat, minlength=len(rows) * v).reshape(len(rows), v).astype(np.float64)


def _ordered_pairs(rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each ordered pair of columns (a != b): the rows where both have a label, and the two labels."""
    a = rows.shape[1]
    for i in range(a):
        for j in range(a):
            if i != j:
                both = np.nonzero((rows[:, i] >= 0) & (rows[:, j] >= 0))[0]
                yield both, rows[both, i], rows[both, j]


def _pair_sum(rows: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Per row: the sum of delta[x, y] over ordered pairs of its labels (= c^T delta c for delta_cc = 0)."""
    out = np.zeros(len(rows))
    for both, x, y in _ordered_pairs(rows):
        out += np.bincount(both, weights=delta[x, y], minlength=len(rows))
    return out


def krippendorff_alpha(ratings: Ratings, *, level: str = "nominal", resamples: int = 0, seed: int | None = 0,
                       confidence: float = 0.95) -> Coefficient:
    """Krippendorff's alpha = 1 - D_o / D_e over every item with two or more answers.

    Missing answers are allowed; items with fewer than two answers carry no pairable values and are
    left out. `resamples` > 0 adds a percentile bootstrap interval over items. Undefined (None, with a
    reason) when no item has two answers or when every pairable answer is the same value.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    _require_order(ratings, level)
    coef, pairable, counts = _pairwise_start(ratings, "krippendorff_alpha")
    if coef.reason:
        return coef
    v = ratings.n_labels
    if level == "ordinal":
        def stats_of(rows):  # each item's coincidences o_u[c, k], flattened, as a sparse (P, V*V) matrix
            m = (rows >= 0).sum(axis=1)
            parts = [(both, x.astype(np.int64) * v + y, 1.0 / (m[both] - 1)) for both, x, y in _ordered_pairs(rows)]
            r, col, data = (np.concatenate(z) for z in zip(*parts))
            return sparse.coo_matrix((data, (r, col)), shape=(len(rows), v * v))

        def estimate(t):
            o = t.reshape(len(t), v, v)
            n_c = o.sum(axis=2)
            d = _ordinal_delta(n_c)
            observed = (o * d).sum(axis=(1, 2))
            expected = np.einsum("bi,bij,bj->b", n_c, d, n_c)
            return _alpha_from(observed, expected, n_c.sum(axis=1))
    else:
        delta = distance_matrix(ratings.labels, level)

        def stats_of(rows):
            m = (rows >= 0).sum(axis=1)
            return np.column_stack([_row_counts(rows, v), _pair_sum(rows, delta) / (m - 1)])

        def estimate(t):
            n_c = t[:, :v]
            expected = np.einsum("bi,ij,bj->b", n_c, delta, n_c)
            return _alpha_from(t[:, v], expected, n_c.sum(axis=1))

    coef = _with_interval(coef, ratings.codes[pairable], stats_of, estimate, resamples=resamples, seed=seed,
                          confidence=confidence)
    if coef.value is None:
        coef.reason = _why_no_variation(ratings, counts[pairable])
    return coef


def _alpha_from(observed: np.ndarray, expected: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, 1 - (n - 1) * observed / np.where(expected > 0, expected, 1), np.nan)


def _annotators_on(ratings: Ratings, items: np.ndarray) -> int:
    return int((ratings.codes[items] >= 0).any(axis=0).sum())


def _why_no_pairs(ratings: Ratings, pairable: np.ndarray) -> str | None:
    answered = (ratings.codes >= 0).any(axis=0).sum()
    if answered == 0:
        return "there are no answers"
    if answered == 1:
        return "only one annotator answered; agreement needs at least two annotators on the same item"
    if not pairable.any():
        return "no item was answered by two or more annotators, so there is nothing to compare"
    return None



def _pairwise_start(ratings: Ratings, name: str) -> tuple[Coefficient, np.ndarray, np.ndarray]:
    """(the coefficient with its item and annotator counts, and `reason` set when it is undefined
    for want of pairs; the items with two or more answers; the label counts per item)."""
    counts = ratings.counts()
    pairable = _pairable(counts)
    coef = Coefficient(name, None, n_items=int(pairable.sum()), n_annotators=_annotators_on(ratings, pairable))
    coef.reason = _why_no_pairs(ratings, pairable)
    return coef, pairable, counts

def _why_no_variation(ratings: Ratings, counts: np.ndarray) -> str:
    used = np.nonzero(counts.sum(axis=0))[0]
    if len(used) == 1:
        return (f"every answer is the same value ({ratings.labels[used[0]]!r}): annotators agree completely, "
                "but with no variation chance agreement is total too, so the coefficient is undefined")
    return "there is no variation in the answers to measure agreement against, so the coefficient is undefined"


# ---------------------------------------------------------------- percent agreement and Fleiss' kappa

def _pair_agreement(c: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Each item's share of agreeing answer pairs, from its label counts c and answer count m;
    NaN for items with fewer than two answers (no pairs)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c * (c - 1)).sum(axis=1) / np.where(m >= 2, m * (m - 1), np.nan)


def percent_agreement(ratings: Ratings, *, resamples: int = 0, seed: int | None = 0,
                      confidence: float = 0.95) -> Coefficient:
    """The share of agreeing annotator pairs within an item, averaged over items with two or more answers
    (Fleiss' P-bar). Exact matches only, whatever the level; it does not correct for chance."""
    coef, pairable, _ = _pairwise_start(ratings, "percent_agreement")
    if coef.reason:
        return coef

    v = ratings.n_labels

    def stats_of(rows):
        c = _row_counts(rows, v)
        m = c.sum(axis=1)
        return np.column_stack([_pair_agreement(c, m), np.ones(len(c))])

    return _with_interval(coef, ratings.codes[pairable], stats_of, lambda t: t[:, 0] / t[:, 1], resamples=resamples,
                          seed=seed, confidence=confidence)


def fleiss_kappa(ratings: Ratings, *, resamples: int = 0, seed: int | None = 0,
                 confidence: float = 0.95) -> Coefficient:
    """Fleiss' kappa (1971), generalised to a varying number of answers per item as in Gwet (2014):
    P-bar averages each item's pairwise agreement over items with two or more answers; the chance
    term uses p_j, the mean over answered items of the share of item i's answers that are label j.
    With the same number of answers on every item this is exactly Fleiss' kappa.
    """
    coef, pairable, counts = _pairwise_start(ratings, "fleiss_kappa")
    answered = counts.sum(axis=1) >= 1
    if coef.reason:
        return coef
    v = ratings.n_labels

    def stats_of(rows):
        c = _row_counts(rows, v)
        m = c.sum(axis=1)
        two = m >= 2
        p_i = np.where(two, _pair_agreement(c, m), 0.0)
        return np.column_stack([p_i, two, c / m[:, None], np.ones(len(c))])

    def estimate(t):
        p_bar = t[:, 0] / t[:, 1]
        p_j = t[:, 2:2 + v] / t[:, 2 + v][:, None]
        p_e = (p_j ** 2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(p_e < 1 - 1e-12, (p_bar - p_e) / (1 - p_e), np.nan)

    coef = _with_interval(coef, ratings.codes[answered], stats_of, estimate, resamples=resamples, seed=seed,
                          confidence=confidence)
    if coef.value is None:
        coef.reason = _why_no_variation(ratings, counts[pairable])
    return coef


# ---------------------------------------------------------------- Cohen's kappa

def kappa_weights(n_labels: int, weights: str | None) -> np.ndarray:
    """Disagreement weights by label position, as scikit-learn: none (0/1), linear |i-j|, quadratic (i-j)^2."""
    i = np.arange(n_labels)
    if weights is None:
        return 1.0 - np.eye(n_labels)
    if weights == "linear":
        return np.abs(i[:, None] - i[None, :]).astype(np.float64)
    if weights == "quadratic":
        return ((i[:, None] - i[None, :]) ** 2).astype(np.float64)
    raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")


def confusion(ratings: Ratings, a, b) -> np.ndarray:
    """(V, V) counts over items both annotators answered: rows annotator `a`'s label, columns `b`'s."""
    ia, ib = ratings.annotators.index(a), ratings.annotators.index(b)
    x, y = ratings.codes[:, ia], ratings.codes[:, ib]
    both = (x >= 0) & (y >= 0)
    v = ratings.n_labels
    return np.bincount(x[both].astype(np.int64) * v + y[both], minlength=v * v).reshape(v, v)


def _kappa_from_confusion(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, V*V) confusion counts -> (B,) kappa = 1 - sum(w * O) / sum(w * E), E = outer(rows, cols) / n."""
    v = w.shape[0]
    o = t.reshape(len(t), v, v)
    n = o.sum(axis=(1, 2))
    rows, cols = o.sum(axis=2), o.sum(axis=1)
    observed = (o * w).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.einsum("bi,ij,bj->b", rows, w, cols) / n
        return np.where((n > 0) & (expected > 1e-12 * np.maximum(n, 1)), 1 - observed / expected, np.nan)


def cohen_kappa(ratings: Ratings, a, b, *, weights: str | None = None) -> Coefficient:
    """Cohen's kappa between two annotators on the items both answered (equals scikit-learn's
    cohen_kappa_score with labels=ratings.labels and the same weights)."""
    return cohen_kappa_pairs(ratings, weights=weights, pairs=[(a, b)])["pairs"][0]


def cohen_kappa_pairs(ratings: Ratings, *, weights: str | None = None, resamples: int = 0, seed: int | None = 0,
                      confidence: float = 0.95, pairs: Sequence[tuple] | None = None) -> dict:
    """Cohen's kappa for every pair of annotators and their mean (Light's kappa), with bootstrap intervals.

    Returns {"mean": Coefficient, "pairs": [Coefficient per pair, extra a/b], "matrix": (A, A) array with
    NaN where undefined and on the diagonal, "n_items": (A, A) items both answered}. The mean is over pairs
    whose kappa is defined; its interval resamples items jointly for all pairs.
    """
    return cohen_kappa_table(ratings, weightings=(weights,), resamples=resamples, seed=seed, confidence=confidence,
                             pairs=pairs)[weights]


def cohen_kappa_table(ratings: Ratings, *, weightings: Sequence[str | None] = KAPPA_WEIGHTS, resamples: int = 0,
                      seed: int | None = 0, confidence: float = 0.95, pairs: Sequence[tuple] | None = None) -> dict:
    """cohen_kappa_pairs for several weightings at once ({weights: result}): the pairs' confusion counts, and
    their bootstrap resamples, are computed once and shared."""
    codes = ratings.codes
    k = len(ratings.annotators)
    v = ratings.n_labels
    if pairs is None:
        pairs = [(ratings.annotators[i], ratings.annotators[j]) for i in range(k) for j in range(i + 1, k)]
    index = [(ratings.annotators.index(a), ratings.annotators.index(b)) for a, b in pairs]
    answered = (codes >= 0).sum(axis=1) >= 2

    # Pattern of an item = its whole row of answers; pair code = a's label * V + b's label (V*V: not both).
    first, inverse, sizes = _patterns(codes[answered]) if answered.any() else (np.zeros(0, int),) * 3
    rows = codes[answered][first]
    n_pat = len(first)
    maps = []
    for ia, ib in index:
        x, y = rows[:, ia], rows[:, ib]
        code = np.where((x >= 0) & (y >= 0), x.astype(np.int64) * v + y, v * v)
        maps.append(sparse.csr_matrix((np.ones(n_pat), (np.arange(n_pat), code)), shape=(n_pat, v * v + 1)))
    weight_of = {w: kappa_weights(v, w) for w in weightings}

    def kappas(wc: np.ndarray) -> dict:  # (B, patterns) -> {weights: (B, pairs)}
        conf = [np.asarray((m.T @ wc.T).T)[:, :v * v] for m in maps]
        return {w: np.column_stack([_kappa_from_confusion(c, weight_of[w]) for c in conf]) if conf
                else np.zeros((len(wc), 0)) for w in weightings}

    point = kappas(sizes.astype(np.float64)[None, :]) if n_pat else {w: np.full((1, len(index)), np.nan)
                                                                      for w in weightings}
    draws = None
    if resamples > 0 and n_pat:
        chunks = [kappas(wc) for wc in resample_counts(inverse, n_pat, resamples=resamples, seed=seed)]
        draws = {w: np.concatenate([c[w] for c in chunks]) for w in weightings}
    both_counts = {(ia, ib): int(((codes[:, ia] >= 0) & (codes[:, ib] >= 0)).sum()) for ia, ib in index}
    out = {}
    for w in weightings:
        name = "cohen_kappa" if w is None else f"cohen_kappa_{w}"
        mean = Coefficient(f"{name}_mean", None, n_items=int(answered.sum()), confidence=confidence)
        mean.reason = _why_no_pairs(ratings, answered)
        results = []
        matrix = np.full((k, k), np.nan)
        n_both = np.zeros((k, k), dtype=np.int64)
        for (a, b), (ia, ib), value in zip(pairs, index, point[w][0]):
            n = both_counts[(ia, ib)]
            n_both[ia, ib] = n_both[ib, ia] = n
            coef = Coefficient(name, _clean(value), n_items=n, n_annotators=2, confidence=confidence,
                               extra={"a": a, "b": b})
            if not n:
                coef.reason = f"{a} and {b} never answered the same item"
            elif coef.value is None:
                both = (codes[:, ia] >= 0) & (codes[:, ib] >= 0)
                coef.reason = _why_no_variation(ratings, np.stack([np.bincount(codes[both, ia], minlength=v)
                                                                   + np.bincount(codes[both, ib], minlength=v)]))
            matrix[ia, ib] = matrix[ib, ia] = np.nan if coef.value is None else coef.value
            results.append(coef)
        defined = [c for c in results if c.value is not None]
        if defined:
            mean.value = float(np.mean([c.value for c in defined]))
            mean.n_annotators = len({x for c in defined for x in (c.extra["a"], c.extra["b"])})
            mean.extra["pairs"] = len(defined)
            mean.reason = None
        elif mean.reason is None:
            first_reason = results[0].reason if results else None  # always set on an undefined pair
            mean.reason = "no pair of annotators has a defined kappa: " + (first_reason or "no pairs")
        if draws is not None:
            for j, coef in enumerate(results):
                if coef.value is not None and coef.n_items >= 2:
                    coef.ci_low, coef.ci_high, coef.resamples = _interval(draws[w][:, j], confidence)
            if mean.value is not None and mean.n_items >= 2:
                sub = draws[w][:, np.array([c.value is not None for c in results])]
                finite = np.isfinite(sub).sum(axis=1)
                means = np.where(finite > 0, np.where(np.isfinite(sub), sub, 0).sum(axis=1) / np.maximum(finite, 1),
                                 np.nan)
                mean.ci_low, mean.ci_high, mean.resamples = _interval(means, confidence)
        out[w] = {"mean": mean, "pairs": results, "matrix": matrix, "n_items": n_both}
    return out


# ---------------------------------------------------------------- where annotators disagree

def per_label(ratings: Ratings) -> list[dict]:
    """For each label: how often it was used, how often a pair agrees on it, which label it is confused with.

    - `answers`: every answer with this label; `pairable`: n_c, those on items with two or more answers.
    - `specific_agreement`: o_cc / n_c, the chance that another annotator on the same item also chose it.
    - `alpha_vs_rest`: nominal Krippendorff's alpha of "this label or not".
    - `confused_with`, `confused_share`: the other label it most often coincides with, o_ck / n_c.
    A label nobody used has None everywhere and a reason.
    """
    counts = ratings.counts()
    o = coincidences(ratings)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    used = counts.sum(axis=0)
    out = []
    for c, label in enumerate(ratings.labels):
        row = {"label": label, "answers": int(used[c]), "pairable": float(n_c[c]), "specific_agreement": None,
               "alpha_vs_rest": None, "confused_with": None, "confused_share": None, "reason": None}
        if used[c] == 0:
            row["reason"] = "nobody used this label"
        elif n_c[c] == 0:
            row["reason"] = "used only on items nobody else answered"
        else:
            row["specific_agreement"] = float(o[c, c] / n_c[c])
            if n - n_c[c] > 0:
                row["alpha_vs_rest"] = float(1 - (n - 1) * (n_c[c] - o[c, c]) / (n_c[c] * (n - n_c[c])))
            else:
                row["reason"] = "every pairable answer is this label, so agreement against the rest is undefined"
            off = o[c].copy()
            off[c] = -1
            if off.max() > 0:
                k = int(np.argmax(off))
                row["confused_with"], row["confused_share"] = ratings.labels[k], float(o[c, k] / n_c[c])
        out.append(row)
    return out


def item_disagreement(ratings: Ratings, *, level: str = "nominal") -> dict[str, np.ndarray]:
    """Per item: answers, the most common label (first in label order on a tie) and its share, distinct labels,
    the share of annotator pairs that disagree, and `disagreement`: the item's mean pairwise delta^2 at this
    level divided by the expected (chance) disagreement D_e, so 1.0 means as far apart as random answers."""
    _require_order(ratings, level)
    counts = ratings.counts()
    c = counts.astype(np.float64)
    m = c.sum(axis=1)
    two = m >= 2
    o = coincidences(ratings)
    delta = distance_matrix(ratings.labels, level, counts=o.sum(axis=1))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    expected = (n_c @ delta @ n_c) / (n * (n - 1)) if n > 1 else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        pairs = np.where(two, m * (m - 1), np.nan)
        agree = _pair_agreement(c, m)
        mean_delta = _pair_sum(ratings.codes, delta) / pairs
        relative = mean_delta / expected if expected > 0 else np.full(len(c), np.nan)
    top = np.argmax(counts, axis=1)
    return {"answers": m.astype(np.int64), "majority": np.where(m > 0, top, -1),
            "majority_share": np.where(m > 0, counts[np.arange(len(c)), top] / np.maximum(m, 1), np.nan),
            "tied": (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1,
            "distinct": (counts > 0).sum(axis=1), "pairs_disagreeing": 1 - agree, "disagreement": relative}


# ---------------------------------------------------------------- consensus and annotator quality

def majority_vote(ratings: Ratings) -> dict[str, np.ndarray]:
    """Per item the most common label (index; -1 without answers), its share of the answers, and whether it
    is tied with another label (then the first in label order is given)."""
    info = item_disagreement(ratings)
    return {"label": info["majority"], "share": info["majority_share"], "tied": info["tied"] & (info["answers"] > 0)}


def annotator_agreement(ratings: Ratings, *, gold: np.ndarray | None = None) -> list[dict]:
    """Per annotator: answers, agreement with the consensus of the *other* annotators on the same items
    (their majority label; a tie between k labels gives 1/k credit when the annotator chose one of them),
    and accuracy on items with a gold label (`gold`: label index per item, -1 where none)."""
    codes = ratings.codes
    counts = ratings.counts()
    out = []
    for j, name in enumerate(ratings.annotators):
        mine = codes[:, j]
        has = mine >= 0
        others = counts.copy()
        others[np.nonzero(has)[0], mine[has]] -= 1
        compared = has & (others.sum(axis=1) > 0)
        best = others.max(axis=1)
        winners = (others == best[:, None]) & (best[:, None] > 0)
        n_win = winners.sum(axis=1)
        idx = np.nonzero(compared)[0]
        credit = winners[idx, mine[idx]] / n_win[idx]
        row = {"annotator": name, "answers": int(has.sum()), "compared": int(compared.sum()),
               "consensus_agreement": float(credit.mean()) if len(idx) else None,
               "gold_items": 0, "gold_accuracy": None}
        if gold is not None:
            g = has & (gold >= 0)
            row["gold_items"] = int(g.sum())
            row["gold_accuracy"] = float((mine[g] == gold[g]).mean()) if g.any() else None
        out.append(row)
    return out


@dataclass
class DawidSkene:
    """The Dawid-Skene (1979) estimate: class priors, one confusion matrix per annotator, item posteriors."""

    posterior: np.ndarray
    """(n_items, V): probability of each true label; the prior for items nobody answered."""
    label: np.ndarray
    """(n_items,): most likely label index, -1 for items nobody answered."""
    confidence: np.ndarray
    """(n_items,): posterior probability of that label."""
    confusion: np.ndarray
    """(n_annotators, V, V): P(annotator answers l | true label k), rows k."""
    priors: np.ndarray
    accuracy: np.ndarray
    """(n_annotators,): sum_k prior_k * P(answer k | true k), the chance the annotator is right."""
    iterations: int
    converged: bool
    log_likelihood: float


def dawid_skene(ratings: Ratings, *, max_iter: int = 200, tol: float = 1e-7, smoothing: float = 0.01,
                init: np.ndarray | None = None) -> DawidSkene:
    """Expectation-maximisation over per-annotator confusion matrices (Dawid & Skene 1979).

    Starts from the majority-vote shares (or `init`, an (n_items, V) posterior), then alternates:
    M-step priors and confusion matrices from the posteriors (plus `smoothing` pseudo-counts so no
    probability is exactly 0), E-step posteriors from them, until the log-likelihood moves less than `tol`.
    """
    codes = ratings.codes
    n, a = codes.shape
    v = ratings.n_labels
    counts = ratings.counts().astype(np.float64)
    m = counts.sum(axis=1)
    seen = m > 0
    t = init.astype(np.float64).copy() if init is not None else \
        np.where(seen[:, None], counts / np.maximum(m, 1)[:, None], 1.0 / max(v, 1))
    present = [np.nonzero(codes[:, j] >= 0)[0] for j in range(a)]
    answers = [codes[idx, j].astype(np.int64) for j, idx in enumerate(present)]
    onehots = [sparse.csr_matrix((np.ones(len(x)), (x, np.arange(len(x)))), shape=(v, len(x))) for x in answers]
    previous = -np.inf
    converged = False
    log_lik = -np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported after the loop)
        priors = (t[seen].sum(axis=0) + smoothing) / (seen.sum() + smoothing * v)
        conf = np.empty((a, v, v))
        for j in range(a):
            counts_kl = np.asarray((onehots[j] @ t[present[j]]).T) + smoothing  # [k, l]: true k, answered l
            conf[j] = counts_kl / counts_kl.sum(axis=1, keepdims=True)
        log_conf = np.log(conf)
        log_t = np.tile(np.log(priors), (n, 1))
        for j in range(a):
            by_answer = np.ascontiguousarray(log_conf[j].T)  # [l, k]: log P(answer l | true k)
            log_t[present[j]] += by_answer[answers[j]]
        top = log_t.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(log_t - top).sum(axis=1))
        t = np.exp(log_t - norm[:, None])
        log_lik = float(norm[seen].sum())
        if abs(log_lik - previous) < tol * max(1.0, abs(log_lik)):
            converged = True
            break
        previous = log_lik
    label = np.where(seen, np.argmax(t, axis=1), -1)
    confidence = np.where(seen, t.max(axis=1), np.nan)
    t[~seen] = priors
    accuracy = np.einsum("k,jkk->j", priors, conf)
    return DawidSkene(t, label, confidence, conf, priors, accuracy, it, converged, log_lik)
