"""Blind human review of evaluation runs: pairwise A/B judgements or 1-5 ratings, the reviewers'
queue, results with intervals and agreement, and the way back to the training data.

A *review* is made from evaluation runs (workbench.models.evaluate) answered on the same test items:

- **pairwise**: two or more runs; each sampled test item shows the answers of two runs side by side
  and the reviewer says which is better (or a tie), with an optional reason. With more than two runs
  the pairs are spread evenly over the items and a Bradley-Terry ranking joins them.
- **rating**: one or more runs; each sampled (test item, run) shows one answer, rated 1-5 on every
  question the owner wrote ("follows policy", "tone", "resolves the issue").

Blinding: reviewers get a `BlindItem` (the prompt, maybe the reference, the answers in display
order) and nothing else: no run, model or evaluation id. Which run went left is decided per item
when the review is created, from a stored seed (`plan_items` re-derives it), and kept in
`wb_review_items`. Review item keys are queue positions, so they say nothing about the runs either.

Ratings are append-only rows in `wb_ratings` (who, what, when); the current judgement of a reviewer
is their latest row, and nothing entered is lost by a change. A pairwise judgement is stored as the
side the reviewer chose ('left', 'right', 'tie'): the fact they saw; the run it means comes from the
recorded order.

Back to the data: from a judged item, `neighbours` lists the training records most like it (in the
version the judged run was trained on, when known), `flag` sends them to the relabelling queue
(`workbench.models.evaluate.flag_records`), `edit_response` records a corrected response for a training
record or the test reference, and `write_edits_version` turns the edits into a new dataset version
whose recipe names the review. `loop` follows a review to the versions, training runs, evaluations
and later reviews that came from it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

import numpy as np
import pandas as pd

from workbench.models import evaluate
from workbench.labels import assignment
from workbench.core.auth import LOCAL_USER, User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import ROW_COLUMN, Version, get_version

KINDS = ("pairwise", "rating")
CHOICES = ("left", "right", "tie")
PREFERENCE = "preference"  # the question name of a pairwise judgement
SCALE = (1, 2, 3, 4, 5)
DEFAULT_ANCHORS = {"1": "very poor", "3": "acceptable", "5": "excellent"}
DEFAULT_QUESTIONS = ("follows policy", "tone", "resolves the issue")
MAX_REASON_CHARS = 2_000
MAX_EDIT_CHARS = 200_000




# ---------------------------------------------------------------- the review

@dataclass(frozen=True)
class Review:
    review_id: int
    name: str
    kind: str
    evals: tuple[int, ...]
    """The evaluation runs compared, in the owner's order: A (baseline) first, then B..."""
    questions: tuple[dict, ...]
    """Rating reviews: [{name, help}], each rated 1-5. Pairwise: empty."""
    overlap: int
    sample_size: int
    seed: int
    show_reference: bool
    reviewers: tuple[str, ...] | None
    """Who may rate; None: anyone whose role may review."""
    instructions: str
    items_hash: str
    created_at: datetime | None = None
    created_by: str | None = None

    @property
    def task(self) -> assignment.Task:
        return assignment.Task(
            name=f"review:{self.review_id}",
            items_sql=f"SELECT item, pos FROM wb_review_items WHERE review_id = {int(self.review_id)}",
            answers_sql=f"SELECT item, reviewer AS annotator FROM wb_ratings WHERE review_id = {int(self.review_id)}",
            overlap=self.overlap)

    @property
    def question_names(self) -> list[str]:
        return [PREFERENCE] if self.kind == "pairwise" else [q["name"] for q in self.questions]

    def may_rate(self, user: User | None) -> bool:
        user = user or LOCAL_USER
        return user.can("review") and (self.reviewers is None or user.name in self.reviewers)


_COLS = ("review_id, name, kind, evals, questions, overlap, sample_size, seed, show_reference, reviewers, "
         "instructions, items_hash, created_at, created_by")


def _review(row) -> Review:
    (rid, name, kind, evals, questions, overlap, size, seed, show, reviewers, instr, h, created, by) = row
    people = json.loads(reviewers) if reviewers else None
    return Review(rid, name, kind, tuple(json.loads(evals)), tuple(json.loads(questions)), overlap, size, seed,
                  bool(show), tuple(people) if people else None, instr, h, created, by)


def get_review(store: Store, review_id: int) -> Review:
    rows = store.cursor().execute(f"SELECT {_COLS} FROM wb_reviews WHERE review_id = ?", [int(review_id)]).fetchall()
    if not rows:
        raise WorkbenchError(f"no review {review_id}; see `workbench review list`")
    return _review(rows[0])


def list_reviews(store: Store, user: User | None = None) -> list[Review]:
    """Every review, newest first; with a user, only those they may rate or (admins) read."""
    reviews = [_review(r) for r in store.cursor().execute(
        f"SELECT {_COLS} FROM wb_reviews ORDER BY review_id DESC").fetchall()]
    if user is not None and not user.can("read_all"):
        reviews = [r for r in reviews if r.may_rate(user)]
    return reviews


def check_questions(questions) -> tuple[dict, ...]:
    """Rating questions as [{name, help}]: names are given as text, or dicts with `name` and `help`."""
    out, seen = [], set()
    for q in questions or ():
        name, help_text = (q.get("name"), q.get("help", "")) if isinstance(q, dict) else (q, "")
        name = str(name or "").strip()
        if not name:
            continue
        if len(name) > 100:
            raise WorkbenchError(f"question {name[:40]!r}... is {len(name)} characters; keep names under 100")
        if name.lower() in seen:
            raise WorkbenchError(f"question {name!r} is given twice; give each question once")
        seen.add(name.lower())
        out.append({"name": name, "help": str(help_text or "").strip()})
    if not out:
        raise WorkbenchError("a rating review needs at least one question, for example "
                             f"{', '.join(repr(q) for q in DEFAULT_QUESTIONS)}")
    return tuple(out)


