"""The Label errors section of the Inspect page (pages/inspect_label_errors.render) through AppTest."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import write_jsonl
from tests.inspect.test_label_errors import separable_rows
from tests.pages.test_pages import chart_specs
from workbench.core.store import Store
from workbench.core.versions import get_version, iter_version
from workbench.data.importer import import_file
from workbench.labels import flags

PAGES = Path(__file__).resolve().parents[2] / "pages"
SCRIPT = f"""
import sys
sys.path.insert(0, {str(PAGES)!r})
import inspect_label_errors, wb_ui
from workbench.core.versions import get_version
store = wb_ui.get_store()
inspect_label_errors.render(store, get_version(store, "tickets"))
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    rows, flipped = separable_rows()
    root = tmp_path / "project"
    with Store.open(root) as store:
        import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets")
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    yield root, rows, flipped
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.mark.slow
def test_suspects_side_by_side_filter_flag_and_relabel(project):
    root, rows, flipped = project
    at = AppTest.from_string(SCRIPT, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="le_go_1").value is False and not at.dataframe  # nothing computed before the button
    at.button(key="le_go_1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert all(w.help for w in [*at.selectbox, *at.button, *at.number_input, *at.text_input, *at.toggle])
    table = at.dataframe[0].value
    assert sorted(table["row"][:len(flipped)] - 1) == flipped
    assert {"given", "suggested", "quality", "text", "why"} <= set(table.columns)
    assert (table["given"][:len(flipped)] != table["suggested"][:len(flipped)]).all()
    (spec,) = chart_specs(at)  # the confusions chart: one bar per (given, suggested) pair
    assert spec["encoding"]["y"]["field"] == "confusion"

    # filter by one confusion pair: only its records stay
    options = at.selectbox(key="le_pair_1").options
    pick = options[1]
    at.selectbox(key="le_pair_1").set_value(pick).run()
    given, suggested = pick.rsplit(" (", 1)[0].split(" → ")
    shown = at.dataframe[0].value
    assert set(shown["given"]) == {given} and set(shown["suggested"]) == {suggested}

    at.selectbox(key="le_pair_1").set_value(options[0]).run()
    at.number_input(key="le_top_1").set_value(3).run()
    at.button(key="le_flag_1").click().run()
    assert any("Flagged 3 records" in s.value for s in at.success), [s.value for s in at.success]
    at.text_input(key="le_out_1").set_value("tickets-fixed").run()
    at.button(key="le_relabel_1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("tickets-fixed@1" in s.value for s in at.success), [s.value for s in at.success]
    top3 = sorted(at.dataframe[0].value["row"][:3] - 1)
    st.cache_resource.clear()  # release the app's store before opening the project here
    with Store.open(root) as store:
        assert sorted(f["row"] for f in flags.flags(store, get_version(store, "tickets"))) == top3
        new = get_version(store, "tickets-fixed")
        labels = [r["category"] for b in iter_version(store, new) for r in b.to_pylist()]
    truth = separable_rows(flips=0)[0]
    assert sorted(c["row"] for c in new.recipe["changes"]) == top3
    assert all(labels[r] == truth[r]["category"] for r in top3)
