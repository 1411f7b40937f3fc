"""Agreement: how far annotators agree on a question, where they disagree, who is reliable, and a consensus."""

from dataclasses import dataclass, field

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.data.uploads import save_upload
from workbench.labels import agreement
from workbench.labels import questions as qs

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


@dataclass
class Answers:
    """The answers to measure and where they came from."""
    frame: pd.DataFrame
    source: dict
    gold: dict = field(default_factory=dict)
    level: str = "nominal"
    labels: list | None = None


def fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def compute(answers: pd.DataFrame, key: tuple, **options) -> dict:
    """build_report with a progress bar, kept in the session for exactly these answers and options."""
    reports = st.session_state.setdefault("agreement_reports", {})
    if key not in reports:
        with widgets.progress("computing agreement") as report:
            reports[key] = agreement.build_report(answers, progress=report, **options)
        while len(reports) > MAX_REPORTS:
            reports.pop(next(iter(reports)))
    return reports[key]


# ---------------------------------------------------------------- where the answers come from

def stored_answers(store) -> Answers:
    asked = [q for q in qs.list_questions(store, archived=False) if q.kind != "text"]
    if not asked:
        st.info("No questions with choices or ratings yet. Ask one on the **Label** page, or measure a file of "
                "answers directly with **A long-format file** above.", icon=":material/info:")
        st.stop()
    left, right = st.columns(2)
    dataset = left.selectbox("Dataset", sorted({q.dataset for q in asked}), key="ag_dataset",
                             help="The dataset whose question to measure.")
    question = right.selectbox("Question", [q.name for q in asked if q.dataset == dataset], key="ag_question",
                               help="Free-text questions are left out: agreement needs choices or ratings.")
    frame, info = agreement.stored_answers(store, dataset, question)
    if frame.empty:
        st.info(f"Nobody has answered **{question}** yet.", icon=":material/info:")
        st.stop()
    return Answers(frame, {"dataset": dataset, "question": question, "kind": info["kind"], "version": info["version"]},
                   gold=info["gold"], level=agreement.default_level(info["kind"]), labels=info["labels"])


def answers_path(store) -> str | None:
    how = st.radio("File", [UPLOAD, SERVER_PATH], horizontal=True, key="ag_file_source",
                   help="Upload a file from your computer, or name one on the machine running the app.")
    if how == SERVER_PATH:
        return st.text_input("Path", key="ag_path", placeholder="/data/annotations.csv",
                             help="A CSV, TSV, JSONL, JSON or Parquet file on the machine running the app.").strip()
    upload = st.file_uploader("Answers file", type=FILE_TYPES, key="ag_upload",
                              help="CSV, TSV, JSON lines, JSON or Parquet with one row per answer.")
    if upload is None:
        return None
    saved = st.session_state.get("ag_saved")
    if not saved or saved[0] != (upload.name, upload.size, upload.file_id):
        saved = ((upload.name, upload.size, upload.file_id), str(save_upload(store.project, upload.name,
                                                                             upload.getvalue())))
        st.session_state["ag_saved"] = saved
    return saved[1]


def file_answers(store) -> Answers:
    path = answers_path(store)
    if not path:
        st.info("Choose a file with one row per answer: which item, which annotator, what value.",
                icon=":material/upload_file:")
        st.stop()
    peek = agreement.peek_file(path)
    cols = peek["columns"]

    def pick(where, label, key, guess, helptext):
        return where.selectbox(label, cols, index=cols.index(guess) if guess in cols else 0, key=key, help=helptext)

    c1, c2, c3, c4 = st.columns(4)
    item_col = pick(c1, "Item column", "ag_item_col", peek["guess"]["item_col"], "The column naming the record.")
    annotator_col = pick(c2, "Annotator column", "ag_annotator_col", peek["guess"]["annotator_col"],
                         "The column naming who answered.")
    value_col = pick(c3, "Value column", "ag_value_col", peek["guess"]["value_col"], "The column with the answer.")
    question = c4.selectbox("Question", peek["questions"], key="ag_file_question",
                            help="The file holds answers to several questions; measure one at a time.") \
        if peek["questions"] else None
    frame = agreement.read_answers_file(path, item_col=item_col, annotator_col=annotator_col, value_col=value_col,
                                        question=question)
    gold_annotator = st.selectbox(
        "Gold labels", ["(none)", *sorted(frame["annotator"].unique())], key="ag_gold_annotator",
        help="If one 'annotator' in the file holds expert (gold) labels, pick it: it is then compared with, "
             "not counted as, an annotator.")
    frame, gold = agreement.split_gold(frame, None if gold_annotator == "(none)" else gold_annotator)
    return Answers(frame, {"file": str(path), "question": question}, gold=gold)