def eligible_items(store: Store, evals: list[int]) -> list[int]:
    """Test items that every run has answered, in item order."""
    rows = store.cursor().execute(
        "SELECT item FROM wb_eval_outputs WHERE eval_id IN (SELECT unnest(?::INTEGER[])) GROUP BY item "
        "HAVING count(DISTINCT eval_id) = ? ORDER BY item", [list(evals), len(set(evals))]).fetchall()
    return [r[0] for r in rows]


def plan_items(seed: int, items: list[int], evals: list[int], kind: str, sample_size: int) -> list[dict]:
    """Which test items are reviewed, which runs each shows in which order, and the queue order.

    Everything random comes from numpy's PCG64 generator seeded with `seed`, drawn in this order:
    the sample of items, then (pairwise) one coin per item for which run goes left, then the queue order.
    Pairwise reviews of more than two runs give the pairs to the sampled items in turn.
    Returns [{item (queue position + 1, as text), pos, eval_item, shown: [left eval, right eval] or [eval]}]
    in queue order."""
    rng = np.random.default_rng(int(seed))
    chosen = rng.choice(np.asarray(sorted(items), dtype=np.int64), size=int(sample_size), replace=False)
    units = []
    if kind == "pairwise":
        pairs = list(combinations(evals, 2))
        coins = rng.random(len(chosen))
        for k, (eval_item, coin) in enumerate(zip(chosen, coins)):
            a, b = pairs[k % len(pairs)]
            units.append((int(eval_item), [b, a] if coin < 0.5 else [a, b]))
    else:
        units = [(int(eval_item), [e]) for eval_item in chosen for e in evals]
    order = rng.permutation(len(units))
    return [{"item": str(pos + 1), "pos": pos, "eval_item": units[u][0], "shown": units[u][1]}
            for pos, u in enumerate(order)]


def create_review(store: Store, evals: list[int], *, kind: str = "pairwise", questions=None,
                  sample_size: int | None = None, overlap: int = 2, reviewers: list[str] | None = None,
                  seed: int | None = None, show_reference: bool = True, name: str | None = None,
                  instructions: str = "", user: User | None = None) -> Review:
    """A new review of these evaluation runs (the first is A, the baseline); returns it.

    sample_size: test items to review (default: every item all runs answered); overlap: reviewers per
    item; reviewers: names allowed to rate (default: everyone whose role may review); seed: of the
    sample, the left/right order and the queue order (default: a random one, stored)."""
    user = require_role(user, "evaluate")
    if kind not in KINDS:
        raise WorkbenchError(f"kind {kind!r}; expected one of {', '.join(KINDS)}")
    evals = [int(e) for e in evals]
    if len(set(evals)) != len(evals):
        raise WorkbenchError("the same evaluation run is given twice; give each run once")
    if kind == "pairwise" and len(evals) < 2:
        raise WorkbenchError("a pairwise review compares two or more evaluation runs; give at least two "
                             "(or make a rating review of one run)")
    if not evals:
        raise WorkbenchError("give the evaluation run(s) to review (see `workbench evals`)")
    runs = [evaluate.get_eval(store, e) for e in evals]
    first = runs[0]
    for r in runs[1:]:
        if r.items_hash != first.items_hash:
            raise WorkbenchError(f"evaluations {first.eval_id} ({first.ref} {first.split}) and {r.eval_id} "
                                 f"({r.ref} {r.split}) were not run on the same test items; review runs from the "
                                 "same leaderboard")
    _check_blind_text(runs, name=name or "", instructions=instructions or "")
    qs = check_questions(questions if questions is not None else DEFAULT_QUESTIONS) if kind == "rating" else ()
    if not isinstance(overlap, int) or not 1 <= overlap <= 100:
        raise WorkbenchError(f"overlap is {overlap!r}; expected reviewers per item from 1 to 100")
    people = None
    if reviewers:
        from workbench.core import auth

        people = sorted({str(p).strip() for p in reviewers if str(p).strip()})
        unknown = [p for p in people if auth.has_users(store) and auth.get_user(store, p) is None]
        if unknown:
            raise WorkbenchError(f"no user named {unknown[0]!r}; add reviewers with "
                                 f"`workbench users add NAME --role reviewer`")
        if len(people) < overlap:
            raise WorkbenchError(f"{len(people)} reviewer(s) cannot give {overlap} judgements per item; name at "
                                 f"least {overlap} reviewers or lower the overlap")
    items = eligible_items(store, evals)
    if not items:
        raise WorkbenchError("these runs have no test item that all of them answered yet; wait for the "
                             "evaluations to generate their answers")
    size = len(items) if sample_size in (None, 0) else int(sample_size)
    if not 1 <= size <= len(items):
        raise WorkbenchError(f"sample size {sample_size}; expected 1 to {len(items):,} (the test items every run "
                             "answered)")
    seed = int(seed) if seed is not None else secrets.randbelow(2**31)
    plan = plan_items(seed, items, evals, kind, size)
    version = evaluate.version_of(store, first)
    from workbench.data.browse import category_column

    cat = category_column(store, version)
    cur = store.cursor()
    facts = cur.execute(
        f"SELECT i.item, i._row, {'CAST(v.' + _q(cat) + ' AS VARCHAR)' if cat else 'NULL'} FROM wb_eval_items i "
        f"LEFT JOIN {version.table_name} v ON v.{ROW_COLUMN} = i._row WHERE i.eval_id = ? AND i.item IN "
        "(SELECT unnest(?::INTEGER[]))", [first.eval_id, sorted({p["eval_item"] for p in plan})]).fetchall()
    row_of = {i: (r, c) for i, r, c in facts}
    review_id = cur.execute("SELECT nextval('wb_review_seq')").fetchall()[0][0]
    name = (name or "").strip() or f"Review {review_id}"
    table = pd.DataFrame({
        "item": [p["item"] for p in plan], "pos": [p["pos"] for p in plan],
        "eval_item": [p["eval_item"] for p in plan], "_row": [row_of[p["eval_item"]][0] for p in plan],
        "category": [row_of[p["eval_item"]][1] for p in plan], "left_eval": [p["shown"][0] for p in plan],
        "right_eval": pd.array([p["shown"][1] if len(p["shown"]) > 1 else None for p in plan], dtype="Int32")})

    def write(cur):
        cur.execute(f"INSERT INTO wb_reviews ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [review_id, name, kind, json.dumps(evals), json.dumps(list(qs)), overlap, size, seed,
                     bool(show_reference), json.dumps(people) if people else None, instructions or "",
                     first.items_hash, now_utc(), user.name])
        cur.register("wb_new_review_items", table)
        cur.execute("INSERT INTO wb_review_items SELECT ?, item, pos, eval_item, _row, category, left_eval, "
                    "right_eval FROM wb_new_review_items", [review_id])
        cur.unregister("wb_new_review_items")

    store.retry(write)
    return get_review(store, review_id)


