"""Blind review (workbench.models.review): the stored, reproducible plan; blinding; the queue with overlap;
append-only judgements; results checked against statsmodels, scipy, krippendorff and hand counts;
the way back to the data; the CLI.

Evaluation runs are built without a model: answers are appended to a run's outputs.jsonl exactly
as the generator writes them and read in with `evaluation.ingest` (as tests/models/test_evaluate.py does)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import krippendorff
import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from workbench.core.auth import User
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, write_version
from workbench.data.demo import generate_tickets
from workbench.labels import flags
from workbench.models import eval_items, eval_setup, evaluation, review_actions, review_results
from workbench.models import review as R

SECRETS = ("SECRET-MODEL-A", "SECRET-MODEL-B", "SECRET-MODEL-C")
ANN, BOB, CAT = User("ann", "reviewer"), User("bob", "reviewer"), User("cat", "reviewer")


def make_project(root: Path, records: int = 90, runs: int = 3) -> tuple[Store, list[int]]:
    """A ticket dataset with a train/test split (every third record is test) and `runs` evaluation
    runs whose answers name their model only in the evaluation's metadata, never in the text."""
    store = Store.open(root)
    rows = list(generate_tickets(records, seed=5))
    for i, r in enumerate(rows):
        r["split"] = "test" if i % 3 == 0 else "train"
    cols = ["prompt", "completion", "system", "messages", "category", "split"]
    write_version(store, "tickets", [pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in cols})],
                  kind="import", fmt="prompt-completion", recipe={})
    evals = []
    for k, label in enumerate(SECRETS[:runs]):
        run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec(f"/models/base-{label}", label=label,
                                                                             run_id=f"run-{label}"))
        record_outputs(store, run, {i: f"Answer {'xyz'[k]}{i}: thank you for writing, we will help."
                                    for i in range(run.items)})
        evals.append(run.eval_id)
    return store, evals


def record_outputs(store: Store, run, outputs: dict[int, str]) -> None:
    with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "a", encoding="utf-8") as f:
        for item, text in outputs.items():
            f.write(json.dumps({"item": item, "output": text}) + "\n")
    evaluation.ingest(store, run.eval_id)


def judge_plan(store, rv, who: User, pick) -> None:
    """Judge every item of the plan in order, straight through `submit`; pick(item, plan row) -> kwargs."""
    for item, p in R.review_items(store, rv).set_index("item").iterrows():
        R.submit(store, rv, item, user=who, **pick(item, p))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    store, evals = make_project(tmp_path_factory.mktemp("review") / "p")
    yield store, evals
    store.close()


def judge_all(store, rv, who: User, pick) -> int:
    """Work through the reviewer's queue; pick(blind_item) -> submit kwargs."""
    n = 0
    while (item := R.next_item(store, rv, who)) is not None:
        R.submit(store, rv, item, user=who, **pick(R.blind_item(store, rv, item, who)))
        n += 1
    return n


# ---------------------------------------------------------------- the plan: sample, sides, order

def test_plan_is_stored_and_reproducible_from_its_seed(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], sample_size=12, overlap=2, seed=1234)
    stored = R.review_items(store, rv)
    items = R.eligible_items(store, evals[:2])
    # numpy's PCG64 from the stored seed: the sample, one coin per item for the sides, then the queue order
    rng = np.random.default_rng(1234)
    sample = rng.choice(np.array(sorted(items)), size=12, replace=False)
    coins = rng.random(12)
    order = rng.permutation(12)
    expected = [(str(p + 1), int(sample[u]), evals[1] if coins[u] < 0.5 else evals[0]) for p, u in enumerate(order)]
    assert list(zip(stored["item"], stored["eval_item"], stored["left_eval"])) == expected
    assert all({int(a), int(b)} == set(evals[:2]) for a, b in zip(stored["left_eval"], stored["right_eval"]))
    again = R.create_review(store, evals[:2], sample_size=12, overlap=2, seed=rv.seed)
    cols = ["item", "eval_item", "left_eval", "right_eval"]
    assert R.review_items(store, again)[cols].equals(stored[cols])
    other = R.create_review(store, evals[:2], sample_size=12, overlap=2, seed=99)
    assert not R.review_items(store, other)[cols].equals(stored[cols])
    assert R.create_review(store, evals[:2], sample_size=3).seed >= 0  # a random seed is drawn and stored


