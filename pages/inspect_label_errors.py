"""The Label errors part of the Inspect page: `render(store, version)`.

Suspected label errors ranked most likely wrong first, the given and the suggested label side by
side, a chart of the confusions that dominate (given -> suggested), a filter by confusion, and two
actions: flag the top N for the labelling queue, or (admins) write a relabelled version.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.core.versions import version_columns
from workbench.data.browse import category_column
from workbench.inspect import label_errors

ALL = "All confusions"
SHOWN = 200
CHART_PAIRS = 15


KEPT = 8


@st.cache_resource(show_spinner=False)
def _results() -> dict:
    """Results shared by every session of the server (a version never changes), the newest KEPT."""
    return {}


def _find(store, version, label_col: str, near: bool, progress):
    kept = _results()
    key = (wb_ui.version_key(store, version), label_col, near)
    if key not in kept:  # computed outside any cache decorator, so its progress bar is live
        kept[key] = label_errors.find_label_errors(store, version, label_col, near=near, progress=progress)
        for old in list(kept)[:-KEPT]:
            kept.pop(old)
    return kept[key]


def _run_key(version, label_col: str, near: bool) -> str:
    return f"le_run_{version.version_id}_{label_col}_{near}"


def _pick_column(store, version) -> str | None:
    names = [c for c, _ in version_columns(store, version)
             if c not in ("prompt", "completion", "system", "messages") and not c.startswith("_")]
    if not names:
        st.caption("This version has no column besides its text: nothing to check.")
        return None
    default = category_column(store, version)
    return st.selectbox("Label column", names, index=names.index(default) if default in names else 0,
                        key=f"le_col_{version.version_id}",
                        help="The column of labels to check (a category for each record).")


def _confusion_chart(result) -> None:
    pairs = pd.DataFrame(result.confusions()[:CHART_PAIRS])
    if pairs.empty:
        return
    pairs["confusion"] = pairs["given"] + " → " + pairs["suggested"]
    st.caption("Most common confusions among the suspects (given → suggested)")
    st.altair_chart(alt.Chart(pairs).mark_bar().encode(
        x=alt.X("records:Q", axis=widgets.count_axis()),
        y=alt.Y("confusion:N", sort=list(pairs["confusion"]), title=None, axis=widgets.category_axis()),
        tooltip=["given", "suggested", alt.Tooltip("records:Q", format=",")]).properties(height=widgets.step()),
        width="stretch")


def _pick_pair(result, version) -> tuple[str, str] | None:
    pairs = result.confusions()
    options = [ALL] + [f"{p['given']} → {p['suggested']} ({p['records']})" for p in pairs]
    chosen = st.selectbox("Show confusion", options, key=f"le_pair_{version.version_id}",
                          help="Only the suspects given one label where the classifier suggests another; the "
                               "actions below then apply to these.")
    return None if chosen == ALL else (pairs[options.index(chosen) - 1]["given"],
                                       pairs[options.index(chosen) - 1]["suggested"])


def _table(store, result, pair) -> int:
    items = result.suspects(SHOWN, pair=pair)
    texts = label_errors.texts_of(store, result.version, [s["row"] for s in items])
    frame = pd.DataFrame([{"rank": i + 1, "row": s["row"] + 1, **({"id": s["id"]} if "id" in s else {}),
                           "text": texts.get(s["row"], ""), "given": s["given"], "suggested": s["suggested"],
                           "quality": s["quality"], "why": "; ".join(s["reasons"])} for i, s in enumerate(items)])
    if frame.empty:
        st.success("No suspected label errors.", icon=":material/check_circle:")
        return 0
    widgets.table(frame, width="stretch", column_config={
        "text": st.column_config.TextColumn(width="large"), "why": st.column_config.TextColumn(width="large"),
        "quality": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f")})
    return len(result.suspects(pair=pair))


def _actions(store, result, pair, total: int) -> None:
    vid = result.version.version_id
    top = st.number_input("Top N suspects", 1, max(total, 1), min(total, 50), key=f"le_top_{vid}",
                          help="How many of the suspects listed above, from the top, the actions apply to.")
    c1, c2 = st.columns(2)
    if c1.button("Flag for relabelling", key=f"le_flag_{vid}", icon=":material/flag:",
                 help="Puts these records first in the Label page's queue, each with the reason it is suspected."):
        with widgets.user_errors():
            n = label_errors.flag_suspects(store, result, int(top), pair=pair, user=wb_ui.current_user())
            st.success(f"Flagged {widgets.plural(n, 'record')}: the Label queue shows them first.",
                       icon=":material/flag:")
    out = c2.text_input("Dataset for the relabelled version", value=result.version.dataset, key=f"le_out_{vid}",
                        help="The same name adds a version to this dataset; another name starts a new one. "
                             "The version you are looking at stays as it is.")
    if c2.button("Write relabelled version", key=f"le_relabel_{vid}", icon=":material/save:",
                 help="Admins: a new version where these records carry the suggested label; its recipe lists "
                      "every change."):
        with widgets.user_errors(), widgets.progress("writing the relabelled version") as report:
            new, info = label_errors.relabel_suspects(store, result, int(top), out=out.strip() or None, pair=pair,
                                                      user=wb_ui.current_user(), progress=report)
            st.success(f"Wrote **{new.ref}**: {widgets.plural(info['changed'], 'record')} relabelled "
                       f"({info['source']} is unchanged).", icon=":material/check_circle:")


def render(store, version) -> None:
    """Draw the label-errors section for one dataset version."""
    st.subheader("Label errors")
    c1, c2, c3 = st.columns([2, 1, 1])
    with c1:
        label_col = _pick_column(store, version)
    if label_col is None:
        return
    near = c2.toggle("Near duplicates", value=True, key=f"le_near_{version.version_id}",
                     help="Also count near copies (a word or two changed) that carry another label as a signal, "
                          "not only exact copies.")
    key = _run_key(version, label_col, near)
    if c3.button("Find label errors", key=f"le_go_{version.version_id}", type="primary", icon=":material/troubleshoot:",
                 help="Scores every record by classifiers that never saw it (5-fold cross-validation) and cleanlab; "
                      "about half a minute for 10,000 records on two cores. The result is kept."):
        st.session_state[key] = True
    if not st.session_state.get(key):
        st.caption("Press **Find label errors** to rank the records whose label looks wrong.")
        return
    result = None
    with widgets.user_errors(), widgets.progress("finding label errors") as report:
        result = _find(store, version, label_col, near, report)
    if result is None:
        return
    m = st.columns(3)
    m[0].metric("Labelled records", f"{int((result.fold >= 0).sum()):,}")
    m[1].metric("Suspected errors", f"{int(result.suspect.sum()):,}",
                help="Records the classifier's out-of-fold probabilities (via cleanlab) or a duplicate or the "
                     "annotators put in doubt.")
    m[2].metric("Seconds", f"{result.seconds:.1f}")
    _confusion_chart(result)
    pair = _pick_pair(result, version)
    total = _table(store, result, pair)
    if total:
        _actions(store, result, pair, total)
