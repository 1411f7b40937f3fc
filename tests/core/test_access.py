"""Access with accounts on: which pages and actions each role gets, that sessions expire, and that
passwords never reach the store, the logs or any file of the project.

Pages are driven with AppTest; the role is that of a real session token (workbench.core.auth.start_session)
put where the sign-in form puts it. The browser side (an annotator typing another page's address, the
server log) is in tests/e2e/test_e2e_labels.py.
"""

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.e2e.e2e_helpers import ROOT, grep_tree, run_cli
from workbench.core import auth
from workbench.core.auth import PermissionDenied, User
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.data import sqlconsole
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.labels import adjudication, agreement, annotations, questions
from workbench.models import generator

APP = ROOT / "pages" / "app.py"
TIMEOUT = 60
PAGES = {"Datasets": "page_datasets.py", "Inspect": "page_inspect.py", "Label": "page_label.py",
         "Agreement": "page_agreement.py", "Balance": "page_balance.py", "Train": "page_train.py",
         "Evaluate": "page_evaluate.py", "Review": "page_review.py"}
ALLOWED = {"admin": set(PAGES), "annotator": {"Label"}, "reviewer": {"Label", "Review"}}
PASSWORDS = {"ada": "ada-Plain-Secret-1191", "ann": "ann-Plain-Secret-2282", "rob": "rob-Plain-Secret-3373"}
ROLES = {"ada": "admin", "ann": "annotator", "rob": "reviewer"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A 320-ticket demo project (its questions included) with one account per role, made with the CLI
    as an admin would (passwords on stdin)."""
    info = make_demo_project(tmp_path_factory.mktemp("access") / "project", records=320)
    for name in ("ada", "ann", "rob"):
        run_cli("users", "add", name, "--role", ROLES[name], "--password-stdin", project=info["project"],
                stdin=PASSWORDS[name] + "\n")
    yield info["project"]


@pytest.fixture
def app_env(project, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROJECT", project)
    yield project
    st.cache_data.clear()
    st.cache_resource.clear()  # closes the app's store, so the next test may open the project


def signed_in(project, name: str, *, hours: float | None = None) -> AppTest:
    """The app with a live session of `name` in its session state, as after the sign-in form."""
    with Store.open(project) as store:
        token = auth.start_session(store, auth.get_user(store, name), hours=hours)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["wb_session_token"] = token
    return at.run()


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


@pytest.mark.parametrize("name", ["ada", "ann", "rob"])
def test_each_role_reaches_exactly_its_pages(app_env, name):
    role = ROLES[name]
    at = signed_in(app_env, name)
    assert not at.exception, [e.value for e in at.exception]
    assert titles(at) == [sorted(ALLOWED[role], key=list(PAGES).index)[0]]  # the first page it may see
    for title, path in PAGES.items():
        if title in ALLOWED[role]:
            at.switch_page(path).run()
            assert not at.exception, (title, [e.value for e in at.exception])
            assert title in titles(at)
        else:
            with pytest.raises(ValueError, match="Known pages"):
                at.switch_page(path)  # not registered for this role: no URL, no link, no way in


@pytest.mark.parametrize("name", ["ann", "rob"])
def test_annotators_and_reviewers_only_annotate_on_the_label_page(app_env, name):
    at = signed_in(app_env, name)
    at.switch_page("page_label.py").run()
    assert at.segmented_control(key="label_mode").options == ["Annotate"]  # no questions, no adjudication
    assert not [b for b in at.button if b.key and (b.key.startswith("final") or b.key.startswith("adj"))]
    heading = at.subheader[0].value
    assert heading.startswith("Record ")  # they do get work
    assert not at.dataframe or all("annotator" not in d.value.columns for d in at.dataframe)  # nobody else's answers


def test_the_admin_gets_import_sql_and_adjudication(app_env):
    at = signed_in(app_env, "ada")
    assert titles(at) == ["Datasets"] and not at.button(key="import_button").disabled
    assert at.button(key="sql_run") is not None
    at.switch_page("page_label.py").run()
    assert at.segmented_control(key="label_mode").options == ["Annotate", "Questions", "Adjudicate"]


def test_an_expired_session_asks_to_sign_in_again(app_env):
    # A session of 4 s: long enough that the first run (cold, on a loaded CI machine) still sees it live,
    # then we wait until it has surely ended.
    with Store.open(app_env) as store:
        token = auth.start_session(store, auth.get_user(store, "ann"), hours=4 / 3600)
    created = time.monotonic()  # the session ends at most 4 s from here
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["wb_session_token"] = token
    at.run()
    assert titles(at) == ["Label"]
    time.sleep(max(0.0, created + 4.5 - time.monotonic()))
    at.run()
    assert titles(at) == ["Sign in"] and "wb_session_token" not in at.session_state
    at.text_input(key="login_name").set_value("ann")
    at.text_input(key="login_password").set_value(PASSWORDS["ann"])
    at.button[0].click().run()
    assert titles(at) == ["Label"]


def test_the_session_length_comes_from_the_project_settings(tmp_path):
    with Store.open(tmp_path / "p") as store:
        config = store.project.root / "workbench.toml"
        config.write_text(config.read_text() + "\n[auth]\nsession_hours = 0.5\n")
        ada = auth.add_user(store, "ada", "admin", "long enough password")
        start = auth.now_utc()
        token = auth.start_session(store, ada, now=start)
        assert auth.session_user(store, token, now=start + timedelta(minutes=29)) == ada
        assert auth.session_user(store, token, now=start + timedelta(minutes=31)) is None


ANNOTATOR, REVIEWER = User("ann", "annotator"), User("rob", "reviewer")


def admin_only_actions(store):
    """Every library action that changes what others see, as (what, call(user))."""
    q = questions.get_question(store, DEMO_DATASET, "category")
    return [
        ("add a question", lambda u: questions.add_question(store, DEMO_DATASET, "x", "accept-reject", user=u)),
        ("change a question", lambda u: questions.update_question(store, DEMO_DATASET, "category", overlap=1,
                                                                  user=u)),
        ("adjudicate", lambda u: adjudication.set_gold(store, q, "T000001", "billing", user=u)),
        ("write final labels", lambda u: adjudication.apply_final_labels(store, q, user=u)),
        ("import annotations", lambda u: annotations.import_annotations(
            store, Path(store.project.uploads_dir) / "demo" / "annotations.csv", dataset=DEMO_DATASET,
            question="category", item_col="item_id", annotator_col="annotator", value_col="value", user=u)),
        ("write consensus", lambda u: agreement.write_consensus(store, DEMO_DATASET, "category", user=u)),
        ("add a user", lambda u: auth.add_user(store, "eve", "admin", "long enough password", actor=u)),
        ("remove a user", lambda u: auth.remove_user(store, "ada", actor=u)),
        ("start an evaluation", lambda u: generator.launch(store, 1, user=u)),
    ]


@pytest.mark.parametrize("user", [ANNOTATOR, REVIEWER], ids=["annotator", "reviewer"])
def test_the_library_refuses_admin_actions_to_other_roles(project, user):
    """Pages hide these controls; the library refuses them again, whatever a page does."""
    with Store.open(project) as store:
        before = store.cursor().execute(
            "SELECT (SELECT count(*) FROM wb_gold), (SELECT count(*) FROM wb_versions), "
            "(SELECT count(*) FROM wb_users), (SELECT count(*) FROM wb_questions)").fetchall()
        for what, call in admin_only_actions(store):
            with pytest.raises(PermissionDenied):
                call(user)
                pytest.fail(f"a {user.role} could {what}")
        after = store.cursor().execute(
            "SELECT (SELECT count(*) FROM wb_gold), (SELECT count(*) FROM wb_versions), "
            "(SELECT count(*) FROM wb_users), (SELECT count(*) FROM wb_questions)").fetchall()
    assert after == before


def test_no_password_reaches_the_store_the_logs_or_the_cli(app_env, tmp_path):
    """Sign in (right and wrong passwords) through the app, list the users with the CLI, then look for
    every plain password in every byte of the project folder (database, write-ahead log, uploads)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for name, password in (("ann", PASSWORDS["ann"] + "x"), ("nobody", PASSWORDS["rob"]), ("ann", PASSWORDS["ann"])):
        at.text_input(key="login_name").set_value(name)
        at.text_input(key="login_password").set_value(password)
        at.button[0].click().run()
    assert titles(at) == ["Label"]
    st.cache_resource.clear()  # close the app's store: the CLI needs the database
    listing = run_cli("users", "list", "--json", project=app_env)
    for name, password in PASSWORDS.items():
        assert password not in listing.stdout + listing.stderr
        assert grep_tree(Path(app_env), password.encode()) == [], name
        assert grep_tree(Path(app_env), password[::-1].encode()) == []
    assert "argon2" not in listing.stdout  # not even the hashes
    with Store.open(app_env) as store:
        hashes = [h for (h,) in store.cursor().execute("SELECT password_hash FROM wb_users").fetchall()]
    assert all(h.startswith("$argon2id$") for h in hashes)


def test_a_password_given_on_the_command_line_is_refused(tmp_path):
    """Only stdin or a prompt: a password in argv would sit in the shell history and `ps`."""
    proc = subprocess.run([sys.executable, "-m", "workbench", "users", "add", "ada", "--role", "admin",
                           "--password", "on-the-command-line", "--project", str(tmp_path / "p")],
                          capture_output=True, text=True)
    assert proc.returncode != 0


@pytest.mark.parametrize("sql", ["SELECT * FROM wb_users", "SELECT password_hash FROM main.wb_users",
                                 "SELECT * FROM wb_sessions", "SELECT * FROM (SELECT * FROM wb_users)",
                                 "SELECT key FROM wb_signin_failures",
                                 "WITH x AS (SELECT * FROM wb_users) SELECT * FROM x", "SHOW wb_users",
                                 "SELECT name FROM wb_datasets UNION ALL SELECT password_hash FROM wb_users"])
def test_the_sql_console_does_not_hand_out_password_hashes(project, sql):
    with Store.open(project) as store:
        with pytest.raises(WorkbenchError, match="holds accounts"):
            sqlconsole.run_readonly(store.cursor(), sql)
        # a query of the user's own that happens to use the name is fine
        assert sqlconsole.run_readonly(store.cursor(), "WITH wb_users AS (SELECT 1 AS a) SELECT a FROM wb_users"
                                       ).to_pylist() == [{"a": 1}]


def ann_answers(project) -> int:
    with Store.open(project) as store:  # the same database instance as the app's
        got = annotations.answers(store, DEMO_DATASET, "category")
    return int((got["annotator"] == "ann").sum())


def test_an_open_label_tab_saves_nothing_once_the_session_has_ended(app_env):
    """Sign-out in another tab (or expiry) while the Label page is open: its buttons still call back
    with the User of the last run, and the library refuses the write because that session is gone."""
    at = signed_in(app_env, "ann")
    at.switch_page("page_label.py").run()
    answer = next(b for b in at.button if b.key and b.key.startswith("label::") and b.key.endswith("::billing"))
    before = ann_answers(app_env)
    with Store.open(app_env) as store:
        auth.end_session(store, at.session_state["wb_session_token"])
    answer.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ann_answers(app_env) == before  # nothing saved for the signed-out user
    assert titles(at) == ["Sign in"]


def test_the_sign_in_form_slows_down_after_failed_attempts(app_env):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for _ in range(auth.FREE_TRIES["account"]):  # the free tries: a plain "wrong password"
        at.text_input(key="login_name").set_value("rob")
        at.text_input(key="login_password").set_value("not the password")
        at.button[0].click().run()
        assert "Unknown name or wrong password" in at.error[0].value
    with Store.open(app_env) as store:  # more failures, each as the previous lock ends (the clock injected)
        t = auth.now_utc()
        for _ in range(10):
            assert auth.authenticate(store, "rob", "not the password", now=t) is None
            t = auth.signin_locked_until(store, "rob", now=t)
    at.text_input(key="login_name").set_value("rob")
    at.text_input(key="login_password").set_value(PASSWORDS["rob"])
    at.button[0].click().run()  # even the right password waits, and the page says until when
    assert "Too many failed sign-ins" in at.error[0].value and "try again in" in at.error[0].value
    assert titles(at) == ["Sign in"]
    with Store.open(app_env) as store:  # once the lock is over, rob signs in (and the count is cleared)
        assert auth.authenticate(store, "rob", PASSWORDS["rob"], now=t + auth.MAX_DELAY) == User("rob", "reviewer")
