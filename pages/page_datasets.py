"""Datasets: import a file, pick a dataset version, browse its records, see its category mix, query it."""

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from datasets_export import export_section
from datasets_manage import manage_section
from workbench.core import versions
from workbench.core.auth import require_role
from workbench.core.canonical import canonical_to_messages
from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL, FORMATS, MAPPED_FORMATS, FormatUnclear
from workbench.data import browse, importer, search, sqlconsole
from workbench.data.uploads import save_upload
from workbench.inspect import quality

UPLOAD, SERVER_PATH = "Upload a file", "Path on the server"
FILE_TYPES = ["jsonl", "json", "csv", "tsv", "parquet"]
PAGE_SIZES = [20, 50, 100, 200]
SQL_MAX_ROWS = 10_000
SHOWN_ERRORS = 100
PICK = ""  # the version picker's keys: "dataset" and "version::NAME"


def reset_browse() -> None:
    """A new dataset, version or filter starts again at page 1."""
    st.session_state["browse_page"] = 1


# ---------------------------------------------------------------- all datasets

def datasets_table(store) -> list[dict]:
    datasets = versions.list_datasets(store)
    if datasets:
        widgets.table(datasets, column_order=["name", "version", "records", "format", "created_at"],
                     column_config={"version": "newest version",
                                    "records": st.column_config.NumberColumn(format="%d"), "created_at": "created"})
    elif hidden := versions.archived_at(store):
        st.info(f"Every dataset is archived ({len(hidden)}): bring one back under **Manage datasets** below, or "
                "import a file.")
    else:
        st.info("No datasets yet: import a file below, or start the app with `workbench demo` for sample tickets.")
    return datasets


# ---------------------------------------------------------------- import

def import_form(user) -> dict | None:
    """The import controls; returns what to import when the button is pressed."""
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
    choose = st.checkbox("Choose the columns myself", key="import_choose_columns",
                         help="Show the file's columns and pick which one holds the prompt and the response (the "
                              "text and the label, or the conversation) before importing, instead of going by the "
                              "column names.")
    if st.button("Import", type="primary", icon=":material/download:", key="import_button",
                 disabled=not user.can("import"),
                 help="Import the file as a new version of the dataset." if user.can("import")
                 else "Only an admin may import."):
        return {"source": source, "upload": upload, "path": path.strip(), "name": name.strip(), "fmt": fmt,
                "on_error": on_error, "choose_columns": choose}
    return None


def missing_input(asked: dict) -> str | None:
    if asked["source"] == UPLOAD and asked["upload"] is None:
        return "Choose a file to upload first."
    if asked["source"] == SERVER_PATH and not asked["path"]:
        return "Enter the path of a file or a Hugging Face dataset folder on the server."
    if not asked["name"]:
        return "Enter a dataset name: a new one, or an existing one to add a version to it."
    return None


def run_import(store, user, asked: dict) -> None:
    """Save the upload and import it with a progress bar. When the column names leave the format unclear, or the
    user asked to choose, the saved file waits for the column mapping instead (nothing is uploaded twice)."""
    upload = asked["upload"]
    job = {"name": asked["name"], "fmt": asked["fmt"], "on_error": asked["on_error"]}
    st.session_state.pop("import_mapping", None)  # a new import replaces a mapping left unfinished
    with widgets.progress(f"saving {upload.name}" if upload else "starting") as report:
        try:
            require_role(user, "import")  # before the upload is saved; import_file checks again
            job["source"] = str(save_upload(store.project, upload.name, upload.getvalue())) if upload \
                else asked["path"]
        except WorkbenchError as exc:
            keep_outcome({"dataset": job["name"], "kind": "error", "message": str(exc)})
            return
        if asked["choose_columns"]:
            start_mapping(job, reason=None)
        else:
            import_job(store, user, job, {}, report)


