"""Inspect: token lengths, duplicates, personal data and quality flags of one dataset version."""

import importlib
import importlib.util

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from workbench.data import browse
from workbench.inspect import pii
from workbench.inspect import quality
from workbench.inspect import tokens
from workbench.core import versions
from workbench.core.errors import WorkbenchError

AUTO_RECORDS = 200_000  # below this, checks run as the page opens; above, a button starts them
OTHER = "Other (folder or model id)…"
SAMPLE_ROWS = 20

store = wb_ui.get_store()


def progress_bar(text: str):
    """A Streamlit progress bar and the callback the workbench functions report to."""
    bar = st.progress(0.0, text=text)
    return bar, lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message)


def run_with_bar(text: str, fn, *args, **kwargs):
    """fn(..., progress=callback) under a progress bar; a user error is shown, not raised."""
    bar, report = progress_bar(text)
    try:
        return fn(*args, progress=report, **kwargs)
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        return None
    finally:
        bar.empty()


# A version never changes, so its summaries are kept for the life of the server (keyed by its content).

@st.cache_resource(max_entries=4, show_spinner="Loading the tokenizer…")
def load_counter(_store, root: str, choice: str, stamp: str):
    return tokens.load_tokenizer(_store, choice)


@st.cache_data(max_entries=64, show_spinner=False)
def token_view(_store, _version, _counter, key: tuple, tag: str, max_length: int) -> tuple[dict, list]:
    summary = tokens.token_summary(_store, _version, _counter, max_length=max_length)
    return summary, tokens.truncation_table(_store, tokens.count_tokens(_store, _version, _counter))


@st.cache_data(max_entries=64, show_spinner=False)
def token_bins(_store, _version, _counter, key: tuple, tag: str, part: str) -> list:
    return tokens.token_histogram(_store, tokens.count_tokens(_store, _version, _counter), f"{part}_tokens")


@st.cache_data(max_entries=64, show_spinner=False)
def pii_view(_store, _version, key: tuple, region: str) -> dict:
    return pii.pii_report(_store, _version, region=region)


@st.cache_data(max_entries=64, show_spinner=False)
def quality_view(_store, _version, key: tuple) -> dict:
    return quality.quality_report(_store, _version)


def histogram_chart(bins: list[dict], what: str, max_length: int | None):
    data = pd.DataFrame(bins)
    bars = alt.Chart(data).mark_bar().encode(
        x=alt.X("start:Q", bin="binned", title=f"{what} tokens"), x2="stop:Q",
        y=alt.Y("records:Q", title="records"),
        tooltip=[alt.Tooltip("start:Q", title="from"), alt.Tooltip("stop:Q", title="to (excl.)"),
                 alt.Tooltip("records:Q", format=",")])
    if max_length and what == "total":
        rule = alt.Chart(pd.DataFrame({"max": [max_length]})).mark_rule(color="red", strokeDash=[4, 4]).encode(
            x="max:Q", tooltip=[alt.Tooltip("max:Q", title="max length")])
        return bars + rule
    return bars


def show_sample(flag: str) -> None:
    """The first records carrying a flag, as the Datasets browser would list them."""
    rows = browse.page(store, version, flag=flag, limit=SAMPLE_ROWS)
    if rows.num_rows:
        st.dataframe(rows, hide_index=True, column_order=wb_ui.visible_columns(rows),
                     column_config={"row": st.column_config.NumberColumn(format="%d", width="small")})
    else:
        st.caption("No record carries this flag.")


st.title("Inspect")
datasets = versions.list_datasets(store)
if not datasets:
    st.info("No datasets yet: import one on the Datasets page, or start the app with `workbench demo`.")
    st.stop()

names = [d["name"] for d in datasets]
left, right = st.columns([3, 1])
dataset = left.selectbox("Dataset", names, key="inspect_dataset", help="The dataset to inspect.")
numbers = [v.number for v in reversed(versions.list_versions(store, dataset))]
number = right.selectbox("Version", numbers, key=f"inspect_version::{dataset}",
                         format_func=lambda n: f"v{n} (newest)" if n == numbers[0] else f"v{n}",
                         help="Every check is computed once per version and kept in the project's cache.")
version = versions.get_version(store, f"{dataset}@{number}")
auto = version.row_count <= AUTO_RECORDS
key = wb_ui.version_key(store, version)
st.caption(f"{version.ref}: {version.row_count:,} records, {version.format}.")

