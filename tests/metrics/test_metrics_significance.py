"""Corpus scores, slices and the paired bootstrap: checked against sacreBLEU/rouge-score on the explicit
items, and on constructed cases whose answer is known."""

import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from metrics import corpus, significance
from metrics.significance import paired_bootstrap, paired_bootstrap_values, resample_counts

SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)


def _texts(seed: int, n: int):
    rng = random.Random(seed)
    words = "the refund order was shipped to you today and we are sorry for the delay".split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) for _ in range(n)]
    good = [" ".join(w for w in r.split() if rng.random() > 0.1) for r in refs]
    bad = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) for _ in range(n)]
    return refs, good, bad


def test_corpus_scores_equal_reference_libraries():
    refs, good, _ = _texts(1, 50)
    scores = corpus.corpus_scores(corpus.item_stats(good, refs))
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(good, [refs]).score, abs=1e-8)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(good, [refs]).score, abs=1e-8)
    assert scores["length_ratio"] == pytest.approx(sacrebleu.corpus_bleu(good, [refs]).ratio, abs=1e-12)
    for t in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = np.mean([SCORER.score(r, p)[t].fmeasure for p, r in zip(good, refs)])
        assert scores[t] == pytest.approx(expected, abs=1e-12)
    assert scores["exact_match"] == np.mean([p == r for p, r in zip(good, refs)])


def test_resampled_scores_equal_sacrebleu_on_the_resampled_corpus():
    refs, good, _ = _texts(2, 30)
    stats = corpus.item_stats(good, refs, metrics=["bleu", "chrf", "rouge"])
    counts = next(resample_counts(30, 3, seed=5))
    scores = corpus.resampled_scores(stats, counts)
    for row in range(3):
        idx = [i for i in range(30) for _ in range(counts[row, i])]
        hyps, rs = [good[i] for i in idx], [refs[i] for i in idx]
        assert scores["bleu"][row] == pytest.approx(sacrebleu.corpus_bleu(hyps, [rs]).score, abs=1e-8)
        assert scores["chrf"][row] == pytest.approx(sacrebleu.corpus_chrf(hyps, [rs]).score, abs=1e-8)
        expected = np.mean([SCORER.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, rs)])
        assert scores["rougeL"][row] == pytest.approx(expected, abs=1e-12)


def test_resample_counts_draw_n_items_with_replacement():
    batches = list(resample_counts(7, 250, seed=1))
    assert [b.shape for b in batches] == [(100, 7), (100, 7), (50, 7)]
    assert all((b.sum(axis=1) == 7).all() for b in batches)
    again = list(resample_counts(7, 250, seed=1))
    assert all((x == y).all() for x, y in zip(batches, again))


def test_scores_by_group_recompute_corpus_metrics_per_group():
    refs, good, _ = _texts(3, 40)
    groups = ["billing" if i % 3 else "shipping" for i in range(40)]
    groups[5] = None
    groups[6] = float("nan")
    by = corpus.scores_by_group(corpus.item_stats(good, refs), groups)
    assert set(by) == {"billing", "shipping", None}
    for g in ("billing", "shipping", None):
        idx = [i for i, x in enumerate(groups) if x == g or (g is None and not isinstance(x, str))]
        hyps, rs = [good[i] for i in idx], [refs[i] for i in idx]
        assert by[g]["n"] == len(idx)
        assert by[g]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [rs]).score, abs=1e-8)
        assert by[g]["rouge1"] == pytest.approx(np.mean([SCORER.score(r, h)["rouge1"].fmeasure
                                                        for h, r in zip(hyps, rs)]), abs=1e-12)


def test_identical_systems_are_not_different():
    refs, good, _ = _texts(4, 60)
    stats = corpus.item_stats(good, refs)
    results = paired_bootstrap(stats, stats, n_resamples=200)
    for r in results.values():
        assert r.diff == 0 and r.ci_low == 0 and r.ci_high == 0 and r.p_value == 1.0 and not r.significant
        assert "score the same" in r.statement and "not significant" in r.statement


def test_clearly_better_system_is_significant_in_both_directions():
    refs, good, bad = _texts(5, 80)
    a, b = corpus.item_stats(bad, refs), corpus.item_stats(good, refs)
    res = paired_bootstrap(a, b, metrics=["bleu", "rougeL"], n_resamples=300, seed=3)
    assert list(res) == ["bleu", "rougeL"]
    bleu = res["bleu"]
    assert bleu.diff > 10 and 0 < bleu.ci_low < bleu.diff < bleu.ci_high and bleu.significant
    assert bleu.p_value == pytest.approx(2 / 301)
    assert bleu.statement.startswith(f"B is better than A on BLEU by {bleu.diff:.1f} points (95% CI ")
    assert bleu.statement.endswith("the difference is significant (p = 0.007)")
    rev = paired_bootstrap(b, a, metrics=["bleu"], n_resamples=300, seed=3, names=("tuned", "base"))["bleu"]
    assert rev.diff == pytest.approx(-bleu.diff) and rev.ci_high < 0 and rev.significant
    assert rev.statement.startswith("base is worse than tuned on BLEU by")


def test_constant_per_item_gain_gives_a_degenerate_interval():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 0.8, 200)
    res = paired_bootstrap_values(a, a + 0.1, metric="rougeL")
    assert res.diff == pytest.approx(0.1)
    assert res.ci_low == pytest.approx(0.1) and res.ci_high == pytest.approx(0.1) and res.significant
    assert res.statement.startswith("B is better than A on ROUGE-L by 0.100 (95% CI 0.100 to 0.100)")


