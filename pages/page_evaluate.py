"""Evaluate: generate answers on a test split, score them, see where the model is weak, compare runs,
and send the training records behind a bad answer back for relabelling."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from metrics.corpus import NAMES
from workbench.labels import flags
from workbench.models import compare, eval_items, eval_setup, evaluation, generator, neighbours, slices

RUN_SOURCE, BASE_SOURCE = "A finished training run", "A base model (optionally with an adapter)"
GREEDY, SAMPLING = "Greedy (deterministic)", "Sampling"
LABELS = {**NAMES, "accuracy": "accuracy", "macro_f1": "macro F1", "micro_f1": "micro F1",
          "macro_precision": "macro precision", "macro_recall": "macro recall",
          "micro_precision": "micro precision", "micro_recall": "micro recall", "correct": "correct"}
EXAMPLES_SHOWN = 50
PICK = "ev_"


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def run_title(run) -> str:
    return f"#{run.eval_id} · {run.model_label} · {run.ref} {run.split} ({widgets.plural(run.items, 'item')})"


def settings_text(settings: dict) -> str:
    decoding = "greedy" if not settings.get("temperature") else \
        f"sampling (temperature {settings['temperature']}, top-p {settings.get('top_p')}, seed {settings.get('seed')})"
    batch = settings.get("batch_size") or "sized from the device"
    if settings.get("max_new_tokens_rule"):
        return f"{decoding}, answers up to {settings['max_new_tokens_rule']}; batch {batch}"
    return f"{decoding}, at most {settings.get('max_new_tokens')} new tokens, batch {batch}"


def fmt(metric: str, value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if metric in ("bleu", "chrf") else f"{value:.3f}"


@st.cache_data(max_entries=64, show_spinner="Scoring every slice…")
def cached_slices(_store, key: tuple, column: str) -> list[dict]:
    """slices.slices, once per finished run and column (key: project, run, when it was scored)."""
    return slices.slices(_store, key[1], column)


# ---------------------------------------------------------------- runs in progress, and unfinished ones

@st.fragment(run_every=1.0)
def follow(store, user, eval_id: int) -> None:
    """The progress bar of a generating run; ingests new answers each second until it ends."""
    with widgets.user_errors():
        run = generator.refresh(store, eval_id)
        if run.status not in ("running", "generated"):
            st.session_state.pop("ev_following", None)
            st.rerun()  # the results below must show the finished run
        text = f"Evaluation #{eval_id} ({run.model_label}): {run.generated:,} of {run.items:,} answers"
        st.progress(min(run.fraction, 1.0), text=text if run.status != "generated" else "scoring…")
        if user.can("evaluate") and st.button("Stop", key=f"ev_stop_{eval_id}", icon=":material/stop:",
                                              help="Stop generating; the answers so far are kept and the run can "
                                                   "be resumed."):
            generator.stop(store, eval_id, user=user)
            st.rerun()


def unfinished_section(store, user, stopped: list) -> None:
    if not stopped:
        return
    with st.expander(widgets.plural(len(stopped), "unfinished evaluation")):
        for r in stopped:
            st.write(f"{run_title(r)}: {r.status}, {r.generated:,} of {widgets.plural(r.items, 'answer')} kept")
            if r.error:
                st.code(r.error, language=None, wrap_lines=True)
            if user.can("evaluate") and st.button("Resume", key=f"ev_resume_{r.eval_id}", icon=":material/replay:",
                                                  help="Generate the missing answers (those already made are kept)."):
                with widgets.user_errors():
                    generator.launch(store, r.eval_id, user=user)
                    st.rerun()


# ---------------------------------------------------------------- new evaluation

def model_choice(store) -> tuple | None:
    """A finished run's adapter, or a base model (and an adapter folder); None when there is nothing to pick."""
    source = st.radio("Model", [RUN_SOURCE, BASE_SOURCE], key="ev_source", horizontal=True,
                      help="Evaluate the adapter of a finished training run, or a base model (with an adapter "
                           "folder if you have one).")
    if source == BASE_SOURCE:
        base = st.text_input("Base model", value="tiny", key="ev_base",
                             help="'tiny' (the project's small offline model), a local model folder, or a Hugging "
                                  "Face model id already in the local cache.")
        adapter = st.text_input("Adapter folder (optional)", key="ev_adapter",
                                help="A folder with adapter_config.json (a training run's `adapter` folder); "
                                     "leave empty to evaluate the base model alone.")
        return None, base, adapter.strip() or None
    finished = eval_setup.finished_training_runs(store)
    if not finished:
        st.info("No finished training run yet: train one on the Train page, or evaluate a base model.",
                icon=":material/info:")
        return None
    by_id = {r["run_id"]: r for r in finished}

    def trained_on() -> None:  # answer the test split of the data the run was trained on
        r = by_id.get(st.session_state.get("ev_run"))
        if r:
            widgets.show_next(PICK, r["dataset"], r["version"])

    if "ev_run" not in st.session_state:
        st.session_state["ev_run"] = finished[0]["run_id"]
        trained_on()
    run_id = st.selectbox("Training run", list(by_id), key="ev_run", on_change=trained_on,
                          format_func=lambda r: f"{r} ({by_id[r]['dataset']}@{by_id[r]['version']}, "
                                                f"{by_id[r]['status']})",
                          help="The run whose adapter answers the test prompts (on top of its base model).")
    return run_id, None, None


