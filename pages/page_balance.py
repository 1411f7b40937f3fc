"""Balance: see a column's mix, choose a target, preview and commit a balanced version; make
leakage-free train/val/test splits; compare two versions for drift."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.core import versions
from workbench.core.errors import WorkbenchError
from workbench.curation import balance, splits, targets
from workbench.curation.drift import drift

UNIFORM, PROPORTIONAL, REFERENCE, SHARES = ("Uniform", "Proportional to this dataset",
                                            "Proportional to another dataset", "Explicit shares")
SERIES = ["current", "target", "result"]
COLORS = ["#9aa5b1", "#f2a541", "#2e86ab"]
PICK = "bal_"
GROUPING_WORDS = {"exact": "exact duplicates", "near-dup": "+ near-duplicates", "none": "nothing"}


@st.cache_data(max_entries=128, show_spinner=False)
def cached_mix(_store, _version, key: tuple, column: str) -> list:
    return balance.mix(_store, _version, column)


# ---------------------------------------------------------------- charts

def mix_chart(frame: pd.DataFrame, value: str, title: str) -> alt.Chart:
    """Horizontal bars per category, one bar per series side by side (shares computed in the chart)."""
    series = [s for s in SERIES if s in set(frame["series"])]
    fmt = ".0%" if value == "share" else ",d"
    return alt.Chart(frame).transform_joinaggregate(total="sum(records)", groupby=["series"]).transform_calculate(
        share="datum.total ? datum.records / datum.total : 0").mark_bar().encode(
        y=alt.Y("category:N", sort=list(dict.fromkeys(frame["category"])), title=None, axis=widgets.category_axis()),
        yOffset=alt.YOffset("series:N", sort=series),
        x=alt.X(f"{value}:Q", title=title,
                axis=alt.Axis(format=fmt) if value == "share" else widgets.count_axis(format=fmt)),
        color=alt.Color("series:N", sort=series,
                        scale=alt.Scale(domain=series, range=[COLORS[SERIES.index(s)] for s in series]),
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["category:N", "series:N", alt.Tooltip("records:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=widgets.step(12 * len(series) + 4))


def plan_frame(preview: dict) -> pd.DataFrame:
    """The plan's counts in long form: one row per category and series."""
    categories = dict.fromkeys([*preview["target"], *preview["before"]])
    return pd.DataFrame([{"category": str(c), "series": series, "records": counts.get(c, 0)}
                         for series, counts in (("current", preview["before"]), ("target", preview["target"]),
                                                ("result", preview["counts"]))
                         for c in categories])


def split_chart(report: dict) -> alt.Chart:
    """Each value's records split in shares; bars stack in the legend's order (train, val, test)."""
    order = list(report["counts"])
    rows = pd.DataFrame([{"category": str(c), "split": s, "records": n, "rank": order.index(s) if s in order else 99}
                         for c, counts in report["by_category"].items() for s, n in counts.items()])
    return alt.Chart(rows).mark_bar().encode(
        y=alt.Y("category:N", title=None, sort="-x", axis=widgets.category_axis()),
        x=alt.X("records:Q", stack="normalize", title="share of the value's records", axis=alt.Axis(format="%")),
        color=alt.Color("split:N", sort=order, legend=alt.Legend(orient="top")),
        order=alt.Order("rank:Q", sort="ascending"),
        tooltip=["category:N", "split:N", alt.Tooltip("records:Q", format=",")],
    ).properties(height=widgets.step())


# ---------------------------------------------------------------- target

def listed_versions(store) -> list:
    """Every version of the datasets that are not archived (archived ones leave the pickers)."""
    listed = {d["name"] for d in versions.list_datasets(store)}
    return [v for v in versions.list_versions(store) if v.dataset in listed]


def reference_target(store, version) -> str:
    refs = [v.ref for v in listed_versions(store) if v.version_id != version.version_id]
    return st.selectbox("Reference dataset", refs, key="bal_reference",
                        help="Its mix of the same column becomes the target.")


