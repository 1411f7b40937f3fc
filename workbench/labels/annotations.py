"""Questions, annotations, adjudication and final labels.

A *question* belongs to one dataset version (the version being labelled) and says what is asked:
a single choice, multi-label tags, a rating on a scale with anchors, accept/reject, or a free-text
corrected response. Its *overlap* says how many different annotators must answer each record.

Record key: the value of the version's `id` column when that column is present, never empty and
unique; otherwise the 1-based record number (`_row + 1`) as text. The key is chosen when the
question is created and kept with it.

Annotations are append-only rows (question, record key, annotator, value, when, who entered it,
from where); the current answer of an annotator is their latest row. Adjudicated (gold) values
are append-only too. Values are text: a rating is '1'..'5', accept/reject is 'accept' or
'reject', multi-label tags are a JSON list of the chosen tags, sorted.

Final value of a record (`gold`): an admin's adjudicated value; else, once the record has all its
answers, the value they all gave; else, where the question says so, a strict majority of them.
Records with all their answers and none of these are *disputed*: the admin's review queue.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

import duckdb
import pandas as pd
import pyarrow as pa

from workbench.labels import assignment
from workbench.core.auth import LOCAL_USER, User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.data.export import FORMULA_START, unescape_csv_value
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version, version_columns, write_version

KINDS = ("single-choice", "multi-label", "rating", "accept-reject", "text")
ACCEPT, REJECT = "accept", "reject"
DEFAULT_SCALE = ("1", "2", "3", "4", "5")
MAX_CHOICES = 200
MAX_VALUE_CHARS = 200_000

# Records someone pointed at for another look (from an evaluation or a review). They come first in
# every question's queue over that version; `workbench.models.evaluate.flag_records` writes them.




# ---------------------------------------------------------------- questions

FLAGGED_OFFSET = 1 << 48  # added to the queue position of records nobody flagged


@dataclass(frozen=True)
class Question:
    question_id: int
    dataset: str
    name: str
    version_id: int
    kind: str
    choices: tuple[str, ...]
    anchors: dict = field(default_factory=dict)
    column: str | None = None
    key_column: str | None = None
    overlap: int = 1
    majority: bool = False
    guidelines: str = ""
    created_at: datetime | None = None
    created_by: str | None = None

    @property
    def key_sql(self) -> str:
        """SQL for a record's key in the version's view."""
        return self.key_sql_of("")

    def key_sql_of(self, alias: str) -> str:
        """The record key of table alias `alias` ('' for none)."""
        prefix = f"{alias}." if alias else ""
        if self.key_column:
            return f"CAST({prefix}{quote_ident(self.key_column)} AS VARCHAR)"
        return f"CAST({prefix}{ROW_COLUMN} + 1 AS VARCHAR)"

    def version(self, store: Store) -> Version:
        return _version_by_id(store, self.version_id)

    @property
    def task(self) -> assignment.Task:
        return assignment.Task(
            name=f"question:{self.question_id}",
            # flagged records first, then the rest in record order
            items_sql=(f"SELECT {self.key_sql_of('r')} AS item, r.{ROW_COLUMN} + CASE WHEN f._row IS NULL "
                       f"THEN {FLAGGED_OFFSET} ELSE 0 END AS pos FROM wb_v{self.version_id} r LEFT JOIN "
                       f"(SELECT DISTINCT _row FROM wb_flags WHERE version_id = {int(self.version_id)}) f "
                       f"ON f._row = r.{ROW_COLUMN}"),
            answers_sql=f"SELECT item, annotator FROM wb_annotations WHERE question_id = {int(self.question_id)}",
            overlap=self.overlap)

    def normalize(self, value) -> str:
        """The stored text of an answer, or WorkbenchError saying what was expected."""
        return normalize_value(self.kind, self.choices, value)


_Q_COLS = ("question_id, dataset, name, version_id, kind, choices, anchors, column_name, key_column, overlap, "
           "majority, guidelines, created_at, created_by")


def _question(row) -> Question:
    (qid, ds, name, vid, kind, choices, anchors, column, key, overlap, majority, guide, created, by) = row
    return Question(qid, ds, name, vid, kind, tuple(json.loads(choices)), json.loads(anchors), column, key, overlap,
                    bool(majority), guide, created, by)


def _version_by_id(store: Store, version_id: int) -> Version:
    rows = store.cursor().execute("SELECT dataset, number FROM wb_versions WHERE version_id = ?",
                                  [version_id]).fetchall()
    if not rows:
        raise WorkbenchError(f"dataset version #{version_id} no longer exists")
    return get_version(store, f"{rows[0][0]}@{rows[0][1]}")


def list_questions(store: Store, dataset: str | None = None) -> list[Question]:
    sql, params = f"SELECT {_Q_COLS} FROM wb_questions", []
    if dataset:
        sql, params = sql + " WHERE dataset = ?", [dataset]
    return [_question(r) for r in store.cursor().execute(sql + " ORDER BY dataset, name", params).fetchall()]


def get_question(store: Store, dataset: str, name: str) -> Question:
    rows = store.cursor().execute(f"SELECT {_Q_COLS} FROM wb_questions WHERE dataset = ? AND name = ?",
                                  [dataset, name]).fetchall()
    if not rows:
        known = [q.name for q in list_questions(store, dataset)]
        hint = f"; questions of {dataset}: {', '.join(known)}" if known else (
            f"; add one with `workbench questions add NAME --dataset {dataset} --kind single-choice` "
            "or import annotations with `workbench annotations import`")
        raise WorkbenchError(f"dataset {dataset!r} has no question named {name!r}{hint}")
    return _question(rows[0])


def _as_question(store: Store, dataset: str | Question, question: str | None) -> Question:
    if isinstance(dataset, Question):
        return dataset
    if isinstance(question, Question):
        return question
    return get_question(store, dataset, question)


def record_key_column(store: Store, version: Version) -> str | None:
    """'id' when the version has an `id` column that is never empty and unique; else None (record number)."""
    if "id" not in [c for c, _ in version_columns(store, version)]:
        return None
    n, distinct, empty = store.cursor().execute(
        f"SELECT count(*), count(DISTINCT CAST(id AS VARCHAR)), count(*) FILTER (WHERE id IS NULL OR "
        f"trim(CAST(id AS VARCHAR)) = '') FROM {version.table_name}").fetchall()[0]
    return "id" if n == distinct and not empty else None


def default_column(kind: str, name: str) -> str | None:
    """Where final labels go by default: a corrected response replaces `completion`; other kinds
    write a column named after the question (`category` updates the category)."""
    return "completion" if kind == "text" else name


def _check_choices(kind: str, choices) -> tuple[str, ...]:
    if kind not in KINDS:
        raise WorkbenchError(f"question kind {kind!r} is not known; expected one of {', '.join(KINDS)}")
    if kind == "text":
        return ()
    if kind == "accept-reject":
        return (ACCEPT, REJECT)
    out = []
    for c in choices or (DEFAULT_SCALE if kind == "rating" else ()):
        c = str(c).strip()
        if c and c not in out:
            out.append(c)
    if kind == "rating":
        try:
            nums = [int(c) for c in out]
        except ValueError:
            raise WorkbenchError(f"a rating scale is whole numbers such as 1,2,3,4,5; got {', '.join(out)}") from None
        out = [str(n) for n in sorted(nums)]
    if len(out) > MAX_CHOICES:
        raise WorkbenchError(f"{len(out)} choices is too many for buttons; use at most {MAX_CHOICES}")
    if kind == "multi-label" and not out:
        raise WorkbenchError("a multi-label question needs its tags: type them, or take them from a column")
    return tuple(out)


def column_values(store: Store, version: Version, column: str, *, limit: int = MAX_CHOICES + 1) -> list[str]:
    """The distinct values of a column, most common first: choices taken from the data."""
    names = [c for c, _ in version_columns(store, version)]
    if column not in names:
        raise WorkbenchError(f"{version.ref} has no column {column!r}; columns: {', '.join(names)}")
    rows = store.cursor().execute(
        f"SELECT CAST({quote_ident(column)} AS VARCHAR) AS v, count(*) AS n FROM {version.table_name} "
        f"WHERE {quote_ident(column)} IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT {int(limit)}").fetchall()
    return [r[0] for r in rows if r[0].strip()]


def add_question(store: Store, version: Version | str, name: str, kind: str, *, choices: Iterable | None = None,
                 choices_from: str | None = None, anchors: dict | None = None, column: str | None = None,
                 overlap: int = 1, majority: bool = False, guidelines: str = "", user: User | None = None) -> Question:
    """Ask `name` of every record of a version. Choices are typed in, or taken from a column's values."""
    user = require_role(user, "edit_questions")
    version = get_version(store, version) if isinstance(version, str) else version
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise WorkbenchError("a question needs a name of 1-64 characters, for example `category`")
    if choices_from:
        choices = [*(choices or []), *column_values(store, version, choices_from)]
        if len(choices) > MAX_CHOICES:
            raise WorkbenchError(f"column {choices_from!r} has more than {MAX_CHOICES} values; type the choices")
    choices = _check_choices(kind, choices)
    if overlap < 1 or overlap > 100:
        raise WorkbenchError(f"overlap is {overlap}; expected 1 to 100 annotators per record")
    column = column or default_column(kind, name)
    anchors = {str(k): str(v) for k, v in (anchors or {}).items() if str(v).strip()}
    key = record_key_column(store, version)

    def write(cur):
        if cur.execute("SELECT 1 FROM wb_questions WHERE dataset = ? AND name = ?",
                       [version.dataset, name]).fetchall():
            raise WorkbenchError(f"{version.dataset} already has a question named {name!r}; choose another name "
                                 "or change that one")
        qid = cur.execute("SELECT nextval('wb_question_seq')").fetchall()[0][0]
        cur.execute(f"INSERT INTO wb_questions ({_Q_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [qid, version.dataset, name, version.version_id, kind, json.dumps(list(choices)),
                     json.dumps(anchors), column, key, overlap, majority, guidelines or "", now_utc(), user.name])

    store.retry(write)
    return get_question(store, version.dataset, name)