def split_choice(store, version, where) -> str:
    values = eval_items.split_values(store, version)
    if values is None:
        st.warning(f"{version.ref} has no split column, so it has no test split. Make splits on the Balance "
                   "page, or evaluate on every record with **all**.", icon=":material/warning:")
    options = (values or []) + [eval_items.ALL_SPLITS]
    return where.selectbox("Split", options, key="ev_split", index=options.index("test") if "test" in options else 0,
                           help="Which records are answered: the values of the `split` column, or all records.")


def generation_settings():
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
    max_new = c4.number_input("Max new tokens", 0, 8192, 0, key="ev_max_new_tokens",
                              help="The longest answer generated; longer answers are cut here. 0 sizes it from the "
                                   "reference answers (their 99th percentile in tokens, plus 8, at most 1024); the "
                                   "number chosen is shown with the results.")
    batch = c4.number_input("Batch size", 0, 4096, 0, key="ev_batch_size",
                            help="Prompts generated together (0: sized from the device); lower it if memory runs out.")
    return eval_setup.GenerationSettings(max_new_tokens=int(max_new), temperature=float(temperature),
                                         top_p=float(top_p), batch_size=int(batch))


def new_evaluation(store, user) -> None:
    if not user.can("evaluate"):
        st.info("Only an admin can start evaluations; you can look at the results and comparisons.",
                icon=":material/lock:")
        return
    just_finished(store)
    model = model_choice(store)
    if model is None:
        return
    left, mid, right = st.columns(3)
    version = widgets.version_picker(store, PICK, columns=(left, mid),
                                     dataset_help="The dataset whose test records are answered.",
                                     version_help="The dataset version (newest first).",
                                     empty="No datasets yet: import one on the Datasets page.")
    if version is None:
        return
    split = split_choice(store, version, right)
    settings = generation_settings()
    if st.button("Start evaluation", type="primary", key="ev_start", icon=":material/play_arrow:",
                 help="Generate an answer for every record of the split in the background, then score them."):
        run_id, base, adapter = model
        with widgets.user_errors():
            spec = eval_setup.resolve_model(store, run_id=run_id, base_model=base, adapter=adapter)
            run = evaluation.create_eval(store, version, model=spec, split=split, settings=settings, user=user)
            generator.launch(store, run.eval_id, user=user)
            st.session_state["ev_following"] = run.eval_id
            st.session_state["ev_result"] = run.eval_id
            st.rerun()


def just_finished(store) -> None:
    """The run started from this tab, once it has finished: its headline figures here, so the tab the user
    started it from does not go back to an empty form (everything else is under Results)."""
    eval_id = st.session_state.get("ev_result")
    if eval_id is None or st.session_state.get("ev_following") == eval_id:
        return
    with widgets.user_errors():
        run = evaluation.get_eval(store, eval_id)
        if run.status != "finished":
            return
        with st.container(border=True):
            st.success(f"Evaluation #{run.eval_id} finished: {run.model_label} on {run.ref}, split {run.split}, "
                       f"{widgets.plural(run.items, 'answer')}. The Results tab has slices, examples and the "
                       "nearest training records.", icon=":material/task_alt:")
            metric_cards(run)
            if st.button("Start another evaluation", key="ev_new_again", icon=":material/add:",
                         help="Hide these figures and set up a new run (they stay under Results)."):
                st.session_state.pop("ev_result", None)
                st.rerun()


# ---------------------------------------------------------------- one run's results

