"""The Review page's preference section (pages/review_preferences.py) with AppTest: the owner turns a judged
pairwise review into a preference dataset with one click, and the version is there with the review's counts."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.models.test_review import ANN, make_project
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.models import review as R

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


def test_write_a_preference_dataset_from_the_results_view(tmp_path, monkeypatch):
    root = tmp_path / "project"
    store, evals = make_project(root, records=30, runs=2)
    rv = R.create_review(store, evals, kind="pairwise", sample_size=6, overlap=1, seed=4)
    for k, item in enumerate(R.review_items(store, rv)["item"]):
        R.submit(store, rv, item, choice=("left", "right", "tie")[k % 3], user=ANN)
    store.close()
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    try:
        at = AppTest.from_file(str(APP), default_timeout=90)
        at.run()
        at.switch_page("page_review.py").run()
        at.segmented_control(key="review_mode").set_value("Results").run()
        assert not at.exception, [e.value for e in at.exception]
        at.text_input(key=f"rv_pref::{rv.review_id}::out").input("from-review").run()
        at.button(key=f"rv_pref::{rv.review_id}::go").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("from-review@1: 4 pairs" in s.value.replace("\\", "") for s in at.success), [s.value for s in at.success]
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
    with Store.open(root) as store:
        version = get_version(store, "from-review")
        assert version.format == "preference" and version.recipe["counts"]["ties"] == 2