def test_sides_are_a_fair_coin_and_pairs_are_spread_evenly(tmp_path):
    store, evals = make_project(tmp_path / "p", records=900)
    try:
        rv = R.create_review(store, evals[:2], sample_size=300, seed=5)
        plan = R.review_items(store, rv)
        left_a = int((plan["left_eval"] == evals[0]).sum())
        assert stats.binomtest(left_a, 300).pvalue > 0.01
        three = R.review_items(store, R.create_review(store, evals, sample_size=300, seed=6))
        pairs = Counter(frozenset((int(a), int(b))) for a, b in zip(three["left_eval"], three["right_eval"]))
        assert set(pairs) == {frozenset(p) for p in combinations(evals, 2)} and set(pairs.values()) == {100}
        assert three["eval_item"].is_unique
    finally:
        store.close()


def test_rating_review_shows_each_run_alone(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], kind="rating", questions=["tone", "follows policy"], sample_size=5, seed=2)
    plan = R.review_items(store, rv)
    assert len(plan) == 10 and plan["right_eval"].isna().all()
    assert Counter(zip(plan["eval_item"], plan["left_eval"])) == Counter(
        {(i, e): 1 for i in set(plan["eval_item"]) for e in evals[:2]})
    assert rv.question_names == ["tone", "follows policy"]


@pytest.mark.parametrize("kwargs, message", [
    ({"evals": [1]}, "two or more"),
    ({"evals": [1, 1]}, "given twice"),
    ({"evals": [1, 2], "sample_size": 10_000}, "expected 1 to 30"),
    ({"evals": [1, 2], "kind": "stars"}, "kind 'stars'"),
    ({"evals": [1, 2], "overlap": 0}, "overlap"),
    ({"evals": [1], "kind": "rating", "questions": ["tone", "Tone"]}, "given twice"),
    ({"evals": [1], "kind": "rating", "questions": [" "]}, "at least one question"),
    ({"evals": [1, 2], "reviewers": ["ann"], "overlap": 2}, "cannot give 2 judgements"),
    ({"evals": [1, 2], "name": "secret-model-a vs b"}, "name mentions 'SECRET-MODEL-A'"),
    ({"evals": [1, 2], "instructions": "Compare with eval 2 carefully"}, "instructions mentions 'eval 2'"),
])
def test_bad_reviews_are_refused_with_what_to_do(project, kwargs, message):
    store, _ = project
    evals = kwargs.pop("evals")
    with pytest.raises(WorkbenchError, match=message):
        R.create_review(store, evals, **kwargs)


def test_runs_on_other_test_items_cannot_be_reviewed_together(tmp_path):
    store, evals = make_project(tmp_path / "p", records=30, runs=1)
    try:
        other = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("m"), split="train")
        record_outputs(store, other, {i: "x" for i in range(other.items)})
        with pytest.raises(WorkbenchError, match="not run on the same test items"):
            R.create_review(store, [evals[0], other.eval_id])
        with pytest.raises(WorkbenchError, match="may not evaluate"):
            R.create_review(store, evals, kind="rating", user=ANN)
    finally:
        store.close()


# ---------------------------------------------------------------- blinding and the queue

def test_the_reviewer_sees_texts_and_nothing_that_names_a_run(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], sample_size=4, overlap=1, seed=3, name="Support answers")
    item = R.next_item(store, rv, ANN)
    blind = R.blind_item(store, rv, item, ANN)
    plan = R.review_items(store, rv).set_index("item").loc[item]
    runs = {e: evaluation.get_eval(store, e) for e in evals[:2]}
    expected = [store.cursor().execute("SELECT output FROM wb_eval_outputs WHERE eval_id = ? AND item = ?",
                                       [int(e), int(plan["eval_item"])]).fetchall()[0][0]
                for e in (plan["left_eval"], plan["right_eval"])]
    assert list(blind.responses) == expected
    assert blind.prompt[-1]["role"] == "user" and blind.reference
    shown = repr(blind)
    for r in runs.values():
        for secret in (r.model_label, r.base_model, r.run_id, r.folder, f"eval-{r.eval_id}"):
            assert secret not in shown
    assert set(vars(blind)) == {"review_id", "item", "kind", "prompt", "responses", "reference", "questions",
                                "instructions", "category", "mine"}
    hidden = R.create_review(store, evals[:2], sample_size=2, seed=3, show_reference=False)
    assert R.blind_item(store, hidden, R.next_item(store, hidden, ANN), ANN).reference is None


