"""The Review page with streamlit.testing.v1.AppTest: the owner creates a review, two reviewers judge
it blind (nothing on their page names a run, a model or an evaluation), the owner reads the results
and flags training records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from tests.models.test_review import SECRETS, make_project
from workbench.core import auth
from workbench.core.store import Store
from workbench.labels import flags
from workbench.models import evaluation, review_actions
from workbench.models import review as R

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
PAGES = Path(__file__).resolve().parents[2] / "pages"
TIMEOUT = 60


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    root = tmp_path / "project"
    store, evals = make_project(root, records=30, runs=2)
    for name, role in (("owner", "admin"), ("rita", "reviewer"), ("remy", "reviewer")):
        auth.add_user(store, name, role, "password123")
    secrets = []
    for e in evals:
        run = evaluation.get_eval(store, e)
        secrets += [run.model_label, run.base_model, run.run_id, run.folder, f"eval-{e}", f"#{e} "]
    store.close()
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    yield root, evals, secrets
    st.cache_data.clear()
    st.cache_resource.clear()


def signed_in(root: Path, name: str) -> AppTest:
    """The Review page, signed in as `name` (a live session token, as the login form would set)."""
    with Store.open(root) as store:
        token = auth.start_session(store, auth.get_user(store, name))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["wb_session_token"] = token
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("page_review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def everything_shown(at: AppTest) -> str:
    """Every element's protobuf as text: labels, values, help, options, captions and widget ids."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:  # as sent, and with the markdown escapes of data undone (wb_ui.safe_markdown)
            out.append(str(proto))
            out.append(re.sub(r"\\\\([!-/:-@\[-`{-~])", r"\1", str(proto)))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def assert_blind(at: AppTest, secrets: list[str]) -> None:
    text = everything_shown(at)
    assert "Answer " in text or "Nothing left for you" in text  # the walk reaches the answers themselves
    for secret in list(SECRETS) + secrets:
        assert secret not in text, f"{secret!r} reached the reviewer's page"
    assert "eval_id" not in text and "left_eval" not in text


def judge_everything(at: AppTest, secrets: list[str], choose) -> int:
    n = 0
    while True:
        assert not at.exception, [e.value for e in at.exception]
        assert_blind(at, secrets)
        buttons = [b for b in at.button if b.key and b.key.endswith(("::left", "::right", "::tie"))]
        if not buttons:
            return n
        item = buttons[0].key.split("::")[2]
        choice = choose(int(item))
        next(b for b in buttons if b.key.endswith(f"::{choice}")).click().run()
        n += 1


