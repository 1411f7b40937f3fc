"""The Streamlit pages, driven with streamlit.testing.v1.AppTest against a 300-ticket demo project,
and workbench.data.uploads.save_upload, which the import form uses for uploaded bytes."""

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from workbench.core.project import init_project
from workbench.data import demo
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.data.uploads import safe_filename, save_upload

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
PAGES = ["page_inspect.py", "page_label.py", "page_agreement.py", "page_balance.py", "page_train.py",
                "page_evaluate.py", "page_review.py"]
TIMEOUT = 60


@pytest.fixture
def demo_project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=300)
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield info
    st.cache_data.clear()
    st.cache_resource.clear()  # closes the app's store (on_release), so projects never share one


@pytest.fixture
def tickets(demo_project):
    with open(demo_project["files"]["tickets"], encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest, column: str):
    """The first dataframe on the page that has this column (records: 'row'; quarantine: 'raw')."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


def showing(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Showing rows"))


def contains(record: dict, text: str) -> bool:
    return any(text.lower() in (record.get(k) or "").lower() for k in ("prompt", "completion"))


# ---------------------------------------------------------------- every page

def test_every_page_renders_without_exception(demo_project):
    at = app()
    assert DEMO_DATASET in list(table(at, "name")["name"])
    assert demo_project["project"] in [c.value for c in at.sidebar.code]
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.title or at.header, page
    at.switch_page("page_datasets.py").run()
    assert not at.exception and at.title[0].value == "Datasets"


def test_empty_project_invites_an_import(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROJECT", str(tmp_path / "empty"))
    try:
        at = app()
        assert any("No datasets yet" in i.value for i in at.info)
        assert at.button(key="import_button")
    finally:
        st.cache_resource.clear()


def test_every_input_widget_has_help(demo_project):
    at = app()
    widgets = [*at.text_input, *at.text_area, *at.selectbox, *at.multiselect, *at.radio, *at.number_input,
               *at.file_uploader, *at.button]
    assert widgets
    assert not [w.label for w in widgets if not w.help]


# ---------------------------------------------------------------- browse

def test_paging_shows_50_rows_and_moves_through_pages(demo_project):
    at = app()
    rows = table(at, "row")
    assert len(rows) == 50 and list(rows["row"]) == list(range(1, 51))
    assert showing(at).startswith("Showing rows 1–50 of 300")
    (records,) = [d for d in at.dataframe if "row" in d.value.columns]
    shown = list(records.proto.column_order)
    assert "prompt" in shown and "messages" not in shown  # a chat-only column, empty in this dataset

    at.number_input(key="browse_page").set_value(6).run()
    assert list(table(at, "row")["row"]) == list(range(251, 301))
    assert showing(at).startswith("Showing rows 251–300 of 300")

    at.selectbox(key="browse_size").set_value(100).run()  # a new page size starts again at page 1
    assert at.number_input(key="browse_page").value == 1
    assert len(table(at, "row")) == 100


def test_text_filter_narrows_to_the_matching_records(demo_project, tickets):
    word = "refund"
    expected = [i + 1 for i, t in enumerate(tickets) if contains(t, word)]
    assert 0 < len(expected) < len(tickets)

    at = app()
    at.text_input(key="browse_text").set_value(word).run()
    assert not at.exception
    assert f"of {len(expected):,} matching the filters" in showing(at)
    assert list(table(at, "row")["row"]) == expected[:50]

    at.text_input(key="browse_text").set_value("no ticket says zyxxyq").run()
    assert any("No records match" in i.value for i in at.info)


def test_category_filter_shows_only_those_categories(demo_project, tickets):
    mix = Counter(t["category"] for t in tickets)
    at = app()
    (picker,) = [m for m in at.multiselect if m.label == "Categories"]
    assert set(picker.options) == set(mix)
    picker.set_value(["billing", "warranty"]).run()
    rows = table(at, "row")
    expected = mix["billing"] + mix["warranty"]
    assert f"of {expected:,} matching the filters" in showing(at)
    assert set(rows["category"]) <= {"billing", "warranty"} and len(rows) == min(expected, 50)


def test_category_chart_is_drawn(demo_project):
    at = app()
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert "sum" in json.dumps(spec) and "datum.records / datum.total" in json.dumps(spec)  # counts and shares
    assert not at.exception


# ---------------------------------------------------------------- SQL console

def test_sql_console_counts_and_refuses_writes(demo_project, tickets):
    at = app()
    sql = at.text_area(key=f"sql::{DEMO_DATASET}")
    assert DEMO_DATASET in sql.value
    sql.set_value(f"SELECT count(*) AS n FROM \"{DEMO_DATASET}\" WHERE category = 'refund'")
    at.button(key="sql_run").click().run()
    assert not at.error and not at.exception
    assert table(at, "n")["n"].tolist() == [sum(t["category"] == "refund" for t in tickets)]

    at.text_area(key=f"sql::{DEMO_DATASET}").set_value("DROP TABLE x")
    at.button(key="sql_run").click().run()
    assert not at.exception
    assert at.error and "only SELECT" in at.error[0].value
    assert DEMO_DATASET in list(table(at, "name")["name"])


# ---------------------------------------------------------------- import

def import_path(at: AppTest, path, dataset: str, on_error: str) -> AppTest:
    at.radio(key="import_source").set_value("Path on the server").run()
    at.text_input(key="import_path").set_value(str(path))
    at.text_input(key="import_name").set_value(dataset)
    at.radio(key="import_on_error").set_value(on_error)
    return at.button(key="import_button").click().run()


def test_import_malformed_file_fail_then_skip(demo_project, tmp_path):
    malformed = demo_project["files"]["malformed"]
    # The generator says which lines it broke; a second copy must match the demo's file byte for byte.
    bad_lines = [line for line, _ in demo.write_malformed_jsonl(tmp_path / "copy.jsonl")]
    assert (tmp_path / "copy.jsonl").read_bytes() == Path(malformed).read_bytes()

    at = import_path(app(), malformed, "bad-tickets", "fail")
    assert not at.exception
    assert at.error and "nothing was imported" in at.error[0].value
    assert list(table(at, "error")["line"]) == bad_lines
    assert "bad-tickets" not in list(table(at, "name")["name"])

    at = import_path(at, malformed, "bad-tickets", "skip")
    assert not at.exception and not at.error
    assert at.success and "Imported 14 records into **bad-tickets@1**" in at.success[0].value
    assert at.warning and "Skipped 6 bad rows" in at.warning[0].value
    assert "bad-tickets" in list(table(at, "name")["name"])
    assert at.selectbox(key="dataset").value == "bad-tickets"  # the new dataset is shown
    quarantined = table(at, "raw")
    assert list(quarantined["line"]) == bad_lines
    assert quarantined["error"].str.len().min() > 0


def test_import_errors_are_one_line_not_tracebacks(demo_project, tmp_path):
    at = import_path(app(), tmp_path / "missing.jsonl", "whatever", "fail")
    assert not at.exception
    assert at.error and "no such file" in at.error[0].value

    at = import_path(at, demo_project["files"]["tickets"], "no good name!", "fail")
    assert not at.exception and "is not allowed" in at.error[0].value


def test_import_through_the_file_uploader(demo_project):
    data = "".join(json.dumps({"text": f"ticket {i} about my parcel", "label": ["shipping", "refund"][i % 2]}) + "\n"
                   for i in range(30)).encode()
    at = app()
    at.file_uploader(key="import_upload").set_value(("../../evil/.tickets.jsonl", data, "application/json"))
    at.run()
    at.text_input(key="import_name").set_value("uploaded")
    at.button(key="import_button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Imported 30 records into **uploaded@1**" in at.success[0].value
    saved = Path(demo_project["project"]) / "uploads" / "upload.tickets.jsonl"
    assert saved.read_bytes() == data
    assert "uploaded" in list(table(at, "name")["name"])
    assert showing(at).startswith("Showing rows 1–30 of 30")


# ---------------------------------------------------------------- save_upload

@pytest.mark.parametrize("name, expected", [
    ("tickets.jsonl", "tickets.jsonl"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\..\\tickets.csv", "tickets.csv"),
    ("/abs/path/data.parquet", "data.parquet"),
    ("..", "upload"),
    (".", "upload"),
    ("", "upload"),
    (".jsonl", "upload.jsonl"),
    (".hidden.csv", "upload.hidden.csv"),
    ("my tickets (v2).jsonl", "my_tickets_v2.jsonl"),
    ("bad\x00name.tsv", "bad_name.tsv"),
    ("données.csv", "données.csv"),
    ("trailing.dots...", "trailing.dots"),
])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_safe_filename_is_bounded_and_keeps_the_extension():
    name = safe_filename("x" * 500 + ".parquet")
    assert name.endswith(".parquet") and len(name) <= 120


def test_save_upload_writes_inside_uploads_and_never_overwrites(tmp_path):
    project = init_project(tmp_path / "p")
    first = save_upload(project, "tickets.jsonl", b"one")
    second = save_upload(project, "../tickets.jsonl", b"two")
    third = save_upload(project, "tickets.jsonl", b"three")
    assert [p.name for p in (first, second, third)] == ["tickets.jsonl", "tickets-2.jsonl", "tickets-3.jsonl"]
    assert [p.read_bytes() for p in (first, second, third)] == [b"one", b"two", b"three"]
    assert all(p.parent == project.uploads_dir for p in (first, second, third))
    assert sorted(os.listdir(project.uploads_dir)) == ["tickets-2.jsonl", "tickets-3.jsonl", "tickets.jsonl"]


def test_save_upload_refuses_traversal_and_hidden_names(tmp_path):
    project = init_project(tmp_path / "p")
    for name in ("../../outside.jsonl", "/etc/cron.d/job", "..", ".bashrc", "sub/dir/../../x.csv"):
        path = save_upload(project, name, b"data")
        assert path.parent == project.uploads_dir and not path.name.startswith(".")
    assert not (tmp_path / "outside.jsonl").exists()
    assert sorted(os.listdir(tmp_path)) == ["p"]


def test_save_upload_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    project = init_project(tmp_path / "p")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "link", broken)
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        save_upload(project, "tickets.jsonl", b"data")
    assert os.listdir(project.uploads_dir) == []


def test_save_upload_under_concurrency_gives_each_upload_its_own_file(tmp_path):
    project = init_project(tmp_path / "p")
    paths, errors = [], []

    def upload(i):
        try:
            paths.append(save_upload(project, "same.csv", f"{i}".encode() * 1000))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 16
    assert {p.read_bytes() for p in paths} == {f"{i}".encode() * 1000 for i in range(16)}
    assert len(os.listdir(project.uploads_dir)) == 16


# ---------------------------------------------------------------- one style: charts, tables and words (issue 22)

OWN_PAGES = ["page_datasets.py", "page_inspect.py", "inspect_duplicates.py", "page_balance.py", "page_agreement.py",
             "page_train.py", "page_evaluate.py", "widgets.py"]


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in [*at.get("vega_lite_chart"), *at.get("arrow_vega_lite_chart")]]


def encodings(spec: dict):
    """Every encoding of a chart spec, its layers included."""
    if "encoding" in spec:
        yield spec["encoding"]
    for part in spec.get("layer", []):
        yield from encodings(part)


def axis(spec: dict, channel: str, field: str) -> dict:
    """The axis settings of the channel that shows `field` (the first layer that has it)."""
    for enc in encodings(spec):
        if enc.get(channel, {}).get("field") == field:
            return enc[channel].get("axis") or {}
    raise AssertionError(f"no {channel} encoding of {field!r} in {json.dumps(spec)[:300]}")


def shows_every_label(spec: dict, channel: str, field: str) -> bool:
    """Vega-Lite drops overlapping labels and cuts long ones unless told otherwise."""
    a = axis(spec, channel, field)
    return a.get("labelOverlap") is False and a.get("labelLimit", 0) >= 200


def whole_ticks(spec: dict, channel: str, field: str) -> bool:
    a = axis(spec, channel, field)
    return a.get("tickMinStep") == 1 and a.get("format") in ("d", ",d")


def empty_cells_for_missing(at: AppTest) -> bool:
    """Every table shows a missing value as an empty cell, not 'None' (st.dataframe's placeholder)."""
    return all(d.proto.HasField("placeholder") and d.proto.placeholder == "" for d in at.dataframe)


def test_own_pages_use_width_not_the_deprecated_use_container_width():
    folder = APP.parent
    assert not [p for p in OWN_PAGES if "use_container_width" in (folder / p).read_text(encoding="utf-8")]


def test_category_mix_chart_shows_every_label_and_whole_counts(demo_project):
    at = app()
    (spec,) = chart_specs(at)
    assert shows_every_label(spec, "y", "category") and whole_ticks(spec, "x", "records")
    assert spec["height"]["step"] >= 20  # room for each category's label
    assert empty_cells_for_missing(at)


def test_quarantine_label_counts_in_good_english(demo_project, tmp_path):
    path = tmp_path / "one-bad.jsonl"
    path.write_text(json.dumps({"prompt": "Where is my parcel?", "completion": "On its way."}) + "\n{broken\n")
    at = import_path(app(), path, "one-bad", "skip")
    assert not at.exception and at.warning and "Skipped 1 bad row;" in at.warning[0].value
    labels = [e.label for e in at.expander]
    assert "Quarantine: 1 rejected row of one-bad" in labels, labels
    assert "Imported 1 record into **one-bad@1**" in at.success[0].value


def test_an_undetected_format_says_what_to_click_not_which_flag(demo_project, tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps({"asked": f"q{i}", "said": f"a{i}"}) + "\n" for i in range(3)))
    at = import_path(app(), path, "odd", "fail")
    assert not at.exception and not at.error  # the app asks which column holds what (select boxes), no flags
    message = next(w.value for w in at.warning if "column names do not say" in w.value)
    assert "--" not in message and "Pick the format and a column for each part" in message
    assert {s.label for s in at.selectbox if s.key and s.key.startswith("mapping_")} == {
        "Format", "Prompt column", "Completion column"}


