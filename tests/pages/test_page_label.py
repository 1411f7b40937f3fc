"""The Label page and the sign-in gate, driven with streamlit.testing.v1.AppTest.

The demo project's first 300 tickets carry the demo annotators' labels (questions `category` and
`urgency`); the fixture imports 320, so 20 records are still open for a new annotator."""

from pathlib import Path

import pytest
import streamlit as st
from argon2 import PasswordHasher
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from tests.conftest import write_jsonl
from workbench.core import auth
from workbench.core.store import Store
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.data.importer import import_file
from workbench.labels import adjudication as J
from workbench.labels import annotations as A
from workbench.labels import questions as Q

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
TIMEOUT = 60
EVIL = "<script>window.pwned = 1</script> <img src=x onerror=alert(1)> costs $5 and $6"


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=320)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield info["project"]
    st.cache_data.clear()
    st.cache_resource.clear()


def label_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("page_label.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def record_heading(at: AppTest) -> str:
    return at.subheader[0].value


def test_annotator_answers_and_moves_to_the_next_record(project):
    at = label_page()
    assert at.selectbox(key="label_question").value is not None
    assert "0 done, 20 remaining" in progress_text(at)
    assert "T000301" in record_heading(at)
    at.button(key="label::1::T000301::billing").click().run()
    assert not at.exception
    assert "Saved **billing** for record T000301" in at.success[0].value
    assert "1 done, 19 remaining" in progress_text(at)
    assert "T000302" in record_heading(at)
    with Store.open(project) as store:  # the same database instance as the app's
        got = A.answers(store, DEMO_DATASET, "category")
    assert got[got["annotator"] == "local"][["item", "value"]].values.tolist() == [["T000301", "billing"]]


def test_skip_and_go_back(project):
    at = label_page()
    at.button(key="label::1::skip").click().run()
    assert "T000302" in record_heading(at)
    at.button(key="label::1::T000302::refund").click().run()
    assert "T000303" in record_heading(at)
    at.selectbox(key="label::1::back").set_value("T000302")
    at.button(key="label::1::open").click().run()
    assert "T000302" in record_heading(at) and "You answered **refund** before" in at.info[0].value
    at.button(key="label::1::T000302::shipping").click().run()
    with Store.open(project) as store:
        q = Q.get_question(store, DEMO_DATASET, "category")
        hist = A.history(store, q, "T000302")
    assert list(hist[hist["who"] == "local"]["value"]) == ["refund", "shipping"]  # the old answer is kept


def test_record_text_is_shown_as_text_never_as_html(project, tmp_path):
    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "evil.jsonl", [
            {"id": "e1", "prompt": EVIL, "completion": "**bold** reply with <b>tags</b>"}]), "evil")
        Q.add_question(store, "evil", "ok", "accept-reject")
    at = label_page()
    with Store.open(project) as store:
        evil = next(q.question_id for q in Q.list_questions(store) if q.dataset == "evil")
    at.selectbox(key="label_question").set_value(evil).run()
    assert not at.exception
    bodies = [m.value for m in at.markdown]
    rendered = [MarkdownIt("commonmark").render(b) for b in bodies]  # what a CommonMark renderer makes of them
    assert not any("<script" in r or "<img" in r or "<b>" in r for r in rendered)
    shown = next(r for r in rendered if "script" in r)
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in shown and "\\$5" in "".join(bodies)  # no $math$
    assert any("**bold** reply with &lt;b&gt;tags&lt;/b&gt;" in r for r in rendered)  # shown as written
    at.toggle(key=[t.key for t in at.toggle][0]).set_value(True).run()
    assert EVIL in [c.value for c in at.code]  # plain text shows the exact characters


def test_other_kinds_of_questions(project, tmp_path):
    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "few.jsonl", [
            {"id": f"r{i}", "prompt": f"question {i}", "completion": f"reply {i}"} for i in range(3)]), "few")
        tags = Q.add_question(store, "few", "tags", "multi-label", choices=["polite", "wrong", "long"])
        fix = Q.add_question(store, "few", "fix", "text")
        stars = Q.add_question(store, "few", "stars", "rating", anchors={"1": "bad", "5": "great"})
    at = label_page()
    at.selectbox(key="label_question").set_value(tags.question_id).run()
    at.get("button_group")[-1].set_value(["wrong", "polite"])
    at.button[[b.label for b in at.button].index("Submit")].click().run()
    assert not at.exception and "polite\\, wrong" in at.success[0].value  # data as text: the comma escaped

    at.selectbox(key="label_question").set_value(fix.question_id).run()
    area = at.text_area(key=f"label::{fix.question_id}::r0::area")
    assert area.value == "reply 0"  # starts from the response
    area.set_value("a better reply")
    at.button[[b.label for b in at.button].index("Submit")].click().run()
    assert not at.exception

    at.selectbox(key="label_question").set_value(stars.question_id).run()
    assert "5 · great" in [b.label for b in at.button]
    at.button(key=f"label::{stars.question_id}::r0::4").click().run()
    with Store.open(project) as store:
        assert A.answers(store, "few", "tags")["value"].tolist() == ['["polite", "wrong"]']
        assert A.answers(store, "few", "fix")["value"].tolist() == ["a better reply"]
        assert A.answers(store, "few", "stars")["value"].tolist() == ["4"]


