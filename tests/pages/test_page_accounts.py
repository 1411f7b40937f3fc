"""The Accounts page (issue 22: manage accounts from the app, as `workbench users` does)."""

from __future__ import annotations

import pytest
import streamlit as st
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from tests.pages.test_pages import APP, TIMEOUT
from workbench.core import auth
from workbench.core.project import init_project
from workbench.core.store import Store


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    init_project(root)
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield root
    st.cache_data.clear()
    st.cache_resource.clear()


def accounts_page(at: AppTest) -> AppTest:
    at.switch_page("page_accounts.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def add(at: AppTest, name: str, role: str, password: str) -> AppTest:
    at.text_input(key="acct_name").set_value(name)
    at.selectbox(key="acct_role").set_value(role)
    at.text_input(key="acct_password").set_value(password)
    return at.button[[b.label for b in at.button].index("Save account")].click().run()


def test_first_admin_then_an_annotator_then_removed(project):
    at = accounts_page(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    assert at.title[0].value == "Accounts" and "no accounts" in at.info[0].value
    assert not [w.label for w in (*at.text_input, *at.selectbox, *at.checkbox) if not w.help]
    add(at, "ada", "admin", "short")  # refused with the library's reason, as one line
    assert at.error and "at least 8" in at.error[0].value and not at.exception
    at = accounts_page(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    add(at, "ada", "admin", "ada-admin-pass-1")
    assert [t.value for t in at.title] == ["Sign in"]  # the project has accounts now: everyone signs in
    at.text_input(key="login_name").set_value("ada")
    at.text_input(key="login_password").set_value("ada-admin-pass-1")
    at.button[0].click().run()
    accounts_page(at)
    add(at, "ann", "annotator", "ann-labels-pass")
    assert "Saved **ann** (annotator)" in at.success[0].value
    assert at.dataframe[0].value["name"].tolist() == ["ada", "ann"]
    with Store.open(project) as store:
        assert auth.authenticate(store, "ann", "ann-labels-pass") == auth.User("ann", "annotator")
    at.selectbox(key="acct_remove_name").set_value("ann").run()
    assert at.button(key="acct_remove").disabled  # not without the confirmation
    at.checkbox(key="acct_confirm::ann").check().run()
    at.button(key="acct_remove").click().run()
    assert "Removed **ann**" in at.success[0].value
    with Store.open(project) as store:
        assert [u["name"] for u in auth.list_users(store)] == ["ada"]
