"""The Agreement page with AppTest: numbers for stored annotations and for an uploaded long-format file, the
charts, and consensus written as a new version. Expected values come from the `krippendorff` package."""

import csv
import json
from pathlib import Path

import krippendorff
import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from workbench.core.store import Store
from workbench.core.versions import list_versions
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.labels import annotations

pytestmark = pytest.mark.slow  # each drives the whole app through several reruns

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
TIMEOUT = 90


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=150)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info
    st.cache_data.clear()
    st.cache_resource.clear()


def import_answers(info):
    """The demo's answers as stored annotations (the demo project may hold them already: importing twice
    changes nothing)."""
    with Store.open(info["project"]) as store:
        for q in ("category", "urgency"):
            annotations.import_annotations(store, info["files"]["annotations"], dataset=DEMO_DATASET, question=q,
                                           item_col="item_id", annotator_col="annotator", value_col="value")


def expected_alpha(path, question, level, values=None):
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["question"] == question]
    items = list(dict.fromkeys(r["item_id"] for r in rows))
    people = sorted({r["annotator"] for r in rows})
    values = values or sorted({r["value"] for r in rows})
    data = np.full((len(people), len(items)), np.nan)
    for r in rows:
        data[people.index(r["annotator"]), items.index(r["item_id"])] = values.index(r["value"])
    return krippendorff.alpha(data, level_of_measurement=level)


def agreement_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("page_agreement.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_stored_annotations_show_coefficients_with_readings(project):
    import_answers(project)
    at = agreement_page()
    at.number_input(key="ag_resamples").set_value(200).run()
    assert not at.exception
    alpha = expected_alpha(project["files"]["annotations"], "category", "nominal")
    assert metric(at, "Krippendorff's alpha") == f"{alpha:.3f}"
    captions = " ".join(c.value for c in at.caption)
    assert "95% interval" in captions and "0.667" in captions and "Landis & Koch" in captions
    assert len(at.get("vega_lite_chart")) >= 4  # kappa heat map, per label, confusion, annotators

    at.selectbox(key="ag_question").set_value("urgency").run()
    assert not at.exception
    assert at.selectbox(key="ag_level::ordinal").value == "ordinal"  # a rating question
    ordinal = expected_alpha(project["files"]["annotations"], "urgency", "ordinal", values=list("12345"))
    assert metric(at, "Krippendorff's alpha") == f"{ordinal:.3f}"
    assert at.radio(key="ag_weights").options == ["none", "linear", "quadratic"]


def test_write_consensus_button_makes_a_new_version(project):
    import_answers(project)
    at = agreement_page()
    at.number_input(key="ag_resamples").set_value(0).run()
    at.radio(key="ag_method").set_value("dawid-skene").run()
    at.button(key="ag_write").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.success and f"**{DEMO_DATASET}@2**" in at.success[0].value
    with Store.open(project["project"]) as store:
        newest = list_versions(store, DEMO_DATASET)[-1]
    assert newest.number == 2 and newest.recipe["method"] == "dawid-skene"


def test_uploaded_long_format_file(project):
    data = Path(project["files"]["annotations"]).read_bytes()
    at = agreement_page()
    at.radio(key="ag_source").set_value("A long-format file").run()
    at.file_uploader(key="ag_upload").set_value(("labels.csv", data, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="ag_item_col").value == "item_id"
    assert at.selectbox(key="ag_annotator_col").value == "annotator"
    assert at.selectbox(key="ag_value_col").value == "value"
    at.number_input(key="ag_resamples").set_value(100).run()
    alpha = expected_alpha(project["files"]["annotations"], "category", "nominal")
    assert metric(at, "Krippendorff's alpha") == f"{alpha:.3f}"
    at.selectbox(key="ag_conf_a").set_value("carol").run()
    assert not at.exception
    assert at.get("download_button")


def test_file_with_one_annotator_says_why_instead_of_a_number(project, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("item,annotator,value\n1,ann,x\n2,ann,y\n")
    at = agreement_page()
    at.radio(key="ag_source").set_value("A long-format file").run()
    at.radio(key="ag_file_source").set_value("Path on the server").run()
    at.text_input(key="ag_path").set_value(str(path)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Krippendorff's alpha") == "—"
    assert any("only one annotator" in c.value for c in at.caption)


def test_no_questions_yet_and_bad_paths_are_one_line_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROJECT", str(tmp_path / "empty"))
    try:
        check_empty_project(tmp_path)
    finally:
        st.cache_resource.clear()


def check_empty_project(tmp_path):
    at = agreement_page()
    assert any("No questions" in i.value for i in at.info)
    at.radio(key="ag_source").set_value("A long-format file").run()
    at.radio(key="ag_file_source").set_value("Path on the server").run()
    at.text_input(key="ag_path").set_value(str(tmp_path / "missing.csv")).run()
    assert not at.exception and "no such file" in at.error[0].value


def test_every_agreement_widget_has_help(project):
    import_answers(project)
    at = agreement_page()
    widgets = [*at.text_input, *at.selectbox, *at.radio, *at.number_input, *at.button]
    assert widgets and not [w.label for w in widgets if not w.help]
    at.radio(key="ag_source").set_value("A long-format file").run()
    widgets = [*at.text_input, *at.selectbox, *at.radio, *at.file_uploader]
    assert not [w.label for w in widgets if not w.help]
    json.dumps([m.value for m in at.metric])


def test_agreement_charts_show_every_label_and_tables_show_names_in_full(project):
    from tests.pages.test_pages import chart_specs, empty_cells_for_missing, encodings, shows_every_label

    import_answers(project)
    at = agreement_page()
    at.number_input(key="ag_resamples").set_value(0).run()
    specs = chart_specs(at)
    per_label = next(s for s in specs if '"specific_agreement"' in json.dumps(s.get("encoding")))
    assert shows_every_label(per_label, "y", "label") and per_label["height"]["step"] >= 20
    labels = next(d.value for d in at.dataframe if "specific_agreement" in d.value.columns)
    shown = labels[labels["specific_agreement"].notna()]
    assert per_label["encoding"]["y"]["sort"] == list(shown["label"])  # the table lists labels as the chart does
    assert list(shown["specific_agreement"]) == sorted(shown["specific_agreement"])
    confusion = next(s for s in specs if '"row"' in json.dumps(s))
    assert shows_every_label(confusion, "x", "column") and shows_every_label(confusion, "y", "row")
    legend = next(e["color"]["legend"] for e in encodings(confusion) if "color" in e)
    assert legend["format"] == ",d" and legend["tickMinStep"] == 1  # counts: no 0.5 records
    coefficients = next(d for d in at.dataframe if "coefficient" in d.value.columns)
    assert json.loads(coefficients.proto.columns)["coefficient"]["width"] == "medium"
    assert empty_cells_for_missing(at)