def metric_cards(run) -> None:
    m = run.metrics or {}
    shown = slices.CLASS_METRICS[:3] if run.task == "classification" else slices.TEXT_METRICS
    for row in range(0, len(shown), 4):
        for col, metric in zip(st.columns(4), shown[row: row + 4]):
            col.metric(label(metric), fmt(metric, m.get(metric)))
    if run.task != "classification":
        st.caption("BLEU and chrF on sacreBLEU's 0-100 scale, ROUGE F-measures (rouge-score, Porter stemming) and "
                   "exact match in [0, 1]; length ratio = output / reference length in 13a tokens.")
        st.code(f"BLEU  {m.get('signature')}\nchrF  {m.get('chrf_signature')}", language=None,
                wrap_lines=True)
        with st.expander("ROUGE precision and recall"):
            widgets.table(slices.rouge_table(run))


def slice_chart(frame: pd.DataFrame, metric: str, column: str) -> alt.Chart:
    """One bar per value of the column, weakest first (the table below lists them in the same order)."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{metric}:Q", title=label(metric)),
        y=alt.Y("value:N", sort=list(frame["value"]), title=column, axis=widgets.category_axis()),
        color=alt.Color("n:Q", title="records", scale=alt.Scale(scheme="blues"), legend=widgets.count_legend()),
        tooltip=["value", "n", alt.Tooltip(f"{metric}:Q", format=".3f")]).properties(height=widgets.step())


def slices_section(store, run) -> None:
    columns = slices.slice_columns(store, run.eval_id)
    if not columns:
        st.caption("This dataset has no columns besides the texts to slice by.")
        return
    left, right = st.columns(2)
    column = left.selectbox("Slice by", columns, key=f"ev_slice_col_{run.eval_id}",
                            help="Every metric is recomputed on the records of each value of this column.")
    metrics = slices.CLASS_METRICS if run.task == "classification" else slices.TEXT_METRICS
    metric = right.selectbox("Metric", metrics, key=f"ev_slice_metric_{run.eval_id}", format_func=label,
                             help="The metric the chart shows per slice.")
    with widgets.user_errors():
        rows = cached_slices(store, (str(store.project.root), run.eval_id, run.finished_at), column)
        if not rows:
            st.caption(f"No records to slice by {column}.")
            return
        frame = pd.DataFrame(rows).sort_values(metric, kind="stable", na_position="last")
        st.altair_chart(slice_chart(frame, metric, column), width="stretch")
        widgets.table(frame, column_config={"value": st.column_config.TextColumn(column, width="medium"),
                                            "n": "records"})


def confusion_chart(store, run) -> None:
    cells = slices.confusion(store, run.eval_id)
    if not cells:
        return
    frame = pd.DataFrame(cells)
    base = alt.Chart(frame).encode(x=alt.X("predicted:N", title="predicted", axis=widgets.category_axis()),
                                   y=alt.Y("reference:N", title="reference", axis=widgets.category_axis()))
    chart = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=widgets.count_legend()),
        tooltip=["reference", "predicted", "count"]) + base.mark_text().encode(text="count:Q")
    st.subheader("Confusion matrix")
    st.altair_chart(chart.properties(height=widgets.step(30)), width="stretch")


def example_picker(rows: list[dict], key: str, columns: list[str]):
    """A table of examples and a select box to open one; returns the chosen example or None."""
    if not rows:
        st.caption("No examples to show.")
        return None
    widgets.table(pd.DataFrame(rows), column_order=columns, column_config={
        "prompt": st.column_config.TextColumn(width="large"), "row": st.column_config.NumberColumn(
            help="0-based record position in the dataset version")})
    items = [r["item"] for r in rows]
    item = st.selectbox("Open an example", items, key=key, format_func=lambda i: f"test item {i}",
                        help="Show the example in full, its nearest training records, and flag them.")
    return next(r for r in rows if r["item"] == item)


def show_text(title: str, text) -> None:
    st.markdown(f"**{title}**")
    st.code(text if text is not None else "", language=None, wrap_lines=True)


def flag_form(store, user, run, version, found: list[dict], example: dict, key: str) -> None:
    chosen = st.multiselect("Records to flag", [n["row"] for n in found], default=[n["row"] for n in found],
                            key=f"{key}_rows", help="Training records (0-based row) to send back for relabelling.")
    reason = st.text_input("Reason", value=f"near test item {example['item']} that eval #{run.eval_id} got wrong",
                           key=f"{key}_reason", help="Why these records need another look; annotators see it.")
    if st.button("Flag for relabelling", key=f"{key}_flag", icon=":material/flag:",
                 help="Add these records to the relabelling queue of this dataset version (append-only)."):
        with widgets.user_errors():
            n = flags.flag_records(store, version, chosen, reason, user, eval_id=run.eval_id)
            st.success(f"Flagged {widgets.plural(n, 'record')} of {version.ref} for relabelling.",
                       icon=":material/flag:")
    total = len(flags.flags(store, version))
    if total:
        st.caption(f"{version.ref} has {widgets.plural(total, 'flag')} for relabelling.")


def neighbours_and_flag(store, user, run, example: dict, key: str) -> None:
    """The training records most like a bad example, and a button to flag them for relabelling."""
    version = evaluation.version_of(store, run)
    left, right = st.columns(2)
    k = left.number_input("Neighbours", 1, 50, 5, key=f"{key}_k", help="How many training records to show.")
    same = right.checkbox("Same category only", key=f"{key}_same",
                          help="Rank only training records of the example's own category.")
    with widgets.user_errors():
        with widgets.progress("finding training neighbours") as report:
            found = neighbours.example_neighbours(store, run, example["item"], k=int(k), only_category=same,
                                                  progress=report)
        if not found:
            st.caption("No training records to compare with.")
            return
        st.caption("Training records whose prompt is most like this example's (TF-IDF cosine of word 1-2 grams).")
        widgets.table(pd.DataFrame(found), column_config={"prompt": st.column_config.TextColumn(width="large"),
                                                          "similarity": st.column_config.NumberColumn(format="%.3f")})
        if user.can("annotate"):
            flag_form(store, user, run, version, found, example, key)


def worst_examples(store, user, run) -> None:
    st.subheader("Worst examples")
    eval_id = run.eval_id
    metric = st.selectbox("Sort by", evaluation.example_metrics(store, eval_id), key=f"ev_ex_metric_{eval_id}",
                          format_func=label, help="Per-example score the examples are sorted by (lowest first).")
    rows = compare.examples(store, eval_id, metric=metric, limit=EXAMPLES_SHOWN)
    columns = ["item", "score", "predicted", "output", "reference", "prompt", "row"] if run.task == "classification" \
        else ["item", "score", "output", "reference", "prompt", "row"]
    example = example_picker(rows, key=f"ev_ex_item_{eval_id}", columns=columns)
    if example is not None:
        show_text("Prompt", example["prompt"])
        a, b = st.columns(2)
        with a:
            show_text("Reference", example["reference"])
        with b:
            show_text("Model output", example["output"])
        neighbours_and_flag(store, user, run, example, key=f"ev_nb_{eval_id}")


def results(store, user, finished: list) -> None:
    if not finished:
        st.info("No finished evaluation yet: start one above.", icon=":material/info:")
        return
    ids = [r.eval_id for r in finished]
    chosen = st.session_state.get("ev_result")
    eval_id = st.selectbox("Evaluation", ids, key="ev_pick", index=ids.index(chosen) if chosen in ids else 0,
                           format_func=lambda i: run_title(next(r for r in finished if r.eval_id == i)),
                           help="A finished evaluation run.")
    run = next(r for r in finished if r.eval_id == eval_id)
    st.caption(f"{run.model_label} on {run.ref}, split **{run.split}**, {widgets.plural(run.items, 'item')}"
               + (f" ({widgets.plural(run.skipped, 'record')} without a reference skipped)" if run.skipped else "")
               + f"; {settings_text(run.settings)}; folder `{run.folder}`")
    metric_cards(run)
    if run.task == "classification":
        confusion_chart(store, run)
    st.subheader("Where the model is weak")
    slices_section(store, run)
    worst_examples(store, user, run)
    st.subheader("Leaderboard on these test items")
    widgets.table(pd.DataFrame(slices.leaderboard(store, eval_id)))


# ---------------------------------------------------------------- two runs

def difference_chart(part: pd.DataFrame, scale: str) -> alt.LayerChart:
    """Each metric's difference B - A as a dot with its confidence interval as a line; zero dashed."""
    base = alt.Chart(part).encode(y=alt.Y("metric name:N", title=None, sort=None, axis=widgets.category_axis()))
    interval = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=f"B − A ({scale}, 95% CI)"),
                                                    x2="ci_high:Q")
    dots = base.mark_point(filled=True, size=90).encode(
        x="diff:Q", color=alt.Color("significant:N", scale=alt.Scale(domain=[True, False],
                                                                     range=["#d62728", "#7f7f7f"])),
        tooltip=["metric name", alt.Tooltip("diff:Q", format=".4f"), alt.Tooltip("ci_low:Q", format=".4f"),
                 alt.Tooltip("ci_high:Q", format=".4f"), alt.Tooltip("p_value:Q", format=".3f")])
    zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return (zero + interval + dots).properties(height=widgets.step(30))