def measure(given: Answers) -> dict:
    """The level, resamples and answer order; returns the report for these answers."""
    left, middle, right = st.columns([1, 1, 2])
    level = left.selectbox("Level of measurement", list(agreement.LEVELS),
                           index=list(agreement.LEVELS).index(given.level), key=f"ag_level::{given.level}",
                           help="nominal: categories; ordinal: ordered answers such as a 1-5 rating; interval: "
                                "numbers whose differences matter; ratio: numbers with a true zero.")
    resamples = middle.number_input("Bootstrap resamples", min_value=0, max_value=10_000, value=1000, step=500,
                                    key="ag_resamples",
                                    help="Resamples of records for the 95% intervals; 0 skips the intervals.")
    order = right.text_input("Answer order (optional)", key="ag_order", placeholder="low, medium, high",
                             help="Every possible answer, comma-separated, lowest first: sets the order for the "
                                  "ordinal level and lists answers nobody gave.")
    if order.strip():
        given.labels = [x.strip() for x in order.split(",") if x.strip()]
    key = (agreement.fingerprint(given.frame), level, tuple(given.labels or ()), int(resamples),
           tuple(sorted(given.gold.items())))
    return compute(given.frame, key, level=level, labels=given.labels, gold=given.gold, resamples=int(resamples),
                   source=given.source, top=200)


# ---------------------------------------------------------------- the numbers, each with its reading

def coefficients_section(report: dict) -> None:
    st.subheader("Coefficients")
    st.caption(f"{widgets.plural(report['n_items'], 'record')}, {widgets.plural(report['n_annotators'], 'annotator')}"
               f", {widgets.plural(report['n_answers'], 'answer')}; {report['n_items_compared']:,} "
               f"{'has' if report['n_items_compared'] == 1 else 'have'} two or more answers. "
               f"Level: **{report['level']}**.")
    for col, (name, title) in zip(st.columns(len(HEADLINE)), HEADLINE.items()):
        c = report["coefficients"][name]
        with col:
            st.metric(title, fmt(c["value"]), help=HELP[name])
            counts = f"{widgets.plural(c['n_items'], 'record')} · {widgets.plural(c['n_annotators'], 'annotator')}"
            st.caption(f"95% interval {fmt(c['ci_low'])} to {fmt(c['ci_high'])} · {counts}"
                       if c["ci_low"] is not None else counts)
            st.caption(c["reading"])
    table = pd.DataFrame([{"coefficient": title, "value": c["value"], "95% low": c["ci_low"], "95% high": c["ci_high"],
                           "records": c["n_items"], "annotators": c["n_annotators"], "reading": c["reading"]}
                          for name, title in ALL_NAMES.items() if (c := report["coefficients"].get(name))])
    with st.expander("All coefficients, and alpha at each level"):
        widgets.table(table, column_config={"coefficient": st.column_config.TextColumn(width="medium"),
                                            "reading": st.column_config.TextColumn(width="large")})
        widgets.table(pd.DataFrame([{"level": k, "alpha": v["value"], "note": v["reason"]}
                                    for k, v in report["alpha_by_level"].items()]),
                      column_config={"note": st.column_config.TextColumn(width="large")})
    for note in report["notes"]:
        st.caption(f"Note: {note}")


def pairwise_section(report: dict) -> None:
    pw = report["pairwise"]
    names = pw["annotators"]
    st.subheader("Cohen's kappa between annotators")
    weightings = [w for w in ("none", "linear", "quadratic") if w in pw]
    weights = st.radio("Weights", weightings, horizontal=True, key="ag_weights",
                       help="none: any different answer counts as disagreement. linear/quadratic (ordered answers): "
                            "answers further apart count more.") if len(weightings) > 1 else "none"
    cells = pd.DataFrame([{"a": a, "b": b, "kappa": pw[weights]["kappa"][i][j],
                           "records": pw[weights]["n_items"][i][j]}
                          for i, a in enumerate(names) for j, b in enumerate(names) if i != j])
    if not (len(cells) and cells["kappa"].notna().any()):
        st.info("No pair of annotators answered enough of the same records for a kappa.", icon=":material/info:")
        return
    base = alt.Chart(cells).encode(x=alt.X("a:N", title=None, sort=names, axis=widgets.category_axis()),
                                   y=alt.Y("b:N", title=None, sort=names, axis=widgets.category_axis()))
    heat = base.mark_rect().encode(
        color=alt.Color("kappa:Q", scale=alt.Scale(domain=[-0.2, 1], scheme="redyellowgreen"), title="kappa"),
        tooltip=["a", "b", alt.Tooltip("kappa:Q", format=".3f"), "records"])
    text = base.mark_text(fontSize=12).encode(text=alt.Text("kappa:Q", format=".2f"))
    st.altair_chart((heat + text).properties(height=widgets.step(40)), width="stretch")