def test_queue_gives_each_item_to_overlap_reviewers(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], sample_size=5, overlap=2, seed=4)
    assert judge_all(store, rv, ANN, lambda b: {"choice": "left"}) == 5
    assert judge_all(store, rv, BOB, lambda b: {"choice": "right"}) == 5
    assert R.next_item(store, rv, CAT) is None  # every item has its two judgements
    assert R.progress(store, rv, ANN) == {"done": 5, "remaining": 0, "complete": 5, "total": 5}
    assert R.progress(store, rv, CAT)["remaining"] == 0


def test_only_named_reviewers_and_roles_that_may_review_can_judge(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], sample_size=3, overlap=1, reviewers=["ann"], seed=1)
    assert rv.reviewers == ("ann",)
    with pytest.raises(WorkbenchError, match="bob is not one of the reviewers"):
        R.next_item(store, rv, BOB)
    with pytest.raises(WorkbenchError, match="may not review"):
        R.next_item(store, rv, User("ann", "annotator"))
    assert [r.review_id for r in R.list_reviews(store, BOB)].count(rv.review_id) == 0
    with pytest.raises(WorkbenchError, match="may not read all"):
        review_results.results(store, rv, user=ANN)  # results name the runs


def test_judgements_are_validated_and_append_only(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], sample_size=2, overlap=1, seed=8)
    item = R.next_item(store, rv, ANN)
    with pytest.raises(WorkbenchError, match="expected left, right or tie"):
        R.submit(store, rv, item, choice="A", user=ANN)
    with pytest.raises(WorkbenchError, match="no item '999'"):
        R.submit(store, rv, "999", choice="left", user=ANN)
    R.submit(store, rv, item, choice="left", reason="polite", user=ANN)
    R.submit(store, rv, item, choice="tie", user=ANN)
    hist = R.history(store, rv, item)
    assert list(hist["value"]) == ["left", "tie"] and list(hist["reason"].fillna("")) == ["polite", ""]
    assert R.my_judgement(store, rv, item, ANN) == {"preference": "tie"}
    assert review_results.results(store, rv, resamples=0)["win_rates"][0]["ties"] == 1

    rating = R.create_review(store, evals[:1], kind="rating", questions=["tone", "policy"], sample_size=2, seed=1)
    item = R.next_item(store, rating, ANN)
    with pytest.raises(WorkbenchError, match="rate 'policy' too"):
        R.submit(store, rating, item, ratings={"tone": 4}, user=ANN)
    with pytest.raises(WorkbenchError, match="'tone': 6; expected a whole number from 1 to 5"):
        R.submit(store, rating, item, ratings={"tone": 6, "policy": 1}, user=ANN)
    with pytest.raises(WorkbenchError, match="'style' is not a question"):
        R.submit(store, rating, item, ratings={"tone": 3, "policy": 1, "style": 2}, user=ANN)
    assert R.submit(store, rating, item, ratings={"tone": "4", "policy": 2.0}, user=ANN) == {"tone": "4", "policy": "2"}


KILL_SCRIPT = """
import sys
from workbench.models import review as R
from workbench.models import review_actions, review_results
from workbench.core.auth import User
from workbench.core.store import Store

store = Store.open(sys.argv[1])
rv = R.get_review(store, int(sys.argv[2]))
n = 0
while True:
    who = User(f"r{n % 5}", "reviewer")
    item = str(n % rv.sample_size + 1)
    R.submit(store, rv, item, choice=("left", "right", "tie")[n % 3], user=who)
    print(f"ack {item} {who.name}", flush=True)
    n += 1
"""


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_judgement(tmp_path):
    store, evals = make_project(tmp_path / "p", records=30, runs=2)
    rv = R.create_review(store, evals, sample_size=10, overlap=5, seed=1)
    store.close()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "p"), str(rv.review_id)],
                            stdout=subprocess.PIPE, text=True, env=env)
    acks = []
    try:
        deadline = time.monotonic() + 60
        while len(acks) < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acks.append(tuple(line.split()[1:3]))
        assert len(acks) >= 40, "the writer did not get going"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Store.open(tmp_path / "p") as store:
        hist = R.history(store, rv.review_id)
    stored = Counter(zip(hist["item"], hist["reviewer"]))
    assert all(stored[k] >= n for k, n in Counter(acks).items())


