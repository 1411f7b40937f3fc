"""The Label page's queue order in the question forms (AppTest on the demo project): a new question and a changed
one keep the order chosen, and the change form says whether the classifier's certainty is stored."""

from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from workbench.core.store import Store
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.labels import questions as Q
from workbench.labels import queue_order

pytestmark = pytest.mark.slow  # drives the whole app

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
TIMEOUT = 60


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=60)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info["project"]
    st.cache_data.clear()
    st.cache_resource.clear()


def questions_view() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("page_label.py").run()
    at.segmented_control(key="label_mode").set_value("Questions").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_new_question_with_the_uncertain_order(project):
    at = questions_view()
    order = at.selectbox(key="q_queue_order")
    assert order.value == "default" and order.options == ["default", "uncertain"] and "disagree" in order.help
    at.text_input(key="q_name").set_value("polite")
    at.selectbox(key="q_kind").set_value("accept-reject")
    at.selectbox(key="q_queue_order").set_value("uncertain")
    at.button(key="q_add").click().run()
    assert not at.exception and "Added **polite**" in at.success[0].value
    with Store.open(project) as store:
        assert Q.get_question(store, DEMO_DATASET, "polite").queue_order == "uncertain"
        assert Q.get_question(store, DEMO_DATASET, "category").queue_order == "default"


def test_change_the_order_and_see_whether_certainty_is_stored(project):
    with Store.open(project) as store:
        q = Q.get_question(store, DEMO_DATASET, "category")
    at = questions_view()
    at.selectbox(key="edit_question").set_value(q.question_id).run()
    key = f"edit::{q.question_id}::queue_order"
    assert at.selectbox(key=key).value == "default"
    assert not any("Classifier certainty" in c.value for c in at.caption)
    at.selectbox(key=key).set_value("uncertain").run()
    assert any("none yet (run Suspected label errors" in c.value for c in at.caption)
    at.button(key=f"edit::{q.question_id}::save").click().run()
    assert not at.exception and "Saved **category**" in at.success[0].value
    with Store.open(project) as store:
        q = Q.get_question(store, DEMO_DATASET, "category")
        assert q.queue_order == "uncertain"
        version = q.version(store)
        queue_order.save_certainty(store, version, "category", np.linspace(0, 1, version.row_count))
    at = questions_view()
    at.selectbox(key="edit_question").set_value(q.question_id).run()
    assert at.selectbox(key=key).value == "uncertain"
    assert any("Classifier certainty for this version: found" in c.value for c in at.caption)