def test_create_judge_as_two_reviewers_and_read_results(project):
    root, evals, secrets = project
    owner = signed_in(root, "owner")
    owner.segmented_control(key="review_mode").set_value("Set up").run()
    owner.multiselect(key="rv_evals").set_value(evals)
    owner.number_input(key="rv_sample").set_value(4)
    owner.number_input(key="rv_overlap").set_value(2)
    owner.text_input(key="rv_seed").set_value("7")
    owner.text_input(key="rv_name").set_value("Support answers")
    owner.button(key="rv_create").click().run()
    assert not owner.exception, [e.value for e in owner.exception]
    assert "Created **Support answers**: 4 test items, seed 7" in owner.success[0].value
    with Store.open(root) as store:
        (rv,) = R.list_reviews(store)
        plan = R.review_items(store, rv).set_index("item")
    assert rv.evals == tuple(evals) and rv.seed == 7 and rv.overlap == 2

    def prefers_b(item):  # B is better, except on item 4 (a tie)
        if item == 4:
            return "tie"
        return "left" if plan.loc[str(item), "left_eval"] == evals[1] else "right"

    rita = signed_in(root, "rita")
    assert "0 done, 4 remaining" in rita.get("progress")[0].proto.text
    assert judge_everything(rita, secrets, prefers_b) == 4
    assert "Nothing left for you" in rita.success[-1].value
    remy = signed_in(root, "remy")
    assert judge_everything(remy, secrets, lambda item: "left") == 4
    assert "items with all 2 judgements: 4 of 4" in remy.get("progress")[0].proto.text

    owner = signed_in(root, "owner")
    owner.segmented_control(key="review_mode").set_value("Results").run()
    assert not owner.exception, [e.value for e in owner.exception]
    remy_b = sum(plan.loc[str(i), "left_eval"] == evals[1] for i in range(1, 5))
    wins_b = 3 + remy_b  # and item 4 a tie
    statement = next(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", m.value) for m in owner.markdown if "win rate" in m.value)
    assert f"wins {wins_b} and" in statement and "of 8 judgements (1 tie)" in statement
    metrics = {m.label: m.value for m in owner.metric}
    assert metrics["Judgements"] == "8" and metrics["Reviewers"] == "2" and metrics["Items complete"] == "4 / 4"
    assert any(m.label.startswith("Krippendorff's alpha (nominal)") for m in owner.metric)
    assert any("left output wins" in m.value.lower() for m in owner.markdown)
    assert SECRETS[0] in everything_shown(owner)  # the owner's results name the runs: the check above can see them
    owner.toggle(key="rv_history").set_value(True).run()
    assert not owner.exception, [e.value for e in owner.exception]
    assert any("review_id" in d.value.columns and list(d.value["review_id"]) == [rv.review_id] for d in owner.dataframe)

    # back to the data: flag the neighbours of the most disliked item
    owner.text_input(key=next(t.key for t in owner.text_input if t.key.endswith("::reason"))).set_value("rude")
    owner.button(key=next(b.key for b in owner.button if b.key.endswith("::flag"))).click().run()
    assert not owner.exception, [e.value for e in owner.exception]
    assert any("Flagged 5 record(s) of tickets\\@1" in s.value for s in owner.success)  # the ref as text
    with Store.open(root) as store:
        assert len(flags.flags(store, "tickets@1")) == 5
        assert review_actions.loop(store, rv)["flags"] == 5


def test_rating_review_with_questions(project):
    root, evals, secrets = project
    with Store.open(root) as store:
        rv = R.create_review(store, evals, kind="rating", questions=["follows policy", "tone"], sample_size=1,
                             overlap=1, seed=3, show_reference=False)
    rita = signed_in(root, "rita")
    assert "0 done, 2 remaining" in rita.get("progress")[0].proto.text
    assert_blind(rita, secrets)
    assert not [e for e in rita.expander if "Reference" in e.label]
    radios = [r for r in rita.radio if r.key and "::form::" in r.key]
    assert [r.label for r in radios] == ["follows policy", "tone"]
    radios[0].set_value(4)
    radios[1].set_value(2)
    next(b for b in rita.button if b.label == "Submit").click().run()
    assert not rita.exception, [e.value for e in rita.exception]
    assert "1 done, 1 remaining" in rita.get("progress")[0].proto.text
    assert_blind(rita, secrets)
    with Store.open(root) as store:
        hist = R.history(store, rv)
    assert sorted(zip(hist["question"], hist["value"])) == [("follows policy", "4"), ("tone", "2")]


def test_reviewers_without_a_review_see_what_to_do(project):
    root, _, secrets = project
    rita = signed_in(root, "rita")
    assert "No review for you yet" in rita.info[0].value
    assert [o for o in rita.segmented_control(key="review_mode").options] == ["Judge"]


def test_back_to_data_flags_neighbours_corrects_and_writes_a_version(project):
    """The owner's way back from a judged item: its training neighbours flagged for relabelling, a response and
    the reference corrected, and the corrections written into a new version."""
    from workbench.core.versions import list_datasets, list_versions
    from workbench.labels import flags

    root, evals, _ = project
    with Store.open(root) as store:
        owner_user = auth.get_user(store, "owner")
        rv = R.create_review(store, evals, sample_size=3, overlap=1, reviewers=["rita"], seed=3, user=owner_user)
        rita = auth.get_user(store, "rita")
        for item in R.review_items(store, rv)["item"]:
            R.submit(store, rv, str(item), choice="left", user=rita)
    owner = signed_in(root, "owner")
    owner.segmented_control(key="review_mode").set_value("Results").run()
    assert not owner.exception, [e.value for e in owner.exception]
    item = owner.selectbox(key=f"rv_bad::{rv.review_id}").value
    key = f"rv_nb::{rv.review_id}::{item}"
    rows = owner.multiselect(key=f"{key}::rows").value
    assert rows  # the neighbours table came with rows to flag
    owner.text_input(key=f"{key}::reason").set_value("answers like this one are wrong").run()
    owner.button(key=f"{key}::flag").click().run()
    assert not owner.exception, [e.value for e in owner.exception]
    assert any(m.value.startswith(f"Flagged {len(rows)} record") for m in owner.success)
    owner.text_area(key=f"{key}::edit_text::{owner.selectbox(key=f'{key}::edit_row').value}").set_value(
        "A corrected answer.").run()
    owner.button(key=f"{key}::edit_save").click().run()
    assert any(m.value == "Correction saved." for m in owner.success)
    owner.button(key=f"rv_write::{rv.review_id}").click().run()
    assert not owner.exception, [e.value for e in owner.exception]
    written = next(m.value for m in owner.success if m.value.startswith("Wrote"))
    with Store.open(root) as store:
        flagged = [f for d in list_datasets(store) for v in list_versions(store, d["name"])
                   for f in flags.flags(store, v)]
        reason = f"review {rv.review_id}, item {item}: answers like this one are wrong"
        assert len(flagged) == len(rows) and {f["reason"] for f in flagged} == {reason}
        assert "records" in written and len(R.edits(store, rv)) == 1


def test_reviewers_per_item_no_accounts_can_meet_are_warned_about(project):
    root, evals, _ = project  # accounts: owner (admin), rita and remy (reviewers): 3 may review
    owner = signed_in(root, "owner")
    owner.segmented_control(key="review_mode").set_value("Set up").run()
    owner.number_input(key="rv_overlap").set_value(3).run()
    assert not [w for w in owner.warning if "different" in w.value]
    owner.number_input(key="rv_overlap").set_value(4).run()
    warned = [w.value for w in owner.warning if "different" in w.value]
    assert warned and "only 3 accounts may review" in warned[0] and "per item" in warned[0]
    owner.multiselect(key="rv_people").set_value(["rita", "remy"]).run()
    owner.number_input(key="rv_overlap").set_value(3).run()
    warned = [w.value for w in owner.warning if "different" in w.value]
    assert warned and "3 different reviewers are needed per item, but only 2 are chosen" in warned[0]


def test_a_judge_run_from_the_results_shows_its_agreement_and_position_bias(project):
    """The owner starts a judge run on an endpoint (a fake OpenAI-compatible server that always answers "A") from
    the Results, and reads it: every item judged, position bias 100%, every item inconsistent."""
    from tests.models.test_judge import FakeJudge

    root, evals, _ = project
    with Store.open(root) as store:
        rv = R.create_review(store, evals, sample_size=4, overlap=2, seed=3)
        for who in ("rita", "remy"):
            user = auth.get_user(store, who)
            for item in R.review_items(store, rv)["item"]:
                R.submit(store, rv, str(item), choice="left", user=user)
    fake = FakeJudge(lambda prompt: "Reason: the first one.\nVerdict: A")
    try:
        owner = signed_in(root, "owner")
        owner.segmented_control(key="review_mode").set_value("Results").run()
        assert not owner.exception, [e.value for e in owner.exception]
        assert any(c.value == "No judge runs on this review yet." for c in owner.caption)
        owner.selectbox(key=f"jd_model_{rv.review_id}").set_value("endpoint").run()
        owner.text_input(key=f"jd_url_{rv.review_id}").set_value(fake.url)
        owner.text_input(key=f"jd_name_{rv.review_id}").set_value("fake")
        owner.button(key=f"jd_start_{rv.review_id}").click().run()
        assert not owner.exception, [e.value for e in owner.exception]
    finally:
        fake.close()
    assert len(fake.prompts) == 8  # 4 items, both orders
    assert any(s.value.startswith("Judge run") and "finished" in s.value for s in owner.success)
    metrics = {m.label: m.value for m in owner.metric}
    assert metrics["Items judged"] == "4" and metrics["Unparseable"] == "0"
    assert metrics["Position bias"] == "100%" and metrics["Position-inconsistent"] == "100%"