def _check_blind_text(runs, **texts) -> None:
    """Reviewers read the review's name and instructions: refuse ones that name a run's model or run."""
    from pathlib import PurePath

    for run in runs:
        names = {run.model_label, run.run_id, run.base_model, PurePath(run.base_model).name, run.adapter,
                 f"eval {run.eval_id}", f"eval-{run.eval_id}", f"#{run.eval_id}"}
        for field_name, text in texts.items():
            hit = next((n for n in names if n and len(n) >= 3 and n.lower() in text.lower()), None)
            if hit:
                raise WorkbenchError(f"the review's {field_name} mentions {hit!r}, which names one of the runs; "
                                     "reviewers see it, so leave model and run names out")


def _q(name: str) -> str:
    from workbench.core.store import quote_ident

    return quote_ident(name)


def review_items(store: Store, review: Review | int) -> pd.DataFrame:
    """The stored plan (owner's view): item, pos, eval_item, _row, category, left_eval, right_eval."""
    review = _as_review(store, review)
    return store.cursor().execute(
        "SELECT item, pos, eval_item, _row, category, left_eval, right_eval FROM wb_review_items "
        "WHERE review_id = ? ORDER BY pos", [review.review_id]).df()


def _as_review(store: Store, review: Review | int) -> Review:
    return review if isinstance(review, Review) else get_review(store, review)


# ---------------------------------------------------------------- what a reviewer sees

@dataclass(frozen=True)
class BlindItem:
    """One item as a reviewer sees it: nothing here names a run, a model or an evaluation."""

    review_id: int
    item: str
    kind: str
    prompt: list[dict]
    """The conversation up to the answer: [{role, content}]."""
    responses: tuple[str, ...]
    """Pairwise: (left, right); rating: (the one answer,)."""
    reference: str | None
    questions: tuple[dict, ...]
    instructions: str
    category: str | None = None
    mine: dict = field(default_factory=dict)
    """This reviewer's current judgement of the item ({question: value}, plus 'reason'), when they gave one."""


def _check_reviewer(review: Review, user: User | None) -> User:
    user = require_role(user, "review")
    if review.reviewers is not None and user.name not in review.reviewers:
        raise WorkbenchError(f"{user.name} is not one of the reviewers of {review.name!r}; ask its owner to add you")
    return user


def next_item(store: Store, review: Review | int, user: User | None = None, *, exclude=(),
              lease_seconds: float | None = None) -> str | None:
    """The next item this reviewer should judge (claimed for a while), or None when they are done."""
    review = _as_review(store, review)
    user = _check_reviewer(review, user)
    lease = lease_seconds if lease_seconds is not None else float(
        store.project.setting("review", "lease_seconds", assignment.LEASE_SECONDS))
    return assignment.claim_next(store, review.task, user.name, exclude=exclude, lease_seconds=lease)


def skip(store: Store, review: Review | int, user: User | None = None) -> None:
    review = _as_review(store, review)
    user = _check_reviewer(review, user)
    assignment.release_claims(store, review.task, user.name)


def progress(store: Store, review: Review | int, user: User | None = None) -> dict:
    """done / remaining for this reviewer; complete / total items of the review."""
    review = _as_review(store, review)
    return assignment.progress(store, review.task, (user or LOCAL_USER).name)


def _prompt_messages(version: Version, record: dict) -> list[dict]:
    from workbench.core.formats import canonical_to_messages

    if version.format == "classification":
        return [{"role": "user", "content": record.get("prompt") or ""}]
    msgs = canonical_to_messages(record.get("prompt") or "", record.get("completion"), record.get("system"),
                                 record.get("messages"))
    last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
    return msgs[:last] if last is not None else msgs


def blind_item(store: Store, review: Review | int, item: str, user: User | None = None) -> BlindItem:
    """What the reviewer is shown for one item: the prompt, the answers in display order, maybe the reference."""
    review = _as_review(store, review)
    user = _check_reviewer(review, user)
    cur = store.cursor()
    rows = cur.execute("SELECT eval_item, _row, category, left_eval, right_eval FROM wb_review_items "
                       "WHERE review_id = ? AND item = ?", [review.review_id, str(item)]).fetchall()
    if not rows:
        raise WorkbenchError(f"review {review.review_id} has no item {item!r}")
    eval_item, row, category, left, right = rows[0]
    shown = [left] + ([right] if right is not None else [])
    outs = dict(cur.execute("SELECT eval_id, output FROM wb_eval_outputs WHERE item = ? AND eval_id IN "
                            "(SELECT unnest(?::INTEGER[]))", [eval_item, shown]).fetchall())
    reference = cur.execute("SELECT reference FROM wb_eval_items WHERE eval_id = ? AND item = ?",
                            [review.evals[0], eval_item]).fetchall()[0][0]
    version = evaluate.version_of(store, evaluate.get_eval(store, review.evals[0]))
    (record,) = evaluate.records(store, version, [row]) or [{}]
    return BlindItem(review.review_id, str(item), review.kind, _prompt_messages(version, record),
                     tuple(outs.get(e, "") for e in shown), reference if review.show_reference else None,
                     review.questions, review.instructions, category, my_judgement(store, review, item, user))