def shares_target(store, version, column: str, current: list) -> str:
    """A table of shares, starting from the current mix (or an uploaded file); returns the target spec."""
    upload = st.file_uploader("Shares file (optional)", type=["csv", "json"], key="bal_shares_file",
                              help="A CSV of category,share (header optional) or a JSON object "
                                   "{category: share}; it fills the table below.")
    available = {str(v): n for v, n in current if v is not None}
    start = balance.target_shares(store, version, column, balance.parse_target("proportional"), available)
    if upload is not None:
        with widgets.user_errors():
            start = targets.shares_from_text(upload.getvalue().decode("utf-8", errors="replace"), upload.name)
    edited = st.data_editor(pd.DataFrame({"category": list(start), "share": list(start.values())}),
                            key=f"bal_shares::{version.ref}::{column}::{upload.name if upload else ''}",
                            num_rows="fixed", disabled=["category"],
                            column_config={"share": st.column_config.NumberColumn(
                                min_value=0.0, max_value=1.0, step=0.01, format="%.4f",
                                help="Share of the result; 0 leaves the value out. Shares must add up to 1.")})
    shares = {str(c): float(s) for c, s in zip(edited["category"], edited["share"]) if s and s > 0}
    st.caption(f"Shares add up to {sum(shares.values()):.4f}.")
    return ",".join(f"{c}={s}" for c, s in shares.items())


def target_controls(store, version, column: str, current: list) -> dict:
    """The target and how to reach it; returns plan_balance's keyword arguments."""
    st.subheader("Target mix")
    kind = st.radio("Target", [UNIFORM, PROPORTIONAL, REFERENCE, SHARES], horizontal=True, key="bal_kind",
                    help="Uniform: every value alike. Proportional: keep this mix, or copy the mix of another "
                         "dataset (say, this month's real tickets). Explicit: type a share per value.")
    reference = reference_target(store, version) if kind == REFERENCE else None
    target = {UNIFORM: "uniform", PROPORTIONAL: "proportional", REFERENCE: "proportional"}.get(kind) \
        or shares_target(store, version, column, current)
    c_size, c_strategy, c_seed, c_copies = st.columns([2, 3, 1, 1])
    size = c_size.number_input("Total records", min_value=0, value=sum(n for v, n in current if v is not None),
                               step=100, key=f"bal_size::{version.ref}::{column}",
                               help="How many records the result has; the target shares are rounded to whole "
                                    "records by the largest-remainder method.")
    strategy = c_strategy.radio("Strategy", list(balance.STRATEGIES), horizontal=True, key="bal_strategy",
                                help="downsample: drop records, never repeat. upsample: repeat records of small "
                                     "values, never drop. hybrid: both, to hit the target exactly.")
    seed = c_seed.number_input("Seed", min_value=0, value=0, step=1, key="bal_seed",
                               help="The same seed gives the same records (the same content hash).")
    max_copies = c_copies.number_input("Max copies", min_value=1, value=balance.DEFAULT_MAX_COPIES, step=1,
                                       key="bal_max_copies", help="Upsampling: a record appears at most this often.")
    with st.expander("Minimum and maximum per value, records to drop first"):
        c_min, c_max, c_drop = st.columns([1, 1, 2])
        minimum = c_min.number_input("Minimum per value", min_value=0, value=0, step=10, key="bal_min",
                                     help="Every value gets at least this many records (0: no minimum).")
        maximum = c_max.number_input("Maximum per value", min_value=0, value=0, step=10, key="bal_max",
                                     help="No value gets more than this many records (0: no maximum).")
        drop_first = c_drop.multiselect("Drop first", list(balance.DROP_FIRST), key="bal_drop_first", default=[],
                                        help="When downsampling, drop these before other records: exact "
                                             "duplicates, near-duplicates, records flagged by quality checks.")
    return dict(by=column, target=target, size=int(size), strategy=strategy, seed=int(seed),
                minimum=int(minimum) or None, maximum=int(maximum) or None, max_copies=int(max_copies),
                drop_first=drop_first, reference=reference)


