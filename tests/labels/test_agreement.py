"""metrics.agreement against outside references: the `krippendorff` package and Krippendorff's (2011) worked
example, scikit-learn's cohen_kappa_score and confusion_matrix, statsmodels' fleiss_kappa and the Fleiss' kappa
worked example, plain-Python brute force, and simulated annotators of known accuracy (Dawid-Skene)."""

import itertools
import json
import math
from collections import Counter

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from metrics import agreement as ag
from metrics.interpret import alpha_band, landis_koch, reading

nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units.
K2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
         [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
K2011_ALPHA = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}

# The Fleiss' kappa worked example (Wikipedia, "Fleiss' kappa"; statsmodels' own test table):
# 10 subjects, 14 raters each, 5 categories; kappa = 0.210.
FLEISS_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def from_reliability(data, labels=None) -> ag.Ratings:
    """The krippendorff package's layout (annotators x items, NaN = missing) as Ratings (items x annotators)."""
    return ag.Ratings.from_matrix(np.asarray(data, dtype=float).T, labels=labels)


def random_reliability(rng, annotators, items, values, missing, agreement=0.6):
    truth = rng.integers(1, values + 1, items)
    data = np.where(rng.random((annotators, items)) < agreement, truth, rng.integers(1, values + 1, (annotators, items)))
    data = data.astype(float)
    data[rng.random(data.shape) < missing] = nan
    return data


def from_counts(table) -> ag.Ratings:
    """An item x category count table as Ratings: rater k of item i gives the k-th label in count order."""
    table = np.asarray(table)
    raters = table.sum(axis=1).max()
    codes = np.full((len(table), raters), -1, dtype=np.int32)
    for i, row in enumerate(table):
        given = np.repeat(np.arange(len(row)), row)
        codes[i, :len(given)] = given
    return ag.Ratings(codes, tuple(range(table.shape[1])), tuple(range(len(table))), tuple(range(raters)))


# ---------------------------------------------------------------- Krippendorff's alpha

@pytest.mark.parametrize("level", ag.LEVELS)
def test_alpha_reproduces_krippendorff_2011_worked_example(level):
    c = ag.krippendorff_alpha(from_reliability(K2011), level=level)
    assert round(c.value, 3) == K2011_ALPHA[level]
    assert c.value == pytest.approx(krippendorff.alpha(K2011, level_of_measurement=level), abs=1e-12)
    assert (c.n_items, c.n_annotators) == (11, 4)  # unit 12 has one value: not pairable


@pytest.mark.parametrize("level", ag.LEVELS)
@pytest.mark.parametrize("seed", range(6))
def test_alpha_equals_the_krippendorff_package_on_random_data_with_missing_values(level, seed):
    rng = np.random.default_rng(seed)
    annotators, items, values = int(rng.integers(2, 9)), int(rng.integers(5, 300)), int(rng.integers(2, 8))
    data = random_reliability(rng, annotators, items, values, missing=float(rng.uniform(0, 0.6)))
    expected = krippendorff.alpha(data, level_of_measurement=level)
    assert ag.krippendorff_alpha(from_reliability(data), level=level).value == pytest.approx(expected, abs=1e-9)


def test_alpha_with_text_labels_and_an_ordered_domain_equals_the_package():
    names = ["very low", "low", "mid", "high", "very high"]
    data = np.array([[names[int(x) - 1] if x == x else None for x in row] for row in K2011], dtype=object)
    ratings = ag.Ratings.from_matrix(data.T, labels=names)
    ref = [[x if x is not None else nan for x in row] for row in data.tolist()]
    ref = np.array([[x if isinstance(x, str) else "nan" for x in row] for row in ref])
    for level in ("nominal", "ordinal"):
        expected = krippendorff.alpha(ref, level_of_measurement=level, value_domain=names)
        assert ag.krippendorff_alpha(ratings, level=level).value == pytest.approx(expected, abs=1e-12)