_LATEST = ("SELECT item, reviewer, question, value, reason, created_at FROM wb_ratings WHERE review_id = $rid "
           "QUALIFY row_number() OVER (PARTITION BY item, reviewer, question ORDER BY created_at DESC, "
           "rating_id DESC) = 1")


def my_judgement(store: Store, review: Review | int, item: str, user: User | None = None) -> dict:
    review = _as_review(store, review)
    rows = store.cursor().execute(
        f"SELECT question, value, reason FROM ({_LATEST}) WHERE item = $item AND reviewer = $who",
        {"rid": review.review_id, "item": str(item), "who": (user or LOCAL_USER).name}).fetchall()
    out = {q: v for q, v, _ in rows}
    reasons = [r for _, _, r in rows if r]
    if reasons:
        out["reason"] = reasons[0]
    return out


def my_items(store: Store, review: Review | int, user: User | None = None, *, limit: int = 200) -> list[str]:
    """Items this reviewer judged, newest first (to go back and change a judgement)."""
    review = _as_review(store, review)
    rows = store.cursor().execute(
        "SELECT item FROM wb_ratings WHERE review_id = ? AND reviewer = ? GROUP BY item "
        "ORDER BY max(created_at) DESC LIMIT ?", [review.review_id, (user or LOCAL_USER).name, int(limit)]).fetchall()
    return [r[0] for r in rows]


def submit(store: Store, review: Review | int, item: str, *, choice: str | None = None,
           ratings: dict | None = None, reason: str = "", user: User | None = None, source: str = "app",
           now: datetime | None = None) -> dict:
    """Record this reviewer's judgement of one item: for pairwise reviews the side they prefer
    ('left', 'right' or 'tie') with an optional reason; for rating reviews a 1-5 answer to every
    question. Appends rows (an earlier judgement stays in the history); returns what was stored.
    Committed (in DuckDB's write-ahead log) when this returns."""
    review = _as_review(store, review)
    user = _check_reviewer(review, user)
    item = str(item)
    exists = store.cursor().execute("SELECT 1 FROM wb_review_items WHERE review_id = ? AND item = ?",
                                    [review.review_id, item]).fetchall()
    if not exists:
        raise WorkbenchError(f"review {review.review_id} has no item {item!r}")
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON_CHARS:
        raise WorkbenchError(f"the reason is {len(reason):,} characters; keep it under {MAX_REASON_CHARS:,}")
    if review.kind == "pairwise":
        choice = str(choice or "").strip().lower()
        if choice not in CHOICES:
            raise WorkbenchError(f"choice {choice!r}; expected left, right or tie")
        values = {PREFERENCE: choice}
    else:
        given = dict(ratings or {})
        extra = sorted(set(given) - set(review.question_names))
        if extra:
            raise WorkbenchError(f"{extra[0]!r} is not a question of this review; its questions: "
                                 f"{', '.join(review.question_names)}")
        values = {}
        for name in review.question_names:
            value = given.get(name)
            try:
                number = int(value)
                ok = number in SCALE and float(value) == number
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise WorkbenchError(f"{name!r}: {value!r}; expected a whole number from {SCALE[0]} to {SCALE[-1]}"
                                     if value is not None else f"rate {name!r} too ({SCALE[0]}-{SCALE[-1]})")
            values[name] = str(number)
    when = now or now_utc()

    def write(cur):
        for q, v in values.items():
            cur.execute("INSERT INTO wb_ratings VALUES (nextval('wb_rating_seq'), ?, ?, ?, ?, ?, ?, ?, ?)",
                        [review.review_id, item, user.name, q, v, reason or None, when, source])
        assignment.release(cur, review.task, user.name)

    store.retry(write)
    return values


def revision(store: Store, review: Review | int) -> tuple[int, int]:
    """(rating rows, newest rating id): changes whenever a judgement is added, so results can be cached."""
    review = _as_review(store, review)
    return tuple(store.cursor().execute("SELECT count(*), coalesce(max(rating_id), 0) FROM wb_ratings "
                                        "WHERE review_id = ?", [review.review_id]).fetchall()[0])


def history(store: Store, review: Review | int, item: str | None = None) -> pd.DataFrame:
    """Every rating row, oldest first: nothing entered is ever lost."""
    review = _as_review(store, review)
    where, params = ("AND item = ?", [str(item)]) if item is not None else ("", [])
    return store.cursor().execute(
        f"SELECT item, reviewer, question, value, reason, created_at, source FROM wb_ratings WHERE review_id = ? "
        f"{where} ORDER BY created_at, rating_id", [review.review_id, *params]).df()


# ---------------------------------------------------------------- results (owner)

def run_label(run) -> str:
    return f"eval {run.eval_id} · {run.model_label}"


