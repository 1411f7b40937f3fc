"""A model as judge (workbench.models.judge, judge_results): strict parsing; a judge that always answers
"A" is all position bias; a judge copying the people's majority has kappa 1; agreement figures equal
scikit-learn's cohen_kappa_score, the `krippendorff` package and scipy's spearmanr recomputed from the
stored verdicts; the tiny model judges the same through the local path and through `workbench
serve-model` on a free port.

Judges other than tiny are fake OpenAI-compatible endpoints written here (http.server), answering by
a rule the test knows. Evaluation runs are built without a model (tests/models/test_review.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import krippendorff
import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from tests.models.test_review import record_outputs
from workbench.core.auth import User
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import write_version
from workbench.data.demo import generate_tickets
from workbench.models import eval_setup, evaluation, judge_results
from workbench.models import judge as J
from workbench.models import review as R

PEOPLE = [User("ann", "reviewer"), User("bob", "reviewer"), User("cat", "reviewer")]
ROOT = Path(__file__).resolve().parents[2]


def answer_text(k: int, i: int) -> str:
    # run 0 writes short answers, run 1 longer ones on most items: a length preference is measurable
    return f"[{'AB'[k]}{i}] we will help" + (" with your refund today, thank you" * (i % 4) if k else "")


def human_pick(who: int, eval_item: int) -> str:
    """Which run (0 or 1) or 'tie' a person prefers: they mostly agree, and disagree on a few items."""
    base = ["0", "1", "1", "tie", "1"][eval_item % 5]
    return ("0" if base != "0" else "1") if (eval_item + who) % 4 == 0 else base


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("judge") / "p")
    rows = list(generate_tickets(48, seed=5))
    for i, r in enumerate(rows):
        r["split"] = "test" if i % 3 == 0 else "train"
    cols = ["prompt", "completion", "system", "messages", "category", "split"]
    write_version(store, "tickets", [pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in cols})],
                  kind="import", fmt="prompt-completion", recipe={})
    evals = []
    for k in range(2):
        run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec(f"/models/m{k}", label=f"m{k}"))
        record_outputs(store, run, {i: answer_text(k, i) for i in range(run.items)})
        evals.append(run.eval_id)
    pairwise = R.create_review(store, evals, sample_size=12, overlap=3, seed=3)
    for w, who in enumerate(PEOPLE):
        for item, p in R.review_items(store, pairwise).set_index("item").iterrows():
            pick = human_pick(w, int(p["eval_item"]))
            side = "tie" if pick == "tie" else "left" if evals[int(pick)] == int(p["left_eval"]) else "right"
            R.submit(store, pairwise, item, choice=side, user=who)
    rating = R.create_review(store, evals[1:], kind="rating", questions=["helpful"], sample_size=10, overlap=2, seed=4)
    for w, who in enumerate(PEOPLE[:2]):
        for item, p in R.review_items(store, rating).set_index("item").iterrows():
            i = int(p["eval_item"])
            R.submit(store, rating, item, ratings={"helpful": 1 + (i + (w == 1 and i % 3 == 0)) % 5}, user=who)
    yield store, evals, pairwise, rating
    store.close()


class FakeJudge:
    """An OpenAI-compatible /v1/chat/completions answering reply(prompt); records what it was asked."""

    def __init__(self, reply):
        self.reply, self.prompts = reply, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.prompts.append(body["messages"][-1]["content"])
                data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                        "content": outer.reply(outer.prompts[-1])}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def shown(prompt: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((run, item) of answer A, (run, item) of answer B) from the markers the answers carry."""
    (a_run, a_item), (b_run, b_item) = re.findall(r"\[([AB])(\d+)\]", prompt.split("Answer A:")[1])[:2]
    return ("AB".index(a_run), int(a_item)), ("AB".index(b_run), int(b_item))


def run_judge(store, reply, **kw):
    fake = FakeJudge(reply)
    try:
        return J.create_judge(store, endpoint=fake.url, model="fake", **kw)
    finally:
        fake.close()


def majority_run(eval_item: int) -> str | None:
    """The people's majority (a run index or 'tie'), counted here from human_pick; None when tied."""
    (top, n), *rest = Counter(human_pick(w, eval_item) for w in range(3)).most_common() + [(None, 0)]
    return None if rest and rest[0][1] == n else top


# ---------------------------------------------------------------- parsing and templates