def update_question(store: Store, dataset: str, name: str, *, guidelines: str | None = None,
                    overlap: int | None = None, majority: bool | None = None, choices: Iterable | None = None,
                    anchors: dict | None = None, column: str | None = None, user: User | None = None) -> Question:
    """Change what the owner may change once answers exist (not the kind, nor the version)."""
    user = require_role(user, "edit_questions")
    q = get_question(store, dataset, name)
    sets: dict = {}
    if guidelines is not None:
        sets["guidelines"] = guidelines
    if overlap is not None:
        if overlap < 1 or overlap > 100:
            raise WorkbenchError(f"overlap is {overlap}; expected 1 to 100 annotators per record")
        sets["overlap"] = int(overlap)
    if majority is not None:
        sets["majority"] = bool(majority)
    if choices is not None:
        sets["choices"] = json.dumps(list(_check_choices(q.kind, choices)))
    if anchors is not None:
        sets["anchors"] = json.dumps({str(k): str(v) for k, v in anchors.items() if str(v).strip()})
    if column is not None:
        sets["column_name"] = column.strip() or default_column(q.kind, q.name)
    if sets:
        sets.update(updated_at=now_utc(), updated_by=user.name)
        assignments = ", ".join(f"{k} = ?" for k in sets)
        store.retry(lambda cur: cur.execute(f"UPDATE wb_questions SET {assignments} WHERE question_id = ?",
                                            [*sets.values(), q.question_id]))
    return get_question(store, dataset, name)