def pick_pair(finished: list) -> tuple | None:
    """Baseline A and candidate B among runs on the same test items; None when there is no pair."""
    ids = [r.eval_id for r in finished]
    by_id = {r.eval_id: r for r in finished}
    title = {i: run_title(r) for i, r in by_id.items()}
    left, right = st.columns(2)
    a = left.selectbox("Baseline (A)", ids, index=min(1, len(ids) - 1), key="ev_cmp_a", format_func=title.get,
                       help="The run to compare against, e.g. the base model.")
    same = [i for i in ids if i != a and by_id[i].items_hash == by_id[a].items_hash]
    if not same:
        st.info("No other finished evaluation ran on the same test items as this one.", icon=":material/info:")
        return None
    b = right.selectbox("Candidate (B)", same, key="ev_cmp_b", format_func=title.get,
                        help="The run being judged, e.g. the fine-tuned model.")
    return a, b, by_id[b]


def significance(store, a: int, b: int) -> None:
    resamples = st.number_input("Bootstrap resamples", 100, 10_000, 1000, 100, key="ev_cmp_resamples",
                                help="Paired bootstrap: how many times the test items are redrawn with "
                                     "replacement to estimate the uncertainty of each difference.")
    cache = st.session_state.setdefault("ev_compare_cache", {})
    key = (a, b, int(resamples))
    if key not in cache:
        with st.spinner("Resampling the test items…"):
            cache[key] = compare.compare(store, a, b, n_resamples=int(resamples))
    rows = cache[key]
    for r in rows:
        box = st.success if r["significant"] and r["diff"] > 0 else st.error if r["significant"] else st.info
        box(r["statement"])
    frame = pd.DataFrame(rows)
    frame["metric name"] = frame["metric"].map(label)
    for scale, part in frame.groupby("scale", sort=False):  # BLEU points and [0, 1] scores on their own axes
        st.altair_chart(difference_chart(part, scale), width="stretch")
    widgets.table(frame.drop(columns=["metric name"]), column_config={"statement": st.column_config.TextColumn(
        width="large")})