def judgements(store: Store, review: Review | int) -> pd.DataFrame:
    """The current judgements, unblinded: one row per (item, reviewer, question) with the runs behind them.

    Columns: item, reviewer, question, value, reason, eval_item, _row, category, left_eval, right_eval and,
    for pairwise reviews, winner_eval (NaN for a tie)."""
    review = _as_review(store, review)
    df = store.cursor().execute(
        f"SELECT l.item, l.reviewer, l.question, l.value, l.reason, i.eval_item, i._row, i.category, i.left_eval, "
        f"i.right_eval FROM ({_LATEST}) l JOIN wb_review_items i ON i.review_id = $rid AND i.item = l.item "
        f"ORDER BY i.pos, l.reviewer, l.question", {"rid": review.review_id}).df()
    if review.kind == "pairwise":
        df["winner_eval"] = np.where(df["value"] == "left", df["left_eval"],
                                     np.where(df["value"] == "right", df["right_eval"], np.nan))
    return df


def _agreement(items, reviewers, values, *, level: str, labels, resamples: int, seed: int) -> dict:
    """Krippendorff's alpha (workbench.labels.agreement / metrics.agreement) with its interval and reading."""
    from metrics import agreement as ag
    from metrics.interpret import reading
    from workbench.labels import agreement

    answers = agreement.answers_frame(items, reviewers, values)
    if answers.empty:
        return {"krippendorff_alpha": None, "level": level, "reason": "no judgements yet", "reading": "Not computed."}
    ratings = agreement.to_ratings(answers, level=level, labels=labels)
    alpha = ag.krippendorff_alpha(ratings, level=level, resamples=resamples, seed=seed)
    pct = ag.percent_agreement(ratings)
    return {"krippendorff_alpha": alpha.value, "ci_low": alpha.ci_low, "ci_high": alpha.ci_high, "level": level,
            "n_items": alpha.n_items, "n_reviewers": int(answers["annotator"].nunique()),
            "percent_agreement": pct.value, "reason": alpha.reason,
            "reading": reading("krippendorff_alpha", alpha.value, ci_low=alpha.ci_low, ci_high=alpha.ci_high,
                               reason=alpha.reason)}


def results(store: Store, review: Review | int, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0,
            user: User | None = None) -> dict:
    """Everything the Results view and `workbench review results --json` show (plain JSON types).

    Pairwise: `win_rates` (every pair: B's wins over A with a Wilson interval over decided judgements,
    ties apart), `win_rate` (the first pair: B over A), `bradley_terry` (more than two runs),
    `position_bias` (overall and `by_reviewer`), `by_category`. Rating: `ratings` (mean per question
    per run with a t interval), `by_category`. Both: `agreement` (Krippendorff's alpha: nominal over
    A/B/tie, ordinal per rating question), `progress`, `runs`, `seed`."""
    from metrics import ratings as mr

    require_role(user, "read_all")  # results name the runs: never for reviewers
    review = _as_review(store, review)
    runs = {e: evaluate.get_eval(store, e) for e in review.evals}
    labels = {e: run_label(r) for e, r in runs.items()}
    df = judgements(store, review)
    prog = assignment.progress(store, review.task, "")
    out = {"review_id": review.review_id, "name": review.name, "kind": review.kind, "seed": review.seed,
           "sample_size": review.sample_size, "overlap": review.overlap, "show_reference": review.show_reference,
           "runs": [{"eval_id": e, "letter": chr(ord("A") + k), "model": runs[e].model_label, "run_id": runs[e].run_id,
                     "dataset": runs[e].ref, "split": runs[e].split, "label": labels[e]}
                    for k, e in enumerate(review.evals)],
           "progress": {"complete": prog["complete"], "total": prog["total"]},
           "n_items": int(df["item"].nunique()) if len(df) else 0,
           "n_judgements": int(len(df[["item", "reviewer"]].drop_duplicates())) if len(df) else 0,
           "n_reviewers": int(df["reviewer"].nunique()) if len(df) else 0,
           "confidence": confidence}
    if review.kind == "pairwise":
        out.update(_pairwise_results(review, df, labels, mr, confidence))
        letters = {e: chr(ord("A") + k) for k, e in enumerate(review.evals)}
        # agreement over which run won (A, B, ... or tie), so a reviewer's side does not matter
        values = [letters[int(w)] if not pd.isna(w) else "tie" for w in df["winner_eval"]] if len(df) else []
        labels_order = [letters[e] for e in review.evals] + ["tie"]
        out["agreement"] = _agreement(list(df["item"]), list(df["reviewer"]), values, level="nominal",
                                      labels=labels_order, resamples=resamples, seed=seed)
    else:
        out.update(_rating_results(review, df, labels, mr, confidence))
        out["agreement"] = {q: _agreement(list(g["item"]), list(g["reviewer"]), list(g["value"]), level="ordinal",
                                          labels=[str(s) for s in SCALE], resamples=resamples, seed=seed)
                            for q, g in ((q, df[df["question"] == q]) for q in review.question_names)}
    out["krippendorff_alpha"] = (out["agreement"]["krippendorff_alpha"] if review.kind == "pairwise" else
                                 {q: a["krippendorff_alpha"] for q, a in out["agreement"].items()})
    return out


def _pair_rows(df: pd.DataFrame, a: int, b: int) -> pd.DataFrame:
    return df[((df["left_eval"] == a) & (df["right_eval"] == b)) | ((df["left_eval"] == b) & (df["right_eval"] == a))]


def _winners(rows: pd.DataFrame, a: int, b: int, labels: dict) -> list[str]:
    return [labels[a] if w == a else labels[b] if w == b else "tie" for w in rows["winner_eval"]]


def _win_json(mr, rows, a, b, labels, confidence) -> dict:
    w = mr.win_rate(_winners(rows, a, b, labels), a=labels[a], b=labels[b], confidence=confidence)
    return {**w.to_json(), "eval_a": a, "eval_b": b}