def import_job(store, user, job: dict, columns: dict, report) -> None:
    """Import job's file (columns: the mapping the user chose, if any) and keep the outcome for the next run."""
    outcome = {"dataset": job["name"]}
    try:
        result = importer.import_file(store, job["source"], job["name"], fmt=job["fmt"], on_error=job["on_error"],
                                      progress=report, user=user, **columns)
    except FormatUnclear as exc:
        if job["fmt"] in ("auto", *MAPPED_FORMATS):  # the formats whose columns the mapping below can name
            start_mapping(job, reason=exc.reason)
            return
        outcome.update(kind="error", message=f"{exc.reason}. Rename the columns in the file, or tick **Choose the "
                                             "columns myself** for a prompt-completion, classification or chat import.")
    except importer.ImportRejected as exc:
        r = exc.result
        outcome.update(kind="rejected", errors=r.errors[:SHOWN_ERRORS], message=(
            f"{widgets.plural(r.error_count, 'bad row')}: nothing was imported. Fix the rows listed below, or "
            "choose **skip** to import the good rows and quarantine the bad ones."))
    except WorkbenchError as exc:
        outcome.update(kind="error", message=str(exc))
    else:
        message = (f"Imported {widgets.plural(result.imported, 'record')} into **{result.version.ref}** "
                   f"({result.format}, {result.seconds:.1f} s).")
        if n := result.line_endings_normalised:
            message += (f" Line endings made plain line feeds in {widgets.plural(n, 'record')} (the file had "
                        "Windows CRLF or lone CR line breaks, which a model would learn to print).")
        outcome.update(kind="success", skipped=result.skipped, errors=result.errors[:SHOWN_ERRORS], message=message)
        widgets.show_next(PICK, result.version.dataset, result.version.number)
        reset_browse()
        st.session_state.pop("import_mapping", None)
    keep_outcome(outcome)
    if outcome["kind"] == "success":
        st.rerun()  # the tables above the import form must show the new version


def keep_outcome(outcome: dict) -> None:
    st.session_state["import_outcome"] = outcome


def start_mapping(job: dict, *, reason: str | None) -> None:
    """Keep the saved file, its columns and the best guesses for the column mapping shown below the form."""
    try:
        choices = importer.column_choices(job["source"])
    except WorkbenchError as exc:
        keep_outcome({"dataset": job["name"], "kind": "error", "message": str(exc)})
        return
    fmt = job["fmt"] if job["fmt"] in MAPPED_FORMATS else choices.format
    st.session_state["import_mapping"] = {**job, "reason": reason, "columns": choices.columns, "format": fmt,
                                          "guess": choices.guess}
    st.session_state.pop("import_outcome", None)


ROLE_CONTROLS = {  # label, help
    "prompt_col": ("Prompt column", "The column holding what the customer or user wrote: the model's input."),
    "completion_col": ("Completion column", "The column holding the answer the model should learn to give."),
    "text_col": ("Text column", "The column holding the text to classify."),
    "label_col": ("Label column", "The column holding each record's label or category."),
    "messages_col": ("Conversation column", "The column holding each conversation: a list of {role, content} "
                     "(or ShareGPT's {from, value}) messages, or that list as JSON text in a CSV."),
}


def column_mapping(store, user, pending: dict) -> None:
    """The file's columns as select boxes, one per part of the chosen format, defaulting to the best guesses."""
    columns, token = pending["columns"], pending["source"]
    with st.container(border=True):
        st.markdown(f"**Which column holds what in {wb_ui.safe_markdown(Path(token).name)}?**")
        if pending["reason"]:
            st.warning(f"The column names do not say it: {wb_ui.safe_markdown(pending['reason'])}. Pick the "
                       "format and a column for each part below, then import.", icon=":material/table_view:")
        formats = list(MAPPED_FORMATS)
        left, middle, right = st.columns(3)
        fmt = left.selectbox("Format", formats, index=formats.index(pending["format"]), key=f"mapping_format::{token}",
                             help="prompt-completion: a prompt and the answer to learn. classification: a text and "
                                  "its label. chat: one column holding each conversation's messages.")
        chosen = {}
        for where, flag in zip((middle, right), MAPPED_FORMATS[fmt]):
            label, help_text = ROLE_CONTROLS[flag]
            guess = pending["guess"].get(flag)
            chosen[flag] = where.selectbox(label, columns, index=columns.index(guess) if guess in columns else 0,
                                           key=f"mapping_{flag}::{token}", help=help_text)
        with st.container(horizontal=True):
            go = st.button("Import with this mapping", type="primary", key="mapping_import", icon=":material/download:",
                           help=f"Import {Path(token).name} as a new version of {pending['name']} with these columns.")
            cancel = st.button("Cancel", key="mapping_cancel", help="Forget this file's mapping and import nothing.")
        if cancel:
            st.session_state.pop("import_mapping", None)
            st.rerun()
        if go:
            if len(set(chosen.values())) < len(chosen):
                widgets.show_error("Choose a different column for each part.")
            else:
                with widgets.progress("starting") as report:
                    import_job(store, user, {**pending, "fmt": fmt}, chosen, report)


