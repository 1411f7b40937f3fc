"""The Inspect page (and the flag filter of the Datasets browser), driven with AppTest on a demo project
plus a small dataset whose flagged records are known."""

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.inspect.test_quality import SPECIAL, make_version
from tests.inspect.test_tokens import build_tokenizer
from workbench.core.store import Store
from workbench.core.versions import get_version, list_datasets
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.inspect import pii, quality, tokens

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=300)
    with Store.open(info["project"]) as store:
        make_version(store, "special")
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info
    st.cache_data.clear()
    st.cache_resource.clear()  # closes the app's store


def inspect_page(dataset: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.switch_page("page_inspect.py").run()
    if dataset:
        at.selectbox(key="inspect_dataset").set_value(dataset).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def with_store(project, fn):
    with Store.open(project["project"]) as store:
        return fn(store)


@pytest.mark.slow
def test_lengths_pii_and_quality_tabs_render_with_labels(project):
    at = inspect_page(DEMO_DATASET)
    assert at.title[0].value == "Inspect"
    assert [t.label for t in at.tabs] == ["Lengths", "Duplicates", "PII", "Quality"]
    assert any("Approximate counts" in w.value for w in at.warning)
    st.cache_resource.clear()  # let this test read the same project
    summary, report, flags = with_store(project, lambda s: (
        tokens.token_summary(s, get_version(s, DEMO_DATASET), max_length=1024),
        pii.pii_report(s, get_version(s, DEMO_DATASET)), quality.quality_report(s, get_version(s, DEMO_DATASET))))
    assert metric(at, "Records longer than max length") == f"{summary['truncation']['truncated_records']:,}"
    assert metric(at, "Records with personal data") == f"{report['records_with_pii']:,}"
    assert metric(at, "Records with any flag") == f"{flags['flagged']:,}"
    widgets = [*at.text_input, *at.selectbox, *at.multiselect, *at.radio, *at.number_input, *at.button]
    assert widgets and not [w.label for w in widgets if not w.help]


@pytest.mark.slow
def test_a_real_tokenizer_counts_exactly(project, tmp_path):
    folder = build_tokenizer(tmp_path / "tok")
    at = inspect_page(DEMO_DATASET)
    at.selectbox(key="inspect_tokenizer").set_value("Other (folder or model id)…").run()
    at.text_input(key="inspect_tokenizer_other").set_value(str(folder)).run()
    assert not at.exception and not any("Approximate counts" in w.value for w in at.warning)
    at.button(key="inspect_count_tokens").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("chat template" in c.value for c in at.caption)
    at.number_input(key="inspect_max_length").set_value(200).run()
    st.cache_resource.clear()
    summary = with_store(project, lambda s: tokens.token_summary(
        s, get_version(s, DEMO_DATASET), tokens.load_tokenizer(s, str(folder)), max_length=200))
    assert metric(at, "Completion tokens lost") == f"{summary['truncation']['supervised_tokens_lost']:,}"


def test_redact_from_the_pii_tab(project):
    at = inspect_page(DEMO_DATASET)
    at.text_input(key=f"inspect_redact_out::{DEMO_DATASET}@1").set_value("tickets-clean")
    at.button(key="inspect_redact").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Wrote **tickets-clean@1**" in s.value for s in at.success)
    st.cache_resource.clear()
    counts = with_store(project, lambda s: pii.pii_report(s, get_version(s, "tickets-clean"))["counts"])
    assert sum(v for k, v in counts.items() if k != "ORDER") == 0  # order numbers are not personal: kept


def test_quality_tab_lists_flagged_records(project):
    at = inspect_page("special")
    assert metric(at, "Records with any flag") == f"{len(SPECIAL):,}"
    at.selectbox(key="inspect_flag::special@1").set_value("junk").run()
    frames = [d.value for d in at.dataframe if "row" in d.value.columns]
    assert frames and len(frames[-1]) == 3
    assert all(p.startswith(("####", "My order arrived", "😀")) for p in frames[-1]["prompt"])


def test_datasets_browser_filters_by_flag(project):
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.selectbox(key="dataset").set_value("special").run()
    (flag,) = [s for s in at.selectbox if s.label == "Flag"]
    assert flag.help and "junk" in flag.options
    flag.set_value("language").run()
    assert not at.exception, [e.value for e in at.exception]
    caption = next(c.value for c in at.caption if c.value.startswith("Showing rows"))
    assert "of 2 matching the filters" in caption
    assert any(d for d in list_datasets_names(project) if d == "special")


def list_datasets_names(project):
    st.cache_resource.clear()
    return with_store(project, lambda s: [d["name"] for d in list_datasets(s)])


# ---------------------------------------------------------------- charts, empty states and words (issue 22)

def test_a_version_without_flags_says_so_instead_of_an_empty_chart(tmp_path, monkeypatch):
    from tests.pages.test_pages import chart_specs

    root = tmp_path / "clean"
    with Store.open(root) as store:
        make_version(store, "clean", extra=[])  # the demo tickets alone: no record carries a flag
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    try:
        at = inspect_page("clean")
        (flagged,) = [m for m in at.metric if m.label == "Records with any flag"]
        assert flagged.value == "0" and not flagged.proto.delta  # no "0.0%" and no arrow
        assert any(s.value.startswith("No flags") for s in at.success)
        assert not [s for s in chart_specs(at) if "flag" in json.dumps(s)]  # the quality tab draws no chart
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_inspect_charts_show_every_label_and_whole_counts(project):
    from tests.pages.test_pages import chart_specs, empty_cells_for_missing, shows_every_label, whole_ticks

    at = inspect_page("special")
    specs = chart_specs(at)
    quality_chart = next(s for s in specs if "flag" in json.dumps(s.get("encoding")))
    assert shows_every_label(quality_chart, "y", "flag") and whole_ticks(quality_chart, "x", "records")
    histogram = next(s for s in specs if "start" in json.dumps(s))
    assert whole_ticks(histogram, "y", "records")
    (flagged,) = [m for m in at.metric if m.label == "Records with any flag"]
    assert flagged.proto.delta.endswith("of records") and flagged.proto.direction == 2  # a share: no arrow
    assert empty_cells_for_missing(at)
    lengths = next(d for d in at.dataframe if "part" in d.value.columns)
    assert json.loads(lengths.proto.columns)["part"]["width"] == "medium"  # "completion" is not cut


def test_tiny_is_offered_only_once_built_and_errors_name_controls(project):
    at = inspect_page(DEMO_DATASET)
    assert "tiny" not in at.selectbox(key="inspect_tokenizer").options
    at.selectbox(key="inspect_tokenizer").set_value("Other (folder or model id)…").run()
    at.text_input(key="inspect_tokenizer_other").set_value("tiny").run()
    assert not at.exception and at.error
    message = at.error[0].value
    assert "--tokenizer" not in message and "`workbench train`" not in message
    assert "Approximate (no tokenizer)" in message and "Train" in message
    st.cache_resource.clear()
    tiny = Path(project["project"]) / "models" / "tiny"
    tiny.mkdir(parents=True)
    (tiny / "tokenizer.json").write_text("{}")
    assert "tiny" in inspect_page(DEMO_DATASET).selectbox(key="inspect_tokenizer").options
