"""Inspect: token lengths, duplicates, personal data and quality flags of one dataset version."""

import altair as alt
import pandas as pd
import streamlit as st

import inspect_duplicates
import wb_ui
import widgets
from workbench.data import browse
from workbench.inspect import pii, quality, tokens

AUTO_RECORDS = 200_000  # below this, checks run as the page opens; above, a button starts them
OTHER = "Other (folder or model id)…"
SAMPLE_ROWS = 20
PICK = "inspect_"
CUT_COLUMNS = {"max_length": "max length", "truncated_records": "records cut",
               "supervised_tokens_lost": "completion tokens lost",
               "supervised_lost_fraction": st.column_config.NumberColumn("share lost", format="percent"),
               "records_without_supervised_tokens": "records with nothing to learn"}


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


def share_metric(where, label: str, count: int, total: int, **kwargs) -> None:
    """A count with its share of all records below it, grey and without an arrow (none at all on zero)."""
    share = f"{count / total:.1%} of records" if count and total else None
    where.metric(label, f"{count:,}", share, delta_color="off", delta_arrow="off", **kwargs)


def histogram_chart(bins: list[dict], what: str, max_length: int | None):
    bars = alt.Chart(pd.DataFrame(bins)).mark_bar().encode(
        x=alt.X("start:Q", bin="binned", title=f"{what} tokens"), x2="stop:Q",
        y=alt.Y("records:Q", title="records", axis=widgets.count_axis()),
        tooltip=[alt.Tooltip("start:Q", title="from"), alt.Tooltip("stop:Q", title="to (excl.)"),
                 alt.Tooltip("records:Q", format=",")])
    if max_length and what == "total":
        rule = alt.Chart(pd.DataFrame({"max": [max_length]})).mark_rule(color="red", strokeDash=[4, 4]).encode(
            x="max:Q", tooltip=[alt.Tooltip("max:Q", title="max length")])
        return bars + rule
    return bars


