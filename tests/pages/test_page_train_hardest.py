"""The Train page's "Hardest records" for a finished run (streamlit.testing.v1.AppTest): the per-record
losses highest first with their text, a histogram, and the top N flagged for the Label queue."""

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.trainers.test_trainer_fixtures import TINY
from workbench.core.store import Store
from workbench.data.demo_project import make_demo_project
from workbench.labels import flags
from workbench.models import runs

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A demo project with one finished tiny run, started as the Train page starts one (shared: one run)."""
    info = make_demo_project(tmp_path_factory.mktemp("hardest") / "project", records=60)
    with Store.open(info["project"]) as store:
        cfg = runs.default_config(store, **{**TINY, "max_steps": 4, "eval_every": 4})
        run_id = runs.launch(store, "support-tickets", cfg)
    final = runs.wait_run(Path(info["project"]) / "runs", run_id, poll_s=0.2, timeout_s=240)
    assert final["status"] == "completed", final
    return Path(info["project"]), run_id


@pytest.fixture
def finished_run(trained, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROJECT", str(trained[0]))
    yield trained
    st.cache_data.clear()
    st.cache_resource.clear()


def train_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.switch_page("page_train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def hardest(at: AppTest):
    return next(e for e in at.expander if e.label == "Hardest records")


@pytest.mark.slow
def test_hardest_records_listed_charted_and_flagged(finished_run):
    project, run_id = finished_run
    recorded = [json.loads(x) for x in (project / "runs" / run_id / "record_losses.jsonl").read_text().splitlines()]
    at = train_page()
    box = hardest(at)
    table = next(d.value for d in box.dataframe)
    assert len(table) == len(recorded) and list(table["loss"]) == sorted((r["loss"] for r in recorded), reverse=True)
    top = max(recorded, key=lambda r: r["loss"])
    assert table["row"].iloc[0] == top["line"] + 1  # rows shown from 1
    assert table["prompt"].iloc[0] and table["answer"].iloc[0]
    assert box.get("arrow_vega_lite_chart") or box.get("vega_lite_chart")  # the histogram
    assert all(w.help for w in [*box.number_input, *box.button])

    box.number_input(key=f"train_hard_top_{run_id}").set_value(5)
    box.button(key=f"train_hard_flag_{run_id}").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Flagged 5 records" in s.value for s in at.success)
    with Store.open(project) as store:
        got = flags.flags(store, "support-tickets@1")
    assert len(got) == 5 and {f["row"] for f in got} == {int(r) - 1 for r in table["row"].iloc[:5]}
    assert got[0]["reason"].startswith("training loss ") and got[0]["reason"].endswith(f"after run {run_id}")


@pytest.mark.slow
def test_a_run_without_losses_says_so(finished_run):
    project, run_id = finished_run
    path = project / "runs" / run_id / "record_losses.jsonl"
    path.rename(path.with_suffix(".away"))
    try:
        box = hardest(train_page())
        assert not box.dataframe
        assert any("recorded no per-record losses" in c.value for c in box.caption)
    finally:
        path.with_suffix(".away").rename(path)
