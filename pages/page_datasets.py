"""Datasets: import a file, pick a dataset version, browse its records, see its category mix, query it."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from workbench.data import browse
from workbench.data import importer
from workbench.inspect import quality
from workbench.data import search
from workbench.data import sqlconsole
from workbench.core import versions
from workbench.core.auth import require_role
from workbench.core.errors import WorkbenchError
from workbench.core.formats import FORMATS
from workbench.data.sqlconsole import run_readonly
from workbench.data.uploads import save_upload

UPLOAD, SERVER_PATH = "Upload a file", "Path on the server"
FILE_TYPES = ["jsonl", "json", "csv", "tsv", "parquet"]
PAGE_SIZES = [20, 50, 100, 200]
SQL_MAX_ROWS = 10_000
SHOWN_ERRORS = 100

store = wb_ui.get_store()
user = wb_ui.current_user()


def reset_browse() -> None:
    """A new dataset, version or filter starts again at page 1."""
    st.session_state["browse_page"] = 1


def run_import(source, upload, path, name, fmt, on_error, mapping) -> None:
    """Save the upload, import it with a progress bar, and keep the outcome for the next run."""
    if source == UPLOAD and upload is None:
        st.error("Choose a file to upload first.")
        return
    if source == SERVER_PATH and not path.strip():
        st.error("Enter the path of a file or a Hugging Face dataset folder on the server.")
        return
    if not name.strip():
        st.error("Enter a dataset name: a new one, or an existing one to add a version to it.")
        return
    bar = st.progress(0.0, text="starting")
    outcome = {"dataset": name}
    try:
        if source == UPLOAD:
            bar.progress(0.0, text=f"saving {upload.name}")
        require_role(user, "import")  # before the upload is saved; import_file checks again
        source_path = save_upload(store.project, upload.name, upload.getvalue()) if source == UPLOAD else path.strip()
        result = importer.import_file(store, source_path, name.strip(), fmt=fmt, on_error=on_error,
                                      progress=lambda fraction, message: bar.progress(min(fraction, 1.0), message),
                                      user=user, **{k: v.strip() or None for k, v in mapping.items()})
    except importer.ImportRejected as exc:
        r = exc.result
        outcome.update(kind="rejected", errors=r.errors[:SHOWN_ERRORS], message=(
            f"{r.error_count:,} bad row{'s' if r.error_count != 1 else ''}: nothing was imported. Fix the rows "
            "listed below, or choose **skip** to import the good rows and quarantine the bad ones."))
    except WorkbenchError as exc:
        outcome.update(kind="error", message=str(exc))
    else:
        outcome.update(kind="success", skipped=result.skipped, errors=result.errors[:SHOWN_ERRORS], message=(
            f"Imported {result.imported:,} records into **{result.version.ref}** "
            f"({result.format}, {result.seconds:.1f} s)."))
        st.session_state["select_dataset"] = (result.version.dataset, result.version.number)
    finally:
        bar.empty()
    st.session_state["import_outcome"] = outcome
    if outcome["kind"] == "success":
        st.rerun()  # the tables above the import form must show the new version


def show_import_outcome(outcome: dict) -> None:
    if outcome["kind"] == "success":
        st.success(outcome["message"], icon=":material/check_circle:")
        if outcome["skipped"]:
            n = outcome["skipped"]
            st.warning(f"Skipped {n:,} bad row{'s' if n != 1 else ''}; {'they are' if n != 1 else 'it is'} kept in "
                       f"the quarantine of "
                       f"**{outcome['dataset']}** (below).", icon=":material/warning:")
    else:
        wb_ui.show_error(outcome["message"])
    if outcome.get("errors"):  # a table shows text as is: the markdown backticks around field names go
        rows = [{**e, "error": str(e.get("error", "")).replace("`", "")} for e in outcome["errors"]]
        st.dataframe(rows, column_order=["line", "field", "error"], hide_index=True,
                     column_config={"error": st.column_config.TextColumn(width="large")})


st.title("Datasets")

# ---------------------------------------------------------------- all datasets
datasets = versions.list_datasets(store)
if datasets:
    st.dataframe(datasets, hide_index=True, column_order=["name", "version", "records", "format", "created_at"],
                 column_config={"version": "newest version", "records": st.column_config.NumberColumn(format="%d"),
                                "created_at": "created"})
else:
    st.info("No datasets yet: import a file below, or start the app with `workbench demo` for sample tickets.")

# ---------------------------------------------------------------- import
with st.expander("Import a file", icon=":material/upload_file:", expanded=not datasets):
    source = st.radio("Source", [UPLOAD, SERVER_PATH], horizontal=True, key="import_source",
                      help="Upload from your computer, or name a file or folder on the machine running the app.")
    upload, path = None, ""
    if source == UPLOAD:
        upload = st.file_uploader("File", type=FILE_TYPES, key="import_upload",
                                  help="JSON lines, JSON, CSV, TSV or Parquet. The file is kept in the project's "
                                       "uploads/ folder.")
    else:
        path = st.text_input("Path", key="import_path", placeholder="/data/tickets.jsonl",
                             help="A file (.jsonl, .json, .csv, .tsv, .parquet) or a folder written by Hugging "
                                  "Face `save_to_disk`, on the machine running the app.")
    left, middle, right = st.columns([2, 1, 1])
    name = left.text_input("Dataset name", key="import_name", placeholder="support-tickets",
                           help="A new dataset, or an existing one to add a new version to. Letters, digits, "
                                "'_', '-' and '.', starting with a letter.")
    fmt = middle.selectbox("Format", ["auto", *FORMATS], key="import_format",
                           help="'auto' detects chat, prompt-completion, alpaca or classification from the "
                                "column names; pick one to override.")
    on_error = right.radio("On bad rows", ["fail", "skip"], key="import_on_error", horizontal=True,
                           help="fail: import nothing and list every bad row. skip: import the good rows and "
                                "keep the bad ones in the quarantine.")
    with st.expander("Column mapping (optional)"):
        c1, c2, c3, c4 = st.columns(4)
        mapping = {
            "prompt_col": c1.text_input("Prompt column", key="map_prompt",
                                        help="The column holding the prompt (prompt-completion)."),
            "completion_col": c2.text_input("Completion column", key="map_completion",
                                            help="The column holding the response to learn."),
            "text_col": c3.text_input("Text column", key="map_text",
                                      help="The text to label (classification)."),
            "label_col": c4.text_input("Label column", key="map_label",
                                       help="The label or category of each record (classification)."),
        }
    if st.button("Import", type="primary", icon=":material/download:", key="import_button",
                 disabled=not user.can("import"),
                 help="Import the file as a new version of the dataset." if user.can("import")
                 else "Only an admin may import."):
        run_import(source, upload, path, name, fmt, on_error, mapping)

if "import_outcome" in st.session_state:
    show_import_outcome(st.session_state["import_outcome"])

if not datasets:
    st.stop()

# ---------------------------------------------------------------- one dataset version
if "select_dataset" in st.session_state:  # just imported: show it
    st.session_state["dataset"], number = st.session_state.pop("select_dataset")
    st.session_state[f"version::{st.session_state['dataset']}"] = number
    reset_browse()

names = [d["name"] for d in datasets]
left, right = st.columns([3, 1])
dataset = left.selectbox("Dataset", names, key="dataset", on_change=reset_browse,
                         help="The dataset to browse, chart and query.")
dataset_versions = versions.list_versions(store, dataset)
numbers = [v.number for v in reversed(dataset_versions)]
number = right.selectbox("Version", numbers, key=f"version::{dataset}", on_change=reset_browse,
                         format_func=lambda n: f"v{n} (newest)" if n == numbers[0] else f"v{n}",
                         help="Versions never change; every import or derived dataset adds a new one.")
version = versions.get_version(store, f"{dataset}@{number}")

st.caption(f"Versions of **{dataset}**")
st.dataframe(wb_ui.version_rows(dataset_versions, versions.list_versions(store)), hide_index=True,
             column_config={"records": st.column_config.NumberColumn(format="%d")})

# ---------------------------------------------------------------- browse
st.subheader(f"Records of {version.ref}")
category_counts = wb_ui.category_counts(store, version, wb_ui.version_key(store, version))
categories = [value for value, _ in category_counts if value is not None]
c_text, c_category, c_flag, c_size, c_page = st.columns([3, 3, 2, 1, 1])
text = c_text.text_input("Search text", key="browse_text", on_change=reset_browse,
                         placeholder="words in the prompt or completion",
                         help="Shows records whose prompt or completion contains this text (any case).")
chosen = c_category.multiselect("Categories", categories, key=f"browse_categories::{version.ref}",
                                on_change=reset_browse, disabled=not categories,
                                placeholder="all categories" if categories else "no category column",
                                help="Shows only records in these categories; empty shows all.")
flag = c_flag.selectbox("Flag", ["", *quality.browse_flags(store, version)], key=f"browse_flag::{version.ref}",
                        on_change=reset_browse, format_func=lambda f: f.replace("_", " ") or "any record",
                        help="Shows only records carrying this Inspect flag (checked once per version; see the "
                             "Inspect page for the rules).")
filtered = bool(text.strip() or chosen or flag)
index_state = search.ensure_background(store, version)  # large versions only; a thread of this server
if index_state["state"] == "building":
    c_text.caption(f"Building a search index: {index_state['done']:,} of {index_state['total']:,} records read. "
                   "Until it is ready, text search reads every record (about a second per search).")
elif index_state["state"] == "failed":
    c_text.caption(f"The search index could not be built ({index_state['error']}); text search reads every record.")
elif index_state["state"] == "ready" and text.strip():
    c_text.caption("Found with the search index.")
if flag:
    with st.spinner("Checking records…"):
        total = browse.count(store, version, text=text.strip(), category=chosen, flag=flag)
else:
    total = (wb_ui.count_matching(store, version, wb_ui.version_key(store, version), text.strip(), tuple(chosen))
             if filtered else version.row_count)
size = c_size.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(50), key="browse_size",
                        on_change=reset_browse, help="How many records to show at once.")
pages = max(1, -(-total // size))
if st.session_state.get("browse_page", 1) > pages:
    st.session_state["browse_page"] = pages
page_number = c_page.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1,
                                  key="browse_page", help="Which page of matching records to show.")
offset = (page_number - 1) * size
records = browse.page(store, version, text=text, category=chosen, offset=offset, limit=size, flag=flag or None)
if records.num_rows:
    st.caption(f"Showing rows {offset + 1:,}–{offset + records.num_rows:,} of {total:,}"
               + (" matching the filters" if filtered else "")
               + ". The **row** column is the record's position in the version.")
    st.dataframe(records, hide_index=True, column_order=wb_ui.visible_columns(records),
                 column_config={"row": st.column_config.NumberColumn(format="%d", width="small"),
                                "prompt": st.column_config.TextColumn(width="medium"),
                                "completion": st.column_config.TextColumn(width="medium")})
else:
    st.info("No records match the filters." if filtered else "This version has no records.")

# ---------------------------------------------------------------- category mix
if category_counts:
    st.subheader("Category mix")
    mix = pd.DataFrame(category_counts, columns=["category", "records"]).fillna({"category": "(none)"})
    bars = alt.Chart(mix).transform_joinaggregate(total="sum(records)").transform_calculate(
        share="datum.records / datum.total",
        label="format(datum.records, ',') + '  (' + format(datum.records / datum.total, '.1%') + ')'",
    ).encode(
        y=alt.Y("category:N", sort="-x", title=None),
        x=alt.X("records:Q", title="records"),
        tooltip=["category:N", alt.Tooltip("records:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
    )
    chart = (bars.mark_bar() + bars.mark_text(align="left", dx=4).encode(text="label:N")).properties(
        height=alt.Step(24))
    st.altair_chart(chart, width="stretch")

# ---------------------------------------------------------------- quarantine
quarantined = importer.quarantine(store, dataset)
with st.expander(f"Quarantine: {len(quarantined):,} rejected rows of {dataset}", icon=":material/block:"):
    if quarantined:
        st.dataframe(quarantined, hide_index=True, column_order=["line", "field", "error", "raw", "source"],
                     column_config={"line": st.column_config.NumberColumn(format="%d", width="small"),
                                    "error": st.column_config.TextColumn(width="large")})
    else:
        st.caption("No rows of this dataset were skipped on import.")

# ---------------------------------------------------------------- SQL console
st.subheader("SQL console")
st.caption(f"Read-only: one SELECT over this project's tables and views. `\"{dataset}\"` is its newest version, "
           f"`\"{dataset}@1\"` a given one. At most {SQL_MAX_ROWS:,} rows come back; nothing can be changed.")
sql = st.text_area("Query", sqlconsole.example_query(dataset, browse.category_column(store, version)),
                   key=f"sql::{dataset}", height=120, help="DuckDB SQL; one SELECT statement.")
if st.button("Run query", icon=":material/play_arrow:", key="sql_run",
             help="Run the query read-only and show the result."):
    try:
        st.session_state["sql_result"] = (dataset, run_readonly(store.cursor(), sql, max_rows=SQL_MAX_ROWS))
    except WorkbenchError as exc:
        st.session_state["sql_result"] = (dataset, exc)
if st.session_state.get("sql_result", (None,))[0] == dataset:
    result = st.session_state["sql_result"][1]
    if isinstance(result, WorkbenchError):
        wb_ui.show_error(result)
    else:
        if (result.schema.metadata or {}).get(b"workbench.truncated") == b"true":
            st.caption(f"Only the first {SQL_MAX_ROWS:,} rows are shown; add a LIMIT or an aggregate.")
        st.dataframe(result, hide_index=True)
