"""The Agreement page's accuracy per annotator, with AppTest on the demo project: the table's counts are worked
out in plain Python from the demo's answers file (leave-one-out unanimous others, and two adjudicated records),
the intervals by statsmodels; the chart draws the intervals as error bars."""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import streamlit as st
from statsmodels.stats.proportion import proportion_confint
from streamlit.testing.v1 import AppTest

from workbench.core.store import Store
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.labels import adjudication, questions

pytestmark = pytest.mark.slow  # drives the whole app

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
TIMEOUT = 90


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=150)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info
    st.cache_data.clear()
    st.cache_resource.clear()


def expected_rows(path, gold: dict) -> dict:
    """(annotator, reference) -> (correct, compared), in plain Python from the answers file."""
    answers: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["question"] == "category":
                answers.setdefault(r["item_id"], {})[r["annotator"]] = r["value"]
    counts: Counter = Counter()
    for item, given in answers.items():
        for who, value in given.items():
            others = [v for w, v in given.items() if w != who]
            if len(others) >= 2 and len(set(others)) == 1:
                counts[(who, "high_confidence", "n")] += 1
                counts[(who, "high_confidence", "k")] += value == others[0]
            if item in gold:
                counts[(who, "adjudicated", "n")] += 1
                counts[(who, "adjudicated", "k")] += value == gold[item]
    return {(who, ref): (counts[(who, ref, "k")], n) for (who, ref, what), n in counts.items() if what == "n"}


def test_accuracy_per_annotator_table_and_error_bars(project):
    with open(project["files"]["annotations"], newline="", encoding="utf-8") as f:
        first = {}  # item -> the first answer given to it
        for r in csv.DictReader(f):
            if r["question"] == "category":
                first.setdefault(r["item_id"], r["value"])
    items = list(first)
    with Store.open(project["project"]) as store:
        q = questions.get_question(store, DEMO_DATASET, "category")
        gold = {items[0]: first[items[0]], items[1]: next(c for c in q.choices if c != first[items[1]])}
        for item, value in gold.items():
            adjudication.set_gold(store, q, item, value)
    expected = expected_rows(project["files"]["annotations"], gold)
    assert {ref for _, ref in expected} == {"adjudicated", "high_confidence"}

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("page_agreement.py").run()
    at.number_input(key="ag_resamples").set_value(0).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Accuracy per annotator" in [s.value for s in at.subheader]
    assert any("at least 2 others answered and all gave the same answer" in c.value for c in at.caption)

    table = next(d.value for d in at.dataframe if "against" in d.value.columns)
    got = {(r.annotator, r.reference): r for r in table.itertuples()}
    assert set(got) == set(expected)
    for key, (k, n) in expected.items():
        row = got[key]
        assert (row.correct, row.items) == (k, n), key
        assert (row.ci_low, row.ci_high) == pytest.approx(proportion_confint(k, n, method="wilson")), key

    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    chart = next(s for s in specs if "errorbar" in json.dumps(s))
    layers = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in chart["layer"]]
    assert layers == ["bar", "errorbar"]
    assert chart["layer"][1]["encoding"]["x2"]["field"] == "ci_high"
