"""Review: people judge model answers blind (pairwise A/B or 1-5 ratings); the owner sets reviews up,
reads win rates, ratings, agreement and position bias, and sends what reviewers disliked back to the data."""

import altair as alt
import pandas as pd
import streamlit as st

import wb_ui
from workbench.core import auth
from workbench.core.errors import WorkbenchError
from workbench.models import evaluation, review, review_actions, review_results

JUDGE, SETUP, RESULTS = "Judge", "Set up", "Results"
CHOICE_TEXT = {"left": "Response 1 is better", "tie": "About the same", "right": "Response 2 is better"}
SHORTCUT = {"left": "1", "tie": "0", "right": "2"}

store = wb_ui.get_store()
user = wb_ui.current_user()

st.title("Review")
modes = [JUDGE] + ([SETUP, RESULTS] if user.can("read_all") else [])
mode = st.segmented_control("View", modes, default=JUDGE, key="review_mode", required=True,
                            help="Judge: rate answers without knowing where they came from."
                                 + (" Set up: choose the evaluation runs, the sample and the reviewers. Results: win "
                                    "rates, ratings, agreement, and the way back to the training data."
                                    if user.can("read_all") else ""))


def show_text(text: str | None, plain: bool) -> None:
    """Text from data or a model: markdown with everything escaped, or the exact characters."""
    if plain:
        st.code(text or "", language=None, wrap_lines=True)
    else:
        st.markdown(wb_ui.safe_markdown(text) or "*(empty)*")


def show_prompt(messages: list, plain: bool) -> None:
    for turn in messages:
        role = turn.get("role", "user")
        with st.chat_message(role, avatar={"user": ":material/person:", "assistant": ":material/support_agent:",
                                           "system": ":material/settings:"}.get(role)):
            show_text(turn.get("content"), plain)


# ---------------------------------------------------------------- judge (reviewers)

def judged(rv, item: str, state: str, choice: str | None = None, form_key: str | None = None) -> None:
    """Button/form callback: store the judgement; the next rerun claims the next item."""
    reason = st.session_state.get(f"{state}::reason::{item}", "")
    ratings = None
    if form_key:
        ratings = {q["name"]: st.session_state.get(f"{form_key}::{k}") for k, q in enumerate(rv.questions)}
    try:
        review.submit(store, rv, item, choice=choice, ratings=ratings, reason=reason, user=user)
    except WorkbenchError as exc:
        st.session_state[f"{state}::flash"] = ("error", str(exc))
        return
    st.session_state[f"{state}::flash"] = ("success", f"Saved your judgement of item {item}.")
    st.session_state.pop(f"{state}::revisit", None)


def skip(rv, item: str, state: str) -> None:
    st.session_state.setdefault(f"{state}::skipped", []).append(item)
    st.session_state.pop(f"{state}::revisit", None)
    review.skip(store, rv, user)


def revisit(rv, state: str, widget_key: str | None) -> None:
    item = st.session_state.get(widget_key) if widget_key else None
    if item is None:
        st.session_state.pop(f"{state}::revisit", None)
    else:
        st.session_state[f"{state}::revisit"] = item
        review.skip(store, rv, user)  # hand the claimed item back meanwhile


def judge_widgets(rv, blind, state: str) -> None:
    item = blind.item
    if rv.kind == "pairwise":
        st.text_input("Reason (optional)", value=blind.mine.get("reason", ""), key=f"{state}::reason::{item}",
                      help="Why one answer is better: policy, tone, correctness, helpfulness…")
        cols = st.columns(3)
        for col, choice in zip(cols, ("left", "tie", "right")):
            col.button(CHOICE_TEXT[choice], key=f"{state}::{item}::{choice}", on_click=judged,
                       args=(rv, item, state, choice), shortcut=SHORTCUT[choice], width="stretch",
                       type="primary" if blind.mine.get(review.PREFERENCE) == choice else "secondary",
                       help=f"Save this judgement and go to the next item (key {SHORTCUT[choice]}).")
    else:
        form_key = f"{state}::{item}::form"
        with st.form(form_key):
            for k, q in enumerate(blind.questions):
                current = blind.mine.get(q["name"])
                st.radio(wb_ui.safe_markdown(q["name"]), list(review.SCALE), horizontal=True, key=f"{form_key}::{k}",
                         index=int(current) - 1 if current else None,
                         format_func=lambda v: f"{v} · {review.DEFAULT_ANCHORS[str(v)]}"
                         if str(v) in review.DEFAULT_ANCHORS else str(v),
                         help=q.get("help") or f"1 = very poor, 5 = excellent: how well the answer does on "
                                               f"'{q['name']}'.")
            st.text_input("Reason (optional)", value=blind.mine.get("reason", ""), key=f"{state}::reason::{item}",
                          help="What made you rate it so.")
            st.form_submit_button("Submit", type="primary", shortcut="ctrl+enter", on_click=judged,
                                  args=(rv, item, state, None, form_key),
                                  help="Save the ratings and go to the next item (Ctrl+Enter).")


