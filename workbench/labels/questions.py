"""Questions: what is asked of every record of one dataset version, and how records are keyed.

A *question* belongs to one dataset version (the version being labelled) and says what is asked:
its kind (workbench.labels.kinds: a single choice, multi-label tags, a rating on a scale with
anchors, accept/reject, or a free-text corrected response) and choices. Its *overlap* says how
many different annotators must answer each record.

Record key: the value of the version's `id` column when that column is present, never empty and
unique; otherwise the 1-based record number (`_row + 1`) as text. The key is chosen when the
question is created and kept with it.

This module owns the table wb_questions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from workbench.core.auth import User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, archived_at, get_version, version_columns
from workbench.labels import assignment, kinds, queue_order


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
    choices_from: str | None = None
    """The column the choices were taken from: it holds the answer, so annotators never see it."""
    shown_columns: tuple[str, ...] | None = None
    """The metadata columns annotators see beside each record; None: every one but the hidden ones."""
    queue_order: str = queue_order.DEFAULT
    """The order the queue hands out records in (workbench.labels.queue_order.ORDERS)."""
    certainty_file: str | None = None
    """Uncertain order: the label-error finder's certainty file of the version, found when the question is loaded."""

    def metadata(self, record: dict) -> dict:
        """The record's metadata as an annotator may see it: never the texts (shown as the conversation),
        the row number, the column the answers go to, nor the column the choices came from (both would give
        the answer away); only `shown_columns` when the owner chose them."""
        from workbench.core.formats import CANONICAL

        hidden = {*CANONICAL, ROW_COLUMN, self.column, self.choices_from}
        keep = [k for k in (record if self.shown_columns is None else self.shown_columns) if k not in hidden]
        return {k: record[k] for k in keep if record.get(k) is not None}

    @property
    def spec(self) -> kinds.Kind:
        """What the question's kind means: how answers are checked, shown and given."""
        return kinds.of(self.kind)

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
        return version_by_id(store, self.version_id)

    @property
    def task(self) -> assignment.Task:
        return assignment.Task(
            name=f"question:{self.question_id}",
            items_sql=queue_order.items_sql(self),  # flagged records first, then in the question's order
            answers_sql=f"SELECT item, annotator FROM wb_annotations WHERE question_id = {int(self.question_id)}",
            overlap=self.overlap)

    def normalize(self, value) -> str:
        """The stored text of an answer, or WorkbenchError saying what was expected."""
        return self.spec.normalize(self.choices, value)


_Q_COLS = ("question_id, dataset, name, version_id, kind, choices, anchors, column_name, key_column, overlap, "
           "majority, guidelines, created_at, created_by, choices_from, shown_columns, queue_order")


def _question(store: Store, row) -> Question:
    (qid, ds, name, vid, kind, choices, anchors, column, key, overlap, majority, guide, created, by, source,
     shown, order) = row
    q = Question(qid, ds, name, vid, kind, tuple(json.loads(choices)), json.loads(anchors), column, key, overlap,
                 bool(majority), guide, created, by, source, None if shown is None else tuple(json.loads(shown)),
                 order or queue_order.DEFAULT)
    if q.queue_order != queue_order.DEFAULT:
        q = replace(q, certainty_file=queue_order.certainty_file(store, q))
    return q


def version_by_id(store: Store, version_id: int) -> Version:
    """The dataset version with this id, or WorkbenchError when it was deleted."""
    rows = store.cursor().execute("SELECT dataset, number FROM wb_versions WHERE version_id = ?",
                                  [version_id]).fetchall()
    if not rows:
        raise WorkbenchError(f"dataset version #{version_id} no longer exists")
    return get_version(store, f"{rows[0][0]}@{rows[0][1]}")


def list_questions(store: Store, dataset: str | None = None, *, archived: bool = True) -> list[Question]:
    """The questions (of one dataset); archived=False leaves out those of archived datasets (the app's pickers)."""
    sql, params = f"SELECT {_Q_COLS} FROM wb_questions", []
    if dataset:
        sql, params = sql + " WHERE dataset = ?", [dataset]
    hidden = () if archived else archived_at(store)
    return [_question(store, r) for r in store.cursor().execute(sql + " ORDER BY dataset, name", params).fetchall()
            if r[1] not in hidden]  # r[1]: dataset