# ---------------------------------------------------------------- preview and commit

def preview_section(preview: dict, size: int, column: str, missing: int) -> None:
    st.subheader("Current, target and result")
    frame = plan_frame(preview)
    left, right = st.columns(2)
    left.altair_chart(mix_chart(frame[frame.series != "result"], "share", "share of records"), width="stretch")
    right.altair_chart(mix_chart(frame[frame.series != "target"], "records", "records"), width="stretch")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Records now", f"{sum(preview['before'].values()):,}", help="Records with a value of this column.")
    m2.metric("Result", f"{preview['records']:,}", delta=f"{preview['records'] - size:,} vs target"
              if preview["records"] != size else None, help="Records the result would have.")
    m3.metric("Copies added", f"{preview['added_copies']:,}", help="Repeated records added by upsampling.")
    m4.metric("Records dropped", f"{preview['dropped']:,}", help="Records left out by downsampling.")
    if missing:
        st.caption(f"{widgets.plural(missing, 'record')} {'has' if missing == 1 else 'have'} no value of {column} "
                   f"and {'is' if missing == 1 else 'are'} left out.")
    if preview["shortfalls"]:
        st.warning("The target cannot be met exactly:\n\n" + "\n".join(
            f"- {widgets.app_words(s['message'])}" for s in preview["shortfalls"]), icon=":material/warning:")
    else:
        st.success(f"The result hits the target exactly: {widgets.plural(preview['records'], 'record')}.",
                   icon=":material/check_circle:")
    with st.expander("Counts per value"):
        widgets.table(pd.DataFrame([{"category": c, "current": preview["before"].get(c, 0), "target": t,
                                    "result": preview["counts"].get(c, 0)} for c, t in preview["target"].items()]))


def commit_section(store, plan, preview: dict, dataset: str) -> None:
    left, right = st.columns([3, 1])
    out_name = left.text_input("New dataset name", value=f"{dataset}-balanced", key="bal_out",
                               help="The balanced records become a new version of this dataset.")
    allow_short = right.checkbox("Accept the shortfall", key="bal_allow_short", disabled=not preview["shortfalls"],
                                 help="Write the result even where a value cannot reach its target.")
    if st.button("Commit balanced version", type="primary", icon=":material/save:", key="bal_commit",
                 help="Write the result as a new immutable version; its recipe records the target, "
                      "strategy, seed and counts."):
        try:
            with widgets.progress() as report:
                new, result = balance.apply_balance(store, plan, out_name.strip(), allow_short=allow_short,
                                                    user=wb_ui.current_user(), progress=report)
        except WorkbenchError as exc:
            st.session_state["bal_outcome"] = ("error", str(exc))
        else:
            st.session_state["bal_outcome"] = (
                "success", f"Wrote **{new.ref}**: {widgets.plural(new.row_count, 'record')}, content hash "
                           f"`{new.content_hash[:16]}` ({result['seconds']:.1f} s).")
            widgets.show_next(PICK, new.dataset, new.number)
        st.rerun()
    outcome = st.session_state.get("bal_outcome")
    if outcome:
        (st.success if outcome[0] == "success" else widgets.show_error)(outcome[1])


def balance_section(store, version, column: str, current: list) -> None:
    asked = target_controls(store, version, column, current)
    missing = sum(n for v, n in current if v is None)
    with widgets.user_errors():
        plan = balance.plan_balance(store, version, **asked)
        preview = plan.to_json()
        preview_section(preview, asked["size"], column, missing)
        commit_section(store, plan, preview, version.dataset)


# ---------------------------------------------------------------- splits

def leakage_text(report: dict) -> str:
    leak = report["leakage"]
    exact, near = leak["exact_groups_across_splits"], leak["near_groups_across_splits"]
    noun = "exact duplicate group" if near is None else "exact and near-duplicate group"
    text = (f"Leakage report: {widgets.plural(exact, noun)} {'crosses' if exact == 1 else 'cross'} splits "
            f"({widgets.plural(report['clusters'], 'cluster')} of {widgets.plural(report['clustered_records'], 'record')}"
            " kept whole).")
    if near:
        text += f" {widgets.plural(near, 'near-duplicate cluster')} {'crosses' if near == 1 else 'cross'} splits."
    return text


