"""The Train page's Sweep and Compare sections: start or resume an Optuna sweep (each trial an ordinary run),
read its best trial, objective by trial and parameter importance, train with the best settings, and compare
runs side by side (loss curves overlaid, only the settings that differ, metrics).

The page calls `sweep_section(store)` and `compare_section(store)`. A sweep started here runs in a thread of
the app (the app holds the database, which the trials' launches need); it is stored in Optuna's own file, so
after a restart of the app "Resume" continues it.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.core.errors import WorkbenchError
from workbench.models import compare, runs, sweeps

OBJECTIVE_TITLES = {"val_loss": "validation loss (pruned: last reported)", "train_loss": "train loss"}
_THREADS: dict[str, threading.Thread] = {}  # sweep name -> the app thread running it (one per sweep)
_ERRORS: dict[str, str] = {}


def _start(store, name: str | None, settings: dict | None) -> str:
    """Run or resume a sweep in an app thread; returns its name."""
    root = store.project.root
    if settings is not None:  # create the study now, so a wrong setting shows here and the name is known
        study, _ = sweeps.create_or_resume(root, name or sweeps.default_name(settings["dataset"]), settings)
        name = study.study_name
    if name in _THREADS and _THREADS[name].is_alive():
        raise WorkbenchError(f"sweep {name} is already running")

    def work() -> None:
        try:
            sweeps.run_sweep(lambda: nullcontext(store), root, name=name, settings=None)
        except Exception as exc:  # shown on the page; the study keeps what finished
            _ERRORS[name] = str(exc)

    _ERRORS.pop(name, None)
    _THREADS[name] = threading.Thread(target=work, name=f"sweep-{name}", daemon=True)
    _THREADS[name].start()
    return name


def _new_sweep_form(store) -> None:
    left, middle, right = st.columns([3, 1.4, 2])  # "v12 (newest)" stays whole
    version = widgets.version_picker(
        store, "sweep_", columns=(left, middle),
        dataset_help="Every trial trains on this dataset version and is judged on its validation loss.",
        empty="No datasets yet: import one on the Datasets page first.")
    if version is None:
        return
    base = right.text_input("Base model", value="tiny", key="sweep_base",
                            help="The base model of every trial: tiny, a local model folder or a cached Hugging "
                                 "Face id.")
    c1, c2, c3, c4 = st.columns(4)
    trials = int(c1.number_input("Trials", value=20, min_value=1, step=1, key="sweep_trials",
                                 help="How many trials to finish (pruned trials count)."))
    steps = int(c2.number_input("Steps per trial (0: epochs)", value=0, min_value=0, step=50, key="sweep_steps",
                                help="Fix max_steps for every trial; 0 lets the sweep search 1-3 epochs."))
    pruner = c3.selectbox("Pruner", sweeps.PRUNERS, key="sweep_pruner",
                          help="median: stop a trial whose validation loss is worse than the median of earlier "
                               "trials at the same step; halving: successive halving; none: run every trial out.")
    metric = st.selectbox("Objective", list(sweeps.METRICS), key="sweep_metric",
                          help="What the sweep optimises: the validation loss, or a generation metric (ROUGE-L, BLEU, "
                               "...) scored on the answers each trial's adapter gives for the validation split.")
    parallel = int(c4.number_input("At once", value=1, min_value=1, max_value=16, step=1, key="sweep_parallel",
                                   help="Trials that train at the same time; with several GPUs each trial gets its "
                                        "own GPU."))
    st.caption("Searched: learning rate (log-uniform 1e-5 to 1e-3), LoRA rank, alpha as 1, 2 or 4 times the "
               "rank, dropout, epochs and warmup (Optuna's TPE sampler, seed 0).")
    if st.button("Start sweep", type="primary", icon=":material/science:", key="sweep_start",
                 help="Start the trials one after another in the background; follow them below."):
        with widgets.user_errors():
            fixed = {"max_steps": steps} if steps else {}
            sweeps.check_metric(store, version.ref, metric)
            settings = sweeps.new_settings(dataset=version.ref, base_model=base, trials=trials, metric=metric,
                                           space=sweeps.load_space(None), fixed=fixed, pruner=pruner,
                                           parallel=parallel)
            st.session_state["sweep_select"] = _start(store, None, settings)
            st.rerun()


def objective_chart(trials: list[dict], metric: str = "val_loss") -> alt.Chart:
    losses = metric in OBJECTIVE_TITLES  # a pruned trial's last validation loss is on the same scale as the loss
    data = pd.DataFrame([{"trial": t["number"], "objective": t["value"] if t["value"] is not None else
                          (min(t["intermediate"].values()) if t["intermediate"] and losses else None),
                          "state": t["state"]} for t in trials])
    return alt.Chart(data.dropna()).mark_point(filled=True, size=60).encode(
        x=alt.X("trial:O", title="trial"), y=alt.Y("objective:Q", title=OBJECTIVE_TITLES.get(metric, metric),
                                                   scale=alt.Scale(zero=False)),
        color=alt.Color("state:N", title=None), tooltip=["trial", "state", alt.Tooltip("objective:Q", format=".4f")])


def _results_view(store, name: str) -> None:
    out = sweeps.results(store.project.root, name)
    running = name in _THREADS and _THREADS[name].is_alive()
    done = sum(t["state"] in sweeps.FINISHED for t in out["trials"])
    st.markdown(f"**{name}** on {out['dataset']}: {done} of {out['trials_wanted']} trials finished"
                + (" (running)" if running else ""))
    if name in _ERRORS:
        widgets.show_error(_ERRORS[name])
    b1, b2, b3, _ = st.columns([1, 1, 2, 2])
    if b1.button("Resume", icon=":material/play_arrow:", key="sweep_resume", disabled=running,
                 help="Continue the sweep where it stopped (after a cancel or a restart of the app)."):
        with widgets.user_errors():
            _start(store, name, None)
            st.rerun()
    if b2.button("Cancel", icon=":material/stop:", key="sweep_cancel", disabled=not running,
                 help="Stop after cancelling the trial that is training now; Resume continues later."):
        with widgets.user_errors():
            sweeps.cancel_sweep(store.project.root, name)
    best = out["best"]
    if best is not None and b3.button("Train with the best settings", type="primary", icon=":material/star:",
                                      key="sweep_train_best", help="Start a new run on the sweep's dataset with "
                                      "the best trial's settings."):
        with widgets.user_errors():
            cfg = sweeps.best_config(lambda: nullcontext(store), store.project.root, name)
            st.session_state["train_run_select"] = runs.launch(store, sweeps.dataset_now(store, out["dataset"]), cfg,
                                                               user=wb_ui.current_user())
            st.rerun()
    if not out["trials"]:
        st.info("No trial has started yet.")
        return
    if best is not None:
        st.metric(f"Best: trial {best['number']}", f"{best['value']:.4f}", help=f"run {best['run_id']}")
        st.json(best["settings"], expanded=False)
    st.altair_chart(objective_chart(out["trials"], out["metric"] or "val_loss"), width="stretch")
    slices = pd.DataFrame(sweeps.slice_rows(out))
    if not slices.empty:
        st.altair_chart(alt.Chart(slices).mark_point(filled=True).encode(
            x=alt.X("setting_value:Q", title=None, scale=alt.Scale(zero=False)),
            y=alt.Y("objective:Q", title="objective", scale=alt.Scale(zero=False)),
            tooltip=["trial", "setting", "setting_value", alt.Tooltip("objective:Q", format=".4f")])
            .properties(width=180, height=140).facet(facet=alt.Facet("setting:N", title=None), columns=3)
            .resolve_scale(x="independent"))
    importance = sweeps.importance(store.project.root, name)
    if importance:
        st.altair_chart(alt.Chart(pd.DataFrame({"setting": list(importance), "importance": list(importance.values())}))
                        .mark_bar().encode(x=alt.X("importance:Q", title="importance (Optuna, fANOVA)"),
                                           y=alt.Y("setting:N", sort="-x", title=None)), width="stretch")
    widgets.table(pd.DataFrame([{"trial": t["number"], "state": t["state"], "value": t["value"], "run": t["run_id"],
                                 **t["params"]} for t in out["trials"]]))


def sweep_section(store) -> None:
    """Start, follow and read sweeps (Optuna over training settings)."""
    with st.expander("Sweep", icon=":material/science:"):
        _new_sweep_form(store)
        names = sweeps.list_sweeps(store.project.root)
        if not names:
            return
        name = st.selectbox("Sweep", names[::-1], key="sweep_select", help="A stored sweep; the newest is first.")
        running = name in _THREADS and _THREADS[name].is_alive()
        st.fragment(run_every=3.0 if running else None)(_results_view)(store, name)


def compare_section(store) -> None:
    """Two or more runs side by side: loss curves overlaid, the settings that differ, metrics."""
    with st.expander("Compare runs", icon=":material/compare_arrows:"):
        table = runs.list_runs(store)
        picked = st.multiselect("Runs", [r["run_id"] for r in table], key="compare_runs",
                                help="Pick two or more runs or sweep trials to compare.")
        if len(picked) < 2:
            st.caption("Pick at least two runs.")
            return
        curves = pd.DataFrame(sweeps.trial_curves(store.project.root, picked))
        if not curves.empty:
            st.altair_chart(alt.Chart(curves).mark_line().encode(
                x=alt.X("step:Q", title="optimizer step"), y=alt.Y("loss:Q", scale=alt.Scale(zero=False)),
                color=alt.Color("run_id:N", title="run"), strokeDash=alt.StrokeDash("kind:N", title=None),
                tooltip=["run_id", "kind", "step", alt.Tooltip("loss:Q", format=".4f")]), width="stretch")
        st.markdown("**Settings that differ**")
        diff = sweeps.settings_diff(store.project.root, picked)
        widgets.table(pd.DataFrame(diff)) if diff else st.caption("The runs have the same settings.")
        st.markdown("**Metrics**")
        widgets.table(pd.DataFrame([{k: r[k] for k in ("run_id", "status", "step", "train_loss", "eval_loss")}
                                    for r in table if r["run_id"] in picked]))
        _evaluations(store, picked)


def _evaluations(store, picked: list[str]) -> None:
    """The paired comparison of the runs' evaluations on the same test items (as on the Evaluate page)."""
    pairs = compare.pairs_for_runs(store, picked)
    st.markdown("**Evaluations on the same test items**")
    if not pairs:
        st.caption("None yet: evaluate the runs on the same split (Evaluate page, or `workbench eval --run RUN_ID`); "
                   "their paired comparison then shows here.")
        return
    names = {i: f"eval {p['a']} ({p['run_a']}) against eval {p['b']} ({p['run_b']}), {p['dataset']} {p['split']}, "
                f"{p['items']:,} items" for i, p in enumerate(pairs)}
    pick = st.selectbox("Pair", list(names), format_func=names.get, key="compare_eval_pair",
                        help="Two evaluations of the picked runs on the same test items: the first run is the "
                             "baseline (A).")
    pair = pairs[pick]
    cache = st.session_state.setdefault("compare_eval_cache", {})
    if (pair["a"], pair["b"]) not in cache:
        with st.spinner("Resampling the test items…"), widgets.user_errors():
            cache[(pair["a"], pair["b"])] = compare.compare(store, pair["a"], pair["b"])
    for row in cache.get((pair["a"], pair["b"]), []):
        (st.success if row["significant"] and row["diff"] > 0 else st.error if row["significant"] else st.info)(
            row["statement"])
    st.caption(f"Paired bootstrap over the test items, 1,000 resamples; the Evaluate page shows the examples "
               f"(`workbench compare {pair['a']} {pair['b']}`).")