def find_question(store: Store, dataset: str, name: str) -> Question | None:
    """The question, or None when the dataset has no question of that name."""
    rows = store.cursor().execute(f"SELECT {_Q_COLS} FROM wb_questions WHERE dataset = ? AND name = ?",
                                  [dataset, name]).fetchall()
    return _question(store, rows[0]) if rows else None


def get_question(store: Store, dataset: str, name: str) -> Question:
    """The question, or WorkbenchError naming the dataset's questions (or how to add one)."""
    q = find_question(store, dataset, name)
    if q is None:
        known = [q.name for q in list_questions(store, dataset)]
        hint = f"; questions of {dataset}: {', '.join(known)}" if known else (
            f"; add one with `workbench questions add NAME --dataset {dataset} --kind single-choice` "
            "or import annotations with `workbench annotations import`")
        raise WorkbenchError(f"dataset {dataset!r} has no question named {name!r}{hint}")
    return q


def as_question(store: Store, dataset: str | Question, question: str | Question | None) -> Question:
    """A Question given as itself, or by dataset and name."""
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


def column_values(store: Store, version: Version, column: str, *, limit: int = kinds.MAX_CHOICES + 1) -> list[str]:
    """The distinct values of a column, most common first: choices taken from the data."""
    names = [c for c, _ in version_columns(store, version)]
    if column not in names:
        raise WorkbenchError(f"{version.ref} has no column {column!r}; columns: {', '.join(names)}")
    rows = store.cursor().execute(
        f"SELECT CAST({quote_ident(column)} AS VARCHAR) AS v, count(*) AS n FROM {version.table_name} "
        f"WHERE {quote_ident(column)} IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT {int(limit)}").fetchall()
    return [r[0] for r in rows if r[0].strip()]


def _check_overlap(overlap: int) -> int:
    if overlap < 1 or overlap > 100:
        raise WorkbenchError(f"overlap is {overlap}; expected 1 to 100 annotators per record")
    return int(overlap)


def parse_anchors(text: str | None) -> dict[str, str]:
    """Rating anchors typed as VALUE=TEXT pairs, comma-separated: '1=useless, 5=perfect'."""
    pairs = [p.partition("=") for p in (text or "").split(",") if p.strip()]
    bad = [p[0].strip() for p in pairs if not p[1]]
    if bad:
        raise WorkbenchError(f"anchor {bad[0]!r} is not VALUE=TEXT; write pairs such as 1=useless, 5=perfect")
    return {k.strip(): v.strip() for k, _, v in pairs}


def _clean_anchors(anchors: dict | None) -> dict:
    return {str(k): str(v) for k, v in (anchors or {}).items() if str(v).strip()}


def _shown(store: Store, version: Version, shown_columns: Iterable[str] | None) -> str | None:
    if shown_columns is None:
        return None
    names = [c for c, _ in version_columns(store, version)]
    unknown = [c for c in shown_columns if c not in names]
    if unknown:
        raise WorkbenchError(f"{version.ref} has no column {unknown[0]!r} to show; columns: {', '.join(names)}")
    return json.dumps(list(dict.fromkeys(shown_columns)))


def add_question(store: Store, version: Version | str, name: str, kind: str, *, choices: Iterable | None = None,
                 choices_from: str | None = None, anchors: dict | None = None, column: str | None = None,
                 overlap: int = 1, majority: bool | None = None, guidelines: str = "",
                 shown_columns: Iterable[str] | None = None, order: str | None = None,
                 user: User | None = None) -> Question:
    """Ask `name` of every record of a version. Choices are typed in, or taken from a column's values.
    majority None: the kind's default (a strict majority settles a single-choice record: 2 of 3 agreeing is
    not a dispute). shown_columns: the metadata annotators see (None: all but the column the choices came
    from and the one the answers go to). order: the queue's order (queue_order.ORDERS; default: record order)."""
    user = require_role(user, "edit_questions")
    version = get_version(store, version) if isinstance(version, str) else version
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise WorkbenchError("a question needs a name of 1-64 characters, for example `category`")
    if choices_from:
        choices = [*(choices or []), *column_values(store, version, choices_from)]
        if len(choices) > kinds.MAX_CHOICES:
            raise WorkbenchError(f"column {choices_from!r} has more than {kinds.MAX_CHOICES} values; type the "
                                 "choices")
    spec = kinds.of(kind)
    majority = spec.majority_default if majority is None else majority
    row = {"dataset": version.dataset, "name": name, "version_id": version.version_id, "kind": kind,
           "choices": json.dumps(list(spec.check_choices(choices))), "anchors": json.dumps(_clean_anchors(anchors)),
           "column_name": column or spec.default_column(name), "key_column": record_key_column(store, version),
           "overlap": _check_overlap(overlap), "majority": majority, "guidelines": guidelines or "",
           "created_at": now_utc(), "created_by": user.name, "choices_from": choices_from or None,
           "shown_columns": _shown(store, version, shown_columns), "queue_order": queue_order.check_order(order)}
    store.retry(lambda cur: _insert_question(cur, row))
    return get_question(store, version.dataset, name)


