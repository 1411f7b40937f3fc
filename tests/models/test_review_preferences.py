"""Reviews become preference datasets (workbench.models.review_preferences): the pairs, KTO examples and counts
are recomputed here in plain Python from the raw judgement history (latest answer per reviewer), and the
written version carries the recipe and re-exports as TRL's format."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import combinations

import pytest

from tests.models.test_review import ANN, BOB, CAT, judge_plan, make_project
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.export import export_version
from workbench.models import evaluation, review_actions
from workbench.models import review as R
from workbench.models.review_preferences import write_preferences


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    store, evals = make_project(tmp_path_factory.mktemp("prefs") / "p", records=60, runs=3)
    yield store, evals
    store.close()


def latest(store, rv) -> dict:
    """{(item, reviewer, question): value}: the newest row of the append-only history wins."""
    out = {}
    for row in R.history(store, rv).itertuples():  # oldest first
        out[(row.item, row.reviewer, row.question)] = row.value
    return out


def plan(store, rv) -> dict:
    return {p.item: p for p in R.review_items(store, rv).itertuples()}


def test_pairwise_majority_pairs_and_counts_match_a_plain_recount(project, tmp_path):
    store, evals = project
    rv = R.create_review(store, evals[:2], kind="pairwise", sample_size=12, overlap=3, seed=3)
    choices = ("left", "right", "tie")
    for k, who in enumerate((ANN, BOB, CAT)):
        judge_plan(store, rv, who, lambda item, p, k=k: {"choice": choices[(int(item) * (k + 1) + k) % 3]})
    R.submit(store, rv, "1", choice="right", user=ANN)  # a changed mind: the final value counts
    R.submit(store, rv, "1", choice="right", user=BOB)
    out = write_preferences(store, rv, rule="majority", out="prefs")

    items = plan(store, rv)
    votes = defaultdict(lambda: defaultdict(int))
    for (item, _who, _q), value in latest(store, rv).items():
        p = items[item]
        votes[item][{"left": p.left_eval, "right": p.right_eval, "tie": "tie"}[value]] += 1
    expected, ties, split = {}, 0, 0
    for item, v in votes.items():
        top = [w for w, n in v.items() if n * 2 > sum(v.values())]
        if not top:
            split += 1
        elif top[0] == "tie":
            ties += 1
        else:
            other = items[item].right_eval if top[0] == items[item].left_eval else items[item].left_eval
            expected[item] = (int(top[0]), int(other))
    assert expected and ties and split  # the scheme gives all three outcomes
    assert out["counts"] == {"items": 12, "pairs": len(expected), "ties": ties, "disagreements": split}
    version = get_version(store, out["version"])
    assert version.format == "preference" and version.row_count == len(expected)
    assert version.recipe["review_id"] == rv.review_id and version.recipe["rule"] == "majority"
    assert version.recipe["counts"] == out["counts"]
    rows = store.cursor().execute(f"SELECT review_item, chosen_eval, rejected_eval, eval_item, completion, rejected, "
                                  f"prompt FROM {version.table_name}").fetchall()
    assert {r[0]: (r[1], r[2]) for r in rows} == expected
    for _item, chosen, rejected, eval_item, chosen_text, rejected_text, prompt in rows:
        answers = evaluation.outputs(store, eval_item, [chosen, rejected])
        assert (chosen_text, rejected_text) == (answers[chosen], answers[rejected])
        row = evaluation.item_row(store, evals[0], eval_item)
        table = get_version(store, "tickets").table_name
        assert prompt == store.cursor().execute(f"SELECT prompt FROM {table} WHERE _row = {row}").fetchone()[0]
    loop = review_actions.loop(store, rv)  # the review's loop now leads to the preference version
    assert [v["version"] for v in loop["versions"]] == [version.ref]
    exported = export_version(store, version, "chat", tmp_path / "pairs.jsonl")
    first = json.loads(open(exported["path"], encoding="utf-8").readline())
    assert first["prompt"][-1]["role"] == "user" and first["chosen"][0]["role"] == "assistant"


def test_rating_gap_pairs_and_kto_examples_match_a_plain_recount(project):
    store, evals = project
    rv = R.create_review(store, evals, kind="rating", questions=["helpful"], sample_size=6, overlap=2, seed=9)
    for k, who in enumerate((ANN, BOB)):
        judge_plan(store, rv, who, lambda item, p, k=k: {"ratings": {
            "helpful": 1 + (int(p["eval_item"]) * 3 + evals.index(p["left_eval"]) * (2 + k)) % 5}})
    items = plan(store, rv)
    ratings = defaultdict(list)
    for (item, _who, _q), value in latest(store, rv).items():
        ratings[(items[item].eval_item, items[item].left_eval)].append(float(value))
    means = {key: sum(v) / len(v) for key, v in ratings.items()}

    out = write_preferences(store, rv, rule="gap", min_gap=2, out="gap-pairs")
    expected, below = set(), 0
    for i in {i for i, _ in means}:
        for a, b in combinations(sorted(e for j, e in means if j == i), 2):
            if abs(means[(i, a)] - means[(i, b)]) < 2:
                below += 1
            else:
                expected.add((i, a, b) if means[(i, a)] > means[(i, b)] else (i, b, a))
    assert expected and below
    assert out["counts"] == {"items": 6, "pairs": len(expected), "below_gap": below}
    version = get_version(store, out["version"])
    got = store.cursor().execute(f"SELECT eval_item, chosen_eval, rejected_eval FROM {version.table_name}").fetchall()
    assert set(got) == expected and version.recipe["min_gap"] == 2

    kto = write_preferences(store, rv, rule="kto", threshold=3, out="kto-examples")
    want = {(i, e): m > 3 for (i, e), m in means.items() if m != 3}
    assert kto["counts"] == {"answers": len(means), "desirable": sum(want.values()),
                             "undesirable": len(want) - sum(want.values()), "at_threshold": len(means) - len(want)}
    version = get_version(store, kto["version"])
    assert version.format == "kto"
    got = store.cursor().execute(f'SELECT eval_item, "eval", label FROM {version.table_name}').fetchall()
    assert {(i, e): lab for i, e, lab in got} == want
    with pytest.raises(WorkbenchError, match="needs a pairwise review"):
        write_preferences(store, rv, rule="majority", out="nope")


def test_cli_review_preferences(tmp_path, capsys):
    from workbench.cli.main import main

    store, evals = make_project(tmp_path / "p", records=30, runs=2)
    rv = R.create_review(store, evals, kind="pairwise", sample_size=4, overlap=1, seed=1)
    judge_plan(store, rv, ANN, lambda item, p: {"choice": "left" if int(item) % 2 else "right"})
    store.close()
    code = main(["review", "preferences", str(rv.review_id), "--rule", "majority", "--out", "prefs",
                 "--project", str(tmp_path / "p"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"] == {"items": 4, "pairs": 4, "ties": 0, "disagreements": 0}
    with Store.open(tmp_path / "p") as store:
        assert get_version(store, "prefs").row_count == 4