def bar_chart(frame: pd.DataFrame, value: str, category: str, order: list, tooltip: list):
    """Horizontal bars of counts, one per category in a fixed order, every label shown."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{value}:Q", axis=widgets.count_axis()),
        y=alt.Y(f"{category}:N", sort=order, title=None, axis=widgets.category_axis()),
        tooltip=tooltip).properties(height=widgets.step())


def show_sample(store, version, flag: str) -> None:
    """The first records carrying a flag, as the Datasets browser would list them."""
    rows = browse.page(store, version, flag=flag, limit=SAMPLE_ROWS)
    if rows.num_rows:
        widgets.table(rows, column_order=wb_ui.visible_columns(rows),
                     column_config={"row": st.column_config.NumberColumn(format="%d", width="small")})
    else:
        st.caption("No record carries this flag.")


# ---------------------------------------------------------------- lengths

def pick_tokenizer(store, where) -> str:
    choices = tokens.tokenizer_choices(store) + [OTHER]  # 'tiny' only once a training run has built it
    choice = where.selectbox(
        "Tokenizer", choices, key="inspect_tokenizer",
        format_func=lambda c: "Approximate (no tokenizer)" if c == tokens.APPROXIMATE else c,
        help="Count with a base model's tokenizer and chat template ('tiny', the project's own small base model, "
             "is listed once a training run has built it), or approximately without one.")
    if choice != OTHER:
        return choice
    return st.text_input("Model folder or Hugging Face id", key="inspect_tokenizer_other",
                         placeholder="/models/my-model or org/model-name",
                         help="A folder with tokenizer files, or a model id already in the local Hugging "
                              "Face cache (nothing is downloaded).").strip() or tokens.APPROXIMATE


def length_numbers(summary: dict, records: int) -> None:
    if summary["approximate"]:
        st.warning(f"**Approximate counts**: {summary['rule']}. Pick a tokenizer for exact counts.",
                   icon=":material/straighten:")
    else:
        st.caption(f"Counted with the {summary['rule']}.")
    trunc = summary["truncation"]
    m1, m2, m3 = st.columns(3)
    share_metric(m1, "Records longer than max length", trunc["truncated_records"], records)
    m2.metric("Completion tokens lost", f"{trunc['supervised_tokens_lost']:,}",
              f"{trunc['supervised_lost_fraction']:.2%} of {trunc['supervised_tokens']:,}"
              if trunc["supervised_tokens_lost"] else None, delta_color="off", delta_arrow="off",
              help="Supervised (assistant) tokens past the max length: the model never learns from them.")
    m3.metric("Records left with nothing to learn", f"{trunc['records_without_supervised_tokens']:,}",
              help="Records whose whole completion lies past the max length; training drops them.")
    widgets.table(pd.DataFrame([{"part": part, **summary[part]} for part in ("prompt", "completion", "total")]),
                 column_config={"part": st.column_config.TextColumn(width="medium"),
                                                 "sum": st.column_config.NumberColumn("all records")})


def lengths_section(store, version, auto: bool) -> None:
    c_tok, c_len = st.columns([3, 1])
    choice = pick_tokenizer(store, c_tok)
    max_length = c_len.number_input("Max length", min_value=16, max_value=1_000_000, value=1024, step=128,
                                 key="inspect_max_length",
                                 help="The max sequence length you plan to train with: records longer than "
                                      "this are cut, and the completion tokens past it are lost.")
    with widgets.user_errors():
        counter = load_counter(store, str(store.project.root), choice, tokens.source_stamp(store, choice))
        ready = tokens.is_counted(store, version, counter)
        if not ready and ((counter.approximate and auto) or st.button(
                "Count tokens", type="primary", key="inspect_count_tokens", icon=":material/calculate:",
                help="Count every record's tokens with this tokenizer (kept for next time).")):
            with widgets.progress("counting tokens") as report:
                tokens.count_tokens(store, version, counter, progress=report)
            ready = True
        if not ready:
            return
        key = wb_ui.version_key(store, version)
        summary, table = token_view(store, version, counter, key, counter.cache_tag, int(max_length))
        length_numbers(summary, version.row_count)
        part = st.radio("Distribution of", ["total", "prompt", "completion"], horizontal=True,
                        key="inspect_length_part", help="Which length to chart: the whole record as trained, "
                        "the prompt side, or the completion (supervised) tokens.")
        bins = token_bins(store, version, counter, key, counter.cache_tag, part)
        st.altair_chart(histogram_chart(bins, part, int(max_length)), width="stretch")
        st.caption("What common max lengths would cut")
        widgets.table(table, column_order=list(CUT_COLUMNS), column_config=CUT_COLUMNS)


# ---------------------------------------------------------------- personal data

def redact_form(store, version, report: dict, region: str) -> None:
    with st.expander("Write a redacted version", icon=":material/visibility_off:"):
        found = [t for t, info in report["types"].items() if info["occurrences"] and info["personal"]]
        kinds = st.multiselect("Replace", list(pii.TYPES), default=[t for t in found if t in pii.TYPES],
                               key=f"inspect_redact_types::{version.ref}",
                               help="Each value of these types becomes a placeholder such as [EMAIL] or [NAME]. "
                                    "Order and tracking numbers (ORDER) are not personal and stay unless chosen.")
        out_name = st.text_input("New dataset name", value=f"{version.dataset}-redacted",
                                 key=f"inspect_redact_out::{version.ref}",
                                 help="The dataset that receives the redacted records as a new version (use "
                                      f"{version.dataset} to add a version to this dataset).")
        if not st.button("Write redacted version", key="inspect_redact", icon=":material/save:",
                         help="Write a new immutable version; this one stays as it is."):
            return
        with widgets.user_errors(), widgets.progress("redacting") as report_progress:
            new, replaced = pii.redact_version(store, version, out_name.strip(), types=kinds, region=region,
                                               user=wb_ui.current_user(), progress=report_progress)
            st.success(f"Wrote **{new.ref}**: {widgets.plural(sum(replaced.values()), 'value')} replaced "
                       f"({', '.join(f'{k} {v:,}' for k, v in replaced.items() if v) or 'none found'}).",
                       icon=":material/check_circle:")


def pii_numbers(report: dict) -> None:
    share_metric(st, "Records with personal data", report["records_with_pii"], report["records"])
    table = pd.DataFrame([{"type": t, "personal": "yes" if info["personal"] else "no",
                           "occurrences": info["occurrences"], "records": info["records"],
                           "fields": ", ".join(f"{f} ({n:,})" for f, n in info["by_field"].items())}
                          for t, info in report["types"].items()])
    if table["occurrences"].any():
        st.altair_chart(bar_chart(table, "occurrences", "type", list(report["types"]), tooltip=[
            "type", alt.Tooltip("occurrences:Q", format=","), alt.Tooltip("records:Q", format=",")]),
            width="stretch")
    else:
        st.success("No personal data found in this version.", icon=":material/check_circle:")
    widgets.table(table, column_config={"fields": st.column_config.TextColumn(width="large")})
    examples = [{"type": t, **ex} for t, info in report["types"].items() for ex in info["examples"]]
    if examples:
        st.caption("Examples (masked). **row** is the record's position in the version.")
        widgets.table(examples, column_order=["type", "row", "field", "value"])


def pii_section(store, version, auto: bool) -> None:
    region = st.text_input("Phone region", value=store.project.setting("pii", "phone_region", pii.DEFAULT_REGION),
                           key="inspect_phone_region", max_chars=2,
                           help="Two-letter region for phone numbers written without a +country code (US, GB, DE"
                                "…); empty finds only international +numbers.")
    with widgets.user_errors():
        scanned = pii.is_scanned(store, version, region=region)
        if not scanned and (auto or st.button(
                "Scan for personal data", type="primary", key="inspect_pii_scan", icon=":material/policy:",
                help="Look for names, postal addresses, emails, phone numbers, card numbers, IBANs, IP addresses "
                     "and account numbers; order and tracking numbers are counted but are not personal data.")):
            with widgets.progress("scanning") as report:
                pii.scan(store, version, region=region, progress=report)
            scanned = True
        if scanned:
            report = pii_view(store, version, wb_ui.version_key(store, version), region)
            pii_numbers(report)
            redact_form(store, version, report, region)


# ---------------------------------------------------------------- quality flags

def quality_section(store, version, auto: bool) -> None:
    with widgets.user_errors():
        ready = quality.is_computed(store, version)
        if not ready and (auto or st.button("Check quality", type="primary", key="inspect_quality_run",
                                            icon=":material/rule:",
                                            help="Flag empty, very short or long, repeated, junk and "
                                                 "other-language records.")):
            with widgets.progress("checking records") as report:
                quality.compute_flags(store, version, progress=report)
            ready = True
        if not ready:
            return
        report = quality_view(store, version, wb_ui.version_key(store, version))
        flags = pd.DataFrame([{"flag": name, "records": n, "rule": report["rules"][name]}
                              for name, n in report["flags"].items()])
        share_metric(st, "Records with any flag", report["flagged"], version.row_count)
        if not report["flagged"]:
            st.success("No flags: no record is empty, very short or long, repeated, junk or in another language.",
                       icon=":material/check_circle:")
        else:
            st.altair_chart(bar_chart(flags, "records", "flag", list(quality.FLAGS),
                                      tooltip=["flag", alt.Tooltip("records:Q", format=","), "rule"]),
                            width="stretch")
        widgets.table(flags, column_config={"rule": st.column_config.TextColumn(width="large")})
        flagged = [name for name, n in report["flags"].items() if n]
        if flagged:
            flag = st.selectbox("Show records flagged", flagged, key=f"inspect_flag::{version.ref}",
                                help="The first records carrying this flag; the Datasets page can filter "
                                     "its browser by flag too.")
            show_sample(store, version, flag)


# ---------------------------------------------------------------- the page

store = wb_ui.get_store()
st.title("Inspect")
version = widgets.version_picker(
    store, PICK, dataset_help="The dataset to inspect.",
    version_help="Every check is computed once per version and kept in the project's cache.",
    empty="No datasets yet: import one on the Datasets page, or start the app with `workbench demo`.")
if version is None:
    st.stop()
auto = version.row_count <= AUTO_RECORDS
st.caption(f"{version.ref}: {widgets.plural(version.row_count, 'record')}, {version.format}.")
tab_lengths, tab_duplicates, tab_pii, tab_quality = st.tabs(["Lengths", "Duplicates", "PII", "Quality"],
                                                           key="insp_tabs")  # keyed: kept on reruns
with tab_lengths:
    lengths_section(store, version, auto)
with tab_duplicates:
    inspect_duplicates.render(store, version)
with tab_pii:
    pii_section(store, version, auto)
with tab_quality:
    quality_section(store, version, auto)
    import inspect_label_errors  # noqa: E402  (label errors: their own section, pages/inspect_label_errors.py)

    inspect_label_errors.render(store, version)
