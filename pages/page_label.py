"""Label: answer questions one record at a time; owners set questions up; admins settle disagreements."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from workbench.core import auth, versions
from workbench.core.canonical import canonical_to_messages
from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL
from workbench.labels import adjudication, annotations, kinds, queue_order
from workbench.labels import questions as qs

ANNOTATE, QUESTIONS, ADJUDICATE = "Annotate", "Questions", "Adjudicate"
STATUS_ORDER = list(adjudication.STATUSES)
QUEUE_ORDER_HELP = ("The order records are handed out in. " + " ".join(
    f"{name}: {meaning}." for name, meaning in queue_order.ORDERS.items()) + " The classifier's certainty comes "
    "from Suspected label errors on the Inspect page, run on the question's version.")

store = wb_ui.get_store()
user = wb_ui.current_user()

st.title("Label")
modes = [ANNOTATE] + ([QUESTIONS] if user.can("edit_questions") else []) + \
    ([ADJUDICATE] if user.can("adjudicate") else [])
# The Agreement page links here with ?dataset=..&question=..&mode=adjudicate: open that queue once.
link = st.query_params.to_dict()
if link.get("mode") == "adjudicate" and ADJUDICATE in modes:
    st.session_state["label_mode"] = ADJUDICATE
    st.query_params.pop("mode")
mode = st.segmented_control("View", modes, default=ANNOTATE, key="label_mode", required=True,
                            help="Annotate: answer records one by one. Questions: what is asked, of which version, "
                                 "by how many annotators. Adjudicate: settle records where annotators disagree.")
questions = qs.list_questions(store, archived=False)  # an archived dataset leaves the pickers
labels = {q.question_id: f"{q.dataset} · {q.name} ({q.kind})" for q in questions}


def pick_question(key: str):
    if not questions:
        return None
    ids = [q.question_id for q in questions]
    linked = next((q.question_id for q in questions
                   if (q.dataset, q.name) == (link.get("dataset"), link.get("question"))), None)
    if linked is not None and key not in st.session_state:
        st.session_state[key] = linked
    chosen = st.selectbox("Question", ids, key=key, format_func=labels.get,
                          help="The question to work on; each belongs to one version of a dataset.")
    return next(q for q in questions if q.question_id == chosen)


def show_text(text: str, plain: bool) -> None:
    """Record text: markdown with everything from the data escaped, or the exact characters."""
    if plain:
        st.code(text or "", language=None, wrap_lines=True)
    else:
        st.markdown(wb_ui.safe_markdown(text))


def show_record(record: dict, question, plain: bool) -> None:
    turns = canonical_to_messages(record.get("prompt") or "", record.get("completion"), record.get("system"),
                                  record.get("messages"))
    for turn in turns:
        with st.chat_message(turn["role"], avatar={"user": ":material/person:", "assistant": ":material/support_agent:",
                                                   "system": ":material/settings:"}.get(turn["role"])):
            show_text(turn["content"], plain)
    extras = question.metadata(record)  # never the column being labelled nor the one the choices came from
    if extras:
        st.caption(wb_ui.safe_markdown(" · ".join(f"{k}: {v}" for k, v in extras.items())))


# ---------------------------------------------------------------- annotate

def answer(question, item: str, value, state: str) -> None:
    """Button/form callback: store the answer, then the next rerun claims the next record."""
    try:
        stored = annotations.submit(store, question, item, value, user=user)
    except WorkbenchError as exc:
        st.session_state[f"{state}::flash"] = ("error", str(exc))
        return
    shown = question.spec.display(stored)
    st.session_state[f"{state}::flash"] = ("success", f"Saved **{wb_ui.safe_markdown(shown[:80])}** for record "
                                                      f"{wb_ui.safe_markdown(item)}.")
    st.session_state.pop(f"{state}::revisit", None)


def answer_from(question, item: str, widget_key: str, state: str) -> None:
    """Form callback: answer with the value of the form's widget."""
    answer(question, item, st.session_state.get(widget_key), state)


def revisit(question, state: str, widget_key: str | None) -> None:
    """Open the earlier answer chosen in a widget again (None: back to the queue)."""
    item = st.session_state.get(widget_key) if widget_key else None
    if item is None:
        st.session_state.pop(f"{state}::revisit", None)
    else:
        st.session_state[f"{state}::revisit"] = item
        annotations.skip(store, question, user)  # hand the claimed record back meanwhile