def test_admin_adjudicates_and_writes_final_labels(project):
    with Store.open(project) as store:
        q = Q.get_question(store, DEMO_DATASET, "category")
        first = J.disputed(store, q)["item"].iloc[0]
        before = len(J.gold(store, q))
        given = A.item_answers(store, q, first)
    at = label_page()
    at.segmented_control(key="label_mode").set_value("Adjudicate").run()
    assert not at.exception
    assert at.selectbox(key=f"adj_item::{q.question_id}").value == first
    pick = given.iloc[0]
    at.button(key=f"adj_use::{first}::{pick.annotator}").click().run()
    assert "Final value of record" in at.success[0].value
    with Store.open(project) as store:
        gold = J.gold(store, q)
    assert gold[first] == pick.value and len(gold) == before + 1
    at.button(key="final_write").click().run()
    assert not at.exception
    assert any(f"Wrote **{DEMO_DATASET}@2**" in s.value for s in at.success)
    at.text_input(key=f"hist_item::{q.question_id}").set_value(first).run()
    assert "final (adjudicated)" in at.dataframe[-1].value["entry"].tolist()


def test_owner_adds_a_question(project):
    at = label_page()
    at.segmented_control(key="label_mode").set_value("Questions").run()
    at.text_input(key="q_name").set_value("polite")
    at.selectbox(key="q_kind").set_value("accept-reject")
    at.text_area(key="q_guidelines").set_value("Is the reply **polite**?")
    at.button(key="q_add").click().run()
    assert not at.exception and "Added **polite**" in at.success[0].value
    with Store.open(project) as store:
        q = Q.get_question(store, DEMO_DATASET, "polite")
    assert (q.kind, q.overlap, q.guidelines) == ("accept-reject", 3, "Is the reply **polite**?")


def test_every_label_widget_has_help(project):
    at = label_page()
    for mode in ("Annotate", "Questions", "Adjudicate"):
        at.segmented_control(key="label_mode").set_value(mode).run()
        widgets = [*at.text_input, *at.text_area, *at.selectbox, *at.multiselect, *at.radio, *at.number_input,
                   *at.button, *at.checkbox, *at.toggle, *at.get("button_group")]
        assert not [getattr(w, "label", w) for w in widgets if not w.help], mode


# ---------------------------------------------------------------- accounts

def add_users(project):
    with Store.open(project) as store:
        auth.add_user(store, "ada", "admin", "admin password")
        auth.add_user(store, "ann", "annotator", "annotator password")


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").set_value(name)
    at.text_input(key="login_password").set_value(password)
    return at.button[0].click().run()


def test_with_accounts_the_app_asks_to_sign_in(project):
    add_users(project)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert [t.value for t in at.title] == ["Sign in"] and not at.dataframe
    sign_in(at, "ann", "wrong password")
    assert at.error and "wrong password" in at.error[0].value
    sign_in(at, "ann", "annotator password")
    assert not at.exception and [t.value for t in at.title] == ["Label"]
    assert at.segmented_control(key="label_mode").options == ["Annotate"]  # no questions, no adjudication
    with pytest.raises(ValueError, match="Known pages: .*page_label.py"):
        at.switch_page("page_datasets.py")  # not even registered for an annotator
    at.button(key="label::1::T000301::billing").click().run()
    with Store.open(project) as store:
        got = A.answers(store, DEMO_DATASET, "category")
    assert got[got["item"] == "T000301"]["annotator"].tolist() == ["ann"]  # written as the signed-in user
    at.sidebar.button(key="logout").click().run()
    assert [t.value for t in at.title] == ["Sign in"]


def test_admin_sees_every_page(project):
    add_users(project)
    at = sign_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), "ada", "admin password")
    assert not at.exception and at.title[0].value == "Datasets"
    assert not at.button(key="import_button").disabled
    at.switch_page("page_label.py").run()
    assert at.segmented_control(key="label_mode").options == ["Annotate", "Questions", "Adjudicate"]


# ---------------------------------------------------------------- in a real browser