def example_diff(store, user, a: int, b: int, run_b) -> None:
    st.subheader("Example by example")
    c1, c2 = st.columns(2)
    order = c1.radio("Show", ["losses", "gains"], key="ev_diff_order", horizontal=True,
                     format_func=lambda o: "largest losses of B" if o == "losses" else "largest gains of B",
                     help="Examples where B scores lowest (or highest) against A.")
    metric = c2.selectbox("Per-example metric", evaluation.example_metrics(store, a), key="ev_diff_metric",
                          format_func=label, help="The per-example score whose difference sorts the examples.")
    diff_rows = compare.example_diff(store, a, b, metric=metric, order=order, limit=EXAMPLES_SHOWN)
    example = example_picker(diff_rows, key="ev_diff_item",
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
        neighbours_and_flag(store, user, run_b, example, key="ev_diff_nb")


def compare_runs(store, user, finished: list) -> None:
    if len(finished) < 2:
        st.info("Comparisons need two finished evaluations on the same test items.", icon=":material/info:")
        return
    pair = pick_pair(finished)
    if pair is None:
        return
    a, b, run_b = pair
    with widgets.user_errors():
        significance(store, a, b)
        example_diff(store, user, a, b, run_b)


# ---------------------------------------------------------------- the page

store, user = wb_ui.get_store(), wb_ui.current_user()
st.title("Evaluate")
st.caption("Generate answers on a test split, score them with BLEU, ROUGE, chrF and exact match (accuracy and F1 "
           "for classification), see the weak slices, and compare runs with paired bootstrap intervals.")
all_runs = evaluation.list_evals(store)
for r in all_runs:
    if r.status in ("running", "generated"):
        follow(store, user, r.eval_id)
unfinished_section(store, user, [r for r in all_runs if r.status in ("created", "stopped", "failed")])
finished_runs = [r for r in all_runs if r.status == "finished"]
# a key keeps the chosen tab when a finished run reruns the page (without one Streamlit reopens the first), and
# on_change="rerun" tells the server at once: a tab chosen less than a second before the run ends used to be known
# only to the browser when the progress fragment reran the whole page, which then reopened the first tab
tab_new, tab_results, tab_compare = st.tabs(["New evaluation", "Results", "Compare runs"], key="ev_tabs",
                                            on_change="rerun")
with tab_new:
    new_evaluation(store, user)
with tab_results:
    results(store, user, finished_runs)
with tab_compare:
    compare_runs(store, user, finished_runs)