def skip(question, item: str, state: str) -> None:
    st.session_state.setdefault(f"{state}::skipped", []).append(item)
    st.session_state.pop(f"{state}::revisit", None)
    annotations.skip(store, question, user)


SEARCH_FROM = 12  # more choices than this get a search box


def answer_widgets(question, item: str, record: dict, current: str | None, state: str) -> None:
    kind, key = question.spec, f"{state}::{item}"
    if kind.widget == "buttons":
        options = kind.button_options(question.choices, question.anchors)
        if len(options) > SEARCH_FROM:
            typed = st.text_input("Find a choice", key=f"{state}::find", placeholder="type part of a choice",
                                  help=f"{len(options)} choices: only those containing this text are shown (the "
                                       "keyboard keys stay the same).")
            found = [o for o in options if typed.strip().lower() in o[1].lower()]
            if not found:
                st.caption(f"No choice contains {wb_ui.safe_markdown(repr(typed.strip()))}; all are shown.")
            options = found or options
        longest = max(len(text) for _, text, _ in options) if options else 0
        per_row = kind.buttons_per_row or (2 if longest > 12 else 3 if longest > 6 else 5)
        for start in range(0, len(options), per_row):
            cols = st.columns(per_row)
            for col, (value, text, shortcut) in zip(cols, options[start:start + per_row]):
                col.button(wb_ui.safe_markdown(text), key=f"{key}::{value}", on_click=answer,  # labels from data
                           args=(question, item, value, state),
                           type="primary" if value == current else "secondary", shortcut=shortcut,
                           width="stretch", help=f"Answer {wb_ui.safe_markdown(repr(value))} and go to the next record"
                                                 + (f" (key {shortcut})" if shortcut else "") + ".")
        if not question.choices:
            with st.form(f"{key}::free"):
                st.text_input("Answer", value=current or "", key=f"{key}::typed",
                              help="This question has no fixed choices.")
                st.form_submit_button("Submit", type="primary", help="Save and go to the next record.",
                                      on_click=answer_from, args=(question, item, f"{key}::typed", state))
    elif kind.widget == "tags":
        with st.form(f"{key}::tags"):
            st.pills("Tags", list(question.choices), selection_mode="multi", key=f"{key}::pills",
                     format_func=wb_ui.safe_markdown,
                     default=kinds.tag_list(current),
                     help="Choose every tag that applies; none is an answer too.")
            st.form_submit_button("Submit", type="primary", shortcut="ctrl+enter",
                                  help="Save the tags and go to the next record (Ctrl+Enter).",
                                  on_click=answer_from, args=(question, item, f"{key}::pills", state))
    else:  # text: the annotator rewrites the response
        with st.form(f"{key}::text"):
            st.text_area("Corrected response", value=current or record.get("completion") or "", height=260,
                         key=f"{key}::area", help="Rewrite the response as it should have been; keep it as it is if "
                                                  "it is right.")
            st.form_submit_button("Submit", type="primary", shortcut="ctrl+enter",
                                  help="Save the response and go to the next record (Ctrl+Enter).",
                                  on_click=answer_from, args=(question, item, f"{key}::area", state))


