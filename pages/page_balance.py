"""Balance: see a column's mix, choose a target, preview and commit a balanced version; make
leakage-free train/val/test splits; compare two versions for drift."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from workbench.curation import balance
from workbench.curation import splits
from workbench.core import versions
from workbench.curation.drift import drift
from workbench.core.errors import WorkbenchError

UNIFORM, PROPORTIONAL, REFERENCE, SHARES = ("Uniform", "Proportional to this dataset",
                                            "Proportional to another dataset", "Explicit shares")
SERIES = ["current", "target", "result"]
COLORS = ["#9aa5b1", "#f2a541", "#2e86ab"]

store = wb_ui.get_store()


@st.cache_data(max_entries=128, show_spinner=False)
def cached_mix(_store, _version, key: tuple, column: str) -> list:
    return balance.mix(_store, _version, column)


def progress_bar():
    bar = st.progress(0.0, text="starting")
    return bar, (lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message))


def mix_chart(frame: pd.DataFrame, value: str, fmt: str, title: str) -> alt.Chart:
    """Horizontal bars per category, one bar per series side by side."""
    series = [s for s in SERIES if s in set(frame["series"])]
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("category:N", sort=list(dict.fromkeys(frame["category"])), title=None),
        yOffset=alt.YOffset("series:N", sort=series),
        x=alt.X(f"{value}:Q", title=title, axis=alt.Axis(format=fmt)),
        color=alt.Color("series:N", sort=series,
                        scale=alt.Scale(domain=series, range=[COLORS[SERIES.index(s)] for s in series]),
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["category:N", "series:N", alt.Tooltip("records:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=alt.Step(10 if len(series) > 1 else 16))


def plan_frame(plan_json: dict) -> pd.DataFrame:
    rows = []
    for series, counts in (("current", plan_json["before"]), ("target", plan_json["target"]),
                           ("result", plan_json["counts"])):
        total = sum(counts.values()) or 1
        rows += [{"category": str(c), "series": series, "records": counts.get(c, 0),
                  "share": counts.get(c, 0) / total} for c in plan_json["target"]]
    return pd.DataFrame(rows)


st.title("Balance")
st.caption("See the mix of a column, choose the mix the fine-tuning data should have, preview the result and "
           "commit it as a new version. Then make train/val/test splits that keep duplicates in one split, and "
           "compare two versions for drift.")

datasets = versions.list_datasets(store)
if not datasets:
    st.info("No datasets yet: import one on the Datasets page first.")
    st.stop()

if "balance_select" in st.session_state:  # just committed: show the new version
    st.session_state["bal_dataset"], number = st.session_state.pop("balance_select")
    st.session_state[f"bal_version::{st.session_state['bal_dataset']}"] = number

names = [d["name"] for d in datasets]
left, middle, right = st.columns([3, 1, 2])
dataset = left.selectbox("Dataset", names, key="bal_dataset", help="The dataset to balance and split.")
numbers = [v.number for v in reversed(versions.list_versions(store, dataset))]
number = middle.selectbox("Version", numbers, key=f"bal_version::{dataset}",
                          format_func=lambda n: f"v{n} (newest)" if n == numbers[0] else f"v{n}",
                          help="Versions never change; balancing and splitting write a new one.")
version = versions.get_version(store, f"{dataset}@{number}")
key = wb_ui.version_key(store, version)
choices = balance.column_choices(store, version)
if not choices:
    st.info(f"{version.ref} has no column to balance by (only texts).")
    st.stop()
column = right.selectbox("Balance by", choices, key="bal_column",
                         help="The column whose mix to see and change: a category, an intent, a flag, or the "
                              "length bucket of a text.")
current = cached_mix(store, version, key, column)
values = [v for v, _ in current if v is not None]
missing = sum(n for v, n in current if v is None)

# ---------------------------------------------------------------- target
tab_balance, tab_split, tab_drift = st.tabs(["Balance", "Split", "Drift"], key="bal_tabs")  # keyed: kept on reruns
with tab_balance:
    st.subheader("Target mix")
    kind = st.radio("Target", [UNIFORM, PROPORTIONAL, REFERENCE, SHARES], horizontal=True, key="bal_kind",
                    help="Uniform: every value alike. Proportional: keep this mix, or copy the mix of another "
                         "dataset (say, this month's real tickets). Explicit: type a share per value.")
    reference, target = None, "uniform"
    if kind == PROPORTIONAL:
        target = "proportional"
    elif kind == REFERENCE:
        refs = [f"{v.dataset}@{v.number}" for v in versions.list_versions(store) if v.version_id != version.version_id]
        reference = st.selectbox("Reference dataset", refs, key="bal_reference",
                                 help="Its mix of the same column becomes the target.")
        target = "proportional"
    elif kind == SHARES:
        total = sum(n for v, n in current if v is not None) or 1
        upload = st.file_uploader("Shares file (optional)", type=["csv", "json"], key="bal_shares_file",
                                  help="A CSV of category,share (header optional) or a JSON object "
                                       "{category: share}; it fills the table below.")
        start = {str(v): round(n / total, 4) for v, n in current if v is not None}
        if upload is not None:
            try:
                start = balance.shares_from_text(upload.getvalue().decode("utf-8", errors="replace"), upload.name)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
        edited = st.data_editor(pd.DataFrame({"category": list(start), "share": list(start.values())}),
                                key=f"bal_shares::{version.ref}::{column}::{upload.name if upload else ''}",
                                hide_index=True, num_rows="fixed", disabled=["category"],
                                column_config={"share": st.column_config.NumberColumn(
                                    min_value=0.0, max_value=1.0, step=0.01, format="%.4f",
                                    help="Share of the result; 0 leaves the value out. Shares must add up to 1.")})
        shares = {str(c): float(s) for c, s in zip(edited["category"], edited["share"]) if s and s > 0}
        target = ",".join(f"{c}={s}" for c, s in shares.items())
        st.caption(f"Shares add up to {sum(shares.values()):.4f}.")

    c_size, c_strategy, c_seed, c_copies = st.columns([2, 3, 1, 1])
    size = c_size.number_input("Total records", min_value=0, value=int(sum(n for v, n in current if v is not None)),
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
        drop_first = c_drop.multiselect("Drop first", list(balance.DROP_FIRST), key="bal_drop_first",
                                        default=[],
                                        help="When downsampling, drop these before other records: exact "
                                             "duplicates, near-duplicates, records flagged by quality checks.")

    try:
        plan = balance.plan_balance(store, version, by=column, target=target, size=int(size), strategy=strategy,
                                    seed=int(seed), minimum=int(minimum) or None, maximum=int(maximum) or None,
                                    max_copies=int(max_copies), drop_first=drop_first, reference=reference)
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        plan = None

    if plan is not None:
        preview = plan.to_json()
        st.subheader("Current, target and result")
        frame = plan_frame(preview)
        left, right = st.columns(2)
        left.altair_chart(mix_chart(frame[frame.series != "result"], "share", ".0%", "share of records"),
                          width="stretch")
        right.altair_chart(mix_chart(frame[frame.series != "target"], "records", ",d", "records"),
                           width="stretch")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Records now", f"{sum(preview['before'].values()):,}",
                  help="Records with a value of this column.")
        m2.metric("Result", f"{preview['records']:,}", delta=f"{preview['records'] - int(size):,} vs target"
                  if preview["records"] != int(size) else None, help="Records the result would have.")
        m3.metric("Copies added", f"{preview['added_copies']:,}", help="Repeated records added by upsampling.")
        m4.metric("Records dropped", f"{preview['dropped']:,}", help="Records left out by downsampling.")
        if missing:
            st.caption(f"{missing:,} records have no value of {column} and are left out.")
        if preview["shortfalls"]:
            st.warning("The target cannot be met exactly:\n\n" + "\n".join(
                f"- {s['message']}" for s in preview["shortfalls"]), icon=":material/warning:")
        else:
            st.success(f"The result hits the target exactly: {preview['records']:,} records.",
                       icon=":material/check_circle:")
        with st.expander("Counts per value"):
            st.dataframe(pd.DataFrame([{"category": c, "current": preview["before"].get(c, 0), "target": t,
                                        "result": preview["counts"].get(c, 0)} for c, t in preview["target"].items()]),
                         hide_index=True)

        left, right = st.columns([3, 1])
        out_name = left.text_input("New dataset name", value=f"{dataset}-balanced", key="bal_out",
                                   help="The balanced records become a new version of this dataset.")
        allow_short = right.checkbox("Accept the shortfall", key="bal_allow_short",
                                     disabled=not preview["shortfalls"],
                                     help="Write the result even where a value cannot reach its target.")
        if st.button("Commit balanced version", type="primary", icon=":material/save:", key="bal_commit",
                     help="Write the result as a new immutable version; its recipe records the target, "
                          "strategy, seed and counts."):
            bar, report = progress_bar()
            try:
                new, result = balance.apply_balance(store, plan, out_name.strip(), allow_short=allow_short, user=wb_ui.current_user(),
                                                    progress=report)
            except WorkbenchError as exc:
                st.session_state["bal_outcome"] = ("error", str(exc))
            else:
                st.session_state["bal_outcome"] = (
                    "success", f"Wrote **{new.ref}**: {new.row_count:,} records, content hash "
                               f"`{new.content_hash[:16]}` ({result['seconds']:.1f} s).")
                st.session_state["balance_select"] = (new.dataset, new.number)
            bar.empty()
            st.rerun()
    outcome = st.session_state.get("bal_outcome")
    if outcome:
        (st.success if outcome[0] == "success" else wb_ui.show_error)(outcome[1])

# ---------------------------------------------------------------- splits
with tab_split:
    st.subheader(f"Train / validation / test splits of {version.ref}")
    c_ratios, c_stratify, c_group, c_seed = st.columns([2, 2, 2, 1])
    ratios = c_ratios.text_input("Ratios", "0.8,0.1,0.1", key="split_ratios",
                                 help="train,val,test (or train,test), adding up to 1; or named: "
                                      "train=0.8,dev=0.2.")
    stratify = c_stratify.selectbox("Stratify by", [None, *choices], key="split_stratify",
                                    format_func=lambda c: "(nothing)" if c is None else c,
                                    help="Every value of this column is split in the ratios, within one record.")
    group = c_group.radio("Keep together", list(splits.GROUPINGS), horizontal=True, key="split_group",
                          format_func={"exact": "exact duplicates", "near-dup": "+ near-duplicates",
                                       "none": "nothing"}.get,
                          help="Records with the same input (and, with near-duplicates, similar ones) go to one "
                               "split, so the test set never holds a copy of a training record.")
    split_seed = c_seed.number_input("Seed", min_value=0, value=0, step=1, key="split_seed",
                                     help="The same seed gives the same splits.")
    if st.button("Make splits", type="primary", icon=":material/call_split:", key="split_run",
                 help="Write a new version of this dataset with a `split` column (exports can then take "
                      "`--split train`)."):
        bar, report = progress_bar()
        try:
            result = splits.split_version(store, version, ratios, stratify=stratify, group=group, seed=int(split_seed),
                                          user=wb_ui.current_user(),
                                          progress=report)
        except WorkbenchError as exc:
            st.session_state["split_outcome"] = ("error", str(exc))
        else:
            st.session_state["split_outcome"] = ("success", result.report)
        bar.empty()
    outcome = st.session_state.get("split_outcome")
    if outcome and outcome[0] == "error":
        wb_ui.show_error(outcome[1])
    elif outcome:
        r = outcome[1]
        st.success(f"Wrote **{r['dataset']}@{r['version']}** with a split column: "
                   + ", ".join(f"{k} {v:,}" for k, v in r["counts"].items())
                   + f" (content hash `{r['content_hash'][:16]}`).", icon=":material/check_circle:")
        leak = r["leakage"]
        checked = " and near-duplicate" if leak["near_groups_across_splits"] is not None else ""
        text = (f"Leakage report: {leak['exact_groups_across_splits']} exact{checked} duplicate groups cross "
                f"splits ({r['clusters']:,} clusters of {r['clustered_records']:,} records were kept whole).")
        if leak["near_groups_across_splits"]:
            text += f" {leak['near_groups_across_splits']} near-duplicate clusters cross splits."
        (st.success if leak["clean"] else st.error)(text)
        if r["by_category"]:
            rows = [{"category": str(c), "split": s, "records": n} for c, counts in r["by_category"].items()
                    for s, n in counts.items()]
            st.altair_chart(alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
                y=alt.Y("category:N", title=None, sort="-x"), x=alt.X("records:Q", stack="normalize",
                                                                      title="share of the value's records"),
                color=alt.Color("split:N", sort=list(r["counts"]), legend=alt.Legend(orient="top")),
                tooltip=["category:N", "split:N", alt.Tooltip("records:Q", format=",")],
            ).properties(height=alt.Step(14)), width="stretch")

# ---------------------------------------------------------------- drift
with tab_drift:
    st.subheader("Drift between two versions")
    refs = [f"{v.dataset}@{v.number}" for v in versions.list_versions(store)]
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
        wb_ui.show_error(result)
    elif result:
        st.markdown("\n".join(f"- {line}" for line in result["summary"]))
        m = result["mix"]
        if m and m["p_value"] is not None:
            m1, m2, m3 = st.columns(3)
            m1.metric("Chi-square p-value", f"{m['p_value']:.3g}", help="Chance of a mix this different if "
                      "nothing had changed.")
            m2.metric("Cramér's V", f"{m['cramers_v']:.3f}", help="Size of the mix shift: 0.1 small, 0.3 medium.")
            m3.metric("KS D (lengths)", f"{result['lengths']['ks_statistic']:.3f}",
                      help="Largest gap between the two length distributions.")
            change = pd.DataFrame(m["categories"])
            change["category"] = change["category"].astype(str)
            st.altair_chart(alt.Chart(change).mark_bar().encode(
                y=alt.Y("category:N", sort=alt.EncodingSortField("change", order="descending"), title=None),
                x=alt.X("change:Q", title="change of share (B - A)", axis=alt.Axis(format="+.1%")),
                color=alt.condition("datum.change > 0", alt.value("#2e86ab"), alt.value("#e4572e")),
                tooltip=["category:N", alt.Tooltip("share_a:Q", format=".1%"), alt.Tooltip("share_b:Q", format=".1%"),
                         alt.Tooltip("change:Q", format="+.2%")],
            ).properties(height=alt.Step(18)), width="stretch")
        hist = pd.DataFrame(result["lengths"]["histogram"]).melt(
            id_vars=["bucket", "low"], value_vars=["share_a", "share_b"], var_name="version", value_name="share")
        hist["version"] = hist["version"].map({"share_a": f"A {result['a']}", "share_b": f"B {result['b']}"})
        st.altair_chart(alt.Chart(hist).mark_bar().encode(
            x=alt.X("bucket:N", sort=alt.EncodingSortField("low"), title=f"{result['text']} length (characters)"),
            xOffset="version:N", y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of records"),
            color=alt.Color("version:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=["bucket:N", "version:N", alt.Tooltip("share:Q", format=".1%")]), width="stretch")
