"""Evaluate: generate answers on a test split, score them, see where the model is weak, compare runs,
and send the training records behind a bad answer back for relabelling."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from metrics.corpus import NAMES
from workbench.models import evaluate
from workbench.core import versions
from workbench.core.errors import WorkbenchError

RUN_SOURCE, BASE_SOURCE = "A finished training run", "A base model (optionally with an adapter)"
GREEDY, SAMPLING = "Greedy (deterministic)", "Sampling"
LABELS = {**NAMES, "accuracy": "accuracy", "macro_f1": "macro F1", "micro_f1": "micro F1",
          "macro_precision": "macro precision", "macro_recall": "macro recall",
          "micro_precision": "micro precision", "micro_recall": "micro recall", "correct": "correct"}
EXAMPLES_SHOWN = 50

store = wb_ui.get_store()
user = wb_ui.current_user()


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def run_title(run) -> str:
    return f"#{run.eval_id} · {run.model_label} · {run.ref} {run.split} ({run.items:,} items)"


def settings_text(settings: dict) -> str:
    decoding = "greedy" if not settings.get("temperature") else \
        f"sampling (temperature {settings['temperature']}, top-p {settings.get('top_p')}, seed {settings.get('seed')})"
    return f"{decoding}, at most {settings.get('max_new_tokens')} new tokens, batch {settings.get('batch_size')}"


def fmt(metric: str, value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if metric in ("bleu", "chrf") else f"{value:.3f}"


@st.cache_data(max_entries=64, show_spinner="Scoring every slice…")
def cached_slices(_store, key: tuple, column: str) -> list[dict]:
    """evaluate.slices, once per finished run and column (key: project, run, when it was scored)."""
    return evaluate.slices(_store, key[1], column)


# ---------------------------------------------------------------- following a run in progress

@st.fragment(run_every=1.0)
def follow(eval_id: int) -> None:
    """The progress bar of a generating run; ingests new answers each second until it ends."""
    try:
        run = evaluate.refresh(store, eval_id)
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        return
    if run.status in ("running", "generated"):
        text = f"Evaluation #{eval_id} ({run.model_label}): {run.generated:,} of {run.items:,} answers"
        st.progress(min(run.fraction, 1.0), text=text if run.status != "generated" else "scoring…")
        if user.can("evaluate") and st.button("Stop", key=f"ev_stop_{eval_id}", icon=":material/stop:",
                                              help="Stop generating; the answers so far are kept and the run can "
                                                   "be resumed."):
            evaluate.stop(store, eval_id, user=user)
            st.rerun()
    else:
        st.session_state.pop("ev_following", None)
        st.rerun()  # the results below must show the finished run


# ---------------------------------------------------------------- new evaluation

def new_evaluation() -> None:
    if not user.can("evaluate"):
        st.info("Only an admin can start evaluations; you can look at the results and comparisons.",
                icon=":material/lock:")
        return
    source = st.radio("Model", [RUN_SOURCE, BASE_SOURCE], key="ev_source", horizontal=True,
                      help="Evaluate the adapter of a finished training run, or a base model (with an adapter "
                           "folder if you have one).")
    run_id = base = adapter = None
    if source == RUN_SOURCE:
        finished = evaluate.finished_training_runs(store)
        if not finished:
            st.info("No finished training run yet: train one on the Train page, or evaluate a base model.",
                    icon=":material/info:")
            return
        by_id = {r["run_id"]: r for r in finished}

        def trained_on() -> None:  # answer the test split of the data the run was trained on
            r = by_id.get(st.session_state.get("ev_run"))
            if r:
                st.session_state["ev_dataset"] = r["dataset"]
                st.session_state[f"ev_version::{r['dataset']}"] = r["version"]

        if "ev_run" not in st.session_state:
            st.session_state["ev_run"] = finished[0]["run_id"]
            trained_on()
        run_id = st.selectbox("Training run", list(by_id), key="ev_run", on_change=trained_on,
                              format_func=lambda r: f"{r} ({by_id[r]['dataset']}@{by_id[r]['version']}, "
                                                    f"{by_id[r]['status']})",
                              help="The run whose adapter answers the test prompts (on top of its base model).")
    else:
        base = st.text_input("Base model", value="tiny", key="ev_base",
                             help="'tiny' (the project's small offline model), a local model folder, or a Hugging "
                                  "Face model id already in the local cache.")
        adapter = st.text_input("Adapter folder (optional)", key="ev_adapter",
                                help="A folder with adapter_config.json (a training run's `adapter` folder); "
                                     "leave empty to evaluate the base model alone.")
    datasets = [d["name"] for d in versions.list_datasets(store)]
    if not datasets:
        st.info("No datasets yet: import one on the Datasets page.", icon=":material/info:")
        return
    left, mid, right = st.columns(3)
    dataset = left.selectbox("Dataset", datasets, key="ev_dataset", help="The dataset whose test records are "
                                                                          "answered.")
    numbers = [v.number for v in reversed(versions.list_versions(store, dataset))]
    number = mid.selectbox("Version", numbers, key=f"ev_version::{dataset}", help="The dataset version (newest "
                                                                                 "first).")
    version = versions.get_version(store, f"{dataset}@{number}")
    values = evaluate.split_values(store, version)
    if values is None:
        st.warning(f"{version.ref} has no split column, so it has no test split. Make splits on the Balance "
                   "page (or `workbench split`), or evaluate on every record with **all**.",
                   icon=":material/warning:")
        options = [evaluate.ALL_SPLITS]
    else:
        options = values + [evaluate.ALL_SPLITS]
    split = right.selectbox("Split", options, key="ev_split",
                            index=options.index("test") if "test" in options else 0,
                            help="Which records are answered: the values of the `split` column, or all records.")
    c1, c2, c3, c4 = st.columns(4)
    decoding = c1.radio("Decoding", [GREEDY, SAMPLING], key="ev_decoding",
                        help="Greedy picks the most likely token each time (repeatable); sampling draws tokens "
                             "with a temperature and top-p.")
    temperature, top_p = 0.0, 1.0
    if decoding == SAMPLING:
        temperature = c2.number_input("Temperature", 0.05, 10.0, 0.7, 0.05, key="ev_temperature",
                                      help="Higher is more varied; lower is closer to greedy.")
        top_p = c3.number_input("Top-p", 0.05, 1.0, 0.95, 0.05, key="ev_top_p",
                                help="Sample only from the most likely tokens that together hold this probability.")
    max_new = c4.number_input("Max new tokens", 1, 8192, 64, key="ev_max_new_tokens",
                              help="The longest answer generated; longer answers are cut here.")
    batch = c4.number_input("Batch size", 1, 4096, 16, key="ev_batch_size",
                            help="Prompts generated together; lower it if memory runs out.")
    if st.button("Start evaluation", type="primary", key="ev_start", icon=":material/play_arrow:",
                 help="Generate an answer for every record of the split in the background, then score them."):
        try:
            model = evaluate.resolve_model(store, run_id=run_id, base_model=base, adapter=(adapter or "").strip()
                                           or None)
            settings = evaluate.GenerationSettings(max_new_tokens=int(max_new), temperature=float(temperature),
                                                   top_p=float(top_p), batch_size=int(batch))
            run = evaluate.create_eval(store, version, model=model, split=split, settings=settings, user=user)
            evaluate.launch(store, run.eval_id, user=user)
        except WorkbenchError as exc:
            wb_ui.show_error(exc)
            return
        st.session_state["ev_following"] = run.eval_id
        st.session_state["ev_result"] = run.eval_id
        st.rerun()


# ---------------------------------------------------------------- one run's results

def metric_cards(run) -> None:
    m = run.metrics or {}
    shown = evaluate.CLASS_METRICS[:3] if run.task == "classification" else evaluate.TEXT_METRICS
    for row in range(0, len(shown), 4):
        for col, metric in zip(st.columns(4), shown[row: row + 4]):
            col.metric(label(metric), fmt(metric, m.get(metric)))
    if run.task != "classification":
        st.caption("BLEU and chrF on sacreBLEU's 0-100 scale, ROUGE F-measures (rouge-score, Porter stemming) and "
                   "exact match in [0, 1]; length ratio = output / reference length in 13a tokens.")
        st.code(f"BLEU  {m.get('signature')}\nchrF  {m.get('chrf_signature')}", language=None,
                wrap_lines=True)
        with st.expander("ROUGE precision and recall"):
            st.dataframe(evaluate.rouge_table(run), hide_index=True)


def slice_chart(run) -> None:
    columns = evaluate.slice_columns(store, run.eval_id)
    if not columns:
        st.caption("This dataset has no columns besides the texts to slice by.")
        return
    left, right = st.columns(2)
    column = left.selectbox("Slice by", columns, key=f"ev_slice_col_{run.eval_id}",
                            help="Every metric is recomputed on the records of each value of this column.")
    metrics = evaluate.CLASS_METRICS if run.task == "classification" else evaluate.TEXT_METRICS
    metric = right.selectbox("Metric", metrics, key=f"ev_slice_metric_{run.eval_id}", format_func=label,
                             help="The metric the chart shows per slice.")
    try:
        rows = cached_slices(store, (str(store.project.root), run.eval_id, run.finished_at), column)
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        return
    frame = pd.DataFrame(rows)
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{metric}:Q", title=label(metric)),
        y=alt.Y("value:N", sort="x", title=column),
        color=alt.Color("n:Q", title="records", scale=alt.Scale(scheme="blues")),
        tooltip=["value", "n", alt.Tooltip(f"{metric}:Q", format=".3f")])
    st.altair_chart(chart.properties(height=max(120, 22 * len(frame))), width="stretch")
    st.dataframe(frame, hide_index=True)


def confusion_chart(run) -> None:
    cells = evaluate.confusion(store, run.eval_id)
    if not cells:
        return
    frame = pd.DataFrame(cells)
    chart = alt.Chart(frame).mark_rect().encode(
        x=alt.X("predicted:N", title="predicted"), y=alt.Y("reference:N", title="reference"),
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues")), tooltip=["reference", "predicted", "count"])
    st.subheader("Confusion matrix")
    st.altair_chart(chart, width="stretch")


def example_picker(run, rows: list[dict], key: str, columns: list[str]):
    """A table of examples and a select box to open one; returns the chosen example or None."""
    if not rows:
        st.caption("No examples to show.")
        return None
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_order=columns, column_config={
        "prompt": st.column_config.TextColumn(width="large"), "row": st.column_config.NumberColumn(
            help="0-based record position in the dataset version")})
    items = [r["item"] for r in rows]
    item = st.selectbox("Open an example", items, key=key, format_func=lambda i: f"test item {i}",
                        help="Show the example in full, its nearest training records, and flag them.")
    return next(r for r in rows if r["item"] == item)


def show_text(title: str, text) -> None:
    st.markdown(f"**{title}**")
    st.code(text if text is not None else "", language=None, wrap_lines=True)


def neighbours_and_flag(run, example: dict, key: str) -> None:
    """The training records most like a bad example, and a button to flag them for relabelling."""
    version = evaluate.version_of(store, run)
    left, right = st.columns(2)
    k = left.number_input("Neighbours", 1, 50, 5, key=f"{key}_k", help="How many training records to show.")
    same = right.checkbox("Same category only", key=f"{key}_same",
                          help="Rank only training records of the example's own category.")
    try:
        bar = st.progress(0.0, text="finding training neighbours")
        found = evaluate.example_neighbours(store, run, example["item"], k=int(k), only_category=same,
                                            progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
        bar.empty()
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        return
    if not found:
        st.caption("No training records to compare with.")
        return
    st.caption("Training records whose prompt is most like this example's (TF-IDF cosine of word 1-2 grams).")
    st.dataframe(pd.DataFrame(found), hide_index=True,
                 column_config={"prompt": st.column_config.TextColumn(width="large"),
                                "similarity": st.column_config.NumberColumn(format="%.3f")})
    if not user.can("annotate"):
        return
    chosen = st.multiselect("Records to flag", [n["row"] for n in found], default=[n["row"] for n in found],
                            key=f"{key}_rows", help="Training records (0-based row) to send back for relabelling.")
    reason = st.text_input("Reason", value=f"near test item {example['item']} that eval #{run.eval_id} got wrong",
                           key=f"{key}_reason", help="Why these records need another look; annotators see it.")
    if st.button("Flag for relabelling", key=f"{key}_flag", icon=":material/flag:",
                 help="Add these records to the relabelling queue of this dataset version (append-only)."):
        try:
            n = evaluate.flag_records(store, version, chosen, reason, user, eval_id=run.eval_id)
        except WorkbenchError as exc:
            wb_ui.show_error(exc)
        else:
            st.success(f"Flagged {n} record(s) of {version.ref} for relabelling.", icon=":material/flag:")
    total = len(evaluate.flags(store, version))
    if total:
        st.caption(f"{version.ref} has {total:,} flag(s) for relabelling.")


def results(finished: list) -> None:
    if not finished:
        st.info("No finished evaluation yet: start one above.", icon=":material/info:")
        return
    ids = [r.eval_id for r in finished]
    chosen = st.session_state.get("ev_result")
    eval_id = st.selectbox("Evaluation", ids, key="ev_pick", index=ids.index(chosen) if chosen in ids else 0,
                           format_func=lambda i: run_title(next(r for r in finished if r.eval_id == i)),
                           help="A finished evaluation run.")
    run = next(r for r in finished if r.eval_id == eval_id)
    st.caption(f"{run.model_label} on {run.ref}, split **{run.split}**, {run.items:,} items"
               + (f" ({run.skipped:,} records without a reference skipped)" if run.skipped else "")
               + f"; {settings_text(run.settings)}; folder `{run.folder}`")
    metric_cards(run)
    if run.task == "classification":
        confusion_chart(run)
    st.subheader("Where the model is weak")
    slice_chart(run)
    st.subheader("Worst examples")
    metric = st.selectbox("Sort by", evaluate.example_metrics(store, eval_id), key=f"ev_ex_metric_{eval_id}",
                          format_func=label, help="Per-example score the examples are sorted by (lowest first).")
    rows = evaluate.examples(store, eval_id, metric=metric, limit=EXAMPLES_SHOWN)
    columns = ["item", "score", "predicted", "output", "reference", "prompt", "row"] if run.task == "classification" \
        else ["item", "score", "output", "reference", "prompt", "row"]
    example = example_picker(run, rows, key=f"ev_ex_item_{eval_id}", columns=columns)
    if example is not None:
        show_text("Prompt", example["prompt"])
        a, b = st.columns(2)
        with a:
            show_text("Reference", example["reference"])
        with b:
            show_text("Model output", example["output"])
        neighbours_and_flag(run, example, key=f"ev_nb_{eval_id}")
    st.subheader("Leaderboard on these test items")
    st.dataframe(pd.DataFrame(evaluate.leaderboard(store, eval_id)), hide_index=True)


# ---------------------------------------------------------------- two runs

def difference_chart(part: pd.DataFrame, scale: str) -> alt.LayerChart:
    """Each metric's difference B - A as a dot with its confidence interval as a line; zero dashed."""
    base = alt.Chart(part).encode(y=alt.Y("metric name:N", title=None, sort=None))
    interval = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=f"B − A ({scale}, 95% CI)"),
                                                    x2="ci_high:Q")
    dots = base.mark_point(filled=True, size=90).encode(
        x="diff:Q", color=alt.Color("significant:N", scale=alt.Scale(domain=[True, False],
                                                                     range=["#d62728", "#7f7f7f"])),
        tooltip=["metric name", alt.Tooltip("diff:Q", format=".4f"), alt.Tooltip("ci_low:Q", format=".4f"),
                 alt.Tooltip("ci_high:Q", format=".4f"), alt.Tooltip("p_value:Q", format=".3f")])
    zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return (zero + interval + dots).properties(height=alt.Step(30))