@st.fragment
def annotate(question) -> None:
    state = f"label::{question.question_id}"
    head = wb_ui.queue_head(state, lambda skipped: annotations.next_item(store, question, user, exclude=skipped),
                            lambda: annotations.progress(store, question, user), overlap=question.overlap,
                            noun="record", answers="answers", what="question")
    if head is None:
        return
    item, reopened = head
    if item is not None:
        try:
            record = qs.record(store, question, item)
        except WorkbenchError as exc:
            wb_ui.show_error(exc)
            return
        current = annotations.my_answer(store, question, item, user)
        left, right = st.columns([3, 2], gap="large")
        with left:
            where = f"Record {item}" + (f" (row {record[versions.ROW_COLUMN] + 1:,})" if question.key_column else "")
            st.subheader(wb_ui.safe_markdown(where))
            plain = st.toggle("Plain text", key=f"{state}::plain", help="Show the exact characters instead of "
                                                                       "formatted markdown.")
            show_record(record, question, plain)
            for reason in annotations.flag_reasons(store, question, record[versions.ROW_COLUMN]):
                st.warning(f"Flagged for another look: {wb_ui.safe_markdown(reason)}", icon=":material/flag:")
        with right:
            st.markdown(f"**{wb_ui.safe_markdown(question.name)}**")
            if reopened:
                before = question.spec.display(current)[:200]
                st.info(f"You answered **{wb_ui.safe_markdown(before)}**"
                        " before; a new answer replaces it (the old one is kept in the history).",
                        icon=":material/history:")
            answer_widgets(question, item, record, current, state)
            c1, c2 = st.columns(2)
            if reopened:
                c1.button("Back to the queue", key=f"{state}::queue", icon=":material/arrow_forward:",
                          on_click=revisit, args=(question, state, None),
                          help="Leave this record as it is and continue with the next one.")
            else:
                c1.button("Skip", key=f"{state}::skip", on_click=skip, args=(question, item, state),
                          icon=":material/skip_next:", shortcut="s" if question.spec.widget != "text" else None,
                          help="Pass over this record for now; someone else may take it.")
            if question.guidelines:
                with st.expander("Guidelines", icon=":material/menu_book:", expanded=True):
                    st.markdown(wb_ui.safe_markdown(question.guidelines))
    mine_df = annotations.my_answers(store, question, user, limit=200)
    if len(mine_df):
        with st.expander(f"Go back: your {len(mine_df):,} latest answers", icon=":material/undo:"):
            options = list(mine_df["item"])
            values = dict(zip(mine_df["item"], mine_df["value"]))
            st.selectbox("Record", options, key=f"{state}::back",
                         format_func=lambda i: f"{i}: {question.spec.display(values[i])[:60]}",
                         help="Your answers, newest first; open one to change it.")
            st.button("Open", key=f"{state}::open", icon=":material/edit:", on_click=revisit,
                      args=(question, state, f"{state}::back"), help="Show this record again with your answer.")
            if item is not None:
                st.caption("Your history of this record")
                mine_hist = annotations.history(store, question, item)
                st.dataframe(mine_hist[mine_hist["who"] == user.name][["value", "created_at", "source"]]
                             if not user.can("read_all") else mine_hist, hide_index=True)


def annotate_view() -> None:
    if not questions:
        st.info("No questions yet." + (" Add one under **Questions** above." if user.can("edit_questions")
                                       else " Ask an admin to add one."), icon=":material/help:")
        return
    question = pick_question("label_question")
    annotate(question)


# ---------------------------------------------------------------- questions (owner)

def questions_view() -> None:
    if questions:
        st.dataframe(adjudication.questions_table(store, questions), hide_index=True)
    datasets = [d["name"] for d in versions.list_datasets(store)]
    if not datasets:
        st.info("Import a dataset on the **Datasets** page first.", icon=":material/upload_file:")
        return
    add_question_form(datasets)
    if "q_flash" in st.session_state:
        st.success(st.session_state.pop("q_flash"), icon=":material/check_circle:")
    if questions:
        change_question_form()