def show_import_outcome(outcome: dict) -> None:
    if outcome["kind"] == "success":
        st.success(outcome["message"], icon=":material/check_circle:")
        if n := outcome["skipped"]:
            st.warning(f"Skipped {widgets.plural(n, 'bad row')}; {'they are' if n != 1 else 'it is'} kept in the "
                       f"quarantine of **{outcome['dataset']}** (below).", icon=":material/warning:")
    else:
        widgets.show_error(outcome["message"])
    if outcome.get("errors"):  # a table shows text as is: the markdown backticks around field names go
        rows = [{**e, "error": str(e.get("error", "")).replace("`", "")} for e in outcome["errors"]]
        widgets.table(rows, column_order=["line", "field", "error"],
                     column_config={"error": st.column_config.TextColumn(width="large")})


def import_section(store, user, *, expanded: bool) -> None:
    with st.expander("Import a file", icon=":material/upload_file:", expanded=expanded):
        asked = import_form(user)
        if asked is not None:
            problem = missing_input(asked)
            if problem:
                widgets.show_error(problem)
            else:
                run_import(store, user, asked)
        if (pending := st.session_state.get("import_mapping")) is not None:
            column_mapping(store, user, pending)
    if "import_outcome" in st.session_state:
        show_import_outcome(st.session_state["import_outcome"])


# ---------------------------------------------------------------- one dataset version

def versions_table(store, version) -> None:
    st.caption(f"Versions of **{version.dataset}**")
    rows = wb_ui.version_rows(versions.list_versions(store, version.dataset), versions.list_versions(store))
    widgets.table(rows,
                 column_config={"records": st.column_config.NumberColumn(format="%d")})


def search_index_note(store, version, where, text: str) -> None:
    state = search.ensure_background(store, version)  # large versions only; a thread of this server
    if state["state"] == "building":
        where.caption(f"Building a search index: {state['done']:,} of {state['total']:,} records read. "
                      "Until it is ready, text search reads every record (about a second per search).")
    elif state["state"] == "failed":
        where.caption(f"The search index could not be built ({state['error']}); text search reads every record.")
    elif state["state"] == "ready" and text.strip():
        where.caption("Found with the search index.")


def matching(store, version, text: str, chosen: list, flag: str) -> int:
    if flag:
        with st.spinner("Checking records…"):
            return browse.count(store, version, text=text.strip(), category=chosen, flag=flag)
    if text.strip() or chosen:
        return wb_ui.count_matching(store, version, wb_ui.version_key(store, version), text.strip(), tuple(chosen))
    return version.row_count