# ---------------------------------------------------------------- values

_TRUE = {"accept", "accepted", "yes", "y", "true", "1", "ok", "good"}
_FALSE = {"reject", "rejected", "no", "n", "false", "0", "bad"}


def normalize_value(kind: str, choices: tuple[str, ...], value) -> str:
    """The stored text of an answer: checks it against the question and says what was expected."""
    if value is None or (isinstance(value, float) and value != value):
        raise WorkbenchError("the value is empty; expected an answer")
    if kind == "multi-label":
        tags = value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    tags = json.loads(text)
                except json.JSONDecodeError:
                    raise WorkbenchError(f"{text[:60]!r} is not a JSON list of tags") from None
            else:
                tags = [t for t in (p.strip() for p in text.replace(";", ",").split(",")) if t]
        if not isinstance(tags, (list, tuple, set)):
            raise WorkbenchError(f"{value!r} is not a list of tags")
        tags = sorted({str(t).strip() for t in tags if str(t).strip()})
        unknown = [t for t in tags if t not in choices]
        if unknown:
            raise WorkbenchError(f"{', '.join(map(repr, unknown))} is not a tag of this question; expected tags "
                                 f"among {', '.join(choices)}")
        return json.dumps(tags, ensure_ascii=False)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    if kind == "text":
        if not text.strip():
            raise WorkbenchError("the corrected response is empty; write the response, or keep the original")
        if len(text) > MAX_VALUE_CHARS:
            raise WorkbenchError(f"the response has {len(text):,} characters; at most {MAX_VALUE_CHARS:,} are kept")
        return text
    text = text.strip()
    if kind == "accept-reject":
        low = text.lower()
        if low in _TRUE:
            return ACCEPT
        if low in _FALSE:
            return REJECT
        raise WorkbenchError(f"{text!r} is neither accept nor reject; expected accept or reject")
    if kind == "rating":
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or not number.is_integer() or str(int(number)) not in choices:
            raise WorkbenchError(f"{text!r} is not on the rating scale; expected a whole number from {choices[0]} "
                                 f"to {choices[-1]}")
        return str(int(number))
    if not text:
        raise WorkbenchError("the value is empty; expected one of the choices")
    if choices and text not in choices:
        shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
        raise WorkbenchError(f"{text!r} is not a choice of this question; expected one of {shown}")
    return text


def tag_list(value: str | None) -> list[str]:
    """The tags of a stored multi-label value ('["a", "b"]')."""
    if not value:
        return []
    try:
        tags = json.loads(value)
    except json.JSONDecodeError:
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def display_value(kind: str, value: str | None) -> str:
    """A stored value as a person reads it (tags joined by commas)."""
    if value is None:
        return ""
    return ", ".join(tag_list(value)) or "(no tags)" if kind == "multi-label" else value


# ---------------------------------------------------------------- records

def record_rows(store: Store, question: Question, items: list[str]) -> dict[str, int]:
    """record key -> `_row` for the keys that are records of the question's version."""
    if not items:
        return {}
    cur = store.cursor()
    sql = (f"SELECT {question.key_sql} AS item, {ROW_COLUMN} FROM wb_v{question.version_id} "
           f"WHERE {question.key_sql} IN (SELECT unnest(?::VARCHAR[]))")
    return {k: r for k, r in cur.execute(sql, [list(items)]).fetchall()}


def record(store: Store, question: Question, item: str) -> dict:
    """One record's columns (and its `_row`), by key."""
    table = store.cursor().sql(
        f"SELECT * FROM wb_v{question.version_id} WHERE {question.key_sql} = ? LIMIT 1", params=[item]
    ).to_arrow_table()
    if not table.num_rows:
        raise WorkbenchError(f"{item!r} is not a record key of {question.version(store).ref}")
    return table.to_pylist()[0]


