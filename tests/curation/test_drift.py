"""Drift: the chi-square test, Cramér's V and the KS test equal scipy's on counts and lengths computed
here in plain Python from the source CSVs; the summary names what moved."""

import csv
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2_contingency, ks_2samp
from scipy.stats.contingency import association

from tests.conftest import BANKING
from workbench.core.store import Store
from workbench.curation.drift import category_shift, drift, length_shift
from workbench.data.importer import import_file


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    if not BANKING.exists():
        pytest.skip(f"banking77 data not found at {BANKING}")
    store = Store.open(tmp_path_factory.mktemp("drift") / "project")
    train = import_file(store, BANKING / "train.csv", "train").version
    test = import_file(store, BANKING / "test.csv", "test").version
    yield store, train, test
    store.close()


def rows(name):
    with open(BANKING / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_train_against_test_equals_scipy(bank):
    store, train, test = bank
    a, b = rows("train.csv"), rows("test.csv")
    ca, cb = Counter(r["category"] for r in a), Counter(r["category"] for r in b)
    cats = sorted(ca)
    table = np.array([[ca[c] for c in cats], [cb[c] for c in cats]])
    ref = chi2_contingency(table, correction=False)
    out = drift(store, train, test)
    m = out["mix"]
    assert m["chi2"] == pytest.approx(ref.statistic, rel=1e-12)
    assert m["p_value"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert m["dof"] == 76
    assert m["cramers_v"] == pytest.approx(association(table, method="cramer", correction=False), rel=1e-12)
    by = {r["category"]: r for r in m["categories"]}
    assert by["contactless_not_working"]["share_a"] == pytest.approx(35 / 10003)
    assert by["contactless_not_working"]["change"] == pytest.approx(cb["contactless_not_working"] / 3080 - 35 / 10003)
    ks = ks_2samp([len(r["text"]) for r in a], [len(r["text"]) for r in b])
    assert out["lengths"]["ks_statistic"] == pytest.approx(ks.statistic, rel=1e-12)
    assert out["lengths"]["p_value"] == pytest.approx(ks.pvalue, rel=1e-9)
    assert out["lengths"]["median_a"] == np.median([len(r["text"]) for r in a])
    text = " ".join(out["summary"])
    assert "differs from train@1" in text and "contactless_not_working rose" in text


def test_a_version_against_itself_shows_no_shift(bank):
    store, train, _ = bank
    out = drift(store, train, train)
    assert out["mix"]["chi2"] == pytest.approx(0) and out["mix"]["p_value"] == pytest.approx(1)
    assert out["lengths"]["ks_statistic"] == 0
    assert out["summary"][0].startswith("No significant change in the category mix")
    assert "No significant change in prompt lengths" in out["summary"][-1]


def test_worked_example_and_new_or_missing_categories():
    # By hand: shipping/returns 80/20 -> 60/40, 100 records each; the expected counts are 70/30 in both
    # rows, every cell is 10 off, so chi-square = 2 * (10^2/70 + 10^2/30) = 9.524.
    out = category_shift({"shipping": 80, "returns": 20}, {"shipping": 60, "returns": 40})
    assert out["chi2"] == pytest.approx(2 * (100 / 70 + 100 / 30))
    assert out["cramers_v"] == pytest.approx((out["chi2"] / 200) ** 0.5)
    shift = category_shift({"a": 10, "b": 10}, {"a": 10, "c": 10})
    assert {r["category"]: (r["count_a"], r["count_b"]) for r in shift["categories"]} == {
        "a": (10, 10), "b": (10, 0), "c": (0, 10)}
    from workbench.curation.drift import summary

    text = " ".join(summary({"a": "x@1", "b": "y@1", "by": "category", "text": "prompt", "mix": shift,
                             "lengths": length_shift(np.array([5, 6, 7]), np.array([5, 6, 7]))}))
    assert "New in y@1 (absent from x@1): c." in text and "Absent from y@1: b." in text


def test_single_category_cannot_be_tested():
    out = category_shift({"a": 5}, {"a": 7})
    assert out["chi2"] is None and out["p_value"] is None


def test_length_histogram_equals_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3000, 500), rng.integers(0, 400, 300)
    hist = length_shift(a, b)["histogram"]
    edges = [h["low"] for h in hist] + [np.inf]
    assert [h["count_a"] for h in hist] == np.histogram(a, bins=edges)[0].tolist()
    assert [h["count_b"] for h in hist] == np.histogram(b, bins=edges)[0].tolist()
    assert hist[-1]["bucket"] == "2000+" and hist[0]["bucket"] == "0-24"