@st.fragment
def judge(rv) -> None:
    state = f"review::{rv.review_id}"
    head = wb_ui.queue_head(state, lambda skipped: review.next_item(store, rv, user, exclude=skipped),
                            lambda: review.progress(store, rv, user), overlap=rv.overlap,
                            noun="item", answers="judgements", what="review")
    if head is None:
        return
    item, reopened = head
    if item is not None:
        try:
            blind = review.blind_item(store, rv, item, user)
        except WorkbenchError as exc:
            wb_ui.show_error(exc)
            return
        head, toggle = st.columns([3, 1])
        head.subheader(f"Item {item}")
        plain = toggle.toggle("Plain text", key=f"{state}::plain",
                              help="Show the exact characters instead of formatted markdown.")
        if rv.instructions:
            with st.expander("Instructions", icon=":material/menu_book:"):
                st.markdown(wb_ui.safe_markdown(rv.instructions))
        st.caption("The conversation" + (f" · category: {wb_ui.safe_markdown(blind.category)}"
                                         if blind.category else ""))
        show_prompt(blind.prompt, plain)
        if blind.reference is not None:
            with st.expander("Reference answer (what a person wrote)", icon=":material/fact_check:"):
                show_text(blind.reference, plain)
        if reopened:
            st.info("You judged this item before; a new judgement replaces it (the old one is kept in the history).",
                    icon=":material/history:")
        cols = st.columns(len(blind.responses))
        for n, (col, text) in enumerate(zip(cols, blind.responses), start=1):
            with col.container(border=True):
                st.markdown(f"**Response {n}**" if len(blind.responses) > 1 else "**Response**")
                show_text(text, plain)
        judge_widgets(rv, blind, state)
        c1, _ = st.columns(2)
        if reopened:
            c1.button("Back to the queue", key=f"{state}::queue", icon=":material/arrow_forward:",
                      on_click=revisit, args=(rv, state, None), help="Leave this item as it is and continue.")
        else:
            c1.button("Skip", key=f"{state}::skip", on_click=skip, args=(rv, item, state),
                      icon=":material/skip_next:", shortcut="s" if rv.kind == "pairwise" else None,
                      help="Pass over this item for now; someone else may take it.")
    mine_items = review.my_items(store, rv, user)
    if mine_items:
        with st.expander(f"Go back: your {len(mine_items):,} latest judgements", icon=":material/undo:"):
            st.selectbox("Item", mine_items, key=f"{state}::back", help="Items you judged, newest first.")
            st.button("Open", key=f"{state}::open", icon=":material/edit:", on_click=revisit,
                      args=(rv, state, f"{state}::back"), help="Show this item again with your judgement.")


def judge_view() -> None:
    reviews = [r for r in review.list_reviews(store, user) if r.may_rate(user)]
    if not reviews:
        st.info("No review for you yet." + (" Set one up under **Set up** above." if user.can("read_all")
                                            else " Ask the project's owner to add you to one."),
                icon=":material/rate_review:")
        return
    names = {r.review_id: f"{r.name} ({'which answer is better' if r.kind == 'pairwise' else 'rate answers 1-5'})"
             for r in reviews}
    chosen = st.selectbox("Review", list(names), key="review_pick", format_func=names.get,
                          help="The review to work on. You never see which model wrote which answer.")
    judge(next(r for r in reviews if r.review_id == chosen))


# ---------------------------------------------------------------- set up (owner)

def run_title(run) -> str:
    return f"#{run.eval_id} · {run.model_label} · {run.ref} {run.split} ({run.generated:,} of {run.items:,} answers)"


