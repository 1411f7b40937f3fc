"""Paired bootstrap: is system B really better than system A on the same items? (Koehn 2004)

Each resample draws the n items with replacement (the same draw for both systems, hence "paired") and
recomputes both corpus scores from the drawn items' statistics: summed sacreBLEU statistics for BLEU and
chrF, per-item values for ROUGE and exact match (`metrics.corpus.resampled_scores`). Reported:
- diff = score(B) - score(A) on the real data;
- a 95% percentile interval of the resampled differences;
- p, two-sided: 2 x the smaller share of resamples on either side of zero, with +1 smoothing
  ((count + 1) / (resamples + 1)), capped at 1; so p is never 0 and identical systems get p = 1;
- significant when the interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from metrics.corpus import NAMES, SCALES, ItemStats, resampled_scores

CHUNK_CELLS = 10_000_000  # resamples x items per batch: keeps the count matrix near 80 MB at most


@dataclass
class BootstrapResult:
    metric: str
    a: float
    """score of system A on all items"""
    b: float
    diff: float
    """b - a"""
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    n_items: int
    n_resamples: int
    seed: int
    confidence: float
    statement: str

    def to_json(self) -> dict:
        return asdict(self)


def resample_counts(n_items: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Batches of (<=100, n_items) counts: how often each item is drawn in each resample. The draws depend
    only on n_items, n_resamples and seed."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(100, CHUNK_CELLS // max(n_items, 1)))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        draws = rng.integers(0, n_items, size=(size, n_items))
        flat = (draws + np.arange(size)[:, None] * n_items).ravel()
        yield np.bincount(flat, minlength=size * n_items).reshape(size, n_items)
        done += size


def bootstrap_differences(score_a: Callable[[np.ndarray], dict[str, np.ndarray]],
                          score_b: Callable[[np.ndarray], dict[str, np.ndarray]], n_items: int, *,
                          n_resamples: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """{metric: (n_resamples,) resampled score(B) - score(A)}; score_a/score_b map a counts batch to
    {metric: per-resample scores} (for example `functools.partial(resampled_scores, stats)`)."""
    parts: dict[str, list[np.ndarray]] = {}
    for counts in resample_counts(n_items, n_resamples, seed):
        sa, sb = score_a(counts), score_b(counts)
        for k in sa.keys() & sb.keys():
            parts.setdefault(k, []).append(sb[k] - sa[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def summarize(metric: str, a: float, b: float, diffs: np.ndarray, *, n_items: int, seed: int,
              confidence: float = 0.95, names: tuple[str, str] = ("A", "B")) -> BootstrapResult:
    """The result for one metric from the real scores and the resampled differences."""
    diff = b - a
    tail = (1 - confidence) / 2
    low, high = (float(x) for x in np.quantile(diffs, [tail, 1 - tail]))
    below, above = int((diffs <= 0).sum()), int((diffs >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (len(diffs) + 1))
    significant = bool(low > 0 or high < 0)
    return BootstrapResult(metric=metric, a=a, b=b, diff=diff, ci_low=low, ci_high=high, p_value=p,
                           significant=significant, n_items=n_items, n_resamples=len(diffs), seed=seed,
                           confidence=confidence,
                           statement=statement(metric, diff, low, high, significant, p, confidence, names))


def _fmt(metric: str, x: float) -> str:
    return f"{x:.1f}" if SCALES.get(metric) == 100.0 else f"{x:.3f}"


def statement(metric: str, diff: float, low: float, high: float, significant: bool, p: float,
              confidence: float = 0.95, names: tuple[str, str] = ("A", "B")) -> str:
    """'B is better than A on BLEU by 2.1 points (95% CI 0.8 to 3.4); the difference is significant'."""
    a, b = names
    name = NAMES.get(metric, metric)
    unit = " points" if SCALES.get(metric) == 100.0 else ""
    ci = f"{confidence:.0%} CI {_fmt(metric, low)} to {_fmt(metric, high)}"
    if _fmt(metric, abs(diff)) == _fmt(metric, 0.0):
        head = f"{a} and {b} score the same on {name}" + (f" (difference {diff:+.2g}; {ci})" if diff else f" ({ci})")
    else:
        better = "better" if diff > 0 else "worse"
        if metric == "length_ratio":
            better = "longer" if diff > 0 else "shorter"
            head = f"{b}'s outputs are {better} than {a}'s relative to the references, length ratio " \
                   f"{'up' if diff > 0 else 'down'} by {_fmt(metric, abs(diff))} ({ci})"
        else:
            head = f"{b} is {better} than {a} on {name} by {_fmt(metric, abs(diff))}{unit} ({ci})"
    tail = "the difference is significant" if significant else "the difference is not significant"
    return f"{head}; {tail} (p = {p:.3f})"


def paired_bootstrap(stats_a: ItemStats, stats_b: ItemStats, *, metrics: Sequence[str] | None = None,
                     n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                     names: tuple[str, str] = ("A", "B")) -> dict[str, BootstrapResult]:
    """Paired bootstrap of every score both systems have (or those named in metrics), on the same
    resamples. Items must be aligned: item i of A and item i of B answer the same input."""
    if stats_a.n != stats_b.n:
        raise ValueError(f"system A has {stats_a.n} items and system B {stats_b.n}; a paired test needs the "
                         "same items in the same order")
    if stats_a.n == 0:
        raise ValueError("no items to compare")
    ones = np.ones((1, stats_a.n), dtype=np.int64)
    real_a, real_b = resampled_scores(stats_a, ones), resampled_scores(stats_b, ones)
    wanted = [m for m in (metrics or real_a) if m in real_a and m in real_b]
    diffs = bootstrap_differences(lambda c: resampled_scores(stats_a, c), lambda c: resampled_scores(stats_b, c),
                                  stats_a.n, n_resamples=n_resamples, seed=seed)
    return {m: summarize(m, float(real_a[m][0]), float(real_b[m][0]), diffs[m], n_items=stats_a.n, seed=seed,
                         confidence=confidence, names=names) for m in wanted}


def paired_bootstrap_values(values_a: Sequence[float], values_b: Sequence[float], *, metric: str = "score",
                            n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                            names: tuple[str, str] = ("A", "B")) -> BootstrapResult:
    """Paired bootstrap of the difference of means of per-item values (any per-item metric, e.g. ROUGE F)."""
    va, vb = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if va.shape != vb.shape or va.ndim != 1 or not len(va):
        raise ValueError(f"need two equally long, non-empty lists of per-item values (got {va.shape} and {vb.shape})")
    diffs = bootstrap_differences(lambda c: {metric: c @ va / len(va)}, lambda c: {metric: c @ vb / len(vb)},
                                  len(va), n_resamples=n_resamples, seed=seed)[metric]
    return summarize(metric, float(va.mean()), float(vb.mean()), diffs, n_items=len(va), seed=seed,
                     confidence=confidence, names=names)


def paired_bootstrap_fn(score_a: Callable[[np.ndarray], float], score_b: Callable[[np.ndarray], float],
                        n_items: int, *, metric: str = "score", n_resamples: int = 1000, seed: int = 0,
                        confidence: float = 0.95, names: tuple[str, str] = ("A", "B")) -> BootstrapResult:
    """Paired bootstrap of any metric: score_a / score_b take an array of item indices (drawn with
    replacement; np.arange(n_items) for the real score) and return that system's score on those items,
    e.g. `lambda idx: f1_score(y_true[idx], pred_a[idx], average="macro")`. Slower than the statistics-based
    functions above (one Python call per resample), but works for anything."""
    if n_items <= 0:
        raise ValueError("no items to compare")

    def batch(fn):
        return lambda counts: {metric: np.array([fn(np.repeat(np.arange(n_items), row)) for row in counts])}

    diffs = bootstrap_differences(batch(score_a), batch(score_b), n_items, n_resamples=n_resamples,
                                  seed=seed)[metric]
    everything = np.arange(n_items)
    return summarize(metric, float(score_a(everything)), float(score_b(everything)), diffs, n_items=n_items,
                     seed=seed, confidence=confidence, names=names)