def _pairwise_results(review: Review, df: pd.DataFrame, labels: dict, mr, confidence: float) -> dict:
    pairs = list(combinations(review.evals, 2))
    win_rates = [_win_json(mr, _pair_rows(df, a, b), a, b, labels, confidence) for a, b in pairs]
    out = {"win_rates": win_rates, "win_rate": win_rates[0]["win_rate"], "ci_low": win_rates[0]["ci_low"],
           "ci_high": win_rates[0]["ci_high"], "ties": win_rates[0]["ties"]}
    judged = [(labels[int(left)], labels[int(right)], labels[int(w)] if not pd.isna(w) else mr.TIE)
              for left, right, w in zip(df["left_eval"], df["right_eval"], df["winner_eval"])] if len(df) else []
    out["position_bias"] = mr.position_bias(judged, confidence=confidence) if judged else None
    by_rev = []
    for who, g in df.groupby("reviewer", sort=True) if len(df) else ():
        mine = [(labels[int(left)], labels[int(right)], labels[int(w)] if not pd.isna(w) else mr.TIE)
                for left, right, w in zip(g["left_eval"], g["right_eval"], g["winner_eval"])]
        bias = mr.position_bias(mine, confidence=confidence)
        by_rev.append({"reviewer": who, **{k: bias[k] for k in ("left_wins", "right_wins", "ties", "n",
                                                                 "left_win_rate", "ci_low", "ci_high", "biased")}})
    out["position_bias_by_reviewer"] = by_rev
    out["bradley_terry"] = None
    if len(review.evals) > 2 and judged:
        try:
            bt = mr.bradley_terry(judged)
        except ValueError:  # someone never lost or never won: a small prior keeps the strengths finite
            bt = mr.bradley_terry(judged, prior=0.5)
            bt["prior"] = 0.5
        out["bradley_terry"] = bt
    by_cat = []
    if len(df):
        for cat, g in df.groupby(df["category"].fillna("(none)"), sort=True):
            for a, b in pairs:
                rows = _pair_rows(g, a, b)
                if len(rows):
                    w = mr.win_rate(_winners(rows, a, b, labels), a=labels[a], b=labels[b], confidence=confidence)
                    by_cat.append({"category": cat, "eval_a": a, "eval_b": b, "wins_a": w.wins_a,
                                   "wins_b": w.wins_b, "ties": w.ties, "n": w.n, "win_rate": w.win_rate,
                                   "ci_low": w.ci_low, "ci_high": w.ci_high})
    out["by_category"] = by_cat
    reasons = df[df["reason"].notna()] if len(df) else df
    out["reasons"] = [{"item": r.item, "reviewer": r.reviewer, "winner": labels[int(r.winner_eval)]
                       if not pd.isna(r.winner_eval) else "tie", "reason": r.reason} for r in reasons.itertuples()]
    return out


def _rating_results(review: Review, df: pd.DataFrame, labels: dict, mr, confidence: float) -> dict:
    rows, by_cat = [], []
    for q in review.question_names:
        for e in review.evals:
            g = df[(df["question"] == q) & (df["left_eval"] == e)] if len(df) else df
            m = mr.mean_with_ci([float(v) for v in g["value"]] if len(g) else [], confidence)
            rows.append({"question": q, "eval_id": e, "run": labels[e], **_finite(m)})
            if len(g):
                for cat, h in g.groupby(g["category"].fillna("(none)"), sort=True):
                    mc = mr.mean_with_ci([float(v) for v in h["value"]], confidence)
                    by_cat.append({"category": cat, "question": q, "eval_id": e, "run": labels[e], **_finite(mc)})
    return {"ratings": rows, "by_category": by_cat}


def _finite(d: dict) -> dict:
    """NaN -> None, so the JSON output stays valid."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def worst_items(store: Store, review: Review | int, *, limit: int = 50) -> list[dict]:
    """Judged items with the runs' answers (owner's view), the most disliked first: for pairwise reviews
    the items where B lost most often, for ratings the lowest mean rating. Each: item, eval_item, _row,
    category, prompt, reference, outputs {eval_id: text}, judgements (per reviewer), score."""
    review = _as_review(store, review)
    df = judgements(store, review)
    if not len(df):
        return []
    if review.kind == "pairwise":
        base = review.evals[0]
        df["score"] = np.where(df["winner_eval"] == base, -1.0, np.where(df["winner_eval"].isna(), 0.0, 1.0))
    else:
        df["score"] = df["value"].astype(float)
    per_item = df.groupby("item").agg(score=("score", "mean")).reset_index().sort_values(["score", "item"])
    chosen = list(per_item["item"][: int(limit)])
    plan = review_items(store, review).set_index("item")
    cur = store.cursor()
    run = evaluate.get_eval(store, review.evals[0])
    version = evaluate.version_of(store, run)
    recs = {r[ROW_COLUMN]: r for r in evaluate.records(store, version, [int(plan.loc[i, "_row"]) for i in chosen])}
    out = []
    for item, score in zip(per_item["item"][: int(limit)], per_item["score"][: int(limit)]):
        p = plan.loc[item]
        shown = [int(p["left_eval"])] + ([int(p["right_eval"])] if not pd.isna(p["right_eval"]) else [])
        outs = dict(cur.execute("SELECT eval_id, output FROM wb_eval_outputs WHERE item = ? AND eval_id IN "
                                "(SELECT unnest(?::INTEGER[]))", [int(p["eval_item"]), shown]).fetchall())
        ref = cur.execute("SELECT reference FROM wb_eval_items WHERE eval_id = ? AND item = ?",
                          [run.eval_id, int(p["eval_item"])]).fetchall()[0][0]
        mine = df[df["item"] == item]
        out.append({"item": item, "eval_item": int(p["eval_item"]), "row": int(p["_row"]),
                    "category": p["category"], "score": float(score), "shown": shown,
                    "prompt": _prompt_messages(version, recs.get(int(p["_row"]), {})), "reference": ref,
                    "outputs": {e: outs.get(e) for e in shown},
                    "judgements": mine[["reviewer", "question", "value", "reason"]].to_dict("records")})
    return out


# ---------------------------------------------------------------- back to the data

def training_version(store: Store, eval_id: int) -> Version:
    """The dataset version the judged run's model was trained on (its training run's version when the
    evaluation names one that is recorded), else the evaluation's own version (its training split)."""
    run = evaluate.get_eval(store, eval_id)
    if run.run_id:
        from workbench.models import runs

        rows = store.cursor().execute("SELECT dataset, version FROM wb_runs WHERE run_id = ?", [run.run_id]).fetchall()
        if rows:
            try:
                return get_version(store, f"{rows[0][0]}@{rows[0][1]}")
            except WorkbenchError:
                pass
    return evaluate.version_of(store, run)


