"""The Duplicates section of the Inspect page (pages/inspect_duplicates.render) through AppTest."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import write_jsonl
from workbench.core.store import Store
from workbench.core.versions import get_version, iter_version
from workbench.data.importer import import_file

SCRIPT = Path(__file__).resolve().parent / "dedup_page_app.py"
WORDS = [f"word{i}" for i in range(100)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    long = " ".join(WORDS[:40])
    rows = [
        {"prompt": "Where is my parcel?", "completion": "On its way.", "category": "shipping", "split": "train"},
        {"prompt": "where is my  PARCEL?", "completion": "On its way.", "category": "shipping", "split": "test"},
        {"prompt": long, "completion": "ok", "category": "refund", "split": "train"},
        {"prompt": " ".join(WORDS[:39] + ["changed"]), "completion": "ok", "category": "refund", "split": "train"},
        {"prompt": "Cancel my order", "completion": "Done.", "category": "cancellation", "split": "train"},
        {"prompt": "cancel my order", "completion": "Done.", "category": "refund", "split": "val"},
        {"prompt": "Something unrelated", "completion": "Sure.", "category": "billing", "split": "train"},
    ]
    root = tmp_path / "project"
    with Store.open(root) as store:
        import_file(store, write_jsonl(tmp_path / "d.jsonl", rows), "d")
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    monkeypatch.setenv("WORKBENCH_DEDUP_DATASET", "d")
    yield root
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.mark.slow
def test_duplicates_section_lists_clusters_and_writes_a_deduplicated_version(project):
    at = AppTest.from_file(str(SCRIPT), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Records"] == "7" and metrics["Exact copies"] == "2" and metrics["Near copies"] == "1"
    assert metrics["Clusters"] == "3"
    assert metrics["Exact pairs"] == "2" and metrics["Near pairs"] == "0"  # parcel train/test, order train/val
    assert all(s.help for s in at.slider) and all(b.help for b in at.button)
    listing = next(d.value for d in at.dataframe if "preview" in d.value.columns)
    assert sorted(listing["size"]) == [2, 2, 2]
    conflicts = next(d.value for d in at.dataframe if "labels" in d.value.columns)
    assert list(conflicts["labels"].iloc[0]) == ["cancellation", "refund"]

    # open the near cluster (first row 3), keep all of it; keep the second parcel record instead of the first
    at.selectbox(key="dd_open_1").set_value(2).run()
    assert [t.value for t in at.text_area if t.label == "prompt"][:1] == [" ".join(WORDS[:40])]
    at.radio(key="dd_mode_2").set_value("All records (not duplicates)").run()
    at.selectbox(key="dd_open_1").set_value(0).run()
    at.radio(key="dd_mode_0").set_value("A record I choose").run()
    at.selectbox(key="dd_keep_0").set_value(1).run()
    at.button(key="dd_resolve_1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("d@2" in s.value for s in at.success), [s.value for s in at.success]
    st.cache_resource.clear()  # release the app's store before opening the project here
    with Store.open(project) as store:
        new = get_version(store, "d@2")
        prompts = [p for t in iter_version(store, new) for p in t.column("prompt").to_pylist()]
        assert new.recipe["dropped_rows"] == [0, 5] and new.parent_id == get_version(store, "d@1").version_id
    assert prompts[0] == "where is my  PARCEL?" and len(prompts) == 5


@pytest.mark.slow
def test_threshold_slider_recomputes(project):
    at = AppTest.from_file(str(SCRIPT), default_timeout=60).run()
    at.slider(key="dd_threshold").set_value(1.0).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Near copies"] == "0"
    at.toggle(key="dd_near").set_value(False).run()
    assert {m.label: m.value for m in at.metric}["Near copies"] == "off"


def test_cluster_size_chart_counts_whole_clusters_and_tables_show_empty_cells(project):
    from tests.pages.test_pages import chart_specs, empty_cells_for_missing, whole_ticks

    at = AppTest.from_file(str(SCRIPT), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    (spec,) = chart_specs(at)  # three clusters of two: a count axis would otherwise tick at 0.5, 1.5, ...
    assert whole_ticks(spec, "y", "clusters")
    assert empty_cells_for_missing(at)
    assert any(c.value.startswith("Keeps one record per cluster (0 chosen by you, 0 clusters kept whole); about 3 "
                                  "records go.") for c in at.caption)