tab_lengths, tab_duplicates, tab_pii, tab_quality = st.tabs(["Lengths", "Duplicates", "PII", "Quality"],
                                                           key="insp_tabs")  # keyed: kept on reruns

# ---------------------------------------------------------------- lengths
with tab_lengths:
    choices = tokens.tokenizer_choices(store) + [OTHER]
    c_tok, c_len = st.columns([3, 1])
    choice = c_tok.selectbox(
        "Tokenizer", choices, key="inspect_tokenizer",
        format_func=lambda c: "Approximate (no tokenizer)" if c == tokens.APPROXIMATE else c,
        help="Count with a base model's tokenizer and chat template ('tiny' is the project's own small base "
             "model), or approximately without one.")
    if choice == OTHER:
        choice = st.text_input("Model folder or Hugging Face id", key="inspect_tokenizer_other",
                               placeholder="/models/my-model or org/model-name",
                               help="A folder with tokenizer files, or a model id already in the local Hugging "
                                    "Face cache (nothing is downloaded).").strip() or tokens.APPROXIMATE
    max_length = c_len.number_input("Max length", min_value=16, max_value=1_000_000, value=1024, step=128,
                                    key="inspect_max_length",
                                    help="The max sequence length you plan to train with: records longer than "
                                         "this are cut, and the completion tokens past it are lost.")
    try:
        counter = load_counter(store, str(store.project.root), choice, tokens.source_stamp(store, choice))
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        counter = None
    if counter is not None:
        ready = tokens.is_counted(store, version, counter)
        if not ready and ((counter.approximate and auto) or st.button(
                "Count tokens", type="primary", key="inspect_count_tokens", icon=":material/calculate:",
                help="Count every record's tokens with this tokenizer (kept for next time).")):
            ready = run_with_bar("counting tokens", tokens.count_tokens, store, version, counter) is not None
        if ready:
            summary, table = token_view(store, version, counter, key, counter.cache_tag, int(max_length))
            if summary["approximate"]:
                st.warning(f"**Approximate counts**: {summary['rule']}. Pick a tokenizer for exact counts.",
                           icon=":material/straighten:")
            else:
                st.caption(f"Counted with the {summary['rule']}.")
            trunc = summary["truncation"]
            m1, m2, m3 = st.columns(3)
            m1.metric("Records longer than max length", f"{trunc['truncated_records']:,}",
                      f"{trunc['truncated_fraction']:.1%} of records", delta_color="off")
            m2.metric("Completion tokens lost", f"{trunc['supervised_tokens_lost']:,}",
                      f"{trunc['supervised_lost_fraction']:.2%} of {trunc['supervised_tokens']:,}",
                      delta_color="off", help="Supervised (assistant) tokens past the max length: the model "
                                              "never learns from them.")
            m3.metric("Records left with nothing to learn", f"{trunc['records_without_supervised_tokens']:,}",
                      help="Records whose whole completion lies past the max length; training drops them.")
            st.dataframe(pd.DataFrame([{"part": part, **summary[part]} for part in ("prompt", "completion", "total")]),
                         hide_index=True, column_config={"sum": st.column_config.NumberColumn("all records")})
            part = st.radio("Distribution of", ["total", "prompt", "completion"], horizontal=True,
                            key="inspect_length_part", help="Which length to chart: the whole record as trained, "
                            "the prompt side, or the completion (supervised) tokens.")
            bins = token_bins(store, version, counter, key, counter.cache_tag, part)
            st.altair_chart(histogram_chart(bins, part, int(max_length)), width="stretch")
            st.caption("What common max lengths would cut")
            st.dataframe(table, hide_index=True,
                         column_order=["max_length", "truncated_records", "supervised_tokens_lost",
                                       "supervised_lost_fraction", "records_without_supervised_tokens"])

# ---------------------------------------------------------------- duplicates (another module's tab)
with tab_duplicates:
    if importlib.util.find_spec("inspect_duplicates") is not None:
        importlib.import_module("inspect_duplicates").render(store, version)
    else:
        st.caption("Duplicate detection is not part of this build yet.")

