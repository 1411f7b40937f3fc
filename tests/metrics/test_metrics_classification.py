"""Label parsing and classification metrics against plain Python counts."""

import random

import numpy as np
import pytest

from metrics.classification import UNPARSED, LabelParser, classification_scores, parse_label

LABELS = ["card", "card_arrival", "Refund_not_showing_up", "billing", "account_access"]


@pytest.mark.parametrize("output,expected", [
    ("card_arrival", "card_arrival"), ("Card Arrival", "card_arrival"), ("  account-access. ", "account_access"),
    ("The category is: refund not showing up!", "Refund_not_showing_up"),
    ("billing, or maybe card", "billing"), ("card arrival", "card_arrival"),
    ("my card arrival is late", "card_arrival"),  # the longer label wins at the same position
    ("cardboard box", UNPARSED), ("", UNPARSED), ("I don't know", UNPARSED), ("CARD", "card"),
])
def test_parse_label(output, expected):
    assert parse_label(output, LABELS) == expected


def test_label_parser_on_banking77_labels(banking_dir):
    import csv

    with open(banking_dir / "test.csv", encoding="utf-8") as f:
        labels = sorted({row["category"] for row in csv.DictReader(f)})
    parse = LabelParser(labels)
    for label in labels:
        assert parse(label) == label
        assert parse(f"Predicted category: {label.replace('_', ' ').upper()}.") == label


def test_classification_scores_equal_plain_counts():
    rng = random.Random(5)
    labels = ["a", "b", "c"]
    y_true = [rng.choice(labels) for _ in range(200)]
    y_pred = [t if rng.random() < 0.6 else rng.choice(labels + [UNPARSED]) for t in y_true]
    out = classification_scores(y_true, y_pred, labels=labels)
    assert out["accuracy"] == sum(t == p for t, p in zip(y_true, y_pred)) / 200
    assert out["unparsed"] == y_pred.count(UNPARSED)
    f1s = []
    tp_all = fp_all = fn_all = 0
    for lab in labels:
        tp = sum(t == lab and p == lab for t, p in zip(y_true, y_pred))
        fp = sum(t != lab and p == lab for t, p in zip(y_true, y_pred))
        fn = sum(t == lab and p != lab for t, p in zip(y_true, y_pred))
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        prec, rec = tp / (tp + fp), tp / (tp + fn)
        f1s.append(2 * prec * rec / (prec + rec))
        assert out["per_label"][lab]["precision"] == pytest.approx(prec)
        assert out["per_label"][lab]["recall"] == pytest.approx(rec)
    assert out["macro_f1"] == pytest.approx(np.mean(f1s))
    assert out["micro_precision"] == pytest.approx(tp_all / (tp_all + fp_all))
    assert out["micro_recall"] == pytest.approx(tp_all / (tp_all + fn_all))
    cm = out["confusion_matrix"]
    assert cm["columns"] == labels + [UNPARSED]
    for r, t in enumerate(labels):
        for c, p in enumerate(cm["columns"]):
            assert cm["counts"][r][c] == sum(a == t and b == p for a, b in zip(y_true, y_pred))
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        classification_scores(["a", "b", "c"], ["a", "b"])
