"""The Datasets page's Manage section (pages/datasets_manage.py): rename, archive with a confirmation, and
unarchive, driven with AppTest on a demo project with a second dataset beside the demo tickets."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import write_jsonl
from tests.pages.test_pages import APP, TIMEOUT
from workbench.core.store import Store
from workbench.core.versions import get_version, list_datasets
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.data.importer import import_file

CONTROLS = ["mg_rename_from", "mg_rename_to", "mg_rename", "mg_archive_name", "mg_archive", "mg_unarchive_name",
            "mg_unarchive"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=120)
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)]
    with Store.open(info["project"]) as store:
        import_file(store, write_jsonl(tmp_path / "faq.jsonl", rows), "faq")
        hash_before = get_version(store, f"{DEMO_DATASET}@1").content_hash
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info["project"], hash_before
    st.cache_data.clear()
    st.cache_resource.clear()


def app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def listed(at: AppTest) -> list[str]:
    """The names in the page's datasets table (the first table with a 'name' column)."""
    return [d.value for d in at.dataframe if "name" in d.value.columns][0]["name"].tolist()


def reopened(root) -> Store:
    st.cache_resource.clear()  # the app's store lets go of the database file
    return Store.open(root)


def test_rename_follows_in_the_tables_and_the_picker(project):
    root, hash_before = project
    at = app()
    assert at.selectbox(key="dataset").value == "faq" == at.selectbox(key="mg_rename_from").value
    at.selectbox(key="dataset").set_value(DEMO_DATASET).run()
    assert at.selectbox(key="mg_rename_from").value == DEMO_DATASET  # the form follows the dataset looked at
    at.text_input(key="mg_rename_to").set_value("support")
    at.button(key="mg_rename").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error
    assert any("Renamed **support-tickets** to **support**" in s.value for s in at.success)
    assert listed(at) == ["faq", "support"]
    assert at.selectbox(key="dataset").value == "support" and at.selectbox(key="dataset").options == ["faq", "support"]
    assert any(s.value == "Records of support@1" for s in at.subheader)
    with reopened(root) as store:
        assert get_version(store, "support@1").content_hash == hash_before


def test_a_bad_name_is_one_red_line_and_changes_nothing(project):
    at = app()
    at.selectbox(key="dataset").set_value(DEMO_DATASET).run()
    at.text_input(key="mg_rename_to").set_value("faq")
    at.button(key="mg_rename").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["a dataset named 'faq' exists already; choose another name"]
    at.text_input(key="mg_rename_to").set_value("two words")
    at.button(key="mg_rename").click().run()
    assert len(at.error) == 1 and "is not allowed" in at.error[0].value
    assert listed(at) == ["faq", DEMO_DATASET]


def test_archive_asks_first_then_unarchive_brings_it_back(project):
    root, hash_before = project
    at = app()
    at.selectbox(key="dataset").set_value(DEMO_DATASET).run()
    assert at.button(key="mg_archive").disabled  # nothing is archived before the confirmation
    assert [c.value for c in at.caption if c.value.startswith("None:")] == ["None: every dataset is listed."]
    at.checkbox(key=f"mg_archive_sure::{DEMO_DATASET}").check().run()
    assert not at.button(key="mg_archive").disabled
    at.button(key="mg_archive").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert listed(at) == ["faq"]
    assert at.selectbox(key="dataset").options == ["faq"] and at.selectbox(key="dataset").value == "faq"
    assert at.selectbox(key="mg_rename_from").options == ["faq"]
    archived = [d.value for d in at.dataframe if "archived_at" in d.value.columns]
    assert archived and archived[0]["name"].tolist() == [DEMO_DATASET]
    assert at.selectbox(key="mg_unarchive_name").options == [DEMO_DATASET]
    with reopened(root) as store:  # still readable by explicit ref
        assert [d["name"] for d in list_datasets(store)] == ["faq"]
        assert get_version(store, f"{DEMO_DATASET}@1").content_hash == hash_before
    at = app()
    at.button(key="mg_unarchive").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert listed(at) == ["faq", DEMO_DATASET] and at.selectbox(key="dataset").value == DEMO_DATASET
    assert not [d for d in at.dataframe if "archived_at" in d.value.columns]


def test_every_control_has_a_help_line(project):
    at = app()
    at.checkbox(key="mg_archive_sure::faq").check().run()
    at.button(key="mg_archive").click().run()  # the Unarchive controls appear once something is archived
    assert not at.exception
    widgets = {w.key: w for kind in ("selectbox", "text_input", "button", "checkbox") for w in at.get(kind)}
    for key in [*CONTROLS, f"mg_archive_sure::{DEMO_DATASET}"]:
        assert widgets[key].help, key


def test_with_every_dataset_archived_the_page_says_so_not_no_datasets_yet(project):
    at = app()
    for name in ("faq", DEMO_DATASET):
        at.checkbox(key=f"mg_archive_sure::{name}").check().run()
        at.button(key="mg_archive").click().run()
        assert not at.exception, [e.value for e in at.exception]
    infos = [i.value for i in at.info]
    assert not [i for i in infos if i.startswith("No datasets yet")], infos
    assert [i for i in infos if i.startswith("Every dataset is archived (2)")], infos
    assert sorted(at.selectbox(key="mg_unarchive_name").options) == sorted(["faq", DEMO_DATASET])


def test_an_archived_datasets_questions_leave_the_label_and_agreement_pickers(project):
    root, _ = project
    at = app()
    at.switch_page("page_label.py").run()
    assert not at.exception, [e.value for e in at.exception]
    before = [o for o in at.selectbox(key="label_question").options]
    assert before and all(DEMO_DATASET in o for o in before)  # the demo's questions
    at.switch_page("page_datasets.py").run()
    at.selectbox(key="dataset").set_value(DEMO_DATASET).run()
    at.checkbox(key=f"mg_archive_sure::{DEMO_DATASET}").check().run()
    at.button(key="mg_archive").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("page_label.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [s for s in at.selectbox if s.key == "label_question"]  # no question left to pick
    at.switch_page("page_agreement.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [o for s in at.selectbox for o in s.options if DEMO_DATASET in str(o)]
    with reopened(root) as store:  # the questions themselves stay, for the CLI and an unarchive
        from workbench.labels.questions import list_questions
        assert list_questions(store, DEMO_DATASET) and not list_questions(store, DEMO_DATASET, archived=False)