def per_label_section(report: dict) -> None:
    st.subheader("Agreement per label")
    per_label = pd.DataFrame(report["per_label"]).sort_values("specific_agreement", kind="stable",
                                                              na_position="last")  # the chart's order
    st.caption("How often a second annotator on the same record gives the same label, and which label it is "
               "confused with most.")
    shown = per_label[per_label["specific_agreement"].notna()]
    if len(shown):
        st.altair_chart(alt.Chart(shown).mark_bar().encode(
            x=alt.X("specific_agreement:Q", title="agreement on this label", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("label:N", sort=list(shown["label"]), title=None, axis=widgets.category_axis()),
            color=alt.Color("specific_agreement:Q", scale=alt.Scale(domain=[0, 1], scheme="redyellowgreen"),
                            legend=None),
            tooltip=["label", "answers", alt.Tooltip("specific_agreement:Q", format=".2f"),
                     alt.Tooltip("alpha_vs_rest:Q", format=".2f"), "confused_with",
                     alt.Tooltip("confused_share:Q", format=".0%")]).properties(height=widgets.step(28)),
            width="stretch")
    widgets.table(per_label, column_order=["label", "answers", "specific_agreement", "alpha_vs_rest",
                                           "confused_with", "confused_share", "reason"],
                  column_config={"specific_agreement": st.column_config.NumberColumn("agreement", format="%.2f"),
                                 "alpha_vs_rest": st.column_config.NumberColumn("alpha vs rest", format="%.2f"),
                                 "confused_with": "confused with",
                                 "confused_share": st.column_config.NumberColumn("share", format="%.2f")})


def confusion_section(answers: pd.DataFrame, report: dict) -> None:
    names = report["pairwise"]["annotators"]
    if len(names) < 2:
        return
    st.subheader("Confusion between two annotators")
    left, right = st.columns(2)
    a = left.selectbox("Rows: annotator", names, index=0, key="ag_conf_a", help="Whose labels are the rows.")
    b = right.selectbox("Columns: annotator", names, index=1, key="ag_conf_b", help="Whose labels are the columns.")
    long = agreement.confusion_table(answers, a, b, labels=report["labels"]).stack().rename("records").reset_index()
    long.columns = ["row", "column", "records"]
    base = alt.Chart(long).encode(
        x=alt.X("column:N", title=f"{b} says", sort=report["labels"], axis=widgets.category_axis()),
        y=alt.Y("row:N", title=f"{a} says", sort=report["labels"], axis=widgets.category_axis()))
    st.altair_chart((base.mark_rect().encode(color=alt.Color("records:Q", scale=alt.Scale(scheme="blues"),
                                                             legend=widgets.count_legend()),
                                             tooltip=["row", "column", "records"])
                     + base.mark_text().encode(text="records:Q")).properties(height=widgets.step(34)),
                    width="stretch")


def disputed_section(report: dict, source: dict) -> None:
    st.subheader("Most disputed records")
    disputed = pd.DataFrame(report["disputed"])
    if disputed.empty:
        st.success("No record has conflicting answers.", icon=":material/check_circle:")
        return
    disputed["answers given"] = [", ".join(f"{k}: {v}" for k, v in g.items()) for g in disputed["given"]]
    widgets.table(disputed, column_order=["item", "answers given", "majority", "dawid_skene", "dawid_skene_confidence",
                                          "disagreement", "pairs_disagreeing", "gold"],
                  column_config={"disagreement": st.column_config.NumberColumn(
                                     format="%.2f", help="Mean disagreement of the record's answers relative to "
                                                         "chance: 1 is as far apart as random answers."),
                                 "pairs_disagreeing": st.column_config.NumberColumn("pairs disagreeing", format="%.2f"),
                                 "dawid_skene": "Dawid-Skene label",
                                 "dawid_skene_confidence": st.column_config.NumberColumn("confidence", format="%.2f")})
    if "dataset" in source:
        st.page_link("page_label.py", label="Adjudicate them in the review queue on the Label page",
                     icon=":material/gavel:", query_params={"dataset": source["dataset"],
                                                            "question": source["question"], "mode": "adjudicate"},
                     help="The Label page lists every disputed record for an admin's final answer.")


def annotators_section(report: dict) -> None:
    st.subheader("Annotators")
    people = pd.DataFrame(report["annotators"]).sort_values("dawid_skene_accuracy", ascending=False, kind="stable",
                                                            na_position="last")  # the chart's order
    widgets.table(people, column_order=["annotator", "answers", "consensus_agreement", "mean_kappa", "gold_accuracy",
                                        "gold_items", "dawid_skene_accuracy"],
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
            y=alt.Y("annotator:N", sort=list(people["annotator"]), title=None, axis=widgets.category_axis()),
            tooltip=["annotator", "answers", alt.Tooltip("dawid_skene_accuracy:Q", format=".2f")]
        ).properties(height=widgets.step()), width="stretch")
    ds = report["dawid_skene"]
    with st.expander("Dawid-Skene details"):
        if "priors" in ds:
            st.caption(f"Expectation-maximisation over one confusion matrix per annotator: "
                       f"{widgets.plural(ds['iterations'], 'iteration')}{'' if ds['converged'] else ' (not converged)'}"
                       ". Estimated share of each true label:")
            widgets.table(pd.DataFrame({"label": list(ds["priors"]), "share": list(ds["priors"].values())}))
        else:
            st.caption(ds.get("reason", ""))