def flag_reasons(store: Store, question: Question, row: int) -> list[str]:
    """Why people asked for another look at this record (from evaluations and reviews), oldest first."""
    return [r[0] for r in store.cursor().execute(
        "SELECT reason FROM wb_flags WHERE version_id = ? AND _row = ? ORDER BY created_at",
        [question.version_id, int(row)]).fetchall()]


# ---------------------------------------------------------------- answering

def _insert_annotations(cur, question_id: int, rows: list[tuple]) -> None:
    """rows: (item, row, annotator, value, created_at, entered_by, source)."""
    if not rows:
        return
    table = pa.table({
        "item": pa.array([r[0] for r in rows], pa.string()),
        "record_row": pa.array([r[1] for r in rows], pa.int64()),
        "annotator": pa.array([r[2] for r in rows], pa.string()),
        "value": pa.array([r[3] for r in rows], pa.string()),
        "created_at": pa.array([r[4] for r in rows], pa.timestamp("us")),
        "entered_by": pa.array([r[5] for r in rows], pa.string()),
        "source": pa.array([r[6] for r in rows], pa.string()),
    })
    cur.register("wb_new_annotations", table)
    try:
        cur.execute(
            "INSERT INTO wb_annotations SELECT nextval('wb_annotation_seq'), ?, item, record_row, annotator, value, "
            "created_at, entered_by, source FROM wb_new_annotations", [question_id])
    finally:
        cur.unregister("wb_new_annotations")


def submit(store: Store, question: Question, item: str, value, *, user: User | None = None,
           source: str = "app", now: datetime | None = None) -> str:
    """Record the user's answer for one record (as themselves); returns the stored value.

    The answer is committed (in DuckDB's write-ahead log) when this returns."""
    user = require_role(user, "annotate")
    stored = question.normalize(value)
    row = record_rows(store, question, [str(item)]).get(str(item))
    if row is None:
        raise WorkbenchError(f"{item!r} is not a record key of {question.version(store).ref}")
    entry = (str(item), row, user.name, stored, now or now_utc(), user.name, source)

    def write(cur):
        _insert_annotations(cur, question.question_id, [entry])
        assignment.release(cur, question.task, user.name)

    store.retry(write)
    return stored


def next_item(store: Store, question: Question, user: User | None = None, *, exclude=(),
              lease_seconds: float | None = None) -> str | None:
    """The next record key this user should answer (claimed for a while), or None when they are done."""
    user = require_role(user, "annotate")
    lease = lease_seconds if lease_seconds is not None else float(
        store.project.setting("label", "lease_seconds", assignment.LEASE_SECONDS))
    return assignment.claim_next(store, question.task, user.name, exclude=exclude, lease_seconds=lease)


def skip(store: Store, question: Question, user: User | None = None) -> None:
    """Give the user's claimed record back to the queue (they pass it over for now)."""
    user = require_role(user, "annotate")
    assignment.release_claims(store, question.task, user.name)


def progress(store: Store, question: Question, user: User | None = None) -> dict:
    """done / remaining for this user; complete / total records of the question."""
    return assignment.progress(store, question.task, (user or LOCAL_USER).name)


_LATEST = ("SELECT item, record_row, annotator, value, created_at FROM wb_annotations WHERE question_id = $qid "
           "QUALIFY row_number() OVER (PARTITION BY item, annotator ORDER BY created_at DESC, annotation_id DESC) = 1")


def my_answers(store: Store, question: Question, user: User | None = None, *, limit: int = 200) -> pd.DataFrame:
    """The user's current answers, newest first: item, row, value, created_at (for "go back")."""
    df = store.cursor().execute(
        f"SELECT item, record_row AS row, value, created_at FROM ({_LATEST}) WHERE annotator = $annotator "
        f"ORDER BY created_at DESC LIMIT {int(limit)}",
        {"qid": question.question_id, "annotator": (user or LOCAL_USER).name}).df()
    df["row"] = df["row"].astype("Int64")
    return df


def my_answer(store: Store, question: Question, item: str, user: User | None = None) -> str | None:
    rows = store.cursor().execute(
        "SELECT value FROM wb_annotations WHERE question_id = ? AND item = ? AND annotator = ? "
        "ORDER BY created_at DESC, annotation_id DESC LIMIT 1",
        [question.question_id, item, (user or LOCAL_USER).name]).fetchall()
    return rows[0][0] if rows else None


def item_answers(store: Store, question: Question, item: str) -> pd.DataFrame:
    """Each annotator's current answer to one record (annotator, value, created_at), for adjudication."""
    return store.cursor().execute(
        f"SELECT annotator, value, created_at FROM ({_LATEST}) WHERE item = $item ORDER BY annotator",
        {"qid": question.question_id, "item": item}).df()


def answers(store: Store, dataset: str | Question, question: str | None = None) -> pd.DataFrame:
    """The latest answer of each annotator for each record: item, annotator, value, row (Int64)."""
    q = _as_question(store, dataset, question)
    df = store.cursor().execute(
        f"SELECT item, annotator, value, record_row AS row FROM ({_LATEST}) ORDER BY record_row, annotator",
        {"qid": q.question_id}).df()
    df["row"] = df["row"].astype("Int64")
    for col in ("item", "annotator", "value"):
        df[col] = df[col].astype(object)
    return df


