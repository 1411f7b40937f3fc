"""Label-error detection on banking77 with flipped labels: the reference recipe against ours, side by side.

    python bench/label_errors_bench.py [--rates 0.05,0.1,0.2] [--seed 0] [--no-reference]

For each rate, that share of the records (seeded) gets another category, drawn uniformly from the
other 76. The flipped file is imported into a fresh project; then, in the same process:

- reference: TF-IDF word 1-2-grams + LogisticRegression (scikit-learn defaults, max_iter 1000),
  5-fold stratified out-of-fold probabilities, cleanlab `find_label_issues` (its default filter)
  for the set and cleanlab's label quality score (self-confidence) for the ranking;
- ours: `workbench.inspect.label_errors.find_label_errors` on the imported version, as the CLI
  and the page call it (features, models, cleanlab, duplicate and annotator signals).

Printed per contender: precision and recall of the flagged set against the flipped records,
precision at k (k = number flipped) of the ranking, wall seconds and CPU seconds of this process
(the import is not counted; on a shared machine the CPU seconds are the steadier figure).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"


def flip_labels(labels: pd.Series, rate: float, seed: int) -> tuple[pd.Series, np.ndarray]:
    """A copy with round(rate * n) labels moved to another category (uniform over the others)."""
    rng = np.random.default_rng(seed)
    cats = np.array(sorted(labels.unique()))
    index = {c: i for i, c in enumerate(cats)}
    y = labels.map(index).to_numpy()
    flipped = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    y = y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, len(cats), len(flipped))) % len(cats)
    return pd.Series(cats[y], index=labels.index), np.isin(np.arange(len(y)), flipped)


def scores(flagged: np.ndarray, ranking: np.ndarray, is_error: np.ndarray) -> dict:
    k = int(is_error.sum())
    tp = int((flagged & is_error).sum())
    return {"flagged": int(flagged.sum()), "precision": tp / max(int(flagged.sum()), 1), "recall": tp / k,
            "p_at_k": float(is_error[ranking[:k]].mean())}


def reference(texts: list[str], labels: pd.Series, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's flagged set and ranking, and (to tell the features from the filter apart) the set
    that cleanlab's 'low_self_confidence' filter, ours, picks from the same probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    cats = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(cats)}).to_numpy()
    x = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts)
    probs = np.zeros((len(y), len(cats)))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        probs[test] = LogisticRegression(max_iter=1000).fit(x[train], y[train]).predict_proba(x[test])
    flagged = find_label_issues(y, probs)
    ours_filter = find_label_issues(y, probs, filter_by="low_self_confidence")
    return flagged, np.argsort(get_label_quality_scores(y, probs), kind="stable"), ours_filter


def ours(store, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from workbench.core.versions import get_version
    from workbench.inspect.label_errors import find_label_errors

    result = find_label_errors(store, get_version(store, dataset), "category")
    ranked = result.ranked_rows()
    rest = np.setdiff1d(np.argsort(result.score, kind="stable"), ranked, assume_unique=True)
    rest = rest[np.argsort(result.score[rest], kind="stable")]
    return result.suspect, np.r_[ranked, rest]


def run_rate(frame: pd.DataFrame, rate: float, seed: int, folder: Path, with_reference: bool) -> list[dict]:
    from workbench.core.store import Store
    from workbench.data.importer import import_file

    labels, is_error = flip_labels(frame["category"], rate, seed)
    noisy = frame.assign(category=labels)
    path = folder / f"banking_{int(rate * 100)}.csv"
    noisy.to_csv(path, index=False)
    rows = []
    if with_reference:
        t0, c0 = time.perf_counter(), time.process_time()
        flagged, ranking, ours_filter = reference(noisy["text"].tolist(), labels, seed)
        took = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}
        rows.append({"rate": rate, "contender": "reference (tfidf 1-2 + LR, 5-fold, cleanlab)",
                     **scores(flagged, ranking, is_error), **took})
        rows.append({"rate": rate, "contender": "  same probabilities, our cleanlab filter",
                     **scores(ours_filter, ranking, is_error), **took})
    with Store.open(folder / f"project_{int(rate * 100)}") as store:
        import_file(store, path, "banking")
        t0, c0 = time.perf_counter(), time.process_time()
        flagged, ranking = ours(store, "banking")
        rows.append({"rate": rate, "contender": "workbench find_label_errors",
                     **scores(flagged, ranking, is_error), "seconds": time.perf_counter() - t0,
                     "cpu": time.process_time() - c0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.05,0.1,0.2", help="shares of labels to flip, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flips and of the folds")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference (about a minute per rate)")
    parser.add_argument("--data", default=str(DATA), help="the banking77 train.csv")
    args = parser.parse_args()
    frame = pd.read_csv(args.data)
    print(f"{args.data}: {len(frame):,} records, {frame['category'].nunique()} categories; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'flipped':>7}  {'contender':<46} {'flagged':>7} {'precision':>9} {'recall':>6} {'p@k':>6} "
          f"{'seconds':>7} {'cpu s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for rate in [float(r) for r in args.rates.split(",")]:
            for row in run_rate(frame, rate, args.seed, Path(tmp), not args.no_reference):
                print(f"{row['rate']:>7.0%}  {row['contender']:<46} {row['flagged']:>7} {row['precision']:>9.3f} "
                      f"{row['recall']:>6.3f} {row['p_at_k']:>6.3f} {row['seconds']:>7.1f} {row['cpu']:>6.1f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