# ---------------------------------------------------------------- results

def scripted(store, evals, *, seed: int = 21, size: int = 20):
    """A pairwise review judged by three reviewers with a fixed script (straight through `submit`;
    the queue is tested above); returns (review, judgement rows)."""
    rv = R.create_review(store, evals[:2], sample_size=size, overlap=3, seed=seed)
    plan = R.review_items(store, rv).set_index("item")
    for who in (ANN, BOB, CAT):
        for item, p in plan.iterrows():
            k = int(item)
            prefers_b = (k % 4 != 0) if who is not CAT else (k % 3 != 0)
            b_left = p["left_eval"] == evals[1]
            choice = ("left" if b_left else "right") if prefers_b else ("right" if b_left else "left")
            R.submit(store, rv, item, choice="tie" if k % 7 == 0 and who is ANN else choice, user=who)
    return rv, R.judgements(store, rv)


@pytest.fixture(scope="module")
def three_reviewers(project):
    store, evals = project
    return scripted(store, evals)


def test_win_rate_and_wilson_interval_match_hand_counts_and_statsmodels(project, three_reviewers):
    store, evals = project
    rv, df = three_reviewers
    res = review_results.results(store, rv, resamples=0)
    wins_b = int((df["winner_eval"] == evals[1]).sum())
    wins_a = int((df["winner_eval"] == evals[0]).sum())
    ties = int(df["winner_eval"].isna().sum())
    assert wins_a + wins_b + ties == 60 and ties > 0
    w = res["win_rates"][0]
    assert (w["wins_b"], w["wins_a"], w["ties"], w["n"]) == (wins_b, wins_a, ties, 60)
    assert res["win_rate"] == pytest.approx(wins_b / (wins_a + wins_b))
    low, high = proportion_confint(wins_b, wins_a + wins_b, alpha=0.05, method="wilson")
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert res["ties"] == ties and res["n_judgements"] == 60 and res["n_reviewers"] == 3
    # per category: the counts add up to the whole
    by_cat = res["by_category"]
    assert sum(c["wins_b"] for c in by_cat) == wins_b and sum(c["ties"] for c in by_cat) == ties
    # position bias: how often the left answer won, by hand
    left = int((df["value"] == "left").sum())
    right = int((df["value"] == "right").sum())
    pb = res["position_bias"]
    assert (pb["left_wins"], pb["right_wins"], pb["ties"]) == (left, right, ties)
    assert (pb["ci_low"], pb["ci_high"]) == pytest.approx(proportion_confint(left, left + right, method="wilson"))
    ann = next(r for r in res["position_bias_by_reviewer"] if r["reviewer"] == "ann")
    mine = df[df["reviewer"] == "ann"]
    assert ann["left_wins"] == int((mine["value"] == "left").sum())


def test_pairwise_agreement_is_krippendorffs_nominal_alpha_over_the_winner(project, three_reviewers):
    store, evals = project
    rv, df = three_reviewers
    res = review_results.results(store, rv, resamples=200, seed=1)
    code = {evals[0]: 0.0, evals[1]: 1.0}
    items = sorted(df["item"].unique(), key=int)
    people = ["ann", "bob", "cat"]
    matrix = np.full((3, len(items)), np.nan)
    for r in df.itertuples():
        matrix[people.index(r.reviewer), items.index(r.item)] = 2.0 if np.isnan(r.winner_eval) else code[r.winner_eval]
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    assert res["agreement"]["krippendorff_alpha"] == pytest.approx(expected, abs=1e-9)
    assert res["krippendorff_alpha"] == res["agreement"]["krippendorff_alpha"]
    a = res["agreement"]
    assert a["level"] == "nominal" and a["ci_low"] <= a["krippendorff_alpha"] <= a["ci_high"] and a["reading"]