def history(store: Store, question: Question, item: str | None = None, *, limit: int = 1000) -> pd.DataFrame:
    """Every answer and adjudication of a record (or of the question), oldest first: nothing is ever lost."""
    where, params = "question_id = ?", [question.question_id]
    if item is not None:
        where, params = where + " AND item = ?", params + [item]
    sql = (f"SELECT item, record_row AS row, annotator AS who, value, created_at, 'answer' AS entry, "
           f"entered_by, source FROM wb_annotations WHERE {where} UNION ALL "
           f"SELECT item, record_row, created_by, value, created_at, 'final (' || method || ')', created_by, 'app' "
           f"FROM wb_gold WHERE {where} ORDER BY created_at, entry LIMIT {int(limit)}")
    df = store.cursor().execute(sql, params + params).df()
    df["row"] = df["row"].astype("Int64")
    return df


# ---------------------------------------------------------------- agreement and adjudication

def questions_table(store: Store, questions: list[Question] | None = None) -> list[dict]:
    """One row per question: where it belongs, what it asks, and how many records are in each status."""
    rows = []
    for q in questions if questions is not None else list_questions(store):
        counts = status_counts(store, q)
        rows.append({"dataset": q.dataset, "version": q.version(store).number, "question": q.name, "kind": q.kind,
                     "annotators per record": q.overlap, "majority final": q.majority,
                     "choices": ", ".join(q.choices), "answered records": sum(counts.values()),
                     **{s: counts.get(s, 0) for s in ("agreed", "majority", "adjudicated", "disputed", "open")}})
    return rows


def _status_sql(q: Question) -> str:
    """Per answered record: n answers, distinct values, top value and its count, adjudicated value, status."""
    return f"""
    WITH latest AS ({_LATEST}),
    counts AS (SELECT item, value, count(*) AS c, min(record_row) AS record_row FROM latest GROUP BY item, value),
    per_item AS (SELECT item, min(record_row) AS record_row, sum(c)::BIGINT AS n, count(*) AS n_values,
                        arg_max(value, c) AS top, max(c) AS top_count FROM counts GROUP BY item),
    adjudicated AS (SELECT item, record_row, value, method FROM wb_gold WHERE question_id = $qid
                    QUALIFY row_number() OVER (PARTITION BY item ORDER BY created_at DESC, gold_id DESC) = 1),
    joined AS (SELECT coalesce(p.item, a.item) AS item, coalesce(p.record_row, a.record_row) AS record_row,
                      coalesce(p.n, 0) AS n, coalesce(p.n_values, 0) AS n_values, p.top, p.top_count,
                      a.value AS adjudicated, a.method
               FROM per_item p FULL JOIN adjudicated a USING (item))
    SELECT item, record_row AS row, n, n_values, top, top_count,
        CASE WHEN adjudicated IS NOT NULL THEN method
             WHEN n >= $overlap AND n_values = 1 THEN 'agreed'
             WHEN $majority AND n >= $overlap AND 2 * top_count > n THEN 'majority'
             WHEN n >= $overlap THEN 'disputed'
             ELSE 'open' END AS status,
        CASE WHEN adjudicated IS NOT NULL THEN adjudicated
             WHEN n >= $overlap AND n_values = 1 THEN top
             WHEN $majority AND n >= $overlap AND 2 * top_count > n THEN top END AS final
    FROM joined"""


def _status_params(q: Question) -> dict:
    return {"qid": q.question_id, "overlap": q.overlap, "majority": q.majority}


def item_status(store: Store, dataset: str | Question, question: str | None = None) -> pd.DataFrame:
    """One row per answered record: item, row, n (answers), n_values, top, top_count, status, final.
    status: adjudicated | agreed | majority | disputed | open (still needs answers)."""
    q = _as_question(store, dataset, question)
    df = store.cursor().execute(f"{_status_sql(q)} ORDER BY row", _status_params(q)).df()
    df["row"] = df["row"].astype("Int64")
    return df


def status_counts(store: Store, question: Question) -> dict[str, int]:
    rows = store.cursor().execute(f"SELECT status, count(*) FROM ({_status_sql(question)}) GROUP BY status",
                                  _status_params(question)).fetchall()
    return {s: n for s, n in rows}


def disputed(store: Store, question: Question, *, limit: int = 1000) -> pd.DataFrame:
    """The admin's review queue: records with all their answers and no final value, in record order."""
    df = store.cursor().execute(
        f"SELECT item, row, n, n_values FROM ({_status_sql(question)}) WHERE status = 'disputed' "
        f"ORDER BY row LIMIT {int(limit)}", _status_params(question)).df()
    df["row"] = df["row"].astype("Int64")
    return df


def gold(store: Store, dataset: str | Question, question: str | None = None) -> dict[str, str]:
    """record key -> final value (adjudicated, agreed, or majority where the question applies it)."""
    q = _as_question(store, dataset, question)
    rows = store.cursor().execute(f"SELECT item, final FROM ({_status_sql(q)}) WHERE final IS NOT NULL ORDER BY row",
                                  _status_params(q)).fetchall()
    return {item: value for item, value in rows}


