"""The Datasets page beyond browsing (issue 22): one record opened in full, and the Export section with the
bytes it hands the browser, read back with pandas, pyarrow and the `datasets` library (not our own reader)."""

from __future__ import annotations

import io
import json
import re
import zipfile

import datasets
import pandas as pd
import pyarrow.parquet as pq
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.pages.test_pages import APP, TIMEOUT
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.data.downloads import export_bytes


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=120)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    with open(info["files"]["tickets"], encoding="utf-8") as f:
        tickets = [json.loads(line) for line in f if line.strip()]
    yield info["project"], tickets
    st.cache_data.clear()
    st.cache_resource.clear()


def test_the_download_bytes_are_the_records(project, tmp_path):
    root, tickets = project
    with Store.open(root) as store:
        version = get_version(store, DEMO_DATASET)
        name, data, mime, result = export_bytes(store, version, "csv")
        assert name == f"{DEMO_DATASET}-v1-csv.csv" and mime == "text/csv" and result["records"] == len(tickets)
        frame = pd.read_csv(io.BytesIO(data))
        assert frame["prompt"].tolist() == [t["prompt"] for t in tickets]
        name, data, _, _ = export_bytes(store, version, "chat", redact=("EMAIL",))
        lines = [json.loads(line) for line in data.decode().splitlines()]
        assert len(lines) == len(tickets) and lines[0]["messages"][0]["role"] == "user"
        emails = {e for t in tickets for e in re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", t["prompt"] + t["completion"])}
        text = data.decode()
        assert emails and "[EMAIL]" in text and not [e for e in emails if e in text]  # replaced in the file only
        _, data, _, _ = export_bytes(store, version, "parquet")
        assert pq.read_table(io.BytesIO(data)).num_rows == len(tickets)
        name, data, mime, _ = export_bytes(store, version, "hf")
    assert name.endswith(".zip") and mime == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(tmp_path / "unzipped")
    loaded = datasets.load_from_disk(str(tmp_path / "unzipped" / name[:-4]))
    assert loaded["train"].num_rows == len(tickets)


def test_export_section_prepares_a_download(project):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    at.selectbox(key="ex_format").set_value("parquet")
    at.button(key="ex_prepare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = at.get("download_button")
    assert buttons and f"{DEMO_DATASET}-v1-parquet.parquet" in buttons[0].proto.label


def test_a_row_picked_in_the_grid_opens_in_full(project):
    """The grid cuts long text; the picked record is shown uncut below it, texts as text."""
    _, tickets = project
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.session_state[f"browse_grid::{DEMO_DATASET}@1::0"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value.startswith("**Record at row")]
    shown = [t.value for t in at.get("text")]
    assert shown == [tickets[2]["prompt"], tickets[2]["completion"]]  # whole, as imported
    assert len(tickets[2]["completion"]) > 200  # longer than a grid cell shows