def test_verdicts_are_parsed_strictly():
    allowed = J.PAIRWISE_VERDICTS
    assert J.parse_verdict("Reason: shorter and polite.\nVerdict: B", allowed) == ("B", "shorter and polite.")
    assert J.parse_verdict("Reason: x\n**Verdict:** tie", allowed)[0] == "tie"
    assert J.parse_verdict("verdict: a.", allowed)[0] == "A"
    for bad in ("B is better", "Verdict: A\nVerdict: B", "Verdict: A or B", "Verdict: C", "", "Verdict:"):
        assert J.parse_verdict(bad, allowed)[0] is None, bad
    assert J.parse_verdict("Verdict: 6", J.RATING_VERDICTS)[0] is None
    assert J.parse_verdict("Verdict: 4", J.RATING_VERDICTS)[0] == "4"
    text = J.render("{answer_a} | {answer_b} | {unknown} | {prompt}", {"answer_a": "x", "answer_b": "y", "prompt": "p"})
    assert text == "x | y | {unknown} | p"
    with pytest.raises(WorkbenchError, match="answer_b"):
        J.check_template("only {answer_a}", "pairwise")


# ---------------------------------------------------------------- bias

def test_a_judge_that_always_answers_a_is_all_position_bias(project):
    store, evals, pairwise, _ = project
    run = run_judge(store, lambda p: "Reason: first is best.\nVerdict: A", review_id=pairwise.review_id)
    res = judge_results.results(store, run, resamples=50)
    assert run.status == "done" and res["n_items"] == 12 and res["unparseable"] == 0
    assert res["position_bias"] == 1.0
    assert res["inconsistent"] == res["judged_both_orders"] == 12 and res["inconsistent_share"] == 1.0
    assert res["counts"] == {"tie": 12}
    assert "less well than they agree with each other" in res["reading"]
    assert res["win_rates"][0]["flagged"] and res["win_rates"][0]["judge"]["ties"] == 12
    stored = J.verdicts(store, run)
    assert len(stored) == 24 and set(stored["verdict"]) == {"A"} and set(stored["order_no"]) == {0, 1}
    # each item was shown in both orders
    for _, g in stored.groupby("item"):
        assert list(g["first_eval"]) == list(reversed(list(g["second_eval"])))


def test_unparseable_answers_are_counted_never_guessed(project):
    store, _, pairwise, _ = project
    run = run_judge(store, lambda p: "I think B." if "[A1" in p.split("Answer A:")[1][:8] else "Verdict: B",
                    review_id=pairwise.review_id)
    items = judge_results.item_verdicts(store, run)
    raw = J.verdicts(store, run)
    bad_items = set(raw[raw["verdict"].isna()]["item"])
    assert bad_items and set(items[items["status"] == "unparseable"]["item"]) == bad_items
    assert judge_results.results(store, run, resamples=0)["unparseable"] == len(bad_items)


# ---------------------------------------------------------------- agreement against outside references

def copy_majority(prompt: str) -> str:
    (a_run, item), (b_run, _) = shown(prompt)
    top = majority_run(item)
    verdict = "tie" if top in (None, "tie") else "A" if int(top) == a_run else "B"
    return f"Reason: as the people said.\nVerdict: {verdict}"


def test_a_judge_copying_the_majority_has_kappa_one(project):
    store, _, pairwise, _ = project
    run = run_judge(store, copy_majority, review_id=pairwise.review_id)
    res = judge_results.results(store, run, resamples=50)
    a = res["agreement"][R.PREFERENCE]
    assert a["cohen_kappa"]["value"] == pytest.approx(1.0) and a["krippendorff_alpha"]["value"] == pytest.approx(1.0)
    assert res["inconsistent"] == 0 and a["percent_agreement"] == 1.0
    # it is closer to each person than people are to each other
    assert "better than they agree with each other" in a["reading"] and a["below_people"] is False
    assert np.trace(np.array(a["confusion"]["matrix"])) == a["n_majority"]


def own_values(store, run, review) -> tuple[dict, dict]:
    """From the stored rows, recomputed here: the judge's letter per test item (both orders must agree, else
    'tie') and every person's letter per test item."""
    letter = {e: "AB"[k] for k, e in enumerate(review.evals)}
    judge: dict = {}
    for item, g in J.verdicts(store, run).groupby("eval_item"):
        picks = {letter[int(r.second_eval if r.verdict == "B" else r.first_eval)] if r.verdict != "tie" else "tie"
                 for r in g.itertuples()}
        judge[int(item)] = picks.pop() if len(picks) == 1 else "tie"
    people: dict = {}
    for r in R.judgements(store, review).itertuples():
        people.setdefault(r.reviewer, {})[int(r.eval_item)] = "tie" if np.isnan(r.winner_eval) else letter[
            int(r.winner_eval)]
    return judge, people


