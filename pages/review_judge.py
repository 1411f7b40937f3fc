"""The Judge section of the Review page's Results: start a judge run on the review (a model answers the
review's own questions), and read how well it agrees with the people, its biases and its confusion matrix
(workbench.models.judge, workbench.models.judge_results)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.models import judge as J
from workbench.models import judge_results, playground, review

ENDPOINT = "endpoint"


def _fmt(x, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


@st.cache_data(show_spinner=False, max_entries=16)
def _results(_store, key: tuple, judge_id: int) -> dict:
    return judge_results.results(_store, judge_id, resamples=500)


def start_form(store, rv, user) -> None:
    """Model choice, the template (shown, editable), and the start button."""
    choices = {c["key"]: c["label"] for c in playground.model_choices(store)}
    choices[ENDPOINT] = "an OpenAI-compatible endpoint"
    pick = st.selectbox("Judge model", list(choices), format_func=choices.get, key=f"jd_model_{rv.review_id}",
                        help="A model of this project (the tiny base or a finished run), or any OpenAI-compatible "
                             "endpoint, such as `workbench serve-model` or a hosted model.")
    endpoint = model = key_env = None
    if pick == ENDPOINT:
        c = st.columns(3)
        endpoint = c[0].text_input("Endpoint URL", "http://127.0.0.1:8000/v1", key=f"jd_url_{rv.review_id}",
                                   help="The base URL, ending in /v1; the judge posts to its /chat/completions.")
        model = c[1].text_input("Model name", key=f"jd_name_{rv.review_id}",
                                help="The model the endpoint should answer with (see its /v1/models).")
        key_env = c[2].text_input("API key variable", J.DEFAULT_API_KEY_ENV, key=f"jd_env_{rv.review_id}",
                                  help="The environment variable of the app's process that holds the API key; the "
                                       "key itself is read when the judge runs and never stored.")
    template = st.text_area("Prompt template", J.default_template(rv.kind), height=300,
                            key=f"jd_template_{rv.review_id}",
                            help="What the judge reads for each item. {prompt}, {reference}, {answer_a}, "
                                 "{answer_b} (pairwise), {answer}, {question}, {rubric} (ratings) and "
                                 "{instructions} are filled in. Keep the `Verdict:` line: answers without exactly "
                                 "one valid verdict are counted as unparseable, never guessed.")
    max_tokens = st.number_input("Longest judge answer (tokens)", 8, 4096, J.DEFAULT_MAX_NEW_TOKENS, step=16,
                                 key=f"jd_tokens_{rv.review_id}",
                                 help="Room for the short reason and the verdict line.")
    st.caption(f"Pairwise items are judged twice, the answers swapped: {rv.sample_size:,} items take "
               f"{rv.sample_size * (2 if rv.kind == 'pairwise' else len(rv.questions)):,} judge answers.")
    if not st.button("Start the judge", type="primary", key=f"jd_start_{rv.review_id}",
                     help="Runs now, item by item; the results appear below when it ends."):
        return
    judge = None if pick == ENDPOINT else pick.partition(":")[2]
    with widgets.user_errors(), widgets.progress("loading the judge") as report:
        run = J.create_judge(store, review_id=rv.review_id, judge=judge, endpoint=endpoint, model=model,
                             api_key_env=key_env, template=template, max_new_tokens=int(max_tokens), user=user,
                             progress=report)
        st.session_state[f"jd_pick_{rv.review_id}"] = run.judge_id
        st.success(f"Judge run {run.judge_id} finished.")


def confusion_chart(conf: dict) -> alt.Chart:
    rows = [{"judge": a, "people": b, "items": int(n)} for a, row in zip(conf["labels"], conf["matrix"])
            for b, n in zip(conf["labels"], row)]
    base = alt.Chart(pd.DataFrame(rows)).encode(x=alt.X("people:N", title="people's majority", sort=None),
                                                y=alt.Y("judge:N", title="judge", sort=None))
    return (base.mark_rect().encode(color=alt.Color("items:Q", legend=None), tooltip=["judge", "people", "items"])
            + base.mark_text(fontSize=14).encode(text="items:Q")).properties(height=60 * len(conf["labels"]) + 40)


def agreement_view(name: str, a: dict) -> None:
    k, al = a.get("cohen_kappa") or {}, a.get("krippendorff_alpha") or {}
    people = a.get("people_kappa_mean") or {}
    c = st.columns(4)
    c[0].metric(f"kappa with the majority · {name}", _fmt(k.get("value")),
                help="Cohen's kappa between the judge and the people's majority on the items both judged (tied "
                     "majorities left out); 95% bootstrap interval below.")
    c[1].metric("alpha with the majority", _fmt(al.get("value")), help="Krippendorff's alpha, same items.")
    c[2].metric("judge vs each person (mean kappa)", _fmt(a.get("judge_kappa_mean")),
                help="The judge's kappa against every reviewer, averaged.")
    c[3].metric("people vs each other (mean kappa)", _fmt(people.get("value")),
                help="The yardstick: how well the reviewers agree with one another.")
    ci = "" if k.get("ci_low") is None else f" Kappa 95% CI {k['ci_low']:.2f} to {k['ci_high']:.2f}."
    spear = a.get("spearman")
    rho = f" Spearman's rho with the people's mean rating: {_fmt(spear['rho'])}." if spear else ""
    (st.warning if a.get("below_people") else st.info)(wb_ui.safe_markdown(a["reading"] + ci + rho))
    if a.get("confusion"):
        st.altair_chart(confusion_chart(a["confusion"]), width="stretch")
    if a.get("by_reviewer"):
        st.dataframe(pd.DataFrame(a["by_reviewer"]), hide_index=True)


def results_view(store, rv) -> None:
    runs = J.list_judges(store, rv.review_id)
    if not runs:
        st.caption("No judge runs on this review yet.")
        return
    names = {r.judge_id: f"judge run {r.judge_id} · {r.label} · {r.status}" for r in runs}
    chosen = st.selectbox("Judge run", list(names), format_func=names.get, key=f"jd_pick_{rv.review_id}",
                          help="The judge run whose agreement with the people to read.")
    run = next(r for r in runs if r.judge_id == chosen)
    if run.status == "failed":
        wb_ui.show_error(f"judge run {run.judge_id} failed: {run.error}")
    with st.spinner("Comparing the judge with the people…"), widgets.user_errors():
        res = _results(store, (str(store.project.root), run.judge_id, run.status, rv.review_id,
                               tuple(J.verdicts(store, run).shape), review.revision(store, rv)), run.judge_id)
        c = st.columns(4)
        c[0].metric("Items judged", f"{res['n_items']:,}")
        c[1].metric("Unparseable", f"{res['unparseable']:,}", help="Answers without exactly one valid verdict line: "
                                                                   "counted and left out, never guessed.")
        if res["kind"] == "pairwise":
            c[2].metric("Position bias", _fmt(res.get("position_bias"), ".0%"),
                        help="Share of decided verdicts that went to the answer shown first: 50% is fair, 100% "
                             "always the first.")
            c[3].metric("Position-inconsistent", _fmt(res.get("inconsistent_share"), ".0%"),
                        help="Items whose verdict changed when the answers were swapped (counted as ties).")
            if res.get("length_bias"):
                st.caption(wb_ui.safe_markdown("Length: " + res["length_bias"]["statement"] + "."))
        for name, a in res["agreement"].items():
            agreement_view(name, a)
        if res["by_category"]:
            st.markdown("**By category** (kappa with the majority, 95% bootstrap interval)")
            st.dataframe(pd.DataFrame(res["by_category"]), hide_index=True)
        for w in res.get("win_rates", []):
            st.markdown("- judge: " + wb_ui.safe_markdown(w["judge"]["statement"]))
            if w["people"]:
                st.markdown("- people: " + wb_ui.safe_markdown(w["people"]["statement"]))
            if w["flagged"]:
                st.warning(wb_ui.safe_markdown(w["flag"]))


def judge_section(store, rv) -> None:
    """The whole section, under a review's results."""
    st.subheader("Model as judge")
    user = wb_ui.current_user()
    with st.expander("Start a judge run", expanded=False):
        start_form(store, rv, user)
    results_view(store, rv)