def neighbours(store: Store, review: Review | int, item: str, *, eval_id: int | None = None, k: int = 5,
               only_category: bool = False, progress=None) -> dict:
    """The training records most like a judged item's prompt (TF-IDF cosine, `workbench.models.evaluate.neighbours`)
    in the version the judged run was trained on. Returns {version (ref), eval_id, records: [...]}."""
    review = _as_review(store, review)
    eval_id = int(eval_id) if eval_id is not None else review.evals[-1]
    if eval_id not in review.evals:
        raise WorkbenchError(f"evaluation {eval_id} is not part of review {review.review_id}")
    plan = review_items(store, review)
    hit = plan[plan["item"] == str(item)]
    if hit.empty:
        raise WorkbenchError(f"review {review.review_id} has no item {item!r}")
    run = evaluate.get_eval(store, review.evals[0])
    test_version = evaluate.version_of(store, run)
    (record,) = evaluate.records(store, test_version, [int(hit["_row"].iloc[0])]) or [{}]
    version = training_version(store, eval_id)
    from workbench.data.browse import category_column

    cat = category_column(store, version)
    found = evaluate.neighbours(store, version, record.get("prompt") or "", k=k,
                                category=record.get(cat) if cat else None, only_category=only_category,
                                progress=progress)
    texts = {r[ROW_COLUMN]: r for r in evaluate.records(store, version, [n["row"] for n in found])}
    recs = [{**n, "prompt": texts[n["row"]].get("prompt"), "completion": texts[n["row"]].get("completion")}
            for n in found]
    return {"version": version.ref, "eval_id": eval_id, "records": recs}


def _log_action(store: Store, review: Review, item, action: str, version: Version, rows, eval_id, text,
                who: str) -> None:
    now = now_utc()
    store.retry(lambda cur: cur.executemany(
        "INSERT INTO wb_review_actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[review.review_id, None if item is None else str(item), action, version.version_id, r, eval_id, text, who,
          now] for r in rows]))


def flag(store: Store, review: Review | int, item: str, rows, reason: str, *, eval_id: int | None = None,
         version: Version | str | None = None, user: User | None = None) -> int:
    """Flag training records (found from a judged item) for relabelling: `workbench.models.evaluate.flag_records`
    (the relabelling queue), and a note that this review led there. Returns how many rows were flagged."""
    review = _as_review(store, review)
    require_role(user, "read_all")  # the owner works from unblinded results
    eval_id = int(eval_id) if eval_id is not None else review.evals[-1]
    version = get_version(store, version) if isinstance(version, str) else version or training_version(store, eval_id)
    reason = (reason or "").strip()
    n = evaluate.flag_records(store, version, rows, f"review {review.review_id}, item {item}: {reason}"
                              if reason else "", user, eval_id=eval_id)
    _log_action(store, review, item, "flag", version, sorted({int(r) for r in rows}), eval_id, reason,
                (user or LOCAL_USER).name)
    return n


def edit_response(store: Store, review: Review | int, item: str | None, row: int, text: str, *,
                  version: Version | str | None = None, user: User | None = None) -> dict:
    """Record a corrected response for one record (a training neighbour, or the test reference of a judged
    item: row = the item's `_row` in the test version). Append-only; `write_edits_version` applies them."""
    review = _as_review(store, review)
    user = require_role(user, "write_version")
    if version is None:
        version = evaluate.version_of(store, evaluate.get_eval(store, review.evals[0]))
    elif isinstance(version, str):
        version = get_version(store, version)
    text = (text or "").strip()
    if not text:
        raise WorkbenchError("the corrected response is empty; write the response as it should be")
    if len(text) > MAX_EDIT_CHARS:
        raise WorkbenchError(f"the response is {len(text):,} characters; keep it under {MAX_EDIT_CHARS:,}")
    if version.format == "classification":
        raise WorkbenchError(f"{version.ref} is classification data (text and label); relabel it on the Label page "
                             "instead of editing a response")
    if not 0 <= int(row) < version.row_count:
        raise WorkbenchError(f"{version.ref} has rows 0-{version.row_count - 1}; row {row} is not one of them")
    _log_action(store, review, item, "edit", version, [int(row)], None, text, user.name)
    return {"version": version.ref, "row": int(row), "completion": text}


def edits(store: Store, review: Review | int) -> pd.DataFrame:
    """The latest corrected response per (version, row) of this review: version_id, row, completion, who, at."""
    review = _as_review(store, review)
    return store.cursor().execute(
        "SELECT version_id, _row AS row, text AS completion, item, who, created_at FROM wb_review_actions "
        "WHERE review_id = ? AND action = 'edit' QUALIFY row_number() OVER (PARTITION BY version_id, _row "
        "ORDER BY created_at DESC) = 1 ORDER BY version_id, _row", [review.review_id]).df()