def test_ratings_mean_interval_and_ordinal_alpha(project):
    store, evals = project
    rv = R.create_review(store, evals[:2], kind="rating", questions=["tone", "policy"], sample_size=8, overlap=2,
                         seed=31)

    def pick(who):
        def f(item, p):
            e = p["left_eval"]
            k = int(item)
            base = 4 if e == evals[1] else 2
            return {"ratings": {"tone": min(5, base + (k + len(who.name) * (who is BOB)) % 2),
                                "policy": 1 + (k * (2 if who is ANN else 3)) % 5}}
        return f

    judge_plan(store, rv, ANN, pick(ANN))
    judge_plan(store, rv, BOB, pick(BOB))
    res = review_results.results(store, rv, resamples=0)
    df = R.judgements(store, rv)
    for row in res["ratings"]:
        x = df[(df["question"] == row["question"]) & (df["left_eval"] == row["eval_id"])]["value"].astype(float)
        low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert (row["n"], row["mean"]) == (len(x), pytest.approx(x.mean()))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    tone = {r["eval_id"]: r["mean"] for r in res["ratings"] if r["question"] == "tone"}
    assert tone[evals[1]] > tone[evals[0]]
    for q in ("tone", "policy"):
        sub = df[df["question"] == q]
        items = sorted(sub["item"].unique(), key=int)
        matrix = np.full((2, len(items)), np.nan)
        for r in sub.itertuples():
            matrix[["ann", "bob"].index(r.reviewer), items.index(r.item)] = float(r.value)
        expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                      value_domain=[1, 2, 3, 4, 5])
        assert res["agreement"][q]["krippendorff_alpha"] == pytest.approx(expected, abs=1e-9)
        assert res["agreement"][q]["level"] == "ordinal"
    assert {(c["question"], c["eval_id"]) for c in res["by_category"]} <= {(q, e) for q in ("tone", "policy")
                                                                           for e in evals[:2]}


def test_bradley_terry_ranks_three_runs(project):
    from metrics.ratings import bradley_terry

    store, evals = project
    rv = R.create_review(store, evals, sample_size=30, overlap=1, seed=41)
    rank = {evals[0]: 0, evals[1]: 1, evals[2]: 2}  # C beats B beats A, except every fifth item

    def pick(item, p):
        better_left = rank[p["left_eval"]] > rank[p["right_eval"]]
        if int(item) % 5 == 0:
            better_left = not better_left
        return {"choice": "left" if better_left else "right"}

    judge_plan(store, rv, ANN, pick)
    res = review_results.results(store, rv, resamples=0)
    order = [r["system"] for r in res["bradley_terry"]["ranking"]]
    labels = {r["eval_id"]: r["label"] for r in res["runs"]}
    assert order == [labels[evals[2]], labels[evals[1]], labels[evals[0]]]
    df = R.judgements(store, rv)
    expected = bradley_terry([(labels[int(a)], labels[int(b)], labels[int(w)])
                              for a, b, w in zip(df["left_eval"], df["right_eval"], df["winner_eval"])])
    assert [r["strength"] for r in res["bradley_terry"]["ranking"]] == pytest.approx(
        [r["strength"] for r in expected["ranking"]])
    assert len(res["win_rates"]) == 3


# ---------------------------------------------------------------- back to the data