def test_shared_helpers_plural_and_app_words():
    import sys

    sys.path.insert(0, str(APP.parent))
    import widgets

    assert [widgets.plural(n, "rejected row") for n in (0, 1, 2, 1204)] == [
        "0 rejected rows", "1 rejected row", "2 rejected rows", "1,204 rejected rows"]
    assert widgets.plural(1, "duplicate group") == "1 duplicate group"
    said = widgets.app_words("cap is 2 (raise --max-copies or lower the total). Change the target, or accept the "
                             "shortfall (--allow-short)")
    assert "--" not in said and "**Max copies**" in said and "**Accept the shortfall**" in said
    for message in ("--ratios add up to 1.1; make them add up to 1, e.g. 0.8,0.1,0.1",
                    "bad number; use --level nominal (or ordinal with the order given)",
                    "give it lowest first, for example --labels low,mid,high",
                    "the tiny base is not built yet (x); the first training run builds it: `workbench train --dataset NAME`",
                    "evaluation 3 is stopped, not finished; resume it with `workbench eval --resume 3`"):
        assert "--" not in widgets.app_words(message) and "`workbench" not in widgets.app_words(message), message


def test_a_database_held_by_a_command_is_a_wait_not_an_error(tmp_path, monkeypatch):
    """Another process (a CLI command) holds the project's database: the app says what is going on and opens the
    project by itself once the command lets go."""
    import subprocess
    import sys

    root = tmp_path / "busy"
    init_project(root)
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from workbench.core.store import Store; "
                               f"s = Store.open({str(root)!r}); print('open', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "open"
        at = app()
        assert not at.error and any("has this project's database open" in w.value for w in at.warning)
        assert at.button(key="busy_retry").help
        holder.communicate("\n", timeout=30)  # the command ends
        at.button(key="busy_retry").click().run()
        assert not at.exception and not at.warning
        assert any("No datasets yet" in i.value for i in at.info)
    finally:
        if holder.poll() is None:
            holder.kill()
        st.cache_resource.clear()