def setup_view() -> None:
    runs = [r for r in evaluation.list_evals(store) if r.generated > 0]
    reviews = review.list_reviews(store)
    if reviews:
        st.subheader("Reviews")
        rows = []
        for r in reviews:
            prog = review.progress(store, r, user)
            rows.append({"review": r.review_id, "name": r.name, "kind": r.kind,
                         "runs": ", ".join(f"#{e}" for e in r.evals), "items": prog["total"],
                         "complete": prog["complete"], "reviewers per item": r.overlap, "seed": r.seed,
                         "reference shown": r.show_reference, "created": r.created_at})
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    if not runs:
        st.info("Run an evaluation on the **Evaluate** page first: a review shows the answers it generated.",
                icon=":material/analytics:")
        return
    titles = {r.eval_id: run_title(r) for r in runs}
    with st.expander("New review", icon=":material/add:", expanded=not reviews):
        kind = st.radio("Kind", review.KINDS, horizontal=True, key="rv_kind",
                        format_func=lambda k: {"pairwise": "Pairwise: which of two answers is better (A/B)",
                                               "rating": "Rating: 1-5 on questions you write"}[k],
                        help="Pairwise gives a win rate of B over A; rating gives a mean per question per run.")
        chosen = st.multiselect("Evaluation runs (the baseline A first)", list(titles), key="rv_evals",
                                format_func=titles.get, max_selections=None,
                                help="Runs on the same test items. Pairwise: two (B against A) or more (a "
                                     "Bradley-Terry ranking). Rating: one or more.")
        questions = ""
        if kind == "rating":
            questions = st.text_area("Questions, one a line", "\n".join(review.DEFAULT_QUESTIONS), key="rv_questions",
                                     help="Each is rated 1 (very poor) to 5 (excellent) for every answer.")
        c1, c2, c3 = st.columns(3)
        most = max(r.generated for r in runs)
        sample = c1.number_input("Test items to review", 1, max(1, most), min(50, most), key="rv_sample",
                                 help="A random sample of the test items every chosen run answered (at most as "
                                      "many as they all answered).")
        overlap = c2.number_input("Reviewers per item", 1, 20, 2, key="rv_overlap",
                                  help="Two or more let you measure agreement between reviewers.")
        seed_text = c3.text_input("Seed (blank: random)", key="rv_seed",
                                  help="Fixes the sample, the left/right order and the queue order; it is stored "
                                       "either way, so the order can be reproduced.")
        people = [u["name"] for u in auth.list_users(store) if u["role"] in ("reviewer", "admin")]
        reviewers = st.multiselect("Reviewers (none chosen: every reviewer)", people, key="rv_people",
                                   help="Who may judge this review.") if people else []
        short = auth.shortfall(store, "review", int(overlap)) if not reviewers else (
            f"{int(overlap)} different reviewers are needed per item, but only {len(reviewers)} "
            f"{'is' if len(reviewers) == 1 else 'are'} chosen: no item could ever be complete."
            if int(overlap) > len(reviewers) else None)
        if short:
            st.warning(short.replace("per record", "per item"), icon=":material/group_off:")
        c1, c2 = st.columns(2)
        name = c1.text_input("Name reviewers see", key="rv_name", placeholder="Support answers, March",
                             help="Do not name the models here: reviewers see it.")
        show_reference = c2.checkbox("Show the reference answer", True, key="rv_reference",
                                     help="Reviewers may open the answer a person wrote for each test item.")
        instructions = st.text_area("Instructions for reviewers (markdown)", key="rv_instructions", height=100,
                                    help="What to look for: policy, tone, whether the issue is resolved…")
        if st.button("Create review", type="primary", key="rv_create", icon=":material/add:",
                     help="Sample the items, randomise the sides and open the queue for reviewers."):
            try:
                seed = int(seed_text) if seed_text.strip() else None
            except ValueError:
                wb_ui.show_error(f"seed {seed_text!r}: expected a whole number, or leave it blank")
                return
            try:
                rv = review.create_review(store, chosen, kind=kind, questions=questions.splitlines(),
                                          sample_size=int(sample), overlap=int(overlap), reviewers=reviewers or None,
                                          seed=seed, show_reference=show_reference, name=name,
                                          instructions=instructions, user=user)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.session_state["rv_flash"] = (f"Created **{wb_ui.safe_markdown(rv.name)}**: {rv.sample_size:,} "
                                                f"test items, seed {rv.seed}. Reviewers find it under **Judge**.")
                st.rerun()
    if "rv_flash" in st.session_state:
        st.success(st.session_state.pop("rv_flash"), icon=":material/check_circle:")