def _insert_question(cur, row: dict) -> None:
    """row: the columns of a new wb_questions row but its question_id, which is drawn here."""
    if cur.execute("SELECT 1 FROM wb_questions WHERE dataset = ? AND name = ?",
                   [row["dataset"], row["name"]]).fetchall():
        raise WorkbenchError(f"{row['dataset']} already has a question named {row['name']!r}; choose another name "
                             "or change that one")
    qid = cur.execute("SELECT nextval('wb_question_seq')").fetchall()[0][0]
    cur.execute(f"INSERT INTO wb_questions (question_id, {', '.join(row)}) VALUES (?{', ?' * len(row)})",
                [qid, *row.values()])


def update_question(store: Store, dataset: str, name: str, *, guidelines: str | None = None,
                    overlap: int | None = None, majority: bool | None = None, choices: Iterable | None = None,
                    anchors: dict | None = None, column: str | None = None, shown_columns: Iterable[str] | None = None,
                    order: str | None = None, user: User | None = None) -> Question:
    """Change what the owner may change once answers exist (not the kind, nor the version)."""
    user = require_role(user, "edit_questions")
    q = get_question(store, dataset, name)
    changes = {"guidelines": guidelines,
               "overlap": None if overlap is None else _check_overlap(overlap),
               "majority": None if majority is None else bool(majority),
               "choices": None if choices is None else json.dumps(list(q.spec.check_choices(choices))),
               "anchors": None if anchors is None else json.dumps(_clean_anchors(anchors)),
               "column_name": None if column is None else column.strip() or q.spec.default_column(q.name),
               "shown_columns": None if shown_columns is None else _shown(store, q.version(store), shown_columns),
               "queue_order": None if order is None else queue_order.check_order(order)}
    sets = {k: v for k, v in changes.items() if v is not None}
    if sets:
        sets.update(updated_at=now_utc(), updated_by=user.name)
        assignments = ", ".join(f"{k} = ?" for k in sets)
        store.retry(lambda cur: cur.execute(f"UPDATE wb_questions SET {assignments} WHERE question_id = ?",
                                            [*sets.values(), q.question_id]))
    return get_question(store, dataset, name)


# ---------------------------------------------------------------- records

def record_rows(store: Store, question: Question, items: list[str]) -> dict[str, int]:
    """record key -> `_row` for the keys that are records of the question's version."""
    if not items:
        return {}
    cur = store.cursor()
    sql = (f"SELECT {question.key_sql} AS item, {ROW_COLUMN} FROM wb_v{question.version_id} "
           f"WHERE {question.key_sql} IN (SELECT unnest(?::VARCHAR[]))")
    return {k: r for k, r in cur.execute(sql, [list(items)]).fetchall()}


def record_row(store: Store, question: Question, item) -> int:
    """The `_row` of one record key, or WorkbenchError when it is not a record of the question's version."""
    row = record_rows(store, question, [str(item)]).get(str(item))
    if row is None:
        raise WorkbenchError(f"{item!r} is not a record key of {question.version(store).ref}")
    return row


def record(store: Store, question: Question, item: str) -> dict:
    """One record's columns (and its `_row`), by key."""
    table = store.cursor().sql(
        f"SELECT * FROM wb_v{question.version_id} WHERE {question.key_sql} = ? LIMIT 1", params=[item]
    ).to_arrow_table()
    if not table.num_rows:
        raise WorkbenchError(f"{item!r} is not a record key of {question.version(store).ref}")
    return table.to_pylist()[0]
