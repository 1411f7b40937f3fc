"""The Duplicates (and Leakage) part of the Inspect page: `render(store, version)`.

Clusters of exact and near duplicates, largest first; opening one shows its records side by side;
choices per cluster (keep the first, a chosen record, or all) end in one new deduplicated version.
Conflicting duplicates (same prompt, different label or answer) and leakage across splits are
listed separately.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.core.auth import require_role
from workbench.inspect import dedup

AUTO_RECORDS = 20_000  # smaller versions are checked on sight; larger ones wait for the button
PAGE = 20
SIDE_BY_SIDE = 3
KEEP_FIRST, KEEP_CHOSEN, KEEP_ALL = "The first record", "A record I choose", "All records (not duplicates)"


@st.cache_data(max_entries=32, show_spinner="Looking for prompts with conflicting labels…")
def _conflicts(_store, _version, key: tuple) -> dict:
    return dedup.conflicts(_store, _version)


def _choices(version) -> dict:
    """This session's keep choices for the version's clusters: {group: row or 'all'}."""
    return st.session_state.setdefault(f"dedup_choices_{version.version_id}", {})


def _find(store, version, near: bool, threshold: float, run: bool):
    if not (run or version.row_count <= AUTO_RECORDS or dedup.is_cached(store, version, near=near,
                                                                         threshold=threshold)):
        st.info(f"{version.row_count:,} records: press **Find duplicates** to check them (a minute or so for "
                "near duplicates on 100,000 records; the result is kept for next time).", icon=":material/info:")
        return None
    with widgets.user_errors(), widgets.progress("looking for duplicates") as report:
        return dedup.find_duplicates(store, version, near=near, threshold=threshold, progress=report)
    return None


def _summary(result) -> None:
    s = result.summary()
    cols = st.columns(4)
    cols[0].metric("Records", f"{s['records']:,}")
    cols[1].metric("Exact copies", f"{s['exact_duplicates']:,}", help="Records identical to an earlier one after "
                   "lower-casing and collapsing whitespace (the first of each cluster is not counted).")
    cols[2].metric("Near copies", f"{s.get('near_duplicates', 0):,}" if result.near else "off",
                   help="Further records within the similarity threshold of another record of their cluster.")
    cols[3].metric("Clusters", f"{s['clusters']:,}", help="Groups of two or more records that are copies or near "
                   "copies of each other (linked in a chain: A~B and B~C put A, B and C together).")
    sizes = dedup.cluster_sizes(result)
    if sizes:
        chart = alt.Chart(pd.DataFrame(sizes, columns=["records in cluster", "clusters"])).mark_bar().encode(
            x=alt.X("records in cluster:O", axis=widgets.category_axis(labelAngle=0)),
            y=alt.Y("clusters:Q", axis=widgets.count_axis()), tooltip=["records in cluster", "clusters"])
        st.altair_chart(chart.properties(height=160), width="stretch")


def _cluster(store, result, group: int) -> None:
    records = dedup.cluster_records(store, result, group).to_pandas()
    choices = _choices(result.version)
    text_cols = [c for c in ("system", "prompt", "completion") if c in records and records[c].notna().any()]
    other = [c for c in records.columns if c not in (*text_cols, "messages", "_row", "similarity")]
    shown = records.head(SIDE_BY_SIDE)
    for col, (_, rec) in zip(st.columns(len(shown)), shown.iterrows()):
        with col:
            st.markdown(f"**Row {int(rec['_row']) + 1}** · similarity to the first {rec['similarity']:.2f}")
            st.caption(wb_ui.safe_markdown(" · ".join(f"{c}: {rec[c]}" for c in other if pd.notna(rec[c]))))
            for c in text_cols:
                if pd.notna(rec[c]):
                    st.text_area(c, str(rec[c]), height=160, disabled=True,
                                 key=f"dd_{result.version.version_id}_{group}_{rec['_row']}_{c}",
                                 help=f"The record's {c}, as stored.")
    if len(records) > SIDE_BY_SIDE:
        st.caption(f"{widgets.plural(len(records) - SIDE_BY_SIDE, 'more record')} of this cluster:")
        more = records.iloc[SIDE_BY_SIDE:].assign(row=lambda d: d["_row"] + 1).drop(columns="_row")
        widgets.table(more, width="stretch")
    current = choices.get(group)
    mode = st.radio("Keep", [KEEP_FIRST, KEEP_CHOSEN, KEEP_ALL], horizontal=True,
                    index=0 if current is None else 2 if current == "all" else 1, key=f"dd_mode_{group}",
                    help="What the deduplicated version keeps of this cluster. Nothing changes until you write "
                         "the new version below; this version is never modified.")
    if mode == KEEP_CHOSEN:
        rows = [int(r) for r in records["_row"]]
        keep = st.selectbox("Record to keep", rows, format_func=lambda r: f"row {r + 1}",
                            index=rows.index(current) if isinstance(current, int) and current in rows else 0,
                            key=f"dd_keep_{group}", help="The one record of this cluster the new version keeps.")
        choices[group] = int(keep)
    elif mode == KEEP_ALL:
        choices[group] = "all"
    else:
        choices.pop(group, None)


def _resolve(store, version, result) -> None:
    choices = _choices(version)
    st.markdown("**Write a deduplicated version**")
    s = result.summary()
    keep_all = [g for g, c in choices.items() if c == "all"]
    chosen = {g: c for g, c in choices.items() if c != "all"}
    st.caption(f"Keeps one record per cluster ({len(chosen)} chosen by you, "
               f"{widgets.plural(len(keep_all), 'cluster')} kept whole); about {widgets.plural(s['duplicates'], 'record')}"
               " go. The new version's recipe lists every dropped row.")
    out = st.text_input("Dataset for the result", value=version.dataset, key=f"dd_out_{version.version_id}",
                        help="The same dataset name adds a new version to it; another name starts a new dataset. "
                             "The version you are looking at stays as it is.")
    if st.button("Keep one per cluster → new version", key=f"dd_resolve_{version.version_id}", type="primary",
                 help="Writes the new version now (progress below)."):
        with widgets.user_errors():
            with widgets.progress() as report:
                user = require_role(wb_ui.current_user(), "write_version")
                new, info = dedup.resolve(store, version, near=result.near, threshold=result.threshold, keep=chosen,
                                          keep_all=keep_all, out=out.strip() or None, created_by=user.name, user=user,
                                          progress=report)
            choices.clear()
            st.success(f"Wrote **{new.ref}**: {widgets.plural(info['records'], 'record')}, "
                       f"{widgets.plural(info['dropped'], 'duplicate')} dropped ({version.ref} is unchanged).",
                       icon=":material/check_circle:")


def _conflict_section(store, version) -> None:
    st.markdown("**Conflicting duplicates** — likely label errors")
    out = _conflicts(store, version, wb_ui.version_key(store, version))
    label = out["label_column"] or "label"
    if not out["groups"]:
        st.caption(f"No prompt appears with two different {label} values or two different completions.")
        return
    st.caption(f"{widgets.plural(out['groups'], 'prompt')} appear with different {label} values "
               f"({out['different_labels']:,}) or different completions ({out['different_completions']:,}), "
               f"{widgets.plural(out['records'], 'record')} in all.")
    frame = pd.DataFrame(out["items"])
    frame["rows"] = frame["rows"].map(lambda rows: ", ".join(str(r + 1) for r in rows))
    widgets.table(frame[["prompt", "labels", "n_completions", "size", "rows"]],
                 width="stretch", column_config={"n_completions": "completions", "size": "records"})


def _leakage_section(store, result) -> None:
    out = dedup.leakage(store, result)
    if out is None:
        return
    st.subheader("Leakage across splits")
    cols = st.columns(3)
    cols[0].metric("Clusters across splits", f"{out['clusters']:,}",
                   help=f"Duplicate clusters with records in more than one value of `{out['split_column']}`.")
    cols[1].metric("Exact pairs", f"{out['exact_pairs']:,}", help="Pairs of identical records in different splits.")
    cols[2].metric("Near pairs", f"{out['near_pairs']:,}", help="Pairs of near duplicates in different splits.")
    if out["by_pair"]:
        frame = pd.DataFrame([{"splits": " / ".join(p["splits"]), "exact pairs": p["exact_pairs"],
                               "near pairs": p["near_pairs"]} for p in out["by_pair"]])
        widgets.table(frame, width="stretch")
        examples = pd.DataFrame(out["examples"])
        examples[["a", "b"]] += 1
        st.caption("Leaking pairs (row numbers):")
        widgets.table(examples.drop(columns="group"), width="stretch")
    else:
        st.caption("No duplicate crosses a split.")


def render(store, version) -> None:
    """Draw the duplicates section for one dataset version."""
    st.subheader("Duplicates")
    c1, c2, c3 = st.columns([1, 2, 1])
    near = c1.toggle("Near duplicates", value=True, key="dd_near",
                     help="Also find records that are almost the same (a word or two changed), not only exact copies.")
    threshold = c2.slider("Similarity threshold", 0.5, 1.0, dedup.DEFAULT_THRESHOLD, 0.05, key="dd_threshold",
                          disabled=not near,
                          help="Jaccard similarity of word 3-grams (character 4-grams for texts under 16 words) at "
                               "which two records count as near duplicates: 1.0 = the same words in the same order; "
                               "0.8 catches a changed word or two in a ticket; lower finds looser matches.")
    run = c3.button("Find duplicates", key="dd_run", help="Check this version now (the result is kept).")
    result = _find(store, version, near, threshold, run)
    if result is None:
        return
    _summary(result)
    total = dedup.cluster_count(result)
    if total:
        pages = (total + PAGE - 1) // PAGE
        page = st.number_input(f"Cluster page (of {pages})", 1, pages, 1, key=f"dd_page_{version.version_id}",
                               help="Clusters are listed largest first.") if pages > 1 else 1
        listing = dedup.clusters(store, result, offset=(page - 1) * PAGE, limit=PAGE).to_pandas()
        choices = _choices(version)
        listing["keep"] = listing["group"].map(lambda g: {None: "first"}.get(choices.get(g), choices.get(g)))
        listing["keep"] = listing["keep"].map(lambda k: k if k in ("first", "all") else f"row {k + 1}")
        widgets.table(listing.assign(cluster=listing["group"] + 1).drop(columns="group"),
                     width="stretch")
        opened = st.selectbox("Open a cluster", list(listing["group"]), key=f"dd_open_{version.version_id}",
                              format_func=lambda g: f"cluster {g + 1} ({int(listing.set_index('group').at[g, 'size'])} "
                                                    "records)",
                              help="Shows the cluster's records side by side and what to keep of them.")
        _cluster(store, result, int(opened))
        _resolve(store, version, result)
    else:
        st.success("No duplicates in this version.", icon=":material/check_circle:")
    _conflict_section(store, version)
    _leakage_section(store, result)