def show_split_outcome(outcome) -> None:
    if not outcome:
        return
    if outcome[0] == "error":
        widgets.show_error(outcome[1])
        return
    r = outcome[1]
    st.success(f"Wrote **{r['dataset']}@{r['version']}** with a split column: "
               + ", ".join(f"{k} {v:,}" for k, v in r["counts"].items())
               + f" (content hash `{r['content_hash'][:16]}`).", icon=":material/check_circle:")
    (st.success if r["leakage"]["clean"] else st.error)(leakage_text(r))
    if r["by_category"]:
        st.altair_chart(split_chart(r), width="stretch")


def split_section(store, version, choices: list) -> None:
    st.subheader(f"Train / validation / test splits of {version.ref}")
    c_ratios, c_stratify, c_group, c_seed = st.columns([2, 2, 2, 1])
    ratios = c_ratios.text_input("Ratios", "0.8,0.1,0.1", key="split_ratios",
                                 help="train,val,test (or train,test), adding up to 1; or named: "
                                      "train=0.8,dev=0.2.")
    stratify = c_stratify.selectbox("Stratify by", [None, *choices], key="split_stratify",
                                    format_func=lambda c: "(nothing)" if c is None else c,
                                    help="Every value of this column is split in the ratios, within one record.")
    group = c_group.radio("Keep together", list(splits.GROUPINGS), horizontal=True, key="split_group",
                          format_func=GROUPING_WORDS.get,
                          help="Records with the same input (and, with near-duplicates, similar ones) go to one "
                               "split, so the test set never holds a copy of a training record.")
    seed = c_seed.number_input("Seed", min_value=0, value=0, step=1, key="split_seed",
                               help="The same seed gives the same splits.")
    if st.button("Make splits", type="primary", icon=":material/call_split:", key="split_run",
                 help="Write a new version of this dataset with a `split` column (exports can then take "
                      "one split, for example train)."):
        try:
            with widgets.progress() as report:
                result = splits.split_version(store, version, ratios, stratify=stratify, group=group, seed=int(seed),
                                              user=wb_ui.current_user(), progress=report)
        except WorkbenchError as exc:
            st.session_state["split_outcome"] = ("error", str(exc))
        else:
            st.session_state["split_outcome"] = ("success", result.report)
    show_split_outcome(st.session_state.get("split_outcome"))


# ---------------------------------------------------------------- drift

def drift_numbers(result: dict) -> None:
    m = result["mix"]
    if not (m and m["p_value"] is not None):
        return
    m1, m2, m3 = st.columns(3)
    m1.metric("Chi-square p-value", f"{m['p_value']:.3g}", help="Chance of a mix this different if nothing had "
              "changed.")
    m2.metric("Cramér's V", f"{m['cramers_v']:.3f}", help="Size of the mix shift: 0.1 small, 0.3 medium.")
    m3.metric("KS D (lengths)", f"{result['lengths']['ks_statistic']:.3f}",
              help="Largest gap between the two length distributions.")
    change = pd.DataFrame(m["categories"]).astype({"category": str})
    st.altair_chart(alt.Chart(change).mark_bar().encode(
        y=alt.Y("category:N", sort=alt.EncodingSortField("change", order="descending"), title=None,
                axis=widgets.category_axis()),
        x=alt.X("change:Q", title="change of share (B - A)", axis=alt.Axis(format="+.1%")),
        color=alt.condition("datum.change > 0", alt.value("#2e86ab"), alt.value("#e4572e")),
        tooltip=["category:N", alt.Tooltip("share_a:Q", format=".1%"), alt.Tooltip("share_b:Q", format=".1%"),
                 alt.Tooltip("change:Q", format="+.2%")],
    ).properties(height=widgets.step()), width="stretch")