# ---------------------------------------------------------------- personal data
with tab_pii:
    region = st.text_input("Phone region", value=store.project.setting("pii", "phone_region", pii.DEFAULT_REGION),
                           key="inspect_phone_region", max_chars=2,
                           help="Two-letter region for phone numbers written without a +country code (US, GB, DE"
                                "…); empty finds only international +numbers.")
    try:
        scanned = pii.is_scanned(store, version, region=region)
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        scanned = None
    if scanned is False and (auto or st.button(
            "Scan for personal data", type="primary", key="inspect_pii_scan", icon=":material/policy:",
            help="Look for emails, phone numbers, card numbers, IBANs, IP addresses and long account numbers.")):
        scanned = run_with_bar("scanning", pii.scan, store, version, region=region) is not None
    if scanned:
        report = pii_view(store, version, key, region)
        st.metric("Records with personal data", f"{report['records_with_pii']:,}",
                  f"{report['records_with_pii'] / max(report['records'], 1):.1%} of records", delta_color="off")
        table = pd.DataFrame([{"type": t, "occurrences": info["occurrences"], "records": info["records"],
                               "fields": ", ".join(f"{f} ({n:,})" for f, n in info["by_field"].items())}
                              for t, info in report["types"].items()])
        st.altair_chart(alt.Chart(table).mark_bar().encode(
            x=alt.X("occurrences:Q"), y=alt.Y("type:N", sort=list(pii.TYPES), title=None),
            tooltip=["type", alt.Tooltip("occurrences:Q", format=","), alt.Tooltip("records:Q", format=",")]),
            width="stretch")
        st.dataframe(table, hide_index=True)
        examples = [{"type": t, **ex} for t, info in report["types"].items() for ex in info["examples"]]
        if examples:
            st.caption("Examples (masked). **row** is the record's position in the version.")
            st.dataframe(examples, hide_index=True, column_order=["type", "row", "field", "value"])
        with st.expander("Write a redacted version", icon=":material/visibility_off:"):
            found = [t for t, info in report["types"].items() if info["occurrences"]]
            kinds = st.multiselect("Replace", list(pii.TYPES), default=found, key=f"inspect_redact_types::{version.ref}",
                                   help="Each value of these types becomes a placeholder such as [EMAIL] or [PHONE].")
            out_name = st.text_input("New dataset name", value=f"{version.dataset}-redacted", key=f"inspect_redact_out::{version.ref}",
                                     help="The dataset that receives the redacted records as a new version (use "
                                          f"{version.dataset} to add a version to this dataset).")
            if st.button("Write redacted version", key="inspect_redact", icon=":material/save:",
                         help="Write a new immutable version; this one stays as it is."):
                result = run_with_bar("redacting", pii.redact_version, store, version, out_name.strip(),
                                      types=kinds, region=region)
                if result is not None:
                    new, replaced = result
                    st.success(f"Wrote **{new.ref}**: {sum(replaced.values()):,} values replaced "
                               f"({', '.join(f'{k} {v:,}' for k, v in replaced.items() if v) or 'none found'}).",
                               icon=":material/check_circle:")

# ---------------------------------------------------------------- quality flags
with tab_quality:
    ready = quality.is_computed(store, version)
    if not ready and (auto or st.button("Check quality", type="primary", key="inspect_quality_run",
                                        icon=":material/rule:",
                                        help="Flag empty, very short or long, repeated, junk and "
                                             "other-language records.")):
        ready = run_with_bar("checking records", quality.compute_flags, store, version) is not None
    if ready:
        report = quality_view(store, version, key)
        flags = pd.DataFrame([{"flag": name, "records": n, "rule": report["rules"][name]}
                              for name, n in report["flags"].items()])
        st.metric("Records with any flag", f"{report['flagged']:,}",
                  f"{report['flagged'] / max(version.row_count, 1):.1%} of records", delta_color="off")
        st.altair_chart(alt.Chart(flags).mark_bar().encode(
            x=alt.X("records:Q"), y=alt.Y("flag:N", sort=list(quality.FLAGS), title=None),
            tooltip=["flag", alt.Tooltip("records:Q", format=","), "rule"]), width="stretch")
        st.dataframe(flags, hide_index=True, column_config={"rule": st.column_config.TextColumn(width="large")})
        flagged = [name for name, n in report["flags"].items() if n]
        if flagged:
            flag = st.selectbox("Show records flagged", flagged, key=f"inspect_flag::{version.ref}",
                                help="The first records carrying this flag; the Datasets page can filter "
                                     "its browser by flag too.")
            show_sample(flag)