def compare_runs(finished: list) -> None:
    if len(finished) < 2:
        st.info("Comparisons need two finished evaluations on the same test items.", icon=":material/info:")
        return
    ids = [r.eval_id for r in finished]
    title = {r.eval_id: run_title(r) for r in finished}
    left, right = st.columns(2)
    a = left.selectbox("Baseline (A)", ids, index=min(1, len(ids) - 1), key="ev_cmp_a", format_func=title.get,
                       help="The run to compare against, e.g. the base model.")
    same = [i for i in ids if i != a and next(r for r in finished if r.eval_id == i).items_hash ==
            next(r for r in finished if r.eval_id == a).items_hash]
    if not same:
        st.info("No other finished evaluation ran on the same test items as this one.", icon=":material/info:")
        return
    b = right.selectbox("Candidate (B)", same, key="ev_cmp_b", format_func=title.get,
                        help="The run being judged, e.g. the fine-tuned model.")
    resamples = st.number_input("Bootstrap resamples", 100, 10_000, 1000, 100, key="ev_cmp_resamples",
                                help="Paired bootstrap: how many times the test items are redrawn with "
                                     "replacement to estimate the uncertainty of each difference.")
    cache = st.session_state.setdefault("ev_compare_cache", {})
    key = (a, b, int(resamples))
    if key not in cache:
        with st.spinner("Resampling the test items…"):
            try:
                cache[key] = evaluate.compare(store, a, b, n_resamples=int(resamples))
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
                return
    rows = cache[key]
    for r in rows:
        box = st.success if r["significant"] and r["diff"] > 0 else st.error if r["significant"] else st.info
        box(r["statement"])
    frame = pd.DataFrame(rows)
    frame["metric name"] = frame["metric"].map(label)
    for scale, part in frame.groupby("scale", sort=False):  # BLEU points and [0, 1] scores on their own axes
        st.altair_chart(difference_chart(part, scale), width="stretch")
    st.dataframe(frame.drop(columns=["metric name"]), hide_index=True)

    st.subheader("Example by example")
    c1, c2 = st.columns(2)
    order = c1.radio("Show", ["losses", "gains"], key="ev_diff_order", horizontal=True,
                     format_func=lambda o: "largest losses of B" if o == "losses" else "largest gains of B",
                     help="Examples where B scores lowest (or highest) against A.")
    metric = c2.selectbox("Per-example metric", evaluate.example_metrics(store, a), key="ev_diff_metric",
                          format_func=label, help="The per-example score whose difference sorts the examples.")
    diff_rows = evaluate.example_diff(store, a, b, metric=metric, order=order, limit=EXAMPLES_SHOWN)
    run_b = next(r for r in finished if r.eval_id == b)
    example = example_picker(run_b, diff_rows, key="ev_diff_item",
                             columns=["item", "diff", "score_a", "score_b", "output_a", "output_b", "reference",
                                      "prompt", "row"])
    if example is not None:
        show_text("Prompt", example["prompt"])
        c1, c2, c3 = st.columns(3)
        with c1:
            show_text("Reference", example["reference"])
        with c2:
            show_text(f"A (#{a})", example["output_a"])
        with c3:
            show_text(f"B (#{b})", example["output_b"])
        neighbours_and_flag(run_b, example, key="ev_diff_nb")


