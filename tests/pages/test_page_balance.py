"""The Balance page with streamlit.testing.v1.AppTest on a 300-ticket demo project: the mix chart,
a preview that hits the target, a commit, a split with its leakage report, and drift."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from workbench.core.store import Store
from workbench.core.versions import get_version, list_versions
from workbench.data.demo_project import DEMO_DATASET, make_demo_project

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


@pytest.fixture
def demo(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=300)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    with open(info["files"]["tickets"], encoding="utf-8") as f:
        info["mix"] = Counter(json.loads(line)["category"] for line in f if line.strip())
    yield info
    st.cache_data.clear()
    st.cache_resource.clear()


def balance_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("page_balance.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


@pytest.mark.slow
def test_mix_and_preview_then_commit(demo):
    at = balance_page()
    assert at.title[0].value == "Balance"
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) >= 2
    # Side by side: current vs target shares, current vs result records.
    assert [spec["encoding"]["color"]["scale"]["domain"] for spec in specs[:2]] == [["current", "target"],
                                                                                   ["current", "result"]]
    # Uniform over 10 categories of 300 records: the rare ones are too small to downsample to 30.
    assert any("cannot be met exactly" in w for w in texts(at.warning))
    at.number_input(key=f"bal_size::{DEMO_DATASET}@1::category").set_value(100).run()
    at.radio(key="bal_strategy").set_value("hybrid").run()
    assert not at.exception
    assert any("hits the target exactly: 100 records" in s for s in texts(at.success)), texts(at.warning)
    at.text_input(key="bal_out").set_value("tickets-uniform")
    at.button(key="bal_commit").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert any("Wrote **tickets-uniform@1**: 100 records" in s for s in texts(at.success))
    assert at.selectbox(key="bal_dataset").value == "tickets-uniform"  # the new version is shown
    with Store.open(demo["project"]) as store:
        version = get_version(store, "tickets-uniform")
        counts = Counter(c for (c,) in store.cursor().execute(f"SELECT category FROM {version.table_name}").fetchall())
    assert counts == {c: 10 for c in demo["mix"]} and version.recipe["strategy"] == "hybrid"


def test_explicit_shares_and_errors_are_shown_not_raised(demo):
    at = balance_page()
    at.radio(key="bal_kind").set_value("Explicit shares").run()
    assert not at.exception
    # The table starts at the current shares, which add up to 1: a proportional target.
    assert any("Shares add up to" in c.value for c in at.caption)
    at.number_input(key="bal_min").set_value(400).run()  # 10 categories x 400 > the total of 300
    assert not at.exception
    assert any("minimums add up to 4,000" in e for e in texts(at.error))


@pytest.mark.slow
def test_split_shows_the_leakage_report(demo):
    at = balance_page()
    at.selectbox(key="split_stratify").set_value("category").run()
    at.button(key="split_run").click().run()
    assert not at.exception
    assert any("with a split column: train 240, val 30, test 30" in s for s in texts(at.success)), texts(at.error)
    assert any(s.startswith("Leakage report: 0 exact duplicate groups cross splits") for s in texts(at.success))
    with Store.open(demo["project"]) as store:
        assert [v.kind for v in list_versions(store, DEMO_DATASET)] == ["import", "split"]
    at.text_input(key="split_ratios").set_value("0.8,0.3").run()
    at.button(key="split_run").click().run()
    assert not at.exception and any("add up to 1.1" in e for e in texts(at.error))
    assert not any("--ratios" in e for e in texts(at.error))  # the app names its control: **Ratios**


def test_drift_warns_when_a_and_b_are_the_same_version(demo):
    at = balance_page()  # the demo has one version: A and B can only be the same
    assert any("A and B are both" in w.value for w in at.warning)
    assert at.button(key="drift_run").disabled


def test_drift_compares_two_different_versions_and_follows_the_page_version(demo):
    at = balance_page()
    at.text_input(key="split_ratios").set_value("0.8,0.2").run()
    at.button(key="split_run").click().run()
    at = balance_page()  # a fresh page: two versions now
    a = [s for s in at.selectbox if s.label == "Baseline (A)"][0]
    b = [s for s in at.selectbox if s.label == "Compare (B)"][0]
    assert a.value != b.value and not at.button(key="drift_run").disabled
    at.button(key="drift_run").click().run()
    assert not at.exception
    summary = " ".join(m.value for m in at.markdown)
    assert "No significant change in the category mix" in summary
    # choosing the other version at the top of the page moves the baseline with it
    picker = at.selectbox(key=f"bal_version::{DEMO_DATASET}")
    other = 1 if picker.value == 2 else 2
    picker.set_value(other).run()
    a = [s for s in at.selectbox if s.label == "Baseline (A)"][0]
    assert a.value.endswith(f"@{other}")


def test_every_control_has_help(demo):
    at = balance_page()
    widgets = [*at.text_input, *at.selectbox, *at.multiselect, *at.radio, *at.number_input, *at.button,
               *at.checkbox, *at.get("file_uploader")]
    at.radio(key="bal_kind").set_value("Proportional to another dataset").run()
    widgets += [*at.selectbox]
    assert widgets and not [getattr(w, "label", "?") for w in widgets if not getattr(w, "help", None)]


# ---------------------------------------------------------------- charts and words (issue 22)

def test_mix_charts_give_every_category_its_label(demo):
    from tests.pages.test_pages import chart_specs, empty_cells_for_missing, shows_every_label, whole_ticks

    at = balance_page()
    shares, records = chart_specs(at)[:2]
    for spec in (shares, records):
        assert shows_every_label(spec, "y", "category")
        assert spec["height"] == {"step": 28, "for": "position"}  # per category, whichever two bars sit in it
    assert whole_ticks(records, "x", "records")
    assert empty_cells_for_missing(at)


def test_shortfalls_name_the_controls_not_the_flags(demo):
    at = balance_page()
    at.radio(key="bal_strategy").set_value("upsample").run()
    at.number_input(key=f"bal_size::{DEMO_DATASET}@1::category").set_value(3000).run()
    warning = next(w.value for w in at.warning if "cannot be met exactly" in w.value)
    assert "**Max copies**" in warning and "--" not in warning
    at.button(key="bal_commit").click().run()
    assert not at.exception
    error = next(e.value for e in at.error if "cannot be met" in e.value)
    assert "**Accept the shortfall**" in error and "--allow-short" not in error


@pytest.mark.slow
def test_split_chart_stacks_in_the_legend_order_and_the_report_reads_well(demo):
    from tests.pages.test_pages import shows_every_label

    at = balance_page()
    at.selectbox(key="split_stratify").set_value("category").run()
    at.radio(key="split_group").set_value("near-dup").run()
    at.button(key="split_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    report = next(s.value for s in [*at.success, *at.error] if s.value.startswith("Leakage report"))
    assert "duplicate duplicate" not in report and "exact and near-duplicate groups cross splits" in report
    (chart,) = [c for c in at.get("vega_lite_chart") if '"split"' in c.proto.spec]
    spec = json.loads(chart.proto.spec)
    legend = spec["encoding"]["color"]["sort"]
    assert legend == ["train", "val", "test"]
    assert spec["encoding"]["order"] == {"field": "rank", "type": "quantitative", "sort": "ascending"}
    rows = pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pylist()
    ranks = {r["split"]: r["rank"] for r in rows}
    assert sorted(ranks, key=ranks.get) == legend  # stacked in the legend's order
    assert shows_every_label(spec, "y", "category")
