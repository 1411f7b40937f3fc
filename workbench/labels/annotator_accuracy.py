"""Per-annotator accuracy against two references, each with a Wilson interval.

- **adjudicated**: the admin's final value of a record (for a file of answers: the gold annotator's label).
- **high confidence**: the answer of the record's *other* annotators, where at least two others answered
  and all gave the same answer. Leave-one-out, so nobody is judged against their own vote.

An answer counts as correct when it is exactly the reference (multi-label answers: the same set of tags;
ratings: the same number). The interval is the Wilson score interval of correct answers out of those
compared (metrics.ratings.wilson_interval, equal to statsmodels' proportion_confint(method='wilson')).
"""

from __future__ import annotations

import numpy as np

from metrics import agreement as ag
from metrics.ratings import wilson_interval

MIN_OTHERS = 2
REFERENCES = {
    "adjudicated": "the adjudicated final value of the record (an admin's answer on the Label page; for a file "
                   "of answers, the gold annotator's label)",
    "high_confidence": f"the answer of the record's other annotators, where at least {MIN_OTHERS} others answered "
                       "and all gave the same answer (leave-one-out: nobody is judged against their own vote)",
}


def reference_codes(ratings: ag.Ratings, gold: dict) -> np.ndarray:
    """Label index of each item's adjudicated value: -1 where there is none, n_labels for a value nobody gave
    (it never matches an answer)."""
    from workbench.labels.agreement import answer_text

    index = {str(x): k for k, x in enumerate(ratings.labels)}
    codes = np.full(len(ratings.items), -1, dtype=np.int64)
    for k, item in enumerate(ratings.items):
        value = answer_text(gold.get(str(item)))
        if value is not None:
            codes[k] = index.get(value, ratings.n_labels)
    return codes


def leave_one_out_codes(ratings: ag.Ratings, j: int) -> np.ndarray:
    """Per item, the label all other annotators gave when at least MIN_OTHERS of them answered and they all
    agree; -1 otherwise (and where annotator j did not answer)."""
    mine = ratings.codes[:, j]
    has = np.flatnonzero(mine >= 0)
    others = ratings.counts()[has]
    others[np.arange(len(has)), mine[has]] -= 1
    unanimous = (others.sum(axis=1) >= MIN_OTHERS) & ((others > 0).sum(axis=1) == 1)
    out = np.full(len(mine), -1, dtype=np.int64)
    out[has[unanimous]] = others[unanimous].argmax(axis=1)
    return out


def _row(annotator, reference: str, mine: np.ndarray, ref: np.ndarray, confidence: float) -> dict:
    compared = (mine >= 0) & (ref >= 0)
    n = int(compared.sum())
    k = int((mine[compared] == ref[compared]).sum())
    low, high = wilson_interval(k, n, confidence) if n else (None, None)
    return {"annotator": str(annotator), "reference": reference, "items": n, "correct": k,
            "accuracy": k / n if n else None, "ci_low": low, "ci_high": high}


def annotator_accuracy(ratings: ag.Ratings, gold: dict | None = None, *, confidence: float = 0.95) -> dict:
    """{confidence, interval, references (what each one means), rows}: one row per annotator and reference
    (annotator, reference, items compared, correct, accuracy, ci_low, ci_high; None where nothing was compared)."""
    gold_codes = reference_codes(ratings, gold or {})
    rows = []
    for reference in REFERENCES:
        for j, name in enumerate(ratings.annotators):
            ref = gold_codes if reference == "adjudicated" else leave_one_out_codes(ratings, j)
            rows.append(_row(name, reference, ratings.codes[:, j], ref, confidence))
    return {"confidence": confidence, "interval": "Wilson score", "references": dict(REFERENCES), "rows": rows}