def test_alpha_with_many_labels_and_annotators_equals_the_package():
    rng = np.random.default_rng(42)
    data = random_reliability(rng, 12, 400, 40, missing=0.5)
    for level in ("nominal", "ordinal", "interval"):
        expected = krippendorff.alpha(data, level_of_measurement=level)
        assert ag.krippendorff_alpha(from_reliability(data), level=level).value == pytest.approx(expected, abs=1e-9)


def test_a_label_nobody_used_changes_no_coefficient_and_is_listed():
    plain = from_reliability(K2011)
    wider = from_reliability(K2011, labels=[0, 1, 2, 3, 4, 5, 6])  # 0 and 6: nobody's answer
    for level in ("nominal", "ordinal", "interval"):
        assert ag.krippendorff_alpha(wider, level=level).value == pytest.approx(
            ag.krippendorff_alpha(plain, level=level).value, abs=1e-12)
    assert ag.fleiss_kappa(wider).value == pytest.approx(ag.fleiss_kappa(plain).value, abs=1e-12)
    rows = {r["label"]: r for r in ag.per_label(wider)}
    assert rows[6]["answers"] == 0 and rows[6]["specific_agreement"] is None
    assert rows[6]["reason"] == "nobody used this label"


# ---------------------------------------------------------------- Cohen's kappa

@pytest.mark.parametrize("weights", ag.KAPPA_WEIGHTS)
@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_scikit_learn_for_every_pair(weights, seed):
    rng = np.random.default_rng(100 + seed)
    data = random_reliability(rng, 4, int(rng.integers(20, 200)), int(rng.integers(2, 7)), missing=0.3)
    ratings = from_reliability(data)
    result = ag.cohen_kappa_pairs(ratings, weights=weights)
    labels = list(ratings.labels)
    expected = []
    for a, b in itertools.combinations(data, 2):
        both = ~np.isnan(a) & ~np.isnan(b)
        expected.append(cohen_kappa_score(a[both], b[both], labels=labels, weights=weights))
    got = [c.value for c in result["pairs"]]
    assert got == pytest.approx(expected, abs=1e-12)
    assert result["mean"].value == pytest.approx(np.mean(expected), abs=1e-12)
    assert result["matrix"][0, 1] == pytest.approx(expected[0], abs=1e-12)


def test_weighted_kappa_uses_label_positions_like_scikit_learn_with_unused_labels():
    a = ["low", "mid", "mid", "high", "low", "high", "mid"]
    b = ["low", "high", "mid", "high", "mid", "high", "low"]
    order = ["low", "mid", "high", "extreme"]
    ratings = ag.Ratings.from_long([*range(7), *range(7)], ["a"] * 7 + ["b"] * 7, a + b, labels=order)
    for weights in ag.KAPPA_WEIGHTS:
        expected = cohen_kappa_score(a, b, labels=order, weights=weights)
        assert ag.cohen_kappa(ratings, "a", "b", weights=weights).value == pytest.approx(expected, abs=1e-12)


def test_confusion_matrix_equals_scikit_learn():
    rng = np.random.default_rng(3)
    data = random_reliability(rng, 3, 150, 5, missing=0.2)
    ratings = from_reliability(data)
    both = ~np.isnan(data[0]) & ~np.isnan(data[2])
    expected = confusion_matrix(data[0][both], data[2][both], labels=list(ratings.labels))
    assert (ag.confusion(ratings, 0, 2) == expected).all()


# ---------------------------------------------------------------- Fleiss' kappa and percent agreement

def test_fleiss_kappa_worked_example_is_0_210():
    c = ag.fleiss_kappa(from_counts(FLEISS_TABLE))
    assert round(c.value, 3) == 0.210
    assert c.value == pytest.approx(sm_fleiss_kappa(np.array(FLEISS_TABLE)), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_equals_statsmodels(seed):
    rng = np.random.default_rng(200 + seed)
    data = random_reliability(rng, int(rng.integers(2, 10)), int(rng.integers(5, 200)), int(rng.integers(2, 6)), 0.0)
    ratings = from_reliability(data)
    table = ratings.counts()
    assert ag.fleiss_kappa(ratings).value == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)


