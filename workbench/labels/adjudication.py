"""Final values of records: agreement, disputes, adjudication, and final labels into a new version.

Final value of a record (`gold`): an admin's adjudicated value; else, once the record has all its
answers, the value they all gave; else, where the question says so, a strict majority of them.
Records with all their answers and none of these are *disputed*: the admin's review queue.
Adjudicated values are append-only, like answers (this module owns the table wb_gold).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa

from workbench.core.auth import User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, version_columns, write_version
from workbench.labels.annotations import LATEST_SQL
from workbench.labels.questions import Question, as_question, list_questions, record_row, record_rows

STATUSES = ("agreed", "majority", "adjudicated", "disputed", "open")


def questions_table(store: Store, questions: list[Question] | None = None) -> list[dict]:
    """One row per question: where it belongs, what it asks, and how many records are in each status."""
    rows = []
    for q in questions if questions is not None else list_questions(store):
        counts = status_counts(store, q)
        rows.append({"dataset": q.dataset, "version": q.version(store).number, "question": q.name, "kind": q.kind,
                     "annotators per record": q.overlap, "majority final": q.majority,
                     "choices": ", ".join(q.choices), "answered records": sum(counts.values()),
                     **{s: counts.get(s, 0) for s in STATUSES}})
    return rows


def _status_sql(q: Question) -> str:
    """Per answered record: n answers, distinct values, top value and its count, adjudicated value, status."""
    return f"""
    WITH latest AS ({LATEST_SQL}),
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
    q = as_question(store, dataset, question)
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
    q = as_question(store, dataset, question)
    rows = store.cursor().execute(f"SELECT item, final FROM ({_status_sql(q)}) WHERE final IS NOT NULL ORDER BY row",
                                  _status_params(q)).fetchall()
    return {item: value for item, value in rows}


def set_gold(store: Store, question: Question, item: str, value, *, user: User | None = None,
             method: str = "adjudicated") -> str:
    """The admin's final value for a record (kept with who and when; a later one replaces it)."""
    user = require_role(user, "adjudicate")
    stored = question.normalize(value)
    row = record_row(store, question, item)
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
    q = as_question(store, dataset, question)
    base = q.version(store)
    column = column or q.column or q.spec.default_column(q.name)
    _check_labels(store, q, base, labels)
    types = dict(version_columns(store, base))
    chat = column == "completion" and "messages" in types
    sql = _labelled_sql(q, base, column, types.get(column), chat)
    label_table = pa.table({"item": pa.array(list(labels), pa.string()),
                            "value": pa.array([str(v) for v in labels.values()], pa.string())})
    batches = _labelled_batches(store, sql, label_table, chat, f"{column!r} ({types.get(column)})")
    recipe = {"op": "labels", "question": q.name, "column": column, "from": base.ref, "labels": len(labels),
              **(recipe or {})}
    return write_version(store, base.dataset, batches, kind="labels", fmt=base.format, recipe=recipe,
                         info=base.info, parent_id=base.version_id, created_by=created_by or user.name)


def _check_labels(store: Store, q: Question, base: Version, labels: dict[str, str]) -> None:
    if not labels:
        raise WorkbenchError(f"no final labels for {q.name!r} yet: adjudicate the disputed records or wait for "
                             "the answers")
    known = record_rows(store, q, list(labels))
    unknown = [k for k in labels if k not in known]
    if unknown:
        raise WorkbenchError(f"{len(unknown)} label keys are not records of {base.ref}, for example {unknown[0]!r}")


def _labelled_sql(q: Question, base: Version, column: str, target: str | None, chat: bool) -> str:
    """The base version with `column` set from the table wb_labels (item, value); its type kept."""
    value_sql = "l.value" if target in (None, "VARCHAR") else f"CAST(l.value AS {target})"
    if target is None:
        select = f"t.* EXCLUDE ({ROW_COLUMN}), {value_sql} AS {quote_ident(column)}"
    else:
        select = f"t.* EXCLUDE ({ROW_COLUMN}) REPLACE (coalesce({value_sql}, t.{quote_ident(column)}) AS " \
                 f"{quote_ident(column)})"
    if chat:
        select += ", l.value AS wb_new_value"
    return (f"SELECT {select} FROM {base.table_name} t LEFT JOIN wb_labels l ON {q.key_sql_of('t')} = l.item "
            f"ORDER BY t.{ROW_COLUMN}")


def _labelled_batches(store: Store, sql: str, label_table: pa.Table, chat: bool, target: str) -> Iterator[pa.Table]:
    cur = store.con.cursor()
    try:
        cur.register("wb_labels", label_table)
        try:
            reader = cur.sql(sql).to_arrow_reader(50_000)
        except Exception as exc:  # duckdb.ConversionException and friends: a value does not fit the column
            raise WorkbenchError(f"the labels do not fit column {target}: {str(exc).splitlines()[0]}") from None
        for batch in reader:
            table = pa.Table.from_batches([batch])
            yield _update_chat_turns(table) if chat else table
    finally:
        cur.close()


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
