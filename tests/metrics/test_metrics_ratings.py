"""Rating statistics of blind review against statsmodels/scipy and hand-computed cases."""

import math
import random

import numpy as np
import pytest
from scipy import stats

from metrics.ratings import bradley_terry, mean_with_ci, position_bias, wilson_interval, win_rate


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (57, 100), (500, 1001), (1, 3)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_wilson_equals_statsmodels(k, n, confidence):
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    got = wilson_interval(k, n, confidence)
    assert got[0] == pytest.approx(low, abs=1e-12) and got[1] == pytest.approx(high, abs=1e-12)


def test_win_rate_counts_ties_apart():
    winners = ["B"] * 30 + ["A"] * 10 + ["tie"] * 10
    r = win_rate(winners)
    assert (r.wins_b, r.wins_a, r.ties, r.n) == (30, 10, 10, 50)
    assert r.win_rate == 0.75 and r.tie_rate == 0.2 and r.score == pytest.approx(35 / 50)
    assert (r.ci_low, r.ci_high) == pytest.approx(wilson_interval(30, 40))
    assert "B is preferred" in r.statement and "(10 ties)" in r.statement
    even = win_rate(["base", "tuned"] * 5, a="base", b="tuned")
    assert even.win_rate == 0.5 and "no clear preference" in even.statement and even.statement.startswith("tuned wins 5")
    with pytest.raises(ValueError, match="neither"):
        win_rate(["A", "C"])
    assert win_rate(["tie", "tie"]).statement.endswith("no judgement was decided")


def test_mean_rating_interval_equals_scipy():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 6, 37).astype(float)
    got = mean_with_ci(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert got["mean"] == pytest.approx(x.mean()) and got["n"] == 37
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert math.isnan(mean_with_ci([4.0])["ci_low"]) and mean_with_ci([])["n"] == 0
    assert mean_with_ci([1.0, float("nan"), 3.0])["mean"] == 2.0


def test_bradley_terry_two_systems_by_hand():
    # A beats B 3 times, B beats A once: the MLE has P(A beats B) = 3/4, so p_A / p_B = 3.
    res = bradley_terry([("A", "B", "A")] * 3 + [("B", "A", "B")])
    top, second = res["ranking"]
    assert (top["system"], second["system"]) == ("A", "B") and res["converged"]
    assert top["strength"] / second["strength"] == pytest.approx(3.0, rel=1e-9)
    assert top["strength"] * second["strength"] == pytest.approx(1.0)  # geometric mean 1
    assert (top["wins"], top["losses"], top["comparisons"]) == (3, 1, 4)


def test_bradley_terry_balanced_cycle_gives_equal_strengths_and_ties_count_half():
    cycle = [("A", "B", "A"), ("B", "C", "B"), ("C", "A", "C")] * 2
    assert [r["strength"] for r in bradley_terry(cycle)["ranking"]] == pytest.approx([1, 1, 1])
    # one win each way plus two ties is the same evidence as two wins each way
    with_ties = bradley_terry([("A", "B", "A"), ("A", "B", "B"), ("A", "B", "tie"), ("B", "A", "tie"),
                               ("B", "C", "B"), ("C", "B", "C")])
    assert with_ties["ranking"][0]["strength"] == pytest.approx(1.0)
    assert {r["system"]: r["ties"] for r in with_ties["ranking"]} == {"A": 2, "B": 2, "C": 0}


def test_bradley_terry_equals_logistic_regression():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    systems = ["base", "lora-a", "lora-b", "lora-c"]
    true = np.array([0.0, 0.4, 0.9, -0.3])
    judgements, rows, ys = [], [], []
    for _ in range(400):
        i, j = rng.choice(4, 2, replace=False)
        win_i = rng.random() < 1 / (1 + math.exp(true[j] - true[i]))
        judgements.append((systems[i], systems[j], systems[i] if win_i else systems[j]))
        x = np.zeros(4)
        x[i], x[j] = 1, -1
        rows.append(x[1:])  # "base" is the reference level: its log strength is 0
        ys.append(float(win_i))
    fit = sm.Logit(np.array(ys), np.array(rows)).fit(disp=0, tol=1e-12)
    res = bradley_terry(judgements)
    log = {r["system"]: r["log_strength"] for r in res["ranking"]}
    for s, coef in zip(systems[1:], fit.params):
        assert log[s] - log["base"] == pytest.approx(coef, abs=1e-6)


def test_bradley_terry_refuses_infinite_strengths_unless_prior():
    never_loses = [("A", "B", "A"), ("A", "C", "A"), ("B", "C", "B"), ("C", "B", "C")]
    with pytest.raises(ValueError, match="never lost"):
        bradley_terry(never_loses)
    with pytest.raises(ValueError, match="never compared"):
        bradley_terry([("A", "B", "A"), ("B", "A", "B"), ("C", "D", "C"), ("D", "C", "D")])
    res = bradley_terry(never_loses, prior=0.5)
    assert res["ranking"][0]["system"] == "A" and res["converged"]


def test_position_bias():
    fair = position_bias([("A", "B", "A"), ("B", "A", "A"), ("A", "B", "B"), ("B", "A", "B"), ("A", "B", "tie")])
    assert (fair["left_wins"], fair["right_wins"], fair["ties"], fair["left_win_rate"]) == (2, 2, 1, 0.5)
    assert not fair["biased"] and "no evidence" in fair["statement"]
    rng = random.Random(1)
    biased = []
    for _ in range(300):
        left, right = rng.sample(["A", "B"], 2)
        biased.append((left, right, left if rng.random() < 0.7 else right))
    out = position_bias(biased)
    assert out["biased"] and out["ci_low"] > 0.5
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(wilson_interval(out["left_wins"], 300))


def test_statements_count_in_words_and_say_when_there_is_nothing_yet():
    one = win_rate(["A", "B", "B", "tie"], a="A", b="B")
    assert "of 4 judgements (1 tie)" in one.statement
    none = win_rate([], a="A", b="B")
    assert none.statement == "no judgements of B against A yet" and "50%" not in none.statement
