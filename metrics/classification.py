"""Classification metrics for generated labels: parse the label out of a model's output, then accuracy,
macro/micro precision, recall, F1 and the confusion matrix (scikit-learn).

Parsing a generated output against a label set (`parse_label`):
1. normalise both sides: casefold, every run of characters other than letters and digits (spaces, "_",
   "-", punctuation) becomes one space, trimmed; so "Account access." matches the label "account_access";
2. if the whole normalised output equals a normalised label, that label;
3. else the label mentioned first in the output, as whole words (at the same position the longer label
   wins, so "card arrival" beats "card");
4. else "unparsed".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

UNPARSED = "unparsed"
_SEPARATORS = re.compile(r"[\W_]+")


def normalize_label(text: str) -> str:
    return _SEPARATORS.sub(" ", str(text).casefold()).strip()


class LabelParser:
    """`LabelParser(labels)(output)` -> one of labels or UNPARSED; build once, call per output."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(dict.fromkeys(str(x) for x in labels))
        self._exact: dict[str, str] = {}
        for label in self.labels:  # two labels that normalise alike: the first one given wins
            self._exact.setdefault(normalize_label(label), label)
        keys = sorted((k for k in self._exact if k), key=len, reverse=True)
        self._mention = re.compile(r"(?<![^\W_])(?:" + "|".join(map(re.escape, keys)) + r")(?![^\W_])") \
            if keys else None

    def __call__(self, output: str) -> str:
        text = normalize_label(output)
        if text in self._exact:
            return self._exact[text]
        if self._mention is not None:
            found = self._mention.search(text)
            if found:
                return self._exact[found.group(0)]
        return UNPARSED


def parse_label(output: str, labels: Sequence[str]) -> str:
    """The label a generated output names (see the module docstring), or "unparsed"."""
    return LabelParser(labels)(output)


def classification_scores(y_true: Sequence[str], y_pred: Sequence[str], *,
                          labels: Sequence[str] | None = None) -> dict:
    """Accuracy, macro and micro precision/recall/F1, per-label scores and the confusion matrix.

    labels: the label set (default: the sorted true labels). Averages run over these labels; a prediction
    of "unparsed" (or any label outside the set) is always wrong: it counts against the true label's recall
    but as nobody's false positive, so micro precision can exceed accuracy. The confusion matrix has one row
    per label and one column per label, plus an "unparsed" column when some predictions were unparsed.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true = [str(x) for x in y_true]
    y_pred = [str(x) for x in y_pred]
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("no items to score")
    labels = list(dict.fromkeys(str(x) for x in labels)) if labels is not None else sorted(set(y_true))
    columns = labels + sorted({p for p in y_pred if p not in labels})
    out: dict = {"n": len(y_true), "accuracy": float(accuracy_score(y_true, y_pred)),
                 "unparsed": int(sum(p == UNPARSED for p in y_pred)), "labels": labels}
    for average in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                     zero_division=0)
        out[f"{average}_precision"], out[f"{average}_recall"], out[f"{average}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out["per_label"] = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                              "support": int(s[i])} for i, lab in enumerate(labels)}
    matrix = confusion_matrix(y_true, y_pred, labels=columns)
    out["confusion_matrix"] = {"rows": labels, "columns": columns,
                               "counts": matrix[:len(labels)].astype(np.int64).tolist()}
    return out