# ---------------------------------------------------------------- results (owner)

def interval_chart(frame: pd.DataFrame, *, x: str, y: str, low: str, high: str, title: str, rule_at=None,
                   color: str | None = None, domain=None) -> alt.Chart:
    """Points with their confidence intervals, one row per label."""
    scale = alt.Scale(domain=domain) if domain else alt.Undefined
    enc = {"y": alt.Y(f"{y}:N", title=None, sort=None, axis=alt.Axis(labelLimit=320))}
    if color:  # long run names go in a legend below the chart, whole
        enc["color"] = alt.Color(f"{color}:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=0,
                                                                              direction="vertical"))
    base = alt.Chart(frame).encode(**enc)
    rules = base.mark_rule(strokeWidth=2).encode(x=alt.X(f"{low}:Q", title=title, scale=scale), x2=f"{high}:Q")
    dots = base.mark_point(filled=True, size=90).encode(
        x=alt.X(f"{x}:Q", scale=scale), tooltip=[alt.Tooltip(c, format=".3f") if frame[c].dtype.kind == "f" else c
                                                 for c in frame.columns])
    layers = [rules, dots]
    if rule_at is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [rule_at]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q"))
    # Streamlit fits the whole chart, axis title and legend included, into this height
    return alt.layer(*layers).properties(height=34 * frame[y].nunique() + 70 + (30 if color else 0))


def agreement_block(name: str, a: dict) -> None:
    value = a.get("krippendorff_alpha")
    c1, c2 = st.columns([1, 3])
    c1.metric(f"Krippendorff's alpha ({a['level']})" if not name else f"alpha · {name}",
              "–" if value is None else f"{value:.3f}",
              help="Agreement among reviewers beyond chance: 1 is perfect, 0 is chance. "
                   + ("Nominal: over which run won (or a tie)." if a["level"] == "nominal"
                      else "Ordinal: over the 1-5 ratings, where 4 vs 5 is a smaller disagreement than 1 vs 5."))
    ci = "" if a.get("ci_low") is None else f" 95% CI {a['ci_low']:.3f} to {a['ci_high']:.3f} (bootstrap over items)."
    c2.caption(wb_ui.safe_markdown(a["reading"] + ci))


def pairwise_results(res: dict) -> None:
    st.subheader("Win rate")
    if not res["n_judgements"]:  # a rate and an interval of nothing would read as a 50% result
        st.info("No judgements yet: the win rate appears with the first ones.", icon=":material/hourglass_empty:")
        return
    frame = pd.DataFrame([{"pair": f"{w['b']}  vs  {w['a']}", "win rate": w["win_rate"], "ci_low": w["ci_low"],
                           "ci_high": w["ci_high"], "wins B": w["wins_b"], "wins A": w["wins_a"], "ties": w["ties"]}
                          for w in res["win_rates"]])
    st.altair_chart(interval_chart(frame, x="win rate", y="pair", low="ci_low", high="ci_high",
                                   title="win rate of B over A (95% Wilson interval, ties left out)", rule_at=0.5,
                                   domain=[0, 1]), width="stretch")
    for w in res["win_rates"]:
        st.markdown("- " + wb_ui.safe_markdown(w["statement"]))
    if res.get("bradley_terry"):
        st.subheader("Ranking (Bradley-Terry)")
        bt = pd.DataFrame(res["bradley_terry"]["ranking"])
        st.altair_chart(alt.Chart(bt).mark_bar().encode(
            x=alt.X("strength:Q", title="strength (geometric mean 1)"), y=alt.Y("system:N", sort=None, title=None),
            tooltip=["system", alt.Tooltip("strength:Q", format=".3f"), "wins", "losses", "ties"]).properties(
            height=max(90, 30 * len(bt))), width="stretch")
        st.caption("P(i beats j) = strength i / (strength i + strength j); a tie counts half a win each way.")
    st.subheader("Agreement among reviewers")
    agreement_block("", res["agreement"])
    st.subheader("Position bias")
    if res.get("position_bias"):
        st.markdown(wb_ui.safe_markdown("The" + res["position_bias"]["statement"][3:] + "."))
        per = pd.DataFrame(res["position_bias_by_reviewer"])
        if len(per):
            st.altair_chart(interval_chart(per, x="left_win_rate", y="reviewer", low="ci_low", high="ci_high",
                                           title="how often the left answer wins, per reviewer (95% CI)", rule_at=0.5,
                                           domain=[0, 1]), width="stretch")
    else:
        st.caption("No judgements yet.")
    if res["by_category"]:
        st.subheader("By category")
        cat = pd.DataFrame(res["by_category"])
        if len(res["win_rates"]) > 1:
            cat["category"] = (cat["category"] + " · #" + cat["eval_b"].astype(str) + " vs #"
                               + cat["eval_a"].astype(str))
        st.altair_chart(interval_chart(cat[["category", "win_rate", "ci_low", "ci_high", "wins_b", "wins_a", "ties"]],
                                       x="win_rate", y="category", low="ci_low", high="ci_high",
                                       title="win rate of B over A per category (95% CI)", rule_at=0.5,
                                       domain=[0, 1]), width="stretch")
    if res["reasons"]:
        with st.expander(f"Reasons given ({len(res['reasons']):,})", icon=":material/chat:"):
            st.dataframe(pd.DataFrame(res["reasons"]), hide_index=True)