def set_gold(store: Store, question: Question, item: str, value, *, user: User | None = None,
             method: str = "adjudicated") -> str:
    """The admin's final value for a record (kept with who and when; a later one replaces it)."""
    user = require_role(user, "adjudicate")
    stored = question.normalize(value)
    row = record_rows(store, question, [str(item)]).get(str(item))
    if row is None:
        raise WorkbenchError(f"{item!r} is not a record key of {question.version(store).ref}")
    store.retry(lambda cur: cur.execute(
        "INSERT INTO wb_gold VALUES (nextval('wb_annotation_seq'), ?, ?, ?, ?, ?, ?, ?)",
        [question.question_id, str(item), row, stored, method, now_utc(), user.name]))
    return stored


# ---------------------------------------------------------------- final labels into a new version

def write_labels_version(store: Store, dataset: str | Question, question: str | None, labels: dict[str, str], *,
                         column: str | None = None, recipe: dict, created_by: str | None = None,
                         user: User | None = None) -> Version:
    """A new version of the question's dataset version with `column` set to the label of each listed
    record (other records unchanged). A corrected-response question writes `completion` (and the
    last assistant turn of multi-turn chats)."""
    user = require_role(user, "write_version")
    q = _as_question(store, dataset, question)
    base = q.version(store)
    column = column or q.column or default_column(q.kind, q.name)
    if not labels:
        raise WorkbenchError(f"no final labels for {q.name!r} yet: adjudicate the disputed records or wait for "
                             "the answers")
    known = record_rows(store, q, list(labels))
    unknown = [k for k in labels if k not in known]
    if unknown:
        raise WorkbenchError(f"{len(unknown)} label keys are not records of {base.ref}, for example {unknown[0]!r}")
    types = dict(version_columns(store, base))
    target = types.get(column)
    value_sql = "l.value" if target in (None, "VARCHAR") else f"CAST(l.value AS {target})"
    label_table = pa.table({"item": pa.array(list(labels), pa.string()),
                            "value": pa.array([str(v) for v in labels.values()], pa.string())})
    if target is None:
        select = f"t.* EXCLUDE ({ROW_COLUMN}), {value_sql} AS {quote_ident(column)}"
    else:
        select = f"t.* EXCLUDE ({ROW_COLUMN}) REPLACE (coalesce({value_sql}, t.{quote_ident(column)}) AS " \
                 f"{quote_ident(column)})"
    chat = column == "completion" and "messages" in types
    if chat:
        select += ", l.value AS wb_new_value"
    sql = (f"SELECT {select} FROM {base.table_name} t LEFT JOIN wb_labels l ON {q.key_sql_of('t')} = l.item "
           f"ORDER BY t.{ROW_COLUMN}")

    def batches() -> Iterator[pa.Table]:
        cur = store.con.cursor()
        try:
            cur.register("wb_labels", label_table)
            try:
                reader = cur.sql(sql).to_arrow_reader(50_000)
            except Exception as exc:  # duckdb.ConversionException and friends: a value does not fit the column
                raise WorkbenchError(f"the labels do not fit column {column!r} ({target}): "
                                     f"{str(exc).splitlines()[0]}") from None
            for batch in reader:
                table = pa.Table.from_batches([batch])
                yield _update_chat_turns(table) if chat else table
        finally:
            cur.close()

    recipe = {"op": "labels", "question": q.name, "column": column, "from": base.ref, "labels": len(labels),
              **(recipe or {})}
    return write_version(store, base.dataset, batches(), kind="labels", fmt=base.format, recipe=recipe,
                         info=base.info, parent_id=base.version_id, created_by=created_by or user.name)


def _update_chat_turns(table: pa.Table) -> pa.Table:
    """A corrected completion also replaces the last assistant turn of a multi-turn chat record."""
    new = table.column("wb_new_value").to_pylist()
    table = table.drop_columns(["wb_new_value"])
    messages = table.column("messages").to_pylist()
    changed = False
    for i, value in enumerate(new):
        if value is not None and messages[i]:
            turns = json.loads(messages[i])
            if turns and turns[-1].get("role") == "assistant":
                turns[-1]["content"] = value
                messages[i] = json.dumps(turns, ensure_ascii=False)
                changed = True
    if changed:
        idx = table.column_names.index("messages")
        table = table.set_column(idx, "messages", pa.array(messages, table.schema.field("messages").type))
    return table


def apply_final_labels(store: Store, question: Question, *, column: str | None = None,
                       user: User | None = None) -> Version:
    """write_labels_version with the question's final values (gold)."""
    labels = gold(store, question)
    return write_labels_version(store, question, None, labels, column=column, user=user,
                                recipe={"source": "gold", "overlap": question.overlap, "majority": question.majority})


# ---------------------------------------------------------------- import and export