def test_balanced_noise_is_not_significant_and_interval_matches_normal_theory():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 2000)
    d = rng.normal(0.0, 0.1, 2000)
    d -= d.mean()  # the true mean difference is exactly zero
    res = paired_bootstrap_values(a, a + d, n_resamples=1000, seed=7)
    assert abs(res.diff) < 1e-12 and not res.significant and res.p_value > 0.3
    half = 1.959964 * d.std(ddof=1) / np.sqrt(len(d))  # normal-theory 95% half-width of the mean
    assert res.ci_low == pytest.approx(-half, rel=0.15) and res.ci_high == pytest.approx(half, rel=0.15)
    shifted = paired_bootstrap_values(a, a + d + 0.02, n_resamples=1000, seed=7)
    assert shifted.significant and shifted.ci_low == pytest.approx(0.02 - half, abs=0.15 * half)


def test_same_seed_same_answer_and_errors():
    refs, good, bad = _texts(6, 30)
    a, b = corpus.item_stats(bad, refs, metrics=["bleu"]), corpus.item_stats(good, refs, metrics=["bleu"])
    r1 = paired_bootstrap(a, b, seed=11)["bleu"]
    r2 = paired_bootstrap(a, b, seed=11)["bleu"]
    assert (r1.ci_low, r1.ci_high, r1.p_value) == (r2.ci_low, r2.ci_high, r2.p_value)
    assert r1.n_resamples == 1000 and r1.to_json()["statement"] == r1.statement
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(a, corpus.item_stats(good[:5], refs[:5], metrics=["bleu"]))


def test_statement_wording_for_length_ratio():
    text = significance.statement("length_ratio", -0.05, -0.08, -0.02, True, 0.004)
    assert text == ("B's outputs are shorter than A's relative to the references, length ratio down by 0.050 "
                    "(95% CI -0.080 to -0.020); the difference is significant (p = 0.004)")


def test_any_metric_through_index_functions_macro_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    y = rng.choice(["billing", "refund", "shipping"], 150)
    noisy = np.where(rng.random(150) < 0.5, y, rng.choice(["billing", "refund", "shipping"], 150))
    res = significance.paired_bootstrap_fn(lambda i: f1_score(y[i], noisy[i], average="macro"),
                                           lambda i: f1_score(y[i], y[i], average="macro"), 150,
                                           metric="macro_f1", n_resamples=100, seed=1)
    assert res.b == 1.0 and res.a == pytest.approx(f1_score(y, noisy, average="macro"))
    assert res.significant and 0 < res.ci_low <= res.diff <= res.ci_high
    same = significance.paired_bootstrap_fn(lambda i: (y[i] == noisy[i]).mean(),
                                            lambda i: (y[i] == noisy[i]).mean(), 150, n_resamples=100)
    assert same.p_value == 1.0 and not same.significant
    # the index-based and the statistics-based bootstrap agree on a mean (same seed, same draws)
    acc_a, acc_b = (y == noisy).astype(float), np.ones(150)
    by_values = paired_bootstrap_values(acc_a, acc_b, n_resamples=200, seed=4)
    by_fn = significance.paired_bootstrap_fn(lambda i: acc_a[i].mean(), lambda i: acc_b[i].mean(), 150,
                                             n_resamples=200, seed=4)
    assert (by_fn.ci_low, by_fn.ci_high) == pytest.approx((by_values.ci_low, by_values.ci_high), abs=1e-12)


def test_statistics_computed_ahead_in_batches_equal_the_whole_corpus_at_once():
    """An evaluation's answers scored batch by batch as they land (ItemStatsAhead), then the corpus: the same
    statistics as item_stats on the whole list, so the same sacreBLEU / rouge-score numbers; an answer that
    changed since (or an item never seen) is computed afresh."""
    refs, good, bad = _texts(5, 40)
    ahead = corpus.ItemStatsAhead()
    order = list(range(40))
    random.Random(0).shuffle(order)
    for start in range(0, 30, 6):  # batches in the generator's length order, not the items' order
        chunk = order[start:start + 6]
        ahead.add(chunk, [good[i] for i in chunk], [refs[i] for i in chunk])
    stale = order[0]
    ahead.add([stale], [bad[stale]], [refs[stale]])  # seen with another answer than the stored one
    stats = ahead.stats_for(list(range(40)), good, refs)
    assert ahead.reused == 29  # 30 seen, one of them stale; 10 never seen
    whole = corpus.item_stats(good, refs)
    for name in ("bleu", "chrf", "exact_match"):
        assert np.array_equal(getattr(stats, name), getattr(whole, name)), name
    assert all(np.array_equal(stats.rouge[t], whole.rouge[t]) for t in whole.rouge)
    scores = corpus.corpus_scores(stats)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(good, [refs]).score, abs=1e-8)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(good, [refs]).score, abs=1e-8)
    expected = np.mean([SCORER.score(r, p)["rougeL"].fmeasure for p, r in zip(good, refs)])
    assert scores["rougeL"] == pytest.approx(expected, abs=1e-12)
    everything = ahead.stats_for([], [], [])
    assert everything.n == 0 and ahead.reused == 0
    with pytest.raises(ValueError, match="2 keys, 1 predictions"):
        ahead.add([1, 2], ["a"], ["b"])