def test_fleiss_kappa_with_missing_answers_follows_gwets_generalisation_by_brute_force():
    rng = np.random.default_rng(9)
    data = random_reliability(rng, 5, 60, 4, missing=0.4)
    ratings = from_reliability(data)
    items = [[x for x in col if not math.isnan(x)] for col in data.T]
    two = [v for v in items if len(v) >= 2]
    p_bar = np.mean([sum(c * (c - 1) for c in Counter(v).values()) / (len(v) * (len(v) - 1)) for v in two])
    answered = [v for v in items if v]
    p = {lab: np.mean([v.count(lab) / len(v) for v in answered]) for lab in set(itertools.chain(*answered))}
    p_e = sum(x * x for x in p.values())
    assert ag.fleiss_kappa(ratings).value == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)


def test_percent_agreement_by_brute_force_over_pairs():
    rng = np.random.default_rng(11)
    data = random_reliability(rng, 4, 80, 3, missing=0.3)
    shares = []
    for col in data.T:
        v = [x for x in col if not math.isnan(x)]
        pairs = list(itertools.combinations(v, 2))
        if pairs:
            shares.append(sum(x == y for x, y in pairs) / len(pairs))
    c = ag.percent_agreement(from_reliability(data))
    assert c.value == pytest.approx(np.mean(shares), abs=1e-12)
    assert c.n_items == len(shares)


# ---------------------------------------------------------------- bootstrap intervals

def test_bootstrap_interval_matches_brute_force_resampling_with_the_package():
    rng = np.random.default_rng(5)
    data = random_reliability(rng, 4, 120, 4, missing=0.25)
    data = data[:, (~np.isnan(data)).sum(axis=0) >= 2]  # pairable items only: both resample the same set
    ours = ag.krippendorff_alpha(from_reliability(data), level="nominal", resamples=2000, seed=1)
    draws = []
    for _ in range(2000):
        pick = rng.integers(0, data.shape[1], data.shape[1])
        draws.append(krippendorff.alpha(data[:, pick], level_of_measurement="nominal"))
    low, high = np.quantile(draws, [0.025, 0.975])
    assert ours.ci_low == pytest.approx(low, abs=0.02) and ours.ci_high == pytest.approx(high, abs=0.02)
    assert ours.ci_low < ours.value < ours.ci_high and ours.resamples == 2000


def test_resample_counts_are_item_draws_with_replacement():
    inverse = np.array([0, 0, 1, 2, 2, 2])
    for many in (False, True):  # multinomial over patterns, or item indices
        old = ag._MULTINOMIAL_MAX_PATTERNS
        ag._MULTINOMIAL_MAX_PATTERNS = 0 if many else old
        try:
            w = np.concatenate(list(ag.resample_counts(inverse, 3, resamples=4000, seed=0)))
        finally:
            ag._MULTINOMIAL_MAX_PATTERNS = old
        assert w.shape == (4000, 3) and (w.sum(axis=1) == 6).all()
        assert w.mean(axis=0) == pytest.approx([2, 1, 3], abs=0.08)


def test_every_coefficient_has_an_interval_that_contains_it():
    rng = np.random.default_rng(8)
    ratings = from_reliability(random_reliability(rng, 4, 200, 5, missing=0.2))
    for c in (ag.krippendorff_alpha(ratings, level="ordinal", resamples=300), ag.percent_agreement(ratings, resamples=300),
              ag.fleiss_kappa(ratings, resamples=300),
              ag.cohen_kappa_pairs(ratings, weights="quadratic", resamples=300)["mean"]):
        assert c.ci_low <= c.value <= c.ci_high, c


# ---------------------------------------------------------------- edge cases: defined, in words

def test_one_annotator_gives_none_and_a_reason():
    ratings = ag.Ratings.from_long(["a", "b", "c"], ["ann"] * 3, ["x", "y", "x"])
    for c in (ag.krippendorff_alpha(ratings), ag.fleiss_kappa(ratings), ag.percent_agreement(ratings),
              ag.cohen_kappa_pairs(ratings)["mean"]):
        assert c.value is None and "only one annotator" in c.reason