def length_chart(result: dict) -> alt.Chart:
    hist = pd.DataFrame(result["lengths"]["histogram"]).melt(
        id_vars=["bucket", "low"], value_vars=["share_a", "share_b"], var_name="version", value_name="share")
    hist["version"] = hist["version"].map({"share_a": f"A {result['a']}", "share_b": f"B {result['b']}"})
    return alt.Chart(hist).mark_bar().encode(
        x=alt.X("bucket:N", sort=alt.EncodingSortField("low"), title=f"{result['text']} length (characters)",
                axis=widgets.category_axis()),
        xOffset="version:N", y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of records"),
        color=alt.Color("version:N", legend=alt.Legend(orient="top", title=None)),
        tooltip=["bucket:N", "version:N", alt.Tooltip("share:Q", format=".1%")])


def drift_section(store, version) -> None:
    st.subheader("Drift between two versions")
    refs = [v.ref for v in listed_versions(store)]
    c_a, c_b = st.columns(2)
    # The pickers are keyed by the version chosen above, so changing it re-seeds both.
    ref_a = c_a.selectbox("Baseline (A)", refs, index=refs.index(version.ref), key=f"drift_a::{version.ref}",
                          help="For example the training data.")
    others = [r for r in refs if r != ref_a]
    ref_b = c_b.selectbox("Compare (B)", refs, index=refs.index(others[-1] if others else ref_a),
                          key=f"drift_b::{version.ref}", help="For example a fresh batch of tickets.")
    same = ref_a == ref_b
    if same:
        st.warning(f"A and B are both {ref_a}: pick two different versions to compare.")
    if st.button("Compare", icon=":material/compare_arrows:", key="drift_run", disabled=same,
                 help="Chi-square test of the category mix and a KS test of the prompt lengths."):
        try:
            with st.spinner("Comparing the mix and the lengths…"):
                st.session_state["drift_result"] = drift(store, versions.get_version(store, ref_a),
                                                         versions.get_version(store, ref_b))
        except WorkbenchError as exc:
            st.session_state["drift_result"] = str(exc)
    result = st.session_state.get("drift_result")
    if isinstance(result, dict) and (result["a"], result["b"]) != (ref_a, ref_b):
        result = None  # a result of other versions than the ones picked now
    if isinstance(result, str):
        widgets.show_error(result)
    elif result:
        st.markdown("\n".join(f"- {wb_ui.safe_markdown(line)}" for line in result["summary"]))  # names from data
        drift_numbers(result)
        st.altair_chart(length_chart(result), width="stretch")


def pick_column(version, choices: list, where) -> str:
    if not choices:
        st.info(f"{version.ref} has no column to balance by (only texts).")
        st.stop()
    return where.selectbox("Balance by", choices, key="bal_column",
                           help="The column whose mix to see and change: a category, an intent, a flag, or the "
                                "length bucket of a text.")


# ---------------------------------------------------------------- the page

store = wb_ui.get_store()
st.title("Balance")
st.caption("See the mix of a column, choose the mix the fine-tuning data should have, preview the result and "
           "commit it as a new version. Then make train/val/test splits that keep duplicates in one split, and "
           "compare two versions for drift.")
left, middle, right = st.columns([3, 1.4, 2])  # "v12 (newest)" stays whole
version = widgets.version_picker(store, PICK, columns=(left, middle), dataset_help="The dataset to balance and split.",
                                 version_help="Versions never change; balancing and splitting write a new one.",
                                 empty="No datasets yet: import one on the Datasets page first.")
if version is None:
    st.stop()
choices = balance.column_choices(store, version)
column = pick_column(version, choices, right)
current = cached_mix(store, version, wb_ui.version_key(store, version), column)
tab_balance, tab_split, tab_drift = st.tabs(["Balance", "Split", "Drift"], key="bal_tabs")  # keyed: kept on reruns
with tab_balance:
    balance_section(store, version, column, current)
with tab_split:
    split_section(store, version, choices)
with tab_drift:
    drift_section(store, version)
