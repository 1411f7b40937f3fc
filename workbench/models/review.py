"""Blind human review of evaluation runs: pairwise A/B judgements or 1-5 ratings, and the reviewers'
queue. This module owns `wb_reviews`, `wb_review_items` and `wb_ratings`; the results with intervals
and agreement are in `review_results`, the way back to the training data in `review_actions`.

A *review* is made from evaluation runs (workbench.models.evaluation) answered on the same test items:

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
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

import numpy as np
import pandas as pd

from workbench.core.auth import LOCAL_USER, User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import ROW_COLUMN, Version
from workbench.labels import assignment
from workbench.models import evaluation
from workbench.models.eval_items import records

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
    return evaluation.answered_by_all(store, evals)




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
    first = _check_runs(store, evals, kind)
    runs = [evaluation.get_eval(store, e) for e in evals]
    _check_blind_text(runs, name=name or "", instructions=instructions or "")
    qs = check_questions(questions if questions is not None else DEFAULT_QUESTIONS) if kind == "rating" else ()
    if not isinstance(overlap, int) or not 1 <= overlap <= 100:
        raise WorkbenchError(f"overlap is {overlap!r}; expected reviewers per item from 1 to 100")
    people = _check_reviewers(store, reviewers, overlap) if reviewers else None
    items = eligible_items(store, evals)
    if not items:
        raise WorkbenchError("these runs have no test item that all of them answered yet; wait for the "
                             "evaluations to generate their answers")
    size = len(items) if sample_size in (None, 0) else int(sample_size)
    if not 1 <= size <= len(items):
        raise WorkbenchError(f"sample size {sample_size}; expected 1 to {len(items):,} (the test items every run "
                             "answered)")
    seed = int(seed) if seed is not None else secrets.randbelow(2**31)
    table = _plan_table(store, first, plan_items(seed, items, evals, kind, size))
    review_id = store.cursor().execute("SELECT nextval('wb_review_seq')").fetchall()[0][0]
    name = (name or "").strip() or f"Review {review_id}"

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


def _check_runs(store: Store, evals: list[int], kind: str):
    """The first run (A), once the runs make a review: distinct, enough of them, on the same test items."""
    if len(set(evals)) != len(evals):
        raise WorkbenchError("the same evaluation run is given twice; give each run once")
    if kind == "pairwise" and len(evals) < 2:
        raise WorkbenchError("a pairwise review compares two or more evaluation runs; give at least two "
                             "(or make a rating review of one run)")
    if not evals:
        raise WorkbenchError("give the evaluation run(s) to review (see `workbench evals`)")
    runs = [evaluation.get_eval(store, e) for e in evals]
    first = runs[0]
    for r in runs[1:]:
        if r.items_hash != first.items_hash:
            raise WorkbenchError(f"evaluations {first.eval_id} ({first.ref} {first.split}) and {r.eval_id} "
                                 f"({r.ref} {r.split}) were not run on the same test items; review runs from the "
                                 "same leaderboard")
    return first


def _check_reviewers(store: Store, reviewers: list[str], overlap: int) -> list[str]:
    from workbench.core import auth

    people = sorted({str(p).strip() for p in reviewers if str(p).strip()})
    unknown = [p for p in people if auth.has_users(store) and auth.get_user(store, p) is None]
    if unknown:
        raise WorkbenchError(f"no user named {unknown[0]!r}; add reviewers with "
                             f"`workbench users add NAME --role reviewer`")
    if len(people) < overlap:
        raise WorkbenchError(f"{len(people)} reviewer(s) cannot give {overlap} judgements per item; name at "
                             f"least {overlap} reviewers or lower the overlap")
    return people


def _plan_table(store: Store, first, plan: list[dict]) -> pd.DataFrame:
    """The plan as the rows of wb_review_items, with each item's record `_row` and category."""
    from workbench.data.browse import category_column

    version = evaluation.version_of(store, first)
    cat = category_column(store, version)
    row_of = evaluation.item_rows(store, first.eval_id, sorted({p["eval_item"] for p in plan}))
    cat_of = {r[ROW_COLUMN]: r.get(cat) for r in records(store, version, sorted(set(row_of.values())))} if cat else {}
    category = [cat_of.get(row_of[p["eval_item"]]) for p in plan]
    return pd.DataFrame({
        "item": [p["item"] for p in plan], "pos": [p["pos"] for p in plan],
        "eval_item": [p["eval_item"] for p in plan], "_row": [row_of[p["eval_item"]] for p in plan],
        "category": [None if c is None else str(c) for c in category], "left_eval": [p["shown"][0] for p in plan],
        "right_eval": pd.array([p["shown"][1] if len(p["shown"]) > 1 else None for p in plan], dtype="Int32")})




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





def review_items(store: Store, review: Review | int) -> pd.DataFrame:
    """The stored plan (owner's view): item, pos, eval_item, _row, category, left_eval, right_eval."""
    review = as_review(store, review)
    return store.cursor().execute(
        "SELECT item, pos, eval_item, _row, category, left_eval, right_eval FROM wb_review_items "
        "WHERE review_id = ? ORDER BY pos", [review.review_id]).df()


def as_review(store: Store, review: Review | int) -> Review:
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
    review = as_review(store, review)
    user = _check_reviewer(review, user)
    lease = lease_seconds if lease_seconds is not None else float(
        store.project.setting("review", "lease_seconds", assignment.LEASE_SECONDS))
    return assignment.claim_next(store, review.task, user.name, exclude=exclude, lease_seconds=lease)


def skip(store: Store, review: Review | int, user: User | None = None) -> None:
    review = as_review(store, review)
    user = _check_reviewer(review, user)
    assignment.release_claims(store, review.task, user.name)