def actions(store: Store, review: Review | int) -> pd.DataFrame:
    """Every flag and edit made from this review, oldest first."""
    review = _as_review(store, review)
    return store.cursor().execute(
        "SELECT a.created_at, a.action, a.item, v.dataset || '@' || v.number AS version, a._row AS row, a.eval_id, "
        "a.text, a.who FROM wb_review_actions a LEFT JOIN wb_versions v USING (version_id) WHERE a.review_id = ? "
        "ORDER BY a.created_at, a._row", [review.review_id]).df()


def write_edits_version(store: Store, review: Review | int, version: Version | str | None = None, *,
                        user: User | None = None) -> Version:
    """A new version of the dataset with this review's corrected responses (latest per record) in
    `completion` (and the last assistant turn of multi-turn chats). Its recipe names the review."""
    from workbench.labels import annotations

    review = _as_review(store, review)
    user = require_role(user, "write_version")
    found = edits(store, review)
    if version is None:
        ids = sorted(set(found["version_id"]))
        if len(ids) != 1:
            raise WorkbenchError("this review has no corrected responses yet" if not ids else
                                 "this review edited records of several versions; say which one to write")
        version = annotations._version_by_id(store, int(ids[0]))
    elif isinstance(version, str):
        version = get_version(store, version)
    mine = found[found["version_id"] == version.version_id]
    if mine.empty:
        raise WorkbenchError(f"this review has no corrected responses for {version.ref}")
    # A transient corrected-response question over the version: the Label page's code writes the version.
    question = annotations.Question(question_id=-1, dataset=version.dataset, name=f"review {review.review_id}",
                                    version_id=version.version_id, kind="text", choices=(), column="completion")
    labels = {str(int(r) + 1): t for r, t in zip(mine["row"], mine["completion"])}
    return annotations.write_labels_version(
        store, question, None, labels, column="completion", user=user, created_by=user.name,
        recipe={"op": "review-edits", "review_id": review.review_id, "edits": len(labels),
                "rows": sorted(int(r) for r in mine["row"])})


def loop(store: Store, review: Review | int) -> dict:
    """Where this review led: the runs it judged (and the versions they were trained on), the flags and
    edits made from it, the versions written from it, training runs on those versions, their evaluations,
    and the later reviews of those evaluations (with their headline numbers)."""
    review = _as_review(store, review)
    cur = store.cursor()
    judged = []
    for e in review.evals:
        run = evaluate.get_eval(store, e)
        judged.append({"eval_id": e, "model": run.model_label, "run_id": run.run_id, "test_version": run.ref,
                       "trained_on": training_version(store, e).ref if run.run_id else None})
    versions_rows = cur.execute(
        "SELECT version_id, dataset, number, row_count, created_at FROM wb_versions "
        "WHERE json_extract_string(recipe, '$.review_id') = ? ORDER BY version_id", [str(review.review_id)]).fetchall()
    versions = [{"version_id": v, "version": f"{d}@{n}", "records": c, "created_at": t}
                for v, d, n, c, t in versions_rows]
    from workbench.models import runs as runs_mod

    trained = cur.execute(
        "SELECT run_id, dataset || '@' || version, status FROM wb_runs WHERE version_id IN "
        "(SELECT unnest(?::INTEGER[])) ORDER BY created_at", [[v["version_id"] for v in versions]]).fetchall()
    retrains = [{"run_id": r, "version": v, "status": s} for r, v, s in trained]
    later_evals = [r for r in evaluate.list_evals(store) if r.run_id in {t["run_id"] for t in retrains}]
    evals = [{"eval_id": r.eval_id, "run_id": r.run_id, "model": r.model_label, "status": r.status}
             for r in sorted(later_evals, key=lambda r: r.eval_id)]
    ids = {r["eval_id"] for r in evals}
    later = [{"review_id": r.review_id, "name": r.name, "kind": r.kind, "evals": list(r.evals)}
             for r in reversed(list_reviews(store)) if r.review_id != review.review_id and ids & set(r.evals)]
    acts = actions(store, review)
    return {"review_id": review.review_id, "judged": judged,
            "flags": int((acts["action"] == "flag").sum()), "edits": int((acts["action"] == "edit").sum()),
            "versions": versions, "retrains": retrains, "evals": evals, "reviews": later}


def history_table(store: Store, dataset: str | None = None) -> list[dict]:
    """One row per review (oldest first), with the versions its runs were trained on and its headline
    number: so a user can read that the runs trained on version 3 won where version 2 lost."""
    rows = []
    for r in reversed(list_reviews(store)):
        runs = [evaluate.get_eval(store, e) for e in r.evals]
        if dataset and all(x.dataset != dataset for x in runs):
            continue
        trained = [training_version(store, e).ref if x.run_id else x.ref for e, x in zip(r.evals, runs)]
        res = results(store, r, resamples=0)
        if r.kind == "pairwise" and res.get("bradley_terry"):
            head = "Bradley-Terry: " + " > ".join(x["system"].split(" · ")[0]
                                                  for x in res["bradley_terry"]["ranking"])
        elif r.kind == "pairwise":
            w = res["win_rates"][0]
            head = f"B wins {w['win_rate']:.0%} ({w['ci_low']:.0%}-{w['ci_high']:.0%}), {w['ties']} ties, n={w['n']}"
        else:
            head = "; ".join(f"{x['question']} {x['run'].split(' · ')[0]}: "
                             + (f"{x['mean']:.2f}" if x["mean"] is not None else "-") for x in res["ratings"])
        rows.append({"review_id": r.review_id, "name": r.name, "kind": r.kind,
                     "runs": ", ".join(run_label(x) for x in runs), "trained_on": ", ".join(trained),
                     "judgements": res["n_judgements"], "result": head, "created_at": r.created_at})
    return rows