def accuracy_section(report: dict) -> None:
    st.subheader("Accuracy per annotator")
    acc = report["annotator_accuracy"]
    pct = f"{acc['confidence']:.0%}"
    st.caption(f"Each annotator's answers compared with a reference label, with a {pct} {acc['interval']} interval. "
               + " ".join(f"**{name.replace('_', ' ').capitalize()}**: {meaning}."
                          for name, meaning in acc["references"].items()))
    rows = pd.DataFrame(acc["rows"])
    rows["against"] = rows["reference"].str.replace("_", " ")
    shown = rows[rows["items"] > 0]
    if shown.empty:
        st.info("No answer can be compared yet: adjudicate some records, or have at least three annotators answer "
                "the same records.", icon=":material/info:")
        return
    widgets.table(shown, column_order=["annotator", "against", "items", "correct", "accuracy", "ci_low", "ci_high"],
                  column_config={"items": st.column_config.NumberColumn("records compared"),
                                 "accuracy": st.column_config.NumberColumn(format="%.2f"),
                                 "ci_low": st.column_config.NumberColumn(f"{pct} low", format="%.2f"),
                                 "ci_high": st.column_config.NumberColumn(f"{pct} high", format="%.2f")})
    base = alt.Chart(shown).encode(
        y=alt.Y("annotator:N", title=None, sort=sorted(shown["annotator"].unique()), axis=widgets.category_axis()),
        yOffset=alt.YOffset("against:N"),
        color=alt.Color("against:N", title="compared with"),
        tooltip=["annotator", "against", "items", "correct", alt.Tooltip("accuracy:Q", format=".2f"),
                 alt.Tooltip("ci_low:Q", title=f"{pct} low", format=".2f"),
                 alt.Tooltip("ci_high:Q", title=f"{pct} high", format=".2f")])
    bars = base.mark_bar(opacity=0.7).encode(x=alt.X("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])))
    errors = base.mark_errorbar(ticks=True, color="black").encode(x=alt.X("ci_low:Q", title="accuracy"),
                                                                  x2="ci_high:Q")
    st.altair_chart((bars + errors).properties(height=widgets.step(44)), width="stretch")


def consensus_section(store, given: Answers) -> None:
    st.subheader("Consensus")
    method = st.radio("Method", list(agreement.CONSENSUS_METHODS), horizontal=True, key="ag_method",
                      help="majority: the most common answer (ties are left for adjudication). dawid-skene: the most "
                           "likely label, trusting reliable annotators more. Adjudicated (gold) answers always win.")
    src = given.source
    if "dataset" not in src:
        data = agreement.consensus_csv(given.frame, method=method, labels=given.labels, gold=given.gold)
        st.download_button("Download consensus (CSV)", data, "consensus.csv", "text/csv",
                           key="ag_download", help="One row per record: item and consensus label.")
        return
    if st.button("Write consensus as a new version", key="ag_write", type="primary",
                 help=f"A new version of {src['dataset']} with the {src['question']} column set to the consensus."):
        with widgets.user_errors():
            out = agreement.write_consensus(store, src["dataset"], src["question"], method=method,
                                            user=wb_ui.current_user())  # the library checks the role
            st.success(f"Wrote {widgets.plural(out['labels'], 'label')} ({out['method']}) as **{out['version']}**; "
                       f"{out['from_gold']:,} from adjudicated answers, "
                       f"{widgets.plural(out['tied_left_out'], 'tied record')} left unchanged.",
                       icon=":material/check_circle:")


# ---------------------------------------------------------------- the page

store = wb_ui.get_store()
st.title("Agreement")
st.caption("How far annotators agree, where they disagree, how reliable each one is, and a consensus label.")
source = st.radio("Answers from", [STORED, FILE], horizontal=True, key="ag_source",
                  help="The stored answers of a question (given on the Label page, or imported), "
                       "or a file with one row per answer: item, annotator, value.")
with widgets.user_errors(stop=True):
    given = stored_answers(store) if source == STORED else file_answers(store)
    report = measure(given)
coefficients_section(report)
pairwise_section(report)
per_label_section(report)
confusion_section(given.frame, report)
disputed_section(report, given.source)
annotators_section(report)
accuracy_section(report)
consensus_section(store, given)