@pytest.mark.slow
@pytest.mark.browser
def test_script_in_a_record_never_runs_in_the_browser(tmp_path):
    """`workbench serve` on a project whose only record carries a script and an onerror handler:
    Chromium shows them as text and neither runs."""
    import os
    import signal
    import subprocess
    import sys

    from tests.e2e.test_browser import CHROMIUM, LAUNCH_ARGS, free_port, wait_healthy

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing")
    sync_api = pytest.importorskip("playwright.sync_api")
    project = tmp_path / "p"
    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "evil.jsonl", [
            {"id": "e1", "prompt": EVIL.replace("onerror=alert(1)", "onerror=\"window.pwned2=1\""),
             "completion": "ok"}]), "evil")
        Q.add_question(store, "evil", "ok", "accept-reject", guidelines="<script>window.pwned3 = 1</script>")
    port, log = free_port(), tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--project", str(project), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            try:
                page = browser.new_page()
                dialogs = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.goto(f"http://127.0.0.1:{port}/page_label")
                page.get_by_text("window.pwned = 1").first.wait_for(timeout=60_000)
                # the guidelines are drawn later in the same script run: wait for them too before reading
                page.get_by_text("window.pwned3 = 1").first.wait_for(timeout=60_000)
                text = page.inner_text("body")
                assert "<script>window.pwned = 1</script>" in text and "costs $5 and $6" in text
                assert "<script>window.pwned3 = 1</script>" in text
                assert page.evaluate("[window.pwned, window.pwned2, window.pwned3]") == [None, None, None]
                assert not dialogs
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_the_agreement_link_opens_the_adjudication_queue_of_its_question(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from workbench.data.demo_project import make_demo_project

    make_demo_project(tmp_path / "demo", records=200)
    monkeypatch.setenv("WORKBENCH_PROJECT", str(tmp_path / "demo"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "app.py"), default_timeout=60)
    at.query_params["dataset"] = "support-tickets"
    at.query_params["question"] = "urgency"
    at.query_params["mode"] = "adjudicate"
    at.run()
    at.switch_page("page_label.py").run()
    assert not at.exception
    assert at.session_state["label_mode"] == "Adjudicate"
    assert any("urgency" in str(s.value) or "urgency" in str(s.format_func(s.value)) for s in at.selectbox
               if s.label == "Question")


def test_the_column_the_choices_come_from_is_hidden_and_many_choices_can_be_searched(project, tmp_path):
    """The column a question's choices were taken from holds the answer: annotators never see it (they used
    to, as 'intent: cancel_order'); the owner chooses the other metadata; 20 choices get a search box and
    keys beyond 9."""
    intents = [f"intent_{i:02d}" for i in range(20)]
    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "many.jsonl", [
            {"id": f"m{i}", "prompt": f"ticket {i}", "completion": f"reply {i}", "intent": intents[i % 20],
             "channel": "email", "team": "blue"} for i in range(40)]), "many")
        q = Q.add_question(store, "many", "label", "single-choice", choices_from="intent")
        shown = Q.add_question(store, "many", "label2", "single-choice", choices_from="intent",
                               shown_columns=["team"])
    assert q.majority and q.choices_from == "intent" and len(q.choices) == 20  # majority: the default here
    at = label_page()
    at.selectbox(key="label_question").set_value(q.question_id).run()
    captions = " ".join(c.value for c in at.caption).replace("\\:", ":")  # shown as text: markdown escaped
    assert "channel: email" in captions and "team: blue" in captions and "intent" not in captions
    buttons = {b.label.replace("\\_", "_") for b in at.button}
    assert set(intents) <= buttons
    at.text_input(key=f"label::{q.question_id}::find").set_value("intent_1").run()
    buttons = {b.label.replace("\\_", "_") for b in at.button}
    assert {f"intent_1{i}" for i in range(10)} <= buttons and "intent_05" not in buttons
    at.button(key=f"label::{q.question_id}::m0::intent_13").click().run()
    assert not at.exception and "Saved **intent\\_13**" in at.success[0].value

    at.selectbox(key="label_question").set_value(shown.question_id).run()
    captions = " ".join(c.value for c in at.caption).replace("\\:", ":")
    assert "team: blue" in captions and "channel" not in captions and "intent" not in captions


def test_an_overlap_no_set_of_accounts_can_meet_is_warned_about(project):
    add_users(project)  # one admin, one annotator (and whatever else add_users makes)
    with Store.open(project) as store:
        able = [u for u in auth.list_users(store) if u["role"] in auth.PERMISSIONS["annotate"]]
    at = sign_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), "ada", "admin password")
    at.switch_page("page_label.py").run()
    at.segmented_control(key="label_mode").set_value("Questions").run()
    at.number_input(key="q_overlap").set_value(len(able)).run()
    # the demo's questions ask 3 annotators per record: their Change form says so already
    before = [w.value for w in at.warning if "different people" in w.value]
    assert len(before) == 1 and "3 different people" in before[0]
    at.number_input(key="q_overlap").set_value(len(able) + 1).run()
    warned = [w.value for w in at.warning if "different people" in w.value]
    assert len(warned) == 2 and f"only {len(able)} accounts may annotate" in warned[0]