def test_pairwise_agreement_equals_sklearn_and_krippendorff(project):
    store, _, pairwise, _ = project

    def noisy(prompt):  # the longer answer, else A
        (_, item), _ = shown(prompt)
        a, b = prompt.split("Answer A:")[1].split("Answer B:")
        return "Verdict: " + ("B" if len(b.split("Which answer")[0]) > len(a) + 5 else "A" if item % 2 else "tie")

    run = run_judge(store, noisy, review_id=pairwise.review_id)
    res = judge_results.results(store, run, resamples=0)
    a = res["agreement"][R.PREFERENCE]
    judge, people = own_values(store, run, pairwise)
    labels = ["A", "B", "tie"]
    majority = {}
    for item in judge:
        (top, n), *rest = Counter(people[p][item] for p in people).most_common() + [(None, 0)]
        if not (rest and rest[0][1] == n):
            majority[item] = top
    keys = sorted(majority)
    assert a["n_majority"] == len(keys)
    want = cohen_kappa_score([judge[k] for k in keys], [majority[k] for k in keys], labels=labels)
    assert a["cohen_kappa"]["value"] == pytest.approx(want, abs=1e-9)
    code = {lab: i for i, lab in enumerate(labels)}
    alpha = krippendorff.alpha(reliability_data=[[code[judge[k]] for k in keys], [code[majority[k]] for k in keys]],
                               level_of_measurement="nominal")
    assert a["krippendorff_alpha"]["value"] == pytest.approx(alpha, abs=1e-9)
    for row in a["by_reviewer"]:
        mine = sorted(people[row["reviewer"]])
        assert row["cohen_kappa"] == pytest.approx(cohen_kappa_score([judge[k] for k in mine],
                                                                     [people[row["reviewer"]][k] for k in mine],
                                                                     labels=labels), abs=1e-9)
    # the people's yardstick: mean pairwise kappa between people (Light's)
    names = sorted(people)
    light = np.mean([cohen_kappa_score([people[x][k] for k in sorted(people[x])], [people[y][k] for k in sorted(people[x])],
                                       labels=labels) for i, x in enumerate(names) for y in names[i + 1:]])
    assert a["people_kappa_mean"]["value"] == pytest.approx(light, abs=1e-9)
    # length bias: how often the judge's winner is the longer answer, counted here
    ends = [(k, judge[k]) for k in judge if judge[k] != "tie" and k % 4]  # item % 4 == 0: equal lengths
    longer = sum(v == "B" for _, v in ends)
    lb = res["length_bias"]["judge"]
    assert (lb["longer_wins"], lb["n"]) == (longer, len(ends))
    # per category: kappa on that category's items, and the judge's win rate of B over A
    plan = R.review_items(store, pairwise)
    category = dict(zip(plan["eval_item"].astype(int), plan["category"].fillna("(none)")))
    assert {r["category"] for r in res["by_category"]} == set(category.values())
    assert any(r["cohen_kappa"] is not None for r in res["by_category"])
    for row in res["by_category"]:
        ks = [k for k in keys if category[k] == row["category"]]
        if row["cohen_kappa"] is not None:
            assert row["cohen_kappa"] == pytest.approx(cohen_kappa_score(
                [judge[k] for k in ks], [majority[k] for k in ks], labels=labels), abs=1e-9)
        mine = [judge[k] for k in judge if category[k] == row["category"]]
        if mine.count("A") + mine.count("B"):
            assert row["judge_win_rate"] == pytest.approx(mine.count("B") / (mine.count("A") + mine.count("B")))