def add_question_form(datasets: list[str]) -> None:
    with st.expander("Add a question", icon=":material/add:", expanded=not questions):
        c1, c2, c3 = st.columns([2, 1, 2])
        dataset = c1.selectbox("Dataset", datasets, key="q_dataset", help="The dataset to label.")
        numbers = [v.number for v in reversed(versions.list_versions(store, dataset))]
        number = c2.selectbox("Version", numbers, key="q_version", help="The version being labelled; final labels "
                                                                         "become a new version of it.")
        kind = c3.selectbox("Kind", kinds.NAMES, key="q_kind", format_func=lambda k: f"{k}: {kinds.of(k).help}",
                            help="What the annotator gives for each record.")
        version = versions.get_version(store, f"{dataset}@{number}")
        columns = [c for c, _ in versions.version_columns(store, version) if c not in CANONICAL]
        c1, c2, c3 = st.columns([2, 1, 1])
        name = c1.text_input("Name", key="q_name", placeholder="category",
                             help="Short name; also the column the final labels go to (for text: `completion`).")
        overlap = c2.number_input("Annotators per record", 1, 100, 3, key="q_overlap",
                                  help="How many different annotators must answer each record.")
        if (short := auth.shortfall(store, "annotate", int(overlap))):
            st.warning(short, icon=":material/group_off:")
        majority = c3.checkbox("Majority is final", value=kinds.of(kind).majority_default, key=f"q_majority::{kind}",
                               help="A strict majority of the answers settles a record without an admin (2 of 3 "
                                    "agreeing is not a dispute); on by default for single-choice questions.")
        choices, choices_from, anchors = None, None, ""
        if kinds.of(kind).choices_input == "list":
            source = st.radio("Choices", ["Typed in", "From a column"], horizontal=True, key="q_choice_source",
                              help="Type the choices, or take them from the values of a column.")
            if source == "Typed in":
                choices = [c for c in st.text_input("Choices (comma-separated)", key="q_choices",
                                                    help="For example: billing, refund, shipping").split(",")
                           if c.strip()]
            else:
                choices_from = st.selectbox("Column", columns, key="q_choices_from",
                                            help="Its distinct values become the choices.")
        elif kinds.of(kind).choices_input == "scale":
            choices = [c for c in st.text_input("Scale", "1,2,3,4,5", key="q_scale",
                                                help="The numbers to choose from.").split(",") if c.strip()]
            anchors = st.text_input("Anchors", key="q_anchors", placeholder="1=useless, 3=usable, 5=perfect",
                                    help="Words shown with some of the numbers: VALUE=TEXT, comma-separated.")
        shown_default = [c for c in columns if c not in (choices_from, name.strip() or None)]
        shown = st.multiselect("Metadata annotators see", columns, default=shown_default,
                               key=f"q_shown::{choices_from}", help="Columns shown under each record. The column "
                               "the choices come from is left out by default: it holds the answer.")
        guidelines = st.text_area("Guidelines (markdown)", key="q_guidelines", height=150,
                                  help="Shown to annotators beside every record.")
        order = st.selectbox("Queue order", list(queue_order.ORDERS), key="q_queue_order", help=QUEUE_ORDER_HELP)
        if st.button("Add question", type="primary", key="q_add", icon=":material/add:",
                     help="Ask this question of every record of the version."):
            try:
                q = qs.add_question(store, version, name, kind, choices=choices, choices_from=choices_from,
                                    anchors=qs.parse_anchors(anchors), overlap=int(overlap), majority=majority,
                                    guidelines=guidelines, shown_columns=shown, order=order, user=user)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.session_state["q_flash"] = f"Added **{wb_ui.safe_markdown(q.name)}** to {version.ref}."
                st.rerun()


def change_question_form() -> None:
    with st.expander("Change a question", icon=":material/edit:"):
        q = pick_question("edit_question")
        k = f"edit::{q.question_id}"
        c1, c2 = st.columns(2)
        overlap = c1.number_input("Annotators per record", 1, 100, q.overlap, key=f"{k}::overlap",
                                  help="How many different annotators must answer each record.")
        if (short := auth.shortfall(store, "annotate", int(overlap))):
            st.warning(short, icon=":material/group_off:")
        majority = c2.checkbox("Majority is final", q.majority, key=f"{k}::majority",
                               help="A strict majority of the answers settles a record without an admin.")
        choices = None
        if q.spec.choices_input is not None:
            choices = st.text_input("Choices (comma-separated)", ", ".join(q.choices), key=f"{k}::choices",
                                    help="Add choices here; answers already given keep their value.")
        columns = [c for c, _ in versions.version_columns(store, q.version(store)) if c not in CANONICAL]
        visible = [c for c in columns if c not in (q.choices_from, q.column)]
        shown = st.multiselect("Metadata annotators see", columns, key=f"{k}::shown",
                               default=[c for c in (q.shown_columns if q.shown_columns is not None else visible)
                                        if c in columns],
                               help="Columns shown under each record; leave out any that gives the answer away.")
        guidelines = st.text_area("Guidelines (markdown)", q.guidelines, key=f"{k}::guidelines", height=150,
                                  help="Shown to annotators beside every record.")
        orders = list(queue_order.ORDERS)
        order = st.selectbox("Queue order", orders, index=orders.index(q.queue_order), key=f"{k}::queue_order",
                             help=QUEUE_ORDER_HELP)
        if order != queue_order.DEFAULT:
            st.caption("Classifier certainty for this version: " + (
                "found, the least sure records come after the disagreeing ones." if queue_order.certainty_file(store, q) else
                "none yet (run Suspected label errors on the Inspect page); disagreement first, then record order."))
        if st.button("Save changes", key=f"{k}::save", type="primary", icon=":material/save:",
                     help="Save the overlap, majority rule, choices, guidelines and queue order."):
            try:
                qs.update_question(store, q.dataset, q.name, guidelines=guidelines, overlap=int(overlap),
                                   majority=majority, user=user, shown_columns=shown, order=order,
                                   choices=[c for c in choices.split(",") if c.strip()] if choices else None)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.session_state["q_flash"] = f"Saved **{wb_ui.safe_markdown(q.name)}**."
                st.rerun()


