"""Agreement: how far annotators agree on a question, where they disagree, who is reliable, and a consensus."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from workbench.labels import agreement
from workbench.labels import annotations
from workbench.core.errors import WorkbenchError
from workbench.data.uploads import save_upload

STORED, FILE = "A question of a dataset", "A long-format file"
UPLOAD, SERVER_PATH = "Upload a file", "Path on the server"
FILE_TYPES = ["csv", "tsv", "jsonl", "json", "parquet"]
HEADLINE = {"krippendorff_alpha": "Krippendorff's alpha", "fleiss_kappa": "Fleiss' kappa",
            "cohen_kappa_mean": "Cohen's kappa (mean)", "percent_agreement": "Percent agreement"}
ALL_NAMES = {**HEADLINE, "cohen_kappa_linear_mean": "Cohen's kappa, linear weights",
             "cohen_kappa_quadratic_mean": "Cohen's kappa, quadratic weights"}
HELP = {
    "krippendorff_alpha": "Agreement beyond chance for any number of annotators and missing answers, at the chosen "
                          "level of measurement. 1 = perfect, 0 = chance. Reliable from 0.800.",
    "fleiss_kappa": "Agreement beyond chance across all annotators, exact matches only.",
    "cohen_kappa_mean": "Cohen's kappa of every pair of annotators, averaged (Light's kappa).",
    "percent_agreement": "How often two annotators of the same record give the same answer; not corrected for "
                         "chance.",
}
MAX_REPORTS = 8

store = wb_ui.get_store()
st.title("Agreement")
st.caption("How far annotators agree, where they disagree, how reliable each one is, and a consensus label.")


def fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def compute(answers: pd.DataFrame, key: tuple, **options) -> dict:
    """build_report with a progress bar, kept in the session for exactly these answers and options."""
    reports = st.session_state.setdefault("agreement_reports", {})
    if key not in reports:
        bar = st.progress(0.0, text="computing agreement")
        try:
            reports[key] = agreement.build_report(
                answers, progress=lambda f, msg: bar.progress(min(f, 1.0), text=msg), **options)
        finally:
            bar.empty()
        while len(reports) > MAX_REPORTS:
            reports.pop(next(iter(reports)))
    return reports[key]


# ---------------------------------------------------------------- where the answers come from
source = st.radio("Answers from", [STORED, FILE], horizontal=True, key="ag_source",
                  help="The stored answers of a question (from the Label page or `workbench annotations import`), "
                       "or a file with one row per answer: item, annotator, value.")
answers, info, gold = None, {}, {}
try:
    if source == STORED:
        questions = [q for q in annotations.list_questions(store) if q.kind != "text"]
        if not questions:
            st.info("No questions with choices or ratings yet. Ask one on the **Label** page, or import answers "
                    "with `workbench annotations import FILE --dataset NAME --question Q ...`; or measure a file "
                    "directly with **A long-format file** above.", icon=":material/info:")
            st.stop()
        left, right = st.columns(2)
        datasets = sorted({q.dataset for q in questions})
        dataset = left.selectbox("Dataset", datasets, key="ag_dataset", help="The dataset whose question to measure.")
        names = [q.name for q in questions if q.dataset == dataset]
        question = right.selectbox("Question", names, key="ag_question",
                                   help="Free-text questions are left out: agreement needs choices or ratings.")
        answers, info = agreement.stored_answers(store, dataset, question)
        gold = info["gold"]
        if answers.empty:
            st.info(f"Nobody has answered **{question}** yet.", icon=":material/info:")
            st.stop()
        default_level = agreement.default_level(info["kind"])
        labels = info["labels"]
        src = {"dataset": dataset, "question": question, "kind": info["kind"], "version": info["version"]}
    else:
        how = st.radio("File", [UPLOAD, SERVER_PATH], horizontal=True, key="ag_file_source",
                       help="Upload a file from your computer, or name one on the machine running the app.")
        path = None
        if how == UPLOAD:
            upload = st.file_uploader("Answers file", type=FILE_TYPES, key="ag_upload",
                                      help="CSV, TSV, JSON lines, JSON or Parquet with one row per answer.")
            if upload is not None:
                saved = st.session_state.get("ag_saved")
                if not saved or saved[0] != (upload.name, upload.size, upload.file_id):
                    saved = ((upload.name, upload.size, upload.file_id),
                             str(save_upload(store.project, upload.name, upload.getvalue())))
                    st.session_state["ag_saved"] = saved
                path = saved[1]
        else:
            path = st.text_input("Path", key="ag_path", placeholder="/data/annotations.csv",
                                 help="A CSV, TSV, JSONL, JSON or Parquet file on the machine running the app.").strip()
        if not path:
            st.info("Choose a file with one row per answer: which item, which annotator, what value.",
                    icon=":material/upload_file:")
            st.stop()
        peek = agreement.peek_file(path)
        cols = peek["columns"]

        def pick(label, key, guess, helptext):
            return st.selectbox(label, cols, index=cols.index(guess) if guess in cols else 0, key=key, help=helptext)

        c1, c2, c3, c4 = st.columns(4)
        with c1:
            item_col = pick("Item column", "ag_item_col", peek["guess"]["item_col"], "The column naming the record.")
        with c2:
            annotator_col = pick("Annotator column", "ag_annotator_col", peek["guess"]["annotator_col"],
                                 "The column naming who answered.")
        with c3:
            value_col = pick("Value column", "ag_value_col", peek["guess"]["value_col"], "The column with the answer.")
        question = None
        if peek["questions"]:
            question = c4.selectbox("Question", peek["questions"], key="ag_file_question",
                                    help="The file holds answers to several questions; measure one at a time.")
        answers = agreement.read_answers_file(path, item_col=item_col, annotator_col=annotator_col,
                                              value_col=value_col, question=question)
        gold_annotator = st.selectbox(
            "Gold labels", ["(none)", *sorted(answers["annotator"].unique())], key="ag_gold_annotator",
            help="If one 'annotator' in the file holds expert (gold) labels, pick it: it is then compared with, "
                 "not counted as, an annotator.")
        answers, gold = agreement.split_gold(answers, None if gold_annotator == "(none)" else gold_annotator)
        default_level, labels = "nominal", None
        src = {"file": str(path), "question": question}

    left, middle, right = st.columns([1, 1, 2])
    level = left.selectbox("Level of measurement", list(agreement.LEVELS),
                           index=list(agreement.LEVELS).index(default_level), key=f"ag_level::{default_level}",
                           help="nominal: categories; ordinal: ordered answers such as a 1-5 rating; interval: "
                                "numbers whose differences matter; ratio: numbers with a true zero.")
    resamples = middle.number_input("Bootstrap resamples", min_value=0, max_value=10_000, value=1000, step=500,
                                    key="ag_resamples",
                                    help="Resamples of records for the 95% intervals; 0 skips the intervals.")
    order = right.text_input("Answer order (optional)", key="ag_order", placeholder="low, medium, high",
                             help="Every possible answer, comma-separated, lowest first: sets the order for the "
                                  "ordinal level and lists answers nobody gave.")
    if order.strip():
        labels = [x.strip() for x in order.split(",") if x.strip()]
    key = (agreement.fingerprint(answers), level, tuple(labels or ()), int(resamples), tuple(sorted(gold.items())))
    report = compute(answers, key, level=level, labels=labels, gold=gold, resamples=int(resamples), source=src, top=200)
except WorkbenchError as exc:
    wb_ui.show_error(exc)
    st.stop()

# ---------------------------------------------------------------- the numbers, each with its reading
st.subheader("Coefficients")
st.caption(f"{report['n_items']:,} records, {report['n_annotators']} annotators, {report['n_answers']:,} answers; "
           f"{report['n_items_compared']:,} records have two or more answers. Level: **{report['level']}**.")
columns = st.columns(len(HEADLINE))
for col, (name, title) in zip(columns, HEADLINE.items()):
    c = report["coefficients"][name]
    with col:
        st.metric(title, fmt(c["value"]), help=HELP[name])
        if c["ci_low"] is not None:
            st.caption(f"95% interval {fmt(c['ci_low'])} to {fmt(c['ci_high'])} · {c['n_items']:,} records · "
                       f"{c['n_annotators']} annotators")
        else:
            st.caption(f"{c['n_items']:,} records · {c['n_annotators']} annotators")
        st.caption(c["reading"])
table = pd.DataFrame([{"coefficient": title, "value": c["value"], "95% low": c["ci_low"], "95% high": c["ci_high"],
                       "records": c["n_items"], "annotators": c["n_annotators"], "reading": c["reading"]}
                      for name, title in ALL_NAMES.items() if (c := report["coefficients"].get(name))])
with st.expander("All coefficients, and alpha at each level"):
    st.dataframe(table, hide_index=True, column_config={"reading": st.column_config.TextColumn(width="large")})
    st.dataframe(pd.DataFrame([{"level": k, "alpha": v["value"], "note": v["reason"]}
                               for k, v in report["alpha_by_level"].items()]), hide_index=True)
for note in report["notes"]:
    st.caption(f"Note: {note}")

# ---------------------------------------------------------------- pairwise kappa
pw = report["pairwise"]
names = pw["annotators"]
st.subheader("Cohen's kappa between annotators")
weightings = [w for w in ("none", "linear", "quadratic") if w in pw]
weights = st.radio("Weights", weightings, horizontal=True, key="ag_weights",
                   help="none: any different answer counts as disagreement. linear/quadratic (ordered answers): "
                        "answers further apart count more.") if len(weightings) > 1 else "none"
cells = pd.DataFrame([{"a": a, "b": b, "kappa": pw[weights]["kappa"][i][j], "records": pw[weights]["n_items"][i][j]}
                      for i, a in enumerate(names) for j, b in enumerate(names) if i != j])
if cells["kappa"].notna().any() if len(cells) else False:
    base = alt.Chart(cells).encode(x=alt.X("a:N", title=None, sort=names), y=alt.Y("b:N", title=None, sort=names))
    heat = base.mark_rect().encode(
        color=alt.Color("kappa:Q", scale=alt.Scale(domain=[-0.2, 1], scheme="redyellowgreen"), title="kappa"),
        tooltip=["a", "b", alt.Tooltip("kappa:Q", format=".3f"), "records"])
    text = base.mark_text(fontSize=12).encode(text=alt.Text("kappa:Q", format=".2f"))
    st.altair_chart((heat + text).properties(height=max(200, 40 * len(names))), width="stretch")
else:
    st.info("No pair of annotators answered enough of the same records for a kappa.", icon=":material/info:")

# ---------------------------------------------------------------- per label
st.subheader("Agreement per label")
per_label = pd.DataFrame(report["per_label"])
st.caption("How often a second annotator on the same record gives the same label, and which label it is "
           "confused with most.")
shown = per_label[per_label["specific_agreement"].notna()]
chart = alt.Chart(shown).mark_bar().encode(
    x=alt.X("specific_agreement:Q", title="agreement on this label", scale=alt.Scale(domain=[0, 1])),
    y=alt.Y("label:N", sort="x", title=None),
    color=alt.Color("specific_agreement:Q", scale=alt.Scale(domain=[0, 1], scheme="redyellowgreen"), legend=None),
    tooltip=["label", "answers", alt.Tooltip("specific_agreement:Q", format=".2f"),
             alt.Tooltip("alpha_vs_rest:Q", format=".2f"), "confused_with",
             alt.Tooltip("confused_share:Q", format=".0%")])
if len(shown):
    st.altair_chart(chart.properties(height=max(150, 32 * len(per_label))), width="stretch")
st.dataframe(per_label, hide_index=True, column_order=["label", "answers", "specific_agreement", "alpha_vs_rest",
                                                       "confused_with", "confused_share", "reason"],
             column_config={"specific_agreement": st.column_config.NumberColumn("agreement", format="%.2f"),
                            "alpha_vs_rest": st.column_config.NumberColumn("alpha vs rest", format="%.2f"),
                            "confused_share": st.column_config.NumberColumn("share", format="%.2f")})

# ---------------------------------------------------------------- confusion between two annotators
if len(names) >= 2:
    st.subheader("Confusion between two annotators")
    left, right = st.columns(2)
    a = left.selectbox("Rows: annotator", names, index=0, key="ag_conf_a", help="Whose labels are the rows.")
    b = right.selectbox("Columns: annotator", names, index=1, key="ag_conf_b", help="Whose labels are the columns.")
    counts = agreement.confusion_table(answers, a, b, labels=report["labels"])
    long = counts.stack().rename("records").reset_index()
    long.columns = ["row", "column", "records"]
    base = alt.Chart(long).encode(x=alt.X("column:N", title=f"{b} says", sort=report["labels"]),
                                  y=alt.Y("row:N", title=f"{a} says", sort=report["labels"]))
    st.altair_chart((base.mark_rect().encode(color=alt.Color("records:Q", scale=alt.Scale(scheme="blues")),
                                             tooltip=["row", "column", "records"])
                     + base.mark_text().encode(text="records:Q"))
                    .properties(height=max(200, 34 * len(report["labels"]))), width="stretch")

# ---------------------------------------------------------------- most disputed records
st.subheader("Most disputed records")
disputed = pd.DataFrame(report["disputed"])
if disputed.empty:
    st.success("No record has conflicting answers.", icon=":material/check_circle:")
else:
    disputed["answers given"] = [", ".join(f"{k}: {v}" for k, v in g.items()) for g in disputed["given"]]
    st.dataframe(disputed, hide_index=True,
                 column_order=["item", "answers given", "majority", "dawid_skene", "dawid_skene_confidence",
                               "disagreement", "pairs_disagreeing", "gold"],
                 column_config={"disagreement": st.column_config.NumberColumn(
                                    format="%.2f", help="Mean disagreement of the record's answers relative to "
                                                        "chance: 1 is as far apart as random answers."),
                                "pairs_disagreeing": st.column_config.NumberColumn("pairs disagreeing", format="%.2f"),
                                "dawid_skene": "Dawid-Skene label",
                                "dawid_skene_confidence": st.column_config.NumberColumn("confidence", format="%.2f")})
    if source == STORED:
        st.page_link("page_label.py", label="Adjudicate them in the review queue on the Label page",
                     icon=":material/gavel:", query_params={"dataset": src["dataset"], "question": src["question"],
                                                            "mode": "adjudicate"},
                     help="The Label page lists every disputed record for an admin's final answer.")

# ---------------------------------------------------------------- annotators
st.subheader("Annotators")
people = pd.DataFrame(report["annotators"])
st.dataframe(people, hide_index=True,
             column_order=["annotator", "answers", "consensus_agreement", "mean_kappa", "gold_accuracy", "gold_items",
                           "dawid_skene_accuracy"],
             column_config={"consensus_agreement": st.column_config.NumberColumn(
                                "agrees with the others' majority", format="%.2f"),
                            "mean_kappa": st.column_config.NumberColumn("mean kappa", format="%.2f"),
                            "gold_accuracy": st.column_config.NumberColumn("gold accuracy", format="%.2f"),
                            "gold_items": "gold records",
                            "dawid_skene_accuracy": st.column_config.NumberColumn("Dawid-Skene accuracy",
                                                                                  format="%.2f")})
if people["dawid_skene_accuracy"].notna().any():
    st.altair_chart(alt.Chart(people).mark_bar().encode(
        x=alt.X("dawid_skene_accuracy:Q", title="estimated accuracy (Dawid-Skene)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("annotator:N", sort="-x", title=None),
        tooltip=["annotator", "answers", alt.Tooltip("dawid_skene_accuracy:Q", format=".2f")]),
        width="stretch")
ds = report["dawid_skene"]
with st.expander("Dawid-Skene details"):
    if "priors" in ds:
        st.caption(f"Expectation-maximisation over one confusion matrix per annotator: {ds['iterations']} iterations"
                   f"{'' if ds['converged'] else ' (not converged)'}. Estimated share of each true label:")
        st.dataframe(pd.DataFrame({"label": list(ds["priors"]), "share": list(ds["priors"].values())}),
                     hide_index=True)
    else:
        st.caption(ds.get("reason", ""))

# ---------------------------------------------------------------- consensus
st.subheader("Consensus")
method = st.radio("Method", list(agreement.CONSENSUS_METHODS), horizontal=True, key="ag_method",
                  help="majority: the most common answer (ties are left for adjudication). dawid-skene: the most "
                       "likely label, trusting reliable annotators more. Adjudicated (gold) answers always win.")
if source == STORED:
    if st.button("Write consensus as a new version", key="ag_write", type="primary",
                 help=f"A new version of {src['dataset']} with the {src['question']} column set to the consensus."):
        try:
            out = agreement.write_consensus(store, src["dataset"], src["question"], method=method,
                                            user=wb_ui.current_user())  # the library checks the role
        except WorkbenchError as exc:
            wb_ui.show_error(exc)
        else:
            st.success(f"Wrote {out['labels']:,} labels ({out['method']}) as **{out['version']}**; "
                       f"{out['from_gold']} from adjudicated answers, {out['tied_left_out']} tied records left "
                       "unchanged.", icon=":material/check_circle:")
else:
    data = agreement.consensus_csv(answers, method=method, labels=labels, gold=gold)
    st.download_button("Download consensus (CSV)", data, "consensus.csv", "text/csv",
                       key="ag_download", help="One row per record: item and consensus label.")