def progress(store: Store, review: Review | int, user: User | None = None) -> dict:
    """done / remaining for this reviewer; complete / total items of the review."""
    review = as_review(store, review)
    return assignment.progress(store, review.task, (user or LOCAL_USER).name)


def prompt_messages(version: Version, record: dict) -> list[dict]:
    from workbench.core.canonical import canonical_to_messages

    if version.format == "classification":
        return [{"role": "user", "content": record.get("prompt") or ""}]
    msgs = canonical_to_messages(record.get("prompt") or "", record.get("completion"), record.get("system"),
                                 record.get("messages"))
    last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
    return msgs[:last] if last is not None else msgs


def blind_item(store: Store, review: Review | int, item: str, user: User | None = None) -> BlindItem:
    """What the reviewer is shown for one item: the prompt, the answers in display order, maybe the reference."""
    review = as_review(store, review)
    user = _check_reviewer(review, user)
    rows = store.cursor().execute("SELECT eval_item, _row, category, left_eval, right_eval FROM wb_review_items "
                                  "WHERE review_id = ? AND item = ?", [review.review_id, str(item)]).fetchall()
    if not rows:
        raise WorkbenchError(f"review {review.review_id} has no item {item!r}")
    eval_item, row, category, left, right = rows[0]
    shown = [left] + ([right] if right is not None else [])
    outs = evaluation.outputs(store, eval_item, shown)
    reference = evaluation.reference(store, review.evals[0], eval_item)
    version = evaluation.version_of(store, evaluation.get_eval(store, review.evals[0]))
    (record,) = records(store, version, [row]) or [{}]
    return BlindItem(review.review_id, str(item), review.kind, prompt_messages(version, record),
                     tuple(outs.get(e, "") for e in shown), reference if review.show_reference else None,
                     review.questions, review.instructions, category, my_judgement(store, review, item, user))


_LATEST = ("SELECT item, reviewer, question, value, reason, created_at FROM wb_ratings WHERE review_id = $rid "
           "QUALIFY row_number() OVER (PARTITION BY item, reviewer, question ORDER BY created_at DESC, "
           "rating_id DESC) = 1")


def my_judgement(store: Store, review: Review | int, item: str, user: User | None = None) -> dict:
    review = as_review(store, review)
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
    review = as_review(store, review)
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
    review = as_review(store, review)
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
    review = as_review(store, review)
    return tuple(store.cursor().execute("SELECT count(*), coalesce(max(rating_id), 0) FROM wb_ratings "
                                        "WHERE review_id = ?", [review.review_id]).fetchall()[0])


def history(store: Store, review: Review | int, item: str | None = None) -> pd.DataFrame:
    """Every rating row, oldest first: nothing entered is ever lost."""
    review = as_review(store, review)
    where, params = ("AND item = ?", [str(item)]) if item is not None else ("", [])
    return store.cursor().execute(
        f"SELECT item, reviewer, question, value, reason, created_at, source FROM wb_ratings WHERE review_id = ? "
        f"{where} ORDER BY created_at, rating_id", [review.review_id, *params]).df()


# ---------------------------------------------------------------- judgements (owner)

def judgements(store: Store, review: Review | int) -> pd.DataFrame:
    """The current judgements, unblinded: one row per (item, reviewer, question) with the runs behind them.

    Columns: item, reviewer, question, value, reason, eval_item, _row, category, left_eval, right_eval and,
    for pairwise reviews, winner_eval (NaN for a tie)."""
    review = as_review(store, review)
    df = store.cursor().execute(
        f"SELECT l.item, l.reviewer, l.question, l.value, l.reason, i.eval_item, i._row, i.category, i.left_eval, "
        f"i.right_eval FROM ({_LATEST}) l JOIN wb_review_items i ON i.review_id = $rid AND i.item = l.item "
        f"ORDER BY i.pos, l.reviewer, l.question", {"rid": review.review_id}).df()
    if review.kind == "pairwise":
        df["winner_eval"] = np.where(df["value"] == "left", df["left_eval"],
                                     np.where(df["value"] == "right", df["right_eval"], np.nan))
    return df


# ---------------------------------------------------------------- what was done from a review

def log_action(store: Store, review: Review, item, action: str, version: Version, rows, eval_id, text,
                who: str) -> None:
    """Note a flag or an edit made from this review (append-only: who, when, which records)."""
    now = now_utc()
    store.retry(lambda cur: cur.executemany(
        "INSERT INTO wb_review_actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[review.review_id, None if item is None else str(item), action, version.version_id, r, eval_id, text, who,
          now] for r in rows]))


def edits(store: Store, review: Review | int) -> pd.DataFrame:
    """The latest corrected response per (version, row) of this review: version_id, row, completion, who, at."""
    review = as_review(store, review)
    return store.cursor().execute(
        "SELECT version_id, _row AS row, text AS completion, item, who, created_at FROM wb_review_actions "
        "WHERE review_id = ? AND action = 'edit' QUALIFY row_number() OVER (PARTITION BY version_id, _row "
        "ORDER BY created_at DESC) = 1 ORDER BY version_id, _row", [review.review_id]).df()


def actions(store: Store, review: Review | int) -> pd.DataFrame:
    """Every flag and edit made from this review, oldest first."""
    review = as_review(store, review)
    return store.cursor().execute(
        "SELECT a.created_at, a.action, a.item, v.dataset || '@' || v.number AS version, a._row AS row, a.eval_id, "
        "a.text, a.who FROM wb_review_actions a LEFT JOIN wb_versions v USING (version_id) WHERE a.review_id = ? "
        "ORDER BY a.created_at, a._row", [review.review_id]).df()