# ---------------------------------------------------------------- the page

st.title("Evaluate")
st.caption("Generate answers on a test split, score them with BLEU, ROUGE, chrF and exact match (accuracy and F1 "
           "for classification), see the weak slices, and compare runs with paired bootstrap intervals.")

all_runs = evaluate.list_evals(store)
active = [r for r in all_runs if r.status in ("running", "generated")]
for r in active:
    follow(r.eval_id)
stopped = [r for r in all_runs if r.status in ("created", "stopped", "failed")]
if stopped:
    with st.expander(f"{len(stopped)} unfinished evaluation(s)"):
        for r in stopped:
            st.write(f"{run_title(r)}: {r.status}, {r.generated:,} of {r.items:,} answers kept")
            if r.error:
                st.code(r.error, language=None, wrap_lines=True)
            if user.can("evaluate") and st.button("Resume", key=f"ev_resume_{r.eval_id}", icon=":material/replay:",
                                                  help="Generate the missing answers (those already made are kept)."):
                try:
                    evaluate.launch(store, r.eval_id, user=user)
                except WorkbenchError as exc:
                    wb_ui.show_error(exc)
                else:
                    st.rerun()

finished_runs = [r for r in all_runs if r.status == "finished"]
# a key keeps the chosen tab when a finished run reruns the page (without one Streamlit reopens the first)
tab_new, tab_results, tab_compare = st.tabs(["New evaluation", "Results", "Compare runs"], key="ev_tabs")
with tab_new:
    new_evaluation()
with tab_results:
    results(finished_runs)
with tab_compare:
    compare_runs(finished_runs)
