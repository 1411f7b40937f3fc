"""The Datasets page's import when the column names do not say the format: the app offers the file's columns as
select boxes (format, then a column per part) instead of CLI flags, and imports with the mapping picked.
Driven with AppTest on a demo project, uploading the file through the page's uploader."""

from __future__ import annotations

import csv
import io
import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.pages.test_pages import APP, TIMEOUT
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo_project import make_demo_project

TICKETS = [{"ticket_body": "My parcel ORD-1 has not arrived.\r\nCan you check?", "agent_reply": "It ships today."},
           {"ticket_body": "How do I reset my PIN?", "agent_reply": "Open Settings, then Security."},
           {"ticket_body": "Refund for order ORD-7?", "agent_reply": "Refunded; allow 3 days."}]


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=60)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info["project"]
    st.cache_data.clear()
    st.cache_resource.clear()


def csv_bytes(rows: list[dict]) -> bytes:
    out = io.StringIO(newline="")
    w = csv.DictWriter(out, fieldnames=list(rows[0]))  # the csv module's default row ends are CRLF
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode("utf-8")


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(rows: list[dict], name: str, dataset: str, *, choose: bool = False) -> AppTest:
    at = ok(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    at.file_uploader(key="import_upload").set_value((name, csv_bytes(rows), "text/csv"))
    at.text_input(key="import_name").set_value(dataset)
    if choose:
        at.checkbox(key="import_choose_columns").check()
    return ok(at.button(key="import_button").click().run())


def control(at: AppTest, label: str):
    """The mapping's select box with this label (its key carries the saved file's path)."""
    found = [s for s in at.selectbox if s.key and s.key.startswith("mapping_") and s.label == label]
    assert len(found) == 1, [(s.key, s.label) for s in at.selectbox]
    return found[0]


def stored(root: str, ref: str, cols: str) -> tuple[list[tuple], object]:
    st.cache_resource.clear()  # closes the app's store first
    with Store.open(root) as store:
        v = get_version(store, ref)
        return store.cursor().execute(f"SELECT {cols} FROM {v.table_name} ORDER BY _row").fetchall(), v


def test_an_unknown_shape_offers_the_columns_and_imports_with_the_mapping(project):
    at = upload(TICKETS, "tickets.csv", "helpdesk")
    assert not at.success and not at.error  # nothing imported yet, and no error: a question for the user
    (warning,) = [w.value for w in at.warning if "column names do not say" in w.value]
    assert "--" not in warning and "pass" not in warning.lower() and "ticket\\_body" in warning
    fmt = control(at, "Format")
    assert fmt.options == ["prompt-completion", "classification", "chat"] and fmt.value == "prompt-completion"
    prompt, completion = control(at, "Prompt column"), control(at, "Completion column")
    assert prompt.options == completion.options == ["ticket_body", "agent_reply"]
    assert all(w.help for w in [*at.selectbox, *at.button, *at.checkbox, *at.text_input, *at.radio])

    prompt.set_value("agent_reply")
    completion.set_value("agent_reply")  # one column for both parts: refused, nothing imported
    at = ok(at.button(key="mapping_import").click().run())
    assert any("different column for each part" in e.value for e in at.error) and not at.success

    control(at, "Prompt column").set_value("ticket_body")
    control(at, "Completion column").set_value("agent_reply")
    at = ok(at.button(key="mapping_import").click().run())
    assert not [s for s in at.selectbox if s.key and s.key.startswith("mapping_")]  # the mapping is done
    message = at.success[0].value
    assert "Imported 3 records into **helpdesk@1** (prompt-completion" in message
    assert "Line endings made plain line feeds in 1 record" in message  # the CRLF inside the first ticket
    rows, version = stored(project, "helpdesk", "prompt, completion")
    assert rows == [(t["ticket_body"].replace("\r\n", "\n"), t["agent_reply"]) for t in TICKETS]
    assert version.recipe["mapping"] == {"prompt": "ticket_body", "completion": "agent_reply"}
    assert version.recipe["line_endings"]["normalised"] == 1


def test_choose_the_columns_myself_for_a_file_that_would_be_detected(project):
    rows = [{"question": f"Card {i} lost?", "answer": f"Blocked {i}.", "team": "cards" if i % 2 else "fraud"}
            for i in range(4)]
    at = upload(rows, "qa.csv", "teams", choose=True)
    assert not [w for w in at.warning if "column names do not say" in w.value]  # asked for, not a problem
    control(at, "Format").set_value("classification")
    at = ok(at.run())
    assert control(at, "Text column").value == "question"
    control(at, "Label column").set_value("team")
    at = ok(at.button(key="mapping_import").click().run())
    assert "Imported 4 records into **teams@1** (classification" in at.success[0].value
    got, version = stored(project, "teams", "prompt, completion, team")
    assert got == [(r["question"], None, r["team"]) for r in rows] and version.label_column == "team"


def test_cancel_forgets_the_mapping(project):
    at = upload(TICKETS, "tickets.csv", "helpdesk")
    assert control(at, "Prompt column")
    at = ok(at.button(key="mapping_cancel").click().run())
    assert not [s for s in at.selectbox if s.key and s.key.startswith("mapping_")] and not at.success


def test_a_format_the_mapping_cannot_name_says_what_to_do_in_app_words(project):
    at = ok(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    at.file_uploader(key="import_upload").set_value(("tickets.csv", csv_bytes(TICKETS), "text/csv"))
    at.text_input(key="import_name").set_value("helpdesk")
    at.selectbox(key="import_format").set_value("preference")
    at = ok(at.button(key="import_button").click().run())
    message = at.error[0].value
    assert "preference format needs a prompt column" in message and "Choose the columns myself" in message
    assert "--" not in message and not [s for s in at.selectbox if s.key and s.key.startswith("mapping_")]


def test_a_conversation_column_of_any_name_is_mapped_as_chat(project):
    """A CSV whose conversations sit in a `dialog` column (JSON text in each cell): the names say nothing, the
    mapping offers chat with a conversation column, and the import gives the conversations' records."""
    rows = [{"case": f"c{i}", "dialog": json.dumps([{"role": "user", "content": f"Where is order ORD-{i}?"},
                                                    {"role": "assistant", "content": f"ORD-{i} ships today."}])}
            for i in range(3)]
    at = upload(rows, "dialogs.csv", "chats")
    assert [w for w in at.warning if "column names do not say" in w.value]
    control(at, "Format").set_value("chat")
    at = ok(at.run())
    assert control(at, "Conversation column").help
    control(at, "Conversation column").set_value("dialog")
    at = ok(at.button(key="mapping_import").click().run())
    assert "Imported 3 records into **chats@1** (chat" in at.success[0].value
    got, _ = stored(project, "chats", "prompt, completion, \"case\"")
    assert got == [(f"Where is order ORD-{i}?", f"ORD-{i} ships today.", f"c{i}") for i in range(3)]