def rating_results(res: dict) -> None:
    st.subheader("Mean rating per question")
    frame = pd.DataFrame(res["ratings"]).dropna(subset=["mean"])
    if len(frame):
        frame["ci_low"] = frame["ci_low"].fillna(frame["mean"])
        frame["ci_high"] = frame["ci_high"].fillna(frame["mean"])
        several = frame["eval_id"].nunique() > 1  # then each row names its run briefly; the legend names it whole
        frame["row"] = frame["question"] + (" · #" + frame["eval_id"].astype(str) if several else "")
        st.altair_chart(interval_chart(frame[["row", "run", "mean", "ci_low", "ci_high", "n"]], x="mean", y="row",
                                       low="ci_low", high="ci_high", color="run", domain=[1, 5],
                                       title="mean rating 1-5 (95% t interval)"), width="stretch")
    else:
        st.caption("No ratings yet.")
    st.dataframe(pd.DataFrame(res["ratings"]), hide_index=True)
    st.subheader("Agreement among reviewers")
    for q, a in res["agreement"].items():
        agreement_block(q, a)
    if res["by_category"]:
        st.subheader("By category")
        st.dataframe(pd.DataFrame(res["by_category"]), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.2f")
                                    for c in ("mean", "sd", "ci_low", "ci_high")})


@st.cache_data(max_entries=32, show_spinner="Computing the results…")
def cached_results(_store, key: tuple, review_id: int) -> dict:
    return review_results.results(_store, review_id, user=user)


def judged_item(rv) -> tuple | None:
    """The judged item picked (worst first) and what was judged: (item, details), or None."""
    st.subheader("Back to the data")
    st.caption("Items reviewers disliked most first. Find the training records behind a bad answer and flag them "
               "for relabelling, or correct a response; then write a new version, retrain and evaluate again.")
    worst = review_results.worst_items(store, rv, limit=100)
    if not worst:
        st.caption("Nothing judged yet.")
        return None
    by_item = {w["item"]: w for w in worst}
    item = st.selectbox("Judged item", list(by_item), key=f"rv_bad::{rv.review_id}",
                        format_func=lambda i: f"item {i} · test item {by_item[i]['eval_item']} · "
                                              f"{by_item[i]['category'] or ''} · score {by_item[i]['score']:+.2f}",
                        help="Pairwise: score -1 when A (the baseline) won every judgement, +1 when B did. "
                             "Rating: the mean rating.")
    w = by_item[item]
    with st.container(border=True):
        show_prompt(w["prompt"], plain=False)
        st.markdown("**Reference**")
        show_text(w["reference"], plain=True)
        cols = st.columns(len(w["outputs"]))
        for col, (eval_id, text) in zip(cols, w["outputs"].items()):
            with col:
                st.markdown(f"**#{eval_id}** {'(left)' if eval_id == w['shown'][0] and len(w['shown']) > 1 else ''}"
                            f"{'(right)' if len(w['shown']) > 1 and eval_id == w['shown'][1] else ''}")
                show_text(text, plain=True)
        st.dataframe(pd.DataFrame(w["judgements"]), hide_index=True)
    return item, w


