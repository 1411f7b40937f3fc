"""Per-item statistics of a system's outputs, and corpus scores computed from any weighting of the items.

One idea serves three uses: the corpus score (every item once), a slice (the items of one group) and a
bootstrap resample (items drawn with replacement, as counts). BLEU, chrF and the length ratio are
recomputed from the weighted sums of sacreBLEU's per-item statistics; ROUGE and exact match are weighted
means of per-item values (ROUGE's corpus figure is the mean of per-pair F-measures, as rouge-score users
report it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from metrics import bleu as _bleu
from metrics import rouge as _rouge
from metrics.exact_match import exact_match_items

METRICS = ("bleu", "rouge", "chrf", "exact_match", "length_ratio")
SCALES = {"bleu": 100.0, "chrf": 100.0, "length_ratio": None, "exact_match": 1.0,
          **{t: 1.0 for t in _rouge.ROUGE_TYPES}}  # what a score's maximum is (None: a ratio, no maximum)
NAMES = {"bleu": "BLEU", "chrf": "chrF", "exact_match": "exact match", "length_ratio": "length ratio",
         "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


@dataclass
class ItemStats:
    """Everything the corpus scores of one system are computed from, item by item."""
    n: int
    bleu: np.ndarray | None = None
    """(n, 10) sacreBLEU BLEU statistics: hyp_len, ref_len, n-gram matches 1-4, n-gram totals 1-4."""
    chrf: np.ndarray | None = None
    """(n, 18) sacreBLEU chrF statistics."""
    rouge: dict[str, np.ndarray] = field(default_factory=dict)
    """ROUGE type -> (n, 3) precision, recall, F (rouge-score's numbers)."""
    exact_match: np.ndarray | None = None
    """(n,) 1.0 where the prediction equals the reference after whitespace normalisation."""

    def score_names(self) -> list[str]:
        names = []
        if self.bleu is not None:
            names += ["bleu", "length_ratio"]
        names += list(self.rouge)
        if self.chrf is not None:
            names.append("chrf")
        if self.exact_match is not None:
            names.append("exact_match")
        return names


def parse_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """"bleu,rouge" -> ("bleu", "rouge"); None -> all of METRICS. Unknown names raise ValueError."""
    if text is None:
        return METRICS
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    aliases = {"exact": "exact_match", "em": "exact_match", "chrf2": "chrf", "ratio": "length_ratio"}
    names = [aliases.get(m, m) for m in names]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def item_stats(predictions: Sequence[str], references: Sequence[str], *, metrics: Sequence[str] = METRICS,
               progress=None) -> ItemStats:
    """Compute the per-item statistics of the chosen metrics (see METRICS) for aligned lists of texts."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    stats = ItemStats(n=len(predictions))
    if "bleu" in metrics or "length_ratio" in metrics:
        stats.bleu = _bleu.bleu_stats(predictions, references)
    if "chrf" in metrics:
        stats.chrf = _bleu.chrf_stats(predictions, references)
    if "exact_match" in metrics:
        stats.exact_match = exact_match_items(predictions, references)
    if "rouge" in metrics:
        stats.rouge = _rouge.rouge_items(predictions, references, progress=progress)
    return stats


class ItemStatsAhead:
    """Per-item statistics computed ahead of time, a few items at a time (an evaluation's answers as they
    arrive), keyed by item; `stats_for` computes only the items not seen yet, or seen with another prediction or
    reference, and gives exactly what `item_stats` gives for the whole list."""

    def __init__(self, metrics: Sequence[str] = METRICS):
        self.metrics = tuple(metrics)
        self._parts: list[ItemStats] = []
        self._rows: dict = {}  # key -> (part, row, prediction, reference)
        self.reused = 0  # rows the last stats_for took from what was computed ahead

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, keys: Sequence, predictions: Sequence[str], references: Sequence[str]) -> None:
        if not (len(keys) == len(predictions) == len(references)):
            raise ValueError(f"{len(keys)} keys, {len(predictions)} predictions, {len(references)} references")
        if not len(keys):
            return
        part = len(self._parts)
        self._parts.append(item_stats(predictions, references, metrics=self.metrics))
        for row, (key, pred, ref) in enumerate(zip(keys, predictions, references)):
            self._rows[key] = (part, row, pred, ref)

    def stats_for(self, keys: Sequence, predictions: Sequence[str], references: Sequence[str], *,
                  progress=None) -> ItemStats:
        """The statistics of these (key, prediction, reference) items in this order."""
        n = len(keys)
        part, row = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        missing = []
        for j, (key, pred, ref) in enumerate(zip(keys, predictions, references)):
            seen = self._rows.get(key)
            if seen is not None and seen[2] == pred and seen[3] == ref:
                part[j], row[j] = seen[0], seen[1]
            else:
                missing.append(j)
        fresh = item_stats([predictions[j] for j in missing], [references[j] for j in missing],
                           metrics=self.metrics, progress=progress)
        part[missing], row[missing] = len(self._parts), np.arange(len(missing))
        self.reused = n - len(missing)
        sources = [*self._parts, fresh]

        def gather(get):
            first = get(fresh)
            out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
            for p in np.unique(part):
                chosen = part == p
                out[chosen] = get(sources[p])[row[chosen]]
            return out

        return ItemStats(n=n, bleu=None if fresh.bleu is None else gather(lambda s: s.bleu),
                         chrf=None if fresh.chrf is None else gather(lambda s: s.chrf),
                         exact_match=None if fresh.exact_match is None else gather(lambda s: s.exact_match),
                         rouge={t: gather(lambda s, t=t: s.rouge[t]) for t in fresh.rouge})


def resampled_scores(stats: ItemStats, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Corpus scores under many weightings at once: counts is (R, n) of non-negative integers (how often
    each item is taken); returns {score name: (R,) array}."""
    counts = np.asarray(counts)
    out: dict[str, np.ndarray] = {}
    totals = counts.sum(axis=1).astype(np.float64)
    if stats.bleu is not None:
        sums = counts.astype(np.int64) @ stats.bleu
        out["bleu"] = np.array([_bleu.bleu_score_from_stats(row) for row in sums])
        out["length_ratio"] = np.array([_bleu.length_ratio_from_stats(row) for row in sums])
    with np.errstate(invalid="ignore", divide="ignore"):
        for t, arr in stats.rouge.items():
            out[t] = np.where(totals > 0, counts @ arr[:, 2] / totals, 0.0)
        if stats.chrf is not None:
            sums = counts.astype(np.int64) @ stats.chrf
            out["chrf"] = np.array([_bleu.chrf_score_from_stats(row) for row in sums])
        if stats.exact_match is not None:
            out["exact_match"] = np.where(totals > 0, counts @ stats.exact_match / totals, 0.0)
    return out


def corpus_scores(stats: ItemStats) -> dict[str, float]:
    """The corpus scores: BLEU and chrF on sacreBLEU's 0-100 scale from summed statistics, ROUGE F and
    exact match in [0, 1] as means over items, the length ratio from summed 13a token counts."""
    if stats.n == 0:
        return {name: 0.0 for name in stats.score_names()}
    return {k: float(v[0]) for k, v in resampled_scores(stats, np.ones((1, stats.n), dtype=np.int64)).items()}


def item_scores(stats: ItemStats) -> dict[str, np.ndarray]:
    """Per-item scores for display and sorting: sentence BLEU and chrF (sacreBLEU's sentence_bleu /
    sentence_chrf), ROUGE F-measures, exact match. Not for averaging into a corpus score."""
    out: dict[str, np.ndarray] = {}
    if stats.bleu is not None:
        out["bleu"] = _bleu.sentence_bleu_from_stats(stats.bleu)
    for t, arr in stats.rouge.items():
        out[t] = arr[:, 2].copy()
    if stats.chrf is not None:
        out["chrf"] = _bleu.sentence_chrf_from_stats(stats.chrf)
    if stats.exact_match is not None:
        out["exact_match"] = stats.exact_match.copy()
    return out


def scores_by_group(stats: ItemStats, groups: Sequence) -> dict:
    """Corpus scores per value of a grouping column (aligned with the items): {value: {"n": count,
    score name: value}}, groups in order of first appearance; None and NaN make one group (key None).
    BLEU/chrF/length ratio are recomputed from the group's own statistics, not averaged."""
    groups = list(groups)
    if len(groups) != stats.n:
        raise ValueError(f"{len(groups)} group values for {stats.n} items")
    index: dict = {}
    for i, g in enumerate(groups):
        if g is None or (isinstance(g, float) and math.isnan(g)):
            g = None  # every kind of missing value is one group
        index.setdefault(g, []).append(i)
    if not index:
        return {}
    counts = np.zeros((len(index), stats.n), dtype=np.int64)
    for row, rows in enumerate(index.values()):
        counts[row, rows] = 1
    resampled = resampled_scores(stats, counts)
    return {v: {"n": len(rows), **{k: float(arr[i]) for k, arr in resampled.items()}}
            for i, (v, rows) in enumerate(index.items())}