def browse_section(store, version, category_counts: list) -> None:
    st.subheader(f"Records of {version.ref}")
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
                            help="Shows only records carrying this Inspect flag (checked once per version; see "
                                 "the Inspect page for the rules).")
    filtered = bool(text.strip() or chosen or flag)
    search_index_note(store, version, c_text, text)
    total = matching(store, version, text, chosen, flag)
    size = c_size.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(50), key="browse_size",
                            on_change=reset_browse, help="How many records to show at once.")
    pages = max(1, -(-total // size))
    if st.session_state.get("browse_page", 1) > pages:
        st.session_state["browse_page"] = pages
    page_number = c_page.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1,
                                      key="browse_page", help="Which page of matching records to show.")
    offset = (page_number - 1) * size
    records = browse.page(store, version, text=text, category=chosen, offset=offset, limit=size, flag=flag or None)
    if not records.num_rows:
        st.info("No records match the filters." if filtered else "This version has no records.")
        return
    st.caption(f"Showing rows {offset + 1:,}–{offset + records.num_rows:,} of {total:,}"
               + (" matching the filters" if filtered else "")
               + ". The **row** column is the record's position in the version.")
    picked = widgets.table(records, key=f"browse_grid::{version.ref}::{offset}", on_select="rerun",
                           selection_mode="single-row",
                           column_order=wb_ui.visible_columns(records),
                           column_config={"row": st.column_config.NumberColumn(format="%d", width="small"),
                                          "prompt": st.column_config.TextColumn(width="medium"),
                                          "completion": st.column_config.TextColumn(width="medium")})
    if picked.selection.rows:
        full_record(records.slice(picked.selection.rows[0], 1).to_pylist()[0])
    else:
        st.caption("Click a row's left edge to read that record in full below.")


def full_record(record: dict) -> None:
    """One record uncut: the conversation as chat turns, then every other column (the grid cuts long text)."""
    with st.container(border=True):
        st.markdown(f"**Record at row {record.get('row', 0):,}**")
        for turn in canonical_to_messages(record.get("prompt") or "", record.get("completion"),
                                          record.get("system"), record.get("messages")):
            with st.chat_message(turn["role"], avatar={"user": ":material/person:", "system": ":material/settings:",
                                                       "assistant": ":material/support_agent:"}.get(turn["role"])):
                st.text(turn["content"])  # as text: a record's markup never renders
        others = {k: v for k, v in record.items() if k not in (*CANONICAL, "row") and v is not None}
        if others:
            st.caption(wb_ui.safe_markdown(" · ".join(f"{k}: {v}" for k, v in others.items())))


def category_mix_section(category_counts: list) -> None:
    if not category_counts:
        return
    st.subheader("Category mix")
    mix = pd.DataFrame(category_counts, columns=["category", "records"]).fillna({"category": "(none)"})
    bars = alt.Chart(mix).transform_joinaggregate(total="sum(records)").transform_calculate(
        share="datum.records / datum.total",
        label="format(datum.records, ',') + '  (' + format(datum.records / datum.total, '.1%') + ')'",
    ).encode(
        y=alt.Y("category:N", sort="-x", title=None, axis=widgets.category_axis()),
        x=alt.X("records:Q", title="records", axis=widgets.count_axis()),
        tooltip=["category:N", alt.Tooltip("records:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
    )
    chart = (bars.mark_bar() + bars.mark_text(align="left", dx=4).encode(text="label:N")).properties(
        height=widgets.step(24))
    st.altair_chart(chart, width="stretch")


def quarantine_section(store, dataset: str) -> None:
    quarantined = importer.quarantine(store, dataset)
    with st.expander(f"Quarantine: {widgets.plural(len(quarantined), 'rejected row')} of {dataset}",
                     icon=":material/block:"):
        if quarantined:
            widgets.table(quarantined,
                         column_order=["line", "field", "error", "raw", "source"],
                         column_config={"line": st.column_config.NumberColumn(format="%d", width="small"),
                                        "error": st.column_config.TextColumn(width="large")})
        else:
            st.caption("No rows of this dataset were skipped on import.")


def sql_console_section(store, version) -> None:
    dataset = version.dataset
    st.subheader("SQL console")
    st.caption(f"Read-only: one SELECT over this project's tables and views. `\"{dataset}\"` is its newest version, "
               f"`\"{dataset}@1\"` a given one. At most {SQL_MAX_ROWS:,} rows come back; nothing can be changed.")
    sql = st.text_area("Query", sqlconsole.example_query(dataset, browse.category_column(store, version)),
                       key=f"sql::{dataset}", height=120, help="DuckDB SQL; one SELECT statement.")
    if st.button("Run query", icon=":material/play_arrow:", key="sql_run",
                 help="Run the query read-only and show the result."):
        try:
            result = sqlconsole.run_readonly(store.cursor(), sql, max_rows=SQL_MAX_ROWS)
        except WorkbenchError as exc:
            result = exc
        st.session_state["sql_result"] = (dataset, result)
    shown, result = st.session_state.get("sql_result", (None, None))
    if shown != dataset:
        return
    if isinstance(result, WorkbenchError):
        widgets.show_error(result)
        return
    if (result.schema.metadata or {}).get(b"workbench.truncated") == b"true":
        st.caption(f"Only the first {SQL_MAX_ROWS:,} rows are shown; add a LIMIT or an aggregate.")
    widgets.table(result)


# ---------------------------------------------------------------- the page

store, user = wb_ui.get_store(), wb_ui.current_user()
st.title("Datasets")
datasets = datasets_table(store)
import_section(store, user, expanded=not datasets)
version = widgets.version_picker(store, PICK, on_change=reset_browse,
                                 dataset_help="The dataset to browse, chart and query.")
if version is not None:
    versions_table(store, version)
    counts = wb_ui.category_counts(store, version, wb_ui.version_key(store, version))
    browse_section(store, version, counts)
    category_mix_section(counts)
    export_section(store, version, user)
    quarantine_section(store, version.dataset)
    sql_console_section(store, version)
manage_section(store, user)  # shown with no dataset listed too: archived ones come back here