def test_all_answers_identical_gives_none_and_says_why():
    ratings = ag.Ratings.from_long([1, 1, 2, 2, 3, 3], ["a", "b"] * 3, ["yes"] * 6)
    alpha = ag.krippendorff_alpha(ratings, resamples=100)
    assert alpha.value is None and "every answer is the same value ('yes')" in alpha.reason
    assert ag.fleiss_kappa(ratings).value is None
    assert ag.cohen_kappa(ratings, "a", "b").value is None
    assert ag.percent_agreement(ratings).value == 1.0
    with pytest.raises(ValueError):  # the package refuses too: one value in the domain
        krippendorff.alpha([[1, 1, 1], [1, 1, 1]], level_of_measurement="nominal")


def test_one_item_has_a_value_but_no_interval():
    ratings = ag.Ratings.from_long([1, 1, 1], ["a", "b", "c"], ["x", "x", "y"])
    c = ag.krippendorff_alpha(ratings, resamples=100)
    assert c.value == pytest.approx(krippendorff.alpha([[1], [1], [2]], level_of_measurement="nominal"))
    assert c.ci_low is None and "only one item" in c.reason


def test_annotators_who_never_meet_have_no_kappa():
    ratings = ag.Ratings.from_long([1, 2, 3, 3], ["a", "b", "a", "c"], ["x", "y", "x", "y"])
    pairs = {(c.extra["a"], c.extra["b"]): c for c in ag.cohen_kappa_pairs(ratings)["pairs"]}
    assert pairs[("a", "b")].value is None and "never answered the same item" in pairs[("a", "b")].reason


def test_duplicate_answers_are_refused_with_the_names():
    with pytest.raises(ValueError, match="annotator 'a' answered item 1 more than once"):
        ag.Ratings.from_long([1, 1], ["a", "a"], ["x", "y"])


# ---------------------------------------------------------------- where they disagree, who is reliable

def test_per_label_agreement_equals_binary_alpha_from_the_package():
    rng = np.random.default_rng(21)
    data = random_reliability(rng, 4, 100, 4, missing=0.2)
    ratings = from_reliability(data)
    for row in ag.per_label(ratings):
        binary = np.where(np.isnan(data), nan, (data == row["label"]).astype(float))
        assert row["alpha_vs_rest"] == pytest.approx(krippendorff.alpha(binary, level_of_measurement="nominal"),
                                                     abs=1e-12)
        # specific agreement: among ordered pairs of answers on one item where the first is this label,
        # the share where the second is too (weighted 1 / (m - 1) as coincidences are)
        num = den = 0.0
        for col in data.T:
            v = [x for x in col if not math.isnan(x)]
            if len(v) >= 2:
                k = v.count(row["label"])
                num += k * (k - 1) / (len(v) - 1)
                den += k
        assert row["specific_agreement"] == pytest.approx(num / den, abs=1e-12)


def test_annotator_agreement_with_the_others_majority_by_brute_force():
    rng = np.random.default_rng(31)
    data = random_reliability(rng, 4, 60, 3, missing=0.3)
    ratings = from_reliability(data)
    gold = np.where(rng.random(60) < 0.5, rng.integers(0, 3, 60), -1)
    rows = ag.annotator_agreement(ratings, gold=gold)
    for j, row in enumerate(rows):
        credit, golds = [], []
        for i in range(60):
            mine = data[j, i]
            if math.isnan(mine):
                continue
            others = Counter(x for k, x in enumerate(data[:, i]) if k != j and not math.isnan(x))
            if others:
                best = max(others.values())
                winners = [x for x, n in others.items() if n == best]
                credit.append((mine in winners) / len(winners))
            if gold[i] >= 0:
                golds.append(ratings.labels[gold[i]] == mine)
        assert row["compared"] == len(credit)
        assert row["consensus_agreement"] == pytest.approx(np.mean(credit), abs=1e-12)
        assert row["gold_accuracy"] == pytest.approx(np.mean(golds), abs=1e-12)