def training_neighbours(rv, item, key: str) -> None:
    """The training records most like a judged item: flag them, or correct one's response."""
    c1, c2, c3 = st.columns(3)
    judged_run = c1.selectbox("Judged run", list(rv.evals), index=len(rv.evals) - 1, key=f"{key}::run",
                              format_func=lambda e: f"#{e}",
                              help="Its neighbours come from the version this run was trained on.")
    k = c2.number_input("Neighbours", 1, 50, 5, key=f"{key}::k", help="How many training records to show.")
    same = c3.checkbox("Same category only", key=f"{key}::same",
                       help="Rank only training records of the item's own category.")
    bar = st.progress(0.0, text="finding training neighbours")
    try:
        found = review_actions.neighbours(store, rv, item, eval_id=judged_run, k=int(k), only_category=same,
                                  progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
    except WorkbenchError as exc:
        bar.empty()
        wb_ui.show_error(exc)
        return
    bar.empty()
    st.caption(f"Training records of {wb_ui.safe_markdown(found['version'])} whose prompt is most like this item's "
               "(TF-IDF cosine of word 1-2 grams).")
    if found["records"]:
        st.dataframe(pd.DataFrame(found["records"]), hide_index=True,
                     column_config={"prompt": st.column_config.TextColumn(width="large"),
                                    "similarity": st.column_config.NumberColumn(format="%.3f")})
        rows = [n["row"] for n in found["records"]]
        chosen = st.multiselect("Records to flag", rows, default=rows, key=f"{key}::rows",
                                help="Training records (0-based row) to send to the relabelling queue.")
        reason = st.text_input("Reason", key=f"{key}::reason", placeholder="answers like this break the refund policy",
                               help="Why these records need another look; annotators see it.")
        if st.button("Flag for relabelling", key=f"{key}::flag", icon=":material/flag:",
                     help="Add these records to the relabelling queue of their version (append-only)."):
            try:
                n = review_actions.flag(store, rv, item, chosen, reason, eval_id=judged_run, version=found["version"],
                                user=user)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.success(f"Flagged {n} record(s) of {wb_ui.safe_markdown(found['version'])}.", icon=":material/flag:")
        with st.expander("Correct a training record's response", icon=":material/edit:"):
            row = st.selectbox("Record", rows, key=f"{key}::edit_row", help="The training record to correct.")
            current = next(n for n in found["records"] if n["row"] == row).get("completion") or ""
            text = st.text_area("Corrected response", current, key=f"{key}::edit_text::{row}", height=160,
                                help="The response as it should be; it goes into the next version.")
            if st.button("Save correction", key=f"{key}::edit_save", icon=":material/save:",
                         help="Recorded with who and when; nothing changes until you write a new version."):
                try:
                    review_actions.edit_response(store, rv, item, row, text, version=found["version"], user=user)
                except WorkbenchError as exc:
                    wb_ui.show_error(exc)
                else:
                    st.success("Correction saved.", icon=":material/check_circle:")


def correct_reference(rv, item, w, key: str) -> None:
    """Correct the expected answer of the judged test item."""
    with st.expander("Correct the reference answer of this test item", icon=":material/fact_check:"):
        text = st.text_area("Reference answer", w["reference"] or "", key=f"{key}::ref", height=160,
                            help="The expected answer of this test record, as it should be.")
        if st.button("Save reference", key=f"{key}::ref_save", icon=":material/save:",
                     help="Recorded with who and when; it goes into the next version of the test data."):
            try:
                review_actions.edit_response(store, rv, item, w["row"], text, user=user)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.success("Reference correction saved.", icon=":material/check_circle:")


def write_corrections(rv) -> None:
    """Every correction of this review into a new version."""
    edits = review.edits(store, rv)
    if len(edits):
        st.caption(f"{len(edits):,} corrected response(s) from this review (the latest of each record); a new "
                   "version takes every one of them.")
        if st.button("Write the corrections into a new version", key=f"rv_write::{rv.review_id}", type="primary",
                     icon=":material/save:", help="A new version of the dataset with the corrected responses; its "
                                                  "recipe names this review."):
            try:
                with st.spinner("Writing the new version…"):
                    version = review_actions.write_edits_version(store, rv, user=user)
            except WorkbenchError as exc:
                wb_ui.show_error(exc)
            else:
                st.success(f"Wrote **{wb_ui.safe_markdown(version.ref)}** ({version.row_count:,} records).",
                           icon=":material/check_circle:")


def back_to_data(rv) -> None:
    picked = judged_item(rv)
    if picked is None:
        return
    item, w = picked
    key = f"rv_nb::{rv.review_id}::{item}"
    training_neighbours(rv, item, key)
    correct_reference(rv, item, w, key)
    write_corrections(rv)
    c1, c2, c3 = st.columns(3)
    c1.page_link("page_label.py", label="Relabel flagged records", icon=":material/label:")
    c2.page_link("page_train.py", label="Retrain on the new version", icon=":material/model_training:")
    c3.page_link("page_evaluate.py", label="Evaluate the new model", icon=":material/analytics:")


def loop_view(rv) -> None:
    st.subheader("Where this review led")
    out = review_actions.loop(store, rv)
    c = st.columns(5)
    c[0].metric("Flagged records", out["flags"], help="Training records sent to relabelling from this review.")
    c[1].metric("Corrections", out["edits"], help="Responses corrected from this review.")
    c[2].metric("New versions", len(out["versions"]), help="Dataset versions written from this review.")
    c[3].metric("Retrains", len(out["retrains"]), help="Training runs on those versions.")
    c[4].metric("Later reviews", len(out["reviews"]), help="Reviews of evaluations of those runs.")
    steps = ([{"step": "judged", "what": f"eval #{j['eval_id']} · {j['model']}",
               "detail": f"trained on {j['trained_on']}" if j["trained_on"] else ""} for j in out["judged"]]
             + [{"step": "new version", "what": v["version"], "detail": f"{v['records']:,} records"}
                for v in out["versions"]]
             + [{"step": "retrain", "what": t["run_id"], "detail": f"on {t['version']} ({t['status']})"}
                for t in out["retrains"]]
             + [{"step": "evaluation", "what": f"eval #{e['eval_id']} · {e['model']}", "detail": e["status"]}
                for e in out["evals"]]
             + [{"step": "review", "what": f"review {r['review_id']} · {r['name']}", "detail": r["kind"]}
                for r in out["reviews"]])
    st.dataframe(pd.DataFrame(steps), hide_index=True)
    if st.toggle("Show every review, oldest first", key="rv_history",
                 help="Each review with the versions its runs were trained on and its headline result: whether a "
                      "newer version fixed what reviewers disliked."):
        with st.spinner("Reading every review…"):
            st.dataframe(pd.DataFrame(review_results.history_table(store)), hide_index=True)


def results_view() -> None:
    reviews = review.list_reviews(store)
    if not reviews:
        st.info("No reviews yet; create one under **Set up**.", icon=":material/rate_review:")
        return
    names = {r.review_id: f"{r.review_id} · {r.name} ({r.kind} of {', '.join(f'#{e}' for e in r.evals)})"
             for r in reviews}
    chosen = st.selectbox("Review", list(names), key="rv_results_pick", format_func=names.get,
                          help="The review whose results to read.")
    rv = next(r for r in reviews if r.review_id == chosen)
    try:
        res = cached_results(store, (str(store.project.root), rv.review_id, review.revision(store, rv)), rv.review_id)
    except WorkbenchError as exc:
        wb_ui.show_error(exc)
        return
    c = st.columns(4)
    c[0].metric("Judgements", f"{res['n_judgements']:,}", help="One per reviewer and item (the latest).")
    c[1].metric("Reviewers", res["n_reviewers"])
    c[2].metric("Items complete", f"{res['progress']['complete']:,} / {res['progress']['total']:,}",
                help=f"Items with every one of their {res['overlap']} judgements" if res["overlap"] != 1
                else "Items with their judgement.")
    c[3].metric("Seed", res["seed"], help="Re-derives the sample and the left/right order (`workbench review items`).")
    st.caption(" · ".join(f"**{r['letter']}** = {wb_ui.safe_markdown(r['label'])}" for r in res["runs"]))
    if res["kind"] == "pairwise":
        pairwise_results(res)
    else:
        rating_results(res)
    back_to_data(rv)
    loop_view(rv)
    __import__("review_preferences").preferences_section(store, rv, user)  # judgements -> DPO/KTO data
    import review_judge  # the Judge section: a model answers this review's questions

    review_judge.judge_section(store, rv)


if mode == SETUP:
    setup_view()
elif mode == RESULTS:
    results_view()
else:
    judge_view()