# ---------------------------------------------------------------- adjudicate (admin)

def set_final(question, item: str, value) -> None:
    try:
        adjudication.set_gold(store, question, item, value, user=user)
    except WorkbenchError as exc:
        st.session_state["adj_flash"] = ("error", str(exc))
    else:
        st.session_state["adj_flash"] = ("success", f"Final value of record {wb_ui.safe_markdown(item)} saved.")


def adjudicate_view() -> None:
    if not questions:
        st.info("No questions yet.", icon=":material/help:")
        return
    question = pick_question("label_question")
    counts = adjudication.status_counts(store, question)
    if counts:
        mix = pd.DataFrame([{"status": s, "records": counts.get(s, 0)} for s in STATUS_ORDER])
        st.altair_chart(alt.Chart(mix).mark_bar().encode(
            x=alt.X("records:Q", title="records", axis=alt.Axis(format="d")),
            y=alt.Y("status:N", sort=STATUS_ORDER, title=None),
            tooltip=["status", "records"]).properties(height=alt.Step(22)), width="stretch")
    else:
        st.info("No answers to this question yet.", icon=":material/hourglass_empty:")
    st.caption("agreed: all answers alike · majority: a strict majority, where the question applies it · "
               "adjudicated: set here · disputed: all answers in and no final value · open: answers missing")
    flash = st.session_state.pop("adj_flash", None)
    if flash:
        (st.success if flash[0] == "success" else wb_ui.show_error)(flash[1])

    queue = adjudication.disputed(store, question, limit=500)
    st.subheader(f"Disputed records: {counts.get('disputed', 0):,}")
    if len(queue):
        item = st.selectbox("Record", list(queue["item"]), key=f"adj_item::{question.question_id}",
                            help="Records whose annotators disagree, in record order.")
        record = qs.record(store, question, item)
        with st.expander("The record", expanded=True, icon=":material/description:"):
            show_record(record, question, plain=False)
        given = annotations.item_answers(store, question, item)
        cols = st.columns(max(1, len(given)))
        for col, row in zip(cols, given.itertuples()):
            with col.container(border=True):
                st.caption(f"{wb_ui.safe_markdown(row.annotator)} · {row.created_at:%Y-%m-%d %H:%M}")
                show_text(question.spec.display(row.value), plain=question.spec.widget == "text")
                st.button("Use this", key=f"adj_use::{item}::{row.annotator}", on_click=set_final,
                          args=(question, item, row.value), icon=":material/gavel:",
                          help="Make this answer the record's final value.")
        if question.spec.widget != "text" and question.choices:
            with st.form(f"adj_other::{item}"):
                other = st.selectbox("Or choose another value", list(question.choices),
                                     help="The final value, when no annotator gave it.") \
                    if question.spec.widget != "tags" else st.pills(
                        "Or choose the tags", list(question.choices), selection_mode="multi",
                        format_func=wb_ui.safe_markdown, help="The final tags, when no annotator gave them.")
                if st.form_submit_button("Set final value", help="Make this the record's final value."):
                    set_final(question, item, other)
                    st.rerun()
    else:
        st.success("No disputed records.", icon=":material/task_alt:")

    st.subheader("Final labels into a new version")
    final = counts.get("agreed", 0) + counts.get("majority", 0) + counts.get("adjudicated", 0)
    base = question.version(store)
    column = st.text_input("Column", question.column or "", key=f"final_column::{question.question_id}",
                           help="The column set to each record's final value (created when missing).")
    if st.button(f"Write {final:,} final values into a new version of {base.dataset}", key="final_write",
                 type="primary", icon=":material/save:", disabled=not final,
                 help=f"A new version of {base.ref} with the column updated for the records that have a final value."):
        with st.spinner("Writing the new version…"):
            try:
                version = adjudication.apply_final_labels(store, question, column=column.strip() or None, user=user)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.success(f"Wrote **{version.ref}** ({version.row_count:,} records).", icon=":material/check_circle:")

    st.subheader("History of a record")
    key = st.text_input("Record key", key=f"hist_item::{question.question_id}",
                        placeholder="T000001" if question.key_column else "1",
                        help="Every answer and final value ever given for this record, oldest first.")
    if key.strip():
        st.dataframe(annotations.history(store, question, key.strip()), hide_index=True)


if mode == QUESTIONS:
    questions_view()
elif mode == ADJUDICATE:
    adjudicate_view()
else:
    annotate_view()