def test_disputed_items_rank_split_votes_first():
    ratings = ag.Ratings.from_long([1, 1, 1, 2, 2, 2, 3, 3, 3], list("abc") * 3,
                                   ["x", "x", "x", "x", "x", "y", "x", "y", "z"])
    info = ag.item_disagreement(ratings)
    assert list(info["pairs_disagreeing"]) == pytest.approx([0, 2 / 3, 1])
    assert np.argsort(-info["disagreement"])[0] == 2
    assert list(info["majority"]) == [0, 0, 0] and list(info["tied"]) == [False, False, True]


def simulate(rng, items, accuracies, classes, missing=0.0):
    truth = rng.integers(0, classes, items)
    codes = np.empty((items, len(accuracies)), dtype=np.int32)
    for j, acc in enumerate(accuracies):
        wrong = (truth + rng.integers(1, classes, items)) % classes  # uniformly one of the other classes
        codes[:, j] = np.where(rng.random(items) < acc, truth, wrong)
    codes[rng.random(codes.shape) < missing] = -1
    return truth, ag.Ratings(codes, tuple(range(classes)), tuple(range(items)), tuple(range(len(accuracies))))


def test_dawid_skene_recovers_known_annotator_accuracies():
    rng = np.random.default_rng(2024)
    accuracies = [0.9, 0.8, 0.7, 0.6, 0.5]
    truth, ratings = simulate(rng, 2000, accuracies, classes=4, missing=0.2)
    ds = ag.dawid_skene(ratings)
    assert ds.converged
    assert ds.accuracy == pytest.approx(accuracies, abs=0.05)
    majority = ag.majority_vote(ratings)["label"]
    assert (ds.label == truth).mean() >= (majority == truth).mean()
    assert ds.posterior.sum(axis=1) == pytest.approx(np.ones(2000))


def test_dawid_skene_recovers_confusable_classes():
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 3, 1500)
    codes = np.empty((1500, 4), dtype=np.int32)
    flips = [0.05, 0.1, 0.2, 0.35]  # annotator j answers 1 for a true 0 with this chance
    for j, f in enumerate(flips):
        codes[:, j] = np.where((truth == 0) & (rng.random(1500) < f), 1, truth)
    ratings = ag.Ratings(codes, (0, 1, 2), tuple(range(1500)), tuple(range(4)))
    ds = ag.dawid_skene(ratings)
    assert [ds.confusion[j, 0, 1] for j in range(4)] == pytest.approx(flips, abs=0.05)


# ---------------------------------------------------------------- readings

@pytest.mark.parametrize("value, band", [(-0.1, "poor"), (0.0, "slight"), (0.2, "slight"), (0.21, "fair"),
                                         (0.4, "fair"), (0.41, "moderate"), (0.6, "moderate"),
                                         (0.61, "substantial"), (0.8, "substantial"), (0.81, "almost perfect"),
                                         (1.0, "almost perfect")])
def test_landis_koch_bands(value, band):
    assert landis_koch(value) == band


@pytest.mark.parametrize("value, band", [(0.5, "unreliable"), (0.666, "unreliable"), (0.667, "tentative"),
                                         (0.799, "tentative"), (0.8, "reliable"), (1.0, "reliable")])
def test_krippendorff_thresholds(value, band):
    assert alpha_band(value) == band


def test_a_reading_never_replaces_the_number_and_never_says_nan():
    assert "Not computed: only one annotator" in reading("krippendorff_alpha", None,
                                                         reason="only one annotator answered")
    text = reading("fleiss_kappa", 0.45, ci_low=0.35, ci_high=0.55)
    assert "Moderate" in text and "from 'fair' to 'moderate'" in text and "nan" not in text.lower()
    assert "0.667" in reading("krippendorff_alpha", 0.7)
    json.dumps(ag.krippendorff_alpha(ag.Ratings.from_long([1], ["a"], ["x"])).to_dict(), allow_nan=False)
