"""Per-annotator accuracy against the adjudicated and the high-confidence (leave-one-out unanimous) labels, on
answers constructed so that every count can be checked by hand; intervals against statsmodels' Wilson interval."""

import json

import pytest
from statsmodels.stats.proportion import proportion_confint

from tests.conftest import write_jsonl
from workbench.cli.main import main
from workbench.core.auth import User
from workbench.core.store import Store
from workbench.data.importer import import_file
from workbench.labels import adjudication, agreement, annotations, questions

# item -> {annotator: answer}
ANSWERS = {
    "i1": {"a": "x", "b": "x", "c": "x", "d": "x"},
    "i2": {"a": "x", "b": "y", "c": "y", "d": "y"},
    "i3": {"a": "y", "b": "y", "c": "x"},
    "i4": {"a": "x", "b": "x"},
    "i5": {"a": "y", "b": "x", "c": "x", "d": "z"},
    "i6": {"b": "z", "c": "z", "d": "z"},
}
ADJUDICATED = {"i2": "y", "i3": "x", "i4": "w", "i5": "x", "i6": "z"}  # nobody answered w: a and b are wrong on i4

# Worked out by hand. High confidence: the others of the record, at least two, all alike.
#   a: i1 (b,c,d: x) right; i2 (b,c,d: y) wrong; i3 (b y, c x) mixed; i4 (b only) too few; i5 mixed -> 1 of 2
#   b: i1 right; i6 (c,d: z) right; i2, i3, i5 mixed; i4 too few                                   -> 2 of 2
#   c: i1 right; i3 (a,b: y) wrong; i6 (b,d: z) right; i2, i5 mixed                                 -> 2 of 3
#   d: i1 right; i6 (b,c: z) right; i2, i5 mixed                                                    -> 2 of 2
# Adjudicated:
#   a: i2 x/y, i3 y/x, i4 x/w, i5 y/x: none right                                                   -> 0 of 4
#   b: i2 y right, i3 y/x, i4 x/w, i5 x right, i6 z right                                           -> 3 of 5
#   c: i2, i3, i5, i6 all right                                                                      -> 4 of 4
#   d: i2 y right, i5 z/x, i6 z right                                                                -> 2 of 3
EXPECTED = {("a", "high_confidence"): (1, 2), ("b", "high_confidence"): (2, 2), ("c", "high_confidence"): (2, 3),
            ("d", "high_confidence"): (2, 2), ("a", "adjudicated"): (0, 4), ("b", "adjudicated"): (3, 5),
            ("c", "adjudicated"): (4, 4), ("d", "adjudicated"): (2, 3)}


def long_answers():
    rows = [(item, who, value) for item, given in ANSWERS.items() for who, value in given.items()]
    return agreement.answers_frame(*zip(*rows))


def check(accuracy: dict) -> None:
    rows = {(r["annotator"], r["reference"]): r for r in accuracy["rows"]}
    assert set(rows) == set(EXPECTED)
    for key, (correct, n) in EXPECTED.items():
        row = rows[key]
        low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
        assert (row["correct"], row["items"]) == (correct, n), key
        assert row["accuracy"] == pytest.approx(correct / n, abs=1e-12)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12), key
    assert "at least 2 others" in accuracy["references"]["high_confidence"]
    assert accuracy["interval"] == "Wilson score" and accuracy["confidence"] == 0.95


def test_hand_computed_accuracy_with_wilson_intervals():
    report = agreement.build_report(long_answers(), gold=ADJUDICATED, resamples=0)
    check(report["annotator_accuracy"])


def test_nothing_to_compare_gives_no_number():
    answers = agreement.answers_frame(["i1", "i1", "i2"], ["a", "b", "a"], ["x", "y", "x"])
    rows = agreement.build_report(answers, resamples=0)["annotator_accuracy"]["rows"]
    assert all(r["items"] == 0 and r["accuracy"] is None and r["ci_low"] is None for r in rows)


def test_a_90_percent_interval_follows_the_confidence():
    rows = agreement.build_report(long_answers(), gold=ADJUDICATED, resamples=0,
                                  confidence=0.9)["annotator_accuracy"]["rows"]
    b = next(r for r in rows if (r["annotator"], r["reference"]) == ("b", "adjudicated"))
    assert (b["ci_low"], b["ci_high"]) == pytest.approx(proportion_confint(3, 5, alpha=0.1, method="wilson"))


def test_stored_question_with_adjudicated_records_and_the_cli_json(tmp_path, capsys):
    project = tmp_path / "project"
    records = [{"id": item, "prompt": f"ticket {item}", "completion": "ok"} for item in ANSWERS]
    with Store.open(project) as store:
        version = import_file(store, write_jsonl(tmp_path / "t.jsonl", records), "tickets").version
        q = questions.add_question(store, version, "category", "single-choice", choices=["x", "y", "z", "w"],
                                   overlap=4, majority=False)
        for item, given in ANSWERS.items():
            for who, value in given.items():
                annotations.submit(store, q, item, value, user=User(who, "annotator"))
        for item, value in ADJUDICATED.items():
            adjudication.set_gold(store, q, item, value)
        check(agreement.question_report(store, "tickets", "category", resamples=0)["annotator_accuracy"])

    assert main(["--project", str(project), "agreement", "tickets", "--question", "category", "--resamples", "0",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    check(report["annotator_accuracy"])
    for key in ("krippendorff_alpha", "fleiss_kappa", "cohen_kappa_mean", "percent_agreement", "n_items",
                "n_annotators", "annotators", "disputed"):
        assert key in report  # the keys that were there before are still there
    assert main(["--project", str(project), "agreement", "tickets", "--question", "category", "--resamples", "0"]) == 0
    text = capsys.readouterr().out
    assert "Accuracy per annotator (95% Wilson score intervals)" in text
    assert "  c                adjudicated            4      1.00  [0.51, 1.00]" in text