def test_neighbours_flags_edits_and_the_loop_to_a_new_review(tmp_path):
    from workbench.models import runs

    store, evals = make_project(tmp_path / "p", records=60, runs=2)
    try:
        rv = R.create_review(store, evals, sample_size=6, overlap=1, seed=2)
        judge_all(store, rv, ANN, lambda b: {"choice": "left", "reason": "rude"})
        worst = review_results.worst_items(store, rv)
        assert worst and all(set(w["outputs"]) <= set(evals) for w in worst)
        item = worst[0]["item"]
        found = review_actions.neighbours(store, rv, item, k=3)
        version = get_version(store, "tickets")
        assert found["version"] == version.ref and len(found["records"]) == 3
        assert found["records"][0]["similarity"] >= found["records"][-1]["similarity"]
        rows = [n["row"] for n in found["records"]]
        assert review_actions.flag(store, rv, item, rows, "rude like the judged answer") == 3
        flagged = flags.flags(store, version)
        assert sorted(f["row"] for f in flagged) == sorted(rows)
        assert all(f["eval_id"] == evals[-1] and f"review {rv.review_id}" in f["reason"] for f in flagged)
        with pytest.raises(WorkbenchError, match="corrected response is empty"):
            review_actions.edit_response(store, rv, item, rows[0], "  ")
        review_actions.edit_response(store, rv, item, rows[0], "First try.")
        review_actions.edit_response(store, rv, item, rows[0], "Sorry for the trouble: here is how to get your refund.")
        new = review_actions.write_edits_version(store, rv)
        assert new.parent_id == version.version_id and new.recipe["review_id"] == rv.review_id
        changed = eval_items.records(store, new, [rows[0]])[0]
        assert changed["completion"] == "Sorry for the trouble: here is how to get your refund."
        assert eval_items.records(store, new, [rows[1]])[0]["completion"] == \
            eval_items.records(store, version, [rows[1]])[0]["completion"]
        # the next clicks: retrain on the new version, evaluate, review again
        run_id = runs.prepare_run(store, new.ref, runs.default_config(store))
        retrained = evaluation.create_eval(store, new.ref, model=eval_setup.ModelSpec("/m", run_id=run_id, label="v2"))
        record_outputs(store, retrained, {i: f"better {i}" for i in range(retrained.items)})
        again = R.create_review(store, [evals[0], retrained.eval_id], sample_size=4, seed=3)
        assert review_actions.training_version(store, retrained.eval_id).ref == new.ref
        out = review_actions.loop(store, rv)
        assert (out["flags"], out["edits"]) == (3, 2)
        assert [v["version"] for v in out["versions"]] == [new.ref]
        assert [t["run_id"] for t in out["retrains"]] == [run_id]
        assert [e["eval_id"] for e in out["evals"]] == [retrained.eval_id]
        assert [r["review_id"] for r in out["reviews"]] == [again.review_id]
        table = review_results.history_table(store)
        assert [t["review_id"] for t in table] == [rv.review_id, again.review_id]
        assert new.ref in table[1]["trained_on"]
    finally:
        store.close()


# ---------------------------------------------------------------- command line

def test_cli_create_items_results_and_loop(tmp_path, capsys):
    from workbench.cli.main import main

    store, evals = make_project(tmp_path / "p", records=30, runs=2)
    store.close()
    project = str(tmp_path / "p")

    def run(*argv):
        code = main([*argv, "--project", project, "--json"])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err

    code, created, _ = run("review", "create", "--evals", f"{evals[0]},{evals[1]}", "--sample", "5",
                           "--overlap", "1", "--seed", "17")
    assert code == 0 and created["seed"] == 17 and created["sample_size"] == 5
    code, items, _ = run("review", "items", str(created["review_id"]))
    plan = R.plan_items(17, list(range(10)), evals, "pairwise", 5)
    assert [(i["item"], i["eval_item"], i["left_eval"]) for i in items["items"]] == \
        [(p["item"], p["eval_item"], p["shown"][0]) for p in plan]
    with Store.open(project) as store:
        judge_all(store, created["review_id"], ANN, lambda b: {"choice": "right"})
    code, res, _ = run("review", "results", str(created["review_id"]), "--resamples", "0")
    assert code == 0 and res["n_judgements"] == 5 and res["position_bias"]["right_wins"] == 5
    assert "krippendorff_alpha" in res
    code, listed, _ = run("review", "list")
    assert listed["reviews"][0]["complete"] == 5
    code, _, err = run("review", "create", "--evals", "x")
    assert code == 1 and "expected evaluation ids" in err
    code, rating, _ = run("review", "create", "--evals", str(evals[0]), "--kind", "rating", "--questions",
                          "tone,resolves the issue", "--hide-reference")
    assert rating["questions"] == ["tone", "resolves the issue"] and rating["show_reference"] is False
    code, loop, _ = run("review", "loop", str(created["review_id"]))
    assert code == 0 and loop["flags"] == 0