def test_rating_agreement_equals_sklearn_krippendorff_and_scipy(project):
    store, _, _, rating = project

    def rate(prompt):
        item = int(re.search(r"\[B(\d+)\]", prompt.split("Answer:")[1]).group(1))
        return f"Reason: fine.\nVerdict: {1 + (item + 2 * (item % 4 == 0)) % 5}"

    run = run_judge(store, rate, review_id=rating.review_id)
    a = judge_results.results(store, run, resamples=0)["agreement"]["helpful"]
    judged = {int(r.eval_item): int(r.verdict) for r in J.verdicts(store, run).itertuples()}
    people = {}
    for r in R.judgements(store, rating).itertuples():
        people.setdefault(int(r.eval_item), []).append(int(r.value))
    keys = sorted(people)
    rho = stats.spearmanr([judged[k] for k in keys], [np.mean(people[k]) for k in keys]).statistic
    assert a["spearman"]["rho"] == pytest.approx(rho, abs=1e-9)
    majority = {k: v[0] for k, v in people.items() if len(set(v)) == 1}
    mk = sorted(majority)
    assert a["n_majority"] == len(mk)
    assert len(mk) >= 5
    if mk:
        assert a["cohen_kappa"]["value"] == pytest.approx(
            cohen_kappa_score([judged[k] for k in mk], [majority[k] for k in mk], labels=[1, 2, 3, 4, 5]), abs=1e-9)
    for row in a["by_reviewer"]:
        mine = R.judgements(store, rating)
        mine = {int(r.eval_item): int(r.value) for r in mine[mine["reviewer"] == row["reviewer"]].itertuples()}
        ks = sorted(mine)
        want = krippendorff.alpha(reliability_data=[[judged[k] for k in ks], [mine[k] for k in ks]],
                                  level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
        assert row["krippendorff_alpha"] == pytest.approx(want, abs=1e-9)


def test_a_whole_comparison_gives_a_win_rate_beside_the_peoples(project):
    store, evals, pairwise, _ = project
    run = run_judge(store, copy_majority, evals=evals)
    res = judge_results.results(store, run, resamples=0)
    assert res["review_id"] is None and res["compared_with_review"] == pairwise.review_id
    assert res["n_items"] == len(evaluation.answered_by_all(store, evals))
    (w,) = res["win_rates"]
    assert w["people"]["n"] == 36 and w["judge"]["n"] == res["n_items"]
    assert res["agreement"][R.PREFERENCE]["cohen_kappa"]["value"] == pytest.approx(1.0)
    with pytest.raises(WorkbenchError, match="one of the two"):
        J.create_judge(store, review_id=pairwise.review_id, evals=evals, judge="tiny")


# ---------------------------------------------------------------- the tiny model: local and served

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny(store: Store) -> None:
    from tests.cli.test_serve_model import random_base

    random_base(store.project.models_dir / "tiny")


@pytest.mark.slow
def test_tiny_judges_alike_locally_and_through_serve_model(tmp_path):
    from workbench.models import playground

    root = tmp_path / "p"
    store = Store.open(root)
    rows = list(generate_tickets(9, seed=2))
    cols = ["prompt", "completion", "category"]
    write_version(store, "t", [pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in cols})],
                  kind="import", fmt="prompt-completion", recipe={})
    evals = []
    for k in range(2):
        run = evaluation.create_eval(store, "t", model=eval_setup.ModelSpec(f"/m{k}", label=f"m{k}"), split="all")
        record_outputs(store, run, {i: answer_text(k, i) for i in range(run.items)})
        evals.append(run.eval_id)
    make_tiny(store)
    local = J.create_judge(store, evals=evals, judge="tiny", max_new_tokens=12, sample_size=3)
    mine = J.verdicts(store, local)
    playground.loaded_models(store).unload(eval_setup.resolve_model(store, base_model="tiny"))
    store.close()
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": "not-a-real-key"}
    server = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", "serve-model", "--base-model", "tiny",
                               "--port", str(port), "--project", str(root), "--device", "cpu", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        line = server.stdout.readline()
        assert line, server.stderr.read()
        info = json.loads(line)
        store = Store.open(root)
        served = J.create_judge(store, evals=evals, endpoint=info["url"], model=info["model"], max_new_tokens=12,
                                sample_size=3)
        theirs = J.verdicts(store, served)
        assert len(mine) == 6 and any(mine["raw"]) and list(theirs["raw"]) == list(mine["raw"])
        assert list(theirs["verdict"].fillna("-")) == list(mine["verdict"].fillna("-"))
        stored = json.dumps(J.get_judge(store, served.judge_id).to_json(), default=str)
        assert "not-a-real-key" not in stored and "OPENAI_API_KEY" in stored  # where the key is read, never the key
        store.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_cli_creates_shows_and_lists_judge_runs(tmp_path, capsys):
    from tests.models.test_review import make_project
    from workbench.cli.main import main

    root = tmp_path / "p"
    store, evals = make_project(root, records=15, runs=2)
    store.close()
    fake = FakeJudge(lambda p: "Reason: r\nVerdict: B")
    try:
        code = main(["judge", "create", "--evals", f"{evals[0]},{evals[1]}", "--endpoint", fake.url, "--model", "fake",
                     "--sample", "3", "--resamples", "0", "--json", "--project", str(root)])
    finally:
        fake.close()
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_items"] == 3 and out["status"] == "done" and out["inconsistent"] == 3
    assert "Verdict: <A, B or tie>" in fake.prompts[0] and len(fake.prompts) == 6
    assert main(["judge", "show", str(out["judge_id"]), "--json", "--resamples", "0", "--project", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"tie": 3}
    assert main(["judge", "list", "--json", "--project", str(root)]) == 0
    assert [r["judge_id"] for r in json.loads(capsys.readouterr().out)["judges"]] == [out["judge_id"]]
    assert main(["judge", "create", "--evals", "1,2", "--judge", "tiny", "--endpoint", "http://x", "--model", "m",
                 "--project", str(root)]) == 1
    assert "not both" in capsys.readouterr().err