class AnnotationsRejected(WorkbenchError):
    """Some lines of an annotation file are bad and on_error='fail': nothing was imported."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def _read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) from CSV/TSV (header is line 1), JSONL, a JSON list, or Parquet (record number)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            reader.fieldnames  # reads the header: line 1
            line = reader.line_num
            for row in reader:
                yield line + 1, {k: unescape_csv_value(v) for k, v in row.items() if k is not None}
                line = reader.line_num
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8-sig") as f:
            for n, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield n, {"__error__": f"not valid JSON ({exc.msg})"}
                    continue
                yield n, obj if isinstance(obj, dict) else {"__error__": "not a JSON object"}
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if not isinstance(data, list):
            raise WorkbenchError(f"{path.name}: expected a JSON list of objects")
        for n, obj in enumerate(data, 1):
            yield n, obj if isinstance(obj, dict) else {"__error__": "not a JSON object"}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(65_536):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    else:
        raise WorkbenchError(f"{path.name}: annotation files are .csv, .tsv, .jsonl, .json or .parquet")


def _parse_time(text) -> datetime:
    if isinstance(text, datetime):
        stamp = pd.Timestamp(text)
    else:
        stamp = pd.Timestamp(str(text).strip())  # ValueError when not a time
    if stamp is pd.NaT:
        raise ValueError("empty")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _infer_kind(values: list[str]) -> str:
    nums = []
    for v in values:
        try:
            f = float(v)
        except ValueError:
            return "single-choice"
        if not f.is_integer():
            return "single-choice"
        nums.append(int(f))
    return "rating" if nums and min(nums) >= 0 and max(nums) <= 10 else "single-choice"


def import_annotations(store: Store, path, *, dataset: str, question: str, item_col: str, annotator_col: str,
                       value_col: str, time_col: str | None = None, question_col: str | None = None,
                       kind: str | None = None, overlap: int | None = None, on_error: str = "fail",
                       user: User | None = None, max_errors: int = 1000) -> dict:
    """Append long-format annotations (one row per record, annotator and question) to a question.

    A row whose question column (`question_col`, or a column named `question` when there is one)
    names another question is passed over. The question is created on the dataset's newest version
    when it does not exist yet (its kind guessed from the values unless given). An answer equal to
    the annotator's current one is not stored again, so importing a file twice changes nothing.
    With on_error='fail' one bad line means nothing is imported (AnnotationsRejected lists them all).
    Returns imported, unchanged, skipped, errors [{line, error}], items, annotators, question.
    """
    user = require_role(user, "import")
    if on_error not in ("fail", "skip"):
        raise WorkbenchError(f"on_error is {on_error!r}; expected fail or skip")
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no such file: {path}")
    rows = list(_read_rows(path))
    if not rows:
        raise WorkbenchError(f"{path.name} has no rows")
    header = set().union(*(r.keys() for _, r in rows[:1000])) - {"__error__"}
    if question_col is None and "question" in header and "question" not in (item_col, annotator_col, value_col):
        question_col = "question"
    for flag, col in (("--item-col", item_col), ("--annotator-col", annotator_col), ("--value-col", value_col),
                      ("--time-col", time_col), ("--question-col", question_col)):
        if col and col not in header:
            raise WorkbenchError(f"{path.name} has no column {col!r} ({flag}); its columns: "
                                 f"{', '.join(sorted(header))}")
    if question_col:
        rows = [(n, r) for n, r in rows if "__error__" in r or str(r.get(question_col, "")).strip() == question]
        if not rows:
            raise WorkbenchError(f"no row of {path.name} has {question_col} = {question!r}")

    try:
        q = get_question(store, dataset, question)
    except WorkbenchError:
        get_version(store, dataset)  # a clear error when the dataset does not exist
        values = [str(r.get(value_col)) for _, r in rows if r.get(value_col) not in (None, "")]
        guessed = kind or _infer_kind(values[:10_000])
        choices = None
        if guessed == "single-choice":
            version = get_version(store, dataset)
            present = {_plain(v) for v in values}
            if question in [c for c, _ in version_columns(store, version)]:  # e.g. `category`: its values too
                present |= set(column_values(store, version, question, limit=MAX_CHOICES + 1))
            choices = sorted(present) if len(present) <= MAX_CHOICES else None
        per_item: dict = {}
        for _, r in rows:
            per_item.setdefault(str(r.get(item_col)), set()).add(str(r.get(annotator_col)))
        q = add_question(store, dataset, question, guessed, choices=choices if guessed != "rating" else None,
                         overlap=overlap or max(1, max(len(a) for a in per_item.values())), user=user)

    errors: list[dict] = []
    good: list[tuple] = []
    now = now_utc()
    rows_by_key = record_rows(store, q, sorted({str(r.get(item_col, "")).strip() for _, r in rows
                                                 if "__error__" not in r}))
    key_desc = f"a value of its `{q.key_column}` column" if q.key_column else \
        f"a record number from 1 to {q.version(store).row_count:,}"
    for n, r in rows:
        def bad(field_name, message):
            if len(errors) < max_errors:
                errors.append({"line": n, "field": field_name, "error": message})
        if "__error__" in r:
            bad(None, r["__error__"])
            continue
        item = str(r.get(item_col) if r.get(item_col) is not None else "").strip()
        if item.endswith(".0") and not q.key_column and item[:-2].isdigit():
            item = item[:-2]
        if item not in rows_by_key:
            bad(item_col, f"{item_col}: {item!r} is not a record of {q.version(store).ref}; expected {key_desc}")
            continue
        annotator = str(r.get(annotator_col) or "").strip()
        if not annotator:
            bad(annotator_col, f"{annotator_col}: empty; expected the annotator's name")
            continue
        try:
            value = q.normalize(r.get(value_col) if r.get(value_col) != "" else None)
        except WorkbenchError as exc:
            bad(value_col, f"{value_col}: {exc}")
            continue
        when = now
        if time_col:
            try:
                when = _parse_time(r.get(time_col))
            except (ValueError, TypeError):
                bad(time_col, f"{time_col}: {r.get(time_col)!r} is not a time; expected ISO 8601 such as "
                              "2024-05-01T13:45:00Z")
                continue
        good.append((item, rows_by_key[item], annotator, value, when, user.name, f"import:{path.name}"))
    error_count = len(rows) - len(good)
    result = {"question": q.name, "dataset": q.dataset, "kind": q.kind, "lines": len(rows), "imported": 0,
              "unchanged": 0, "skipped": error_count if on_error == "skip" else 0, "errors": errors,
              "error_count": error_count}
    if error_count and on_error == "fail":
        result["skipped"] = 0
        first = errors[0]
        raise AnnotationsRejected(
            f"{error_count:,} bad line{'s' if error_count != 1 else ''} in {path.name}, nothing was imported; "
            f"line {first['line']}: {first['error']}", result)
    if time_col:  # a history with times: store each row not stored already (same time and value)
        stored = set(store.cursor().execute(
            "SELECT item, annotator, value, created_at FROM wb_annotations WHERE question_id = ?",
            [q.question_id]).fetchall())
        fresh = [g for g in dict.fromkeys(good) if (g[0], g[2], g[3], g[4]) not in stored]
    else:  # no times: the file's last answer of each annotator per record, unless it is already the current one
        last = {(g[0], g[2]): g for g in good}
        current = {(i, a): v for i, a, v in store.cursor().execute(
            f"SELECT item, annotator, value FROM ({_LATEST})", {"qid": q.question_id}).fetchall()}
        fresh = [g for key, g in last.items() if current.get(key) != g[3]]
    store.retry(lambda cur: _insert_annotations(cur, q.question_id, fresh))
    if len(fresh) > 10_000:
        try:  # a bulk load: fold the WAL into the database file now rather than on the next open
            store.checkpoint()
        except duckdb.Error:  # another transaction is running (the app); DuckDB checkpoints later by itself
            pass
    result.update(imported=len(fresh), unchanged=len(good) - len(fresh), items=len({g[0] for g in good}),
                  annotators=len({g[2] for g in good}))
    return result


def _plain(v) -> str:
    text = str(v).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


EXPORT_COLUMNS = ("dataset", "version", "question", "item", "row", "annotator", "value", "time", "entered_by",
                  "source")


def export_annotations(store: Store, out, *, dataset: str | None = None, question: str | None = None,
                       history_rows: bool = False) -> dict:
    """Write annotations in long format (CSV or JSONL by the file's suffix), written atomically.
    The current answers by default; every row ever entered with history_rows. Columns: dataset,
    version, question, item, row (1-based record number), annotator, value, time (UTC, ISO 8601),
    entered_by, source."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("csv", "jsonl"):
        raise WorkbenchError(f"{out.name}: annotations export to .csv or .jsonl")
    where, params = [], []
    if dataset:
        where.append("q.dataset = ?")
        params.append(dataset)
    if question:
        where.append("q.name = ?")
        params.append(question)
    if dataset and question:
        get_question(store, dataset, question)
    latest = "" if history_rows else (
        "QUALIFY row_number() OVER (PARTITION BY a.question_id, a.item, a.annotator "
        "ORDER BY a.created_at DESC, a.annotation_id DESC) = 1")
    sql = (f"SELECT q.dataset, v.number AS version, q.name AS question, a.item, a.record_row + 1 AS row, "
           f"a.annotator, a.value, strftime(a.created_at, '%Y-%m-%dT%H:%M:%S.%fZ') AS time, a.entered_by, a.source "
           f"FROM wb_annotations a JOIN wb_questions q USING (question_id) "
           f"JOIN wb_versions v ON v.version_id = q.version_id "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} {latest} "
           f"ORDER BY q.dataset, q.name, a.record_row, a.annotator, a.created_at, a.annotation_id")
    cur = store.con.cursor()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=out.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f) if fmt == "csv" else None
            if writer:
                writer.writerow(EXPORT_COLUMNS)
            for batch in cur.sql(sql, params=params).to_arrow_reader(50_000):
                for row in batch.to_pylist():
                    count += 1
                    if writer:
                        writer.writerow([_csv_safe(row[c]) for c in EXPORT_COLUMNS])
                    else:
                        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        cur.close()
    return {"path": str(out), "records": count, "format": fmt}


def _csv_safe(value):
    """Same rule as dataset exports: a cell a spreadsheet would run as a formula gets a leading '."""
    if isinstance(value, str) and value[:1] in FORMULA_START:
        return "'" + value
    return value
