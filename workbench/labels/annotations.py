"""Answers to questions: submitting them one record at a time, reading them back, and files of them.

Annotations are append-only rows (question, record key, annotator, value, when, who entered it,
from where); the current answer of an annotator is their latest row. Values are text, as the
question's kind stores them (workbench.labels.kinds). This module owns the table wb_annotations.

Questions are in workbench.labels.questions; final values, disputes and final labels in
workbench.labels.adjudication.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd
import pyarrow as pa

from workbench.core import files
from workbench.core.auth import LOCAL_USER, User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, version_columns
from workbench.data.export import FORMULA_START, unescape_csv_value
from workbench.labels import assignment, flags, kinds
from workbench.labels.questions import (
    Question,
    add_question,
    as_question,
    column_values,
    find_question,
    get_question,
    record_row,
    record_rows,
)

# The current answer of each annotator for each record of question $qid.
LATEST_SQL = ("SELECT item, record_row, annotator, value, created_at FROM wb_annotations WHERE question_id = $qid "
              "QUALIFY row_number() OVER (PARTITION BY item, annotator ORDER BY created_at DESC, annotation_id DESC) "
              "= 1")


class Entry(NamedTuple):
    """One row of wb_annotations, before it is stored."""

    item: str
    row: int
    annotator: str
    value: str
    created_at: datetime
    entered_by: str
    source: str


def _insert_annotations(cur, question_id: int, rows: list[Entry]) -> None:
    if not rows:
        return
    table = pa.table({
        "item": pa.array([r.item for r in rows], pa.string()),
        "record_row": pa.array([r.row for r in rows], pa.int64()),
        "annotator": pa.array([r.annotator for r in rows], pa.string()),
        "value": pa.array([r.value for r in rows], pa.string()),
        "created_at": pa.array([r.created_at for r in rows], pa.timestamp("us")),
        "entered_by": pa.array([r.entered_by for r in rows], pa.string()),
        "source": pa.array([r.source for r in rows], pa.string()),
    })
    cur.register("wb_new_annotations", table)
    try:
        cur.execute(
            "INSERT INTO wb_annotations SELECT nextval('wb_annotation_seq'), ?, item, record_row, annotator, value, "
            "created_at, entered_by, source FROM wb_new_annotations", [question_id])
    finally:
        cur.unregister("wb_new_annotations")


# ---------------------------------------------------------------- answering

def submit(store: Store, question: Question, item: str, value, *, user: User | None = None,
           source: str = "app", now: datetime | None = None) -> str:
    """Record the user's answer for one record (as themselves); returns the stored value.

    The answer is committed (in DuckDB's write-ahead log) when this returns."""
    user = require_role(user, "annotate")
    stored = question.normalize(value)
    entry = Entry(str(item), record_row(store, question, item), user.name, stored, now or now_utc(), user.name,
                  source)

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


def flag_reasons(store: Store, question: Question, row: int) -> list[str]:
    """Why people asked for another look at this record (from evaluations and reviews), oldest first."""
    return flags.flag_reasons(store, question.version_id, row)


# ---------------------------------------------------------------- reading answers

def my_answers(store: Store, question: Question, user: User | None = None, *, limit: int = 200) -> pd.DataFrame:
    """The user's current answers, newest first: item, row, value, created_at (for "go back")."""
    df = store.cursor().execute(
        f"SELECT item, record_row AS row, value, created_at FROM ({LATEST_SQL}) WHERE annotator = $annotator "
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
        f"SELECT annotator, value, created_at FROM ({LATEST_SQL}) WHERE item = $item ORDER BY annotator",
        {"qid": question.question_id, "item": item}).df()


def answers(store: Store, dataset: str | Question, question: str | None = None) -> pd.DataFrame:
    """The latest answer of each annotator for each record: item, annotator, value, row (Int64)."""
    q = as_question(store, dataset, question)
    df = store.cursor().execute(
        f"SELECT item, annotator, value, record_row AS row FROM ({LATEST_SQL}) ORDER BY record_row, annotator",
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


# ---------------------------------------------------------------- import from a file

class AnnotationsRejected(WorkbenchError):
    """Some lines of an annotation file are bad and on_error='fail': nothing was imported."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ImportColumns:
    """Which column of an annotation file holds what."""

    item: str
    annotator: str
    value: str
    time: str | None = None
    question: str | None = None


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
    rows = _file_rows(path)
    cols = _import_columns(path, rows, ImportColumns(item_col, annotator_col, value_col, time_col, question_col))
    rows = _rows_of_question(path, rows, cols.question, question)
    q = find_question(store, dataset, question) or \
        _new_question(store, dataset, question, rows, cols, kind=kind, overlap=overlap, user=user)
    checker = _RowChecker.of(store, q, rows, cols, entered_by=user.name, source=f"import:{path.name}")
    good, errors = checker.check(rows, max_errors)
    error_count = len(rows) - len(good)
    result = {"question": q.name, "dataset": q.dataset, "kind": q.kind, "lines": len(rows), "imported": 0,
              "unchanged": 0, "skipped": error_count if on_error == "skip" else 0, "errors": errors,
              "error_count": error_count}
    if error_count and on_error == "fail":
        result["skipped"] = 0
        raise AnnotationsRejected(
            f"{error_count:,} bad line{'s' if error_count != 1 else ''} in {path.name}, nothing was imported; "
            f"line {errors[0]['line']}: {errors[0]['error']}", result)
    fresh = _history_not_stored(store, q, good) if cols.time else _changed_answers(store, q, good)
    _store_entries(store, q, fresh)
    result.update(imported=len(fresh), unchanged=len(good) - len(fresh), items=len({g.item for g in good}),
                  annotators=len({g.annotator for g in good}))
    return result


def _file_rows(path: Path) -> list[tuple[int, dict]]:
    """Every (line number, row) of an annotation file; WorkbenchError when there is none."""
    if not path.is_file():
        raise WorkbenchError(f"no such file: {path}")
    rows = list(_read_rows(path))
    if not rows:
        raise WorkbenchError(f"{path.name} has no rows")
    return rows


def _import_columns(path: Path, rows: list[tuple[int, dict]], cols: ImportColumns) -> ImportColumns:
    """The columns, with a column named `question` as the question column unless told otherwise;
    WorkbenchError naming the file's columns when one is missing."""
    header = set().union(*(r.keys() for _, r in rows[:1000])) - {"__error__"}
    if cols.question is None and "question" in header and "question" not in (cols.item, cols.annotator, cols.value):
        cols = ImportColumns(cols.item, cols.annotator, cols.value, cols.time, "question")
    for flag, col in (("--item-col", cols.item), ("--annotator-col", cols.annotator), ("--value-col", cols.value),
                      ("--time-col", cols.time), ("--question-col", cols.question)):
        if col and col not in header:
            raise WorkbenchError(f"{path.name} has no column {col!r} ({flag}); its columns: "
                                 f"{', '.join(sorted(header))}")
    return cols


def _rows_of_question(path: Path, rows: list[tuple[int, dict]], question_col: str | None,
                      question: str) -> list[tuple[int, dict]]:
    """The rows of this question (and the unreadable lines, to be reported), when the file names questions."""
    if not question_col:
        return rows
    rows = [(n, r) for n, r in rows if "__error__" in r or str(r.get(question_col, "")).strip() == question]
    if not rows:
        raise WorkbenchError(f"no row of {path.name} has {question_col} = {question!r}")
    return rows


def _new_question(store: Store, dataset: str, name: str, rows: list[tuple[int, dict]], cols: ImportColumns, *,
                  kind: str | None, overlap: int | None, user: User) -> Question:
    """A question on the dataset's newest version, its kind guessed from the answers unless given, its
    overlap the most annotators of one record in the file unless given."""
    version = get_version(store, dataset)  # a clear error when the dataset does not exist
    values = [str(r.get(cols.value)) for _, r in rows if r.get(cols.value) not in (None, "")]
    spec = kinds.of(kind or kinds.guess(values[:10_000]))
    choices = None
    if spec.choices_from_answers:
        present = {_plain(v) for v in values}
        if name in [c for c, _ in version_columns(store, version)]:  # e.g. `category`: its values too
            present |= set(column_values(store, version, name, limit=kinds.MAX_CHOICES + 1))
        choices = sorted(present) if len(present) <= kinds.MAX_CHOICES else None
    per_item: dict[str, set] = {}
    for _, r in rows:
        per_item.setdefault(str(r.get(cols.item)), set()).add(str(r.get(cols.annotator)))
    return add_question(store, version, name, spec.name, choices=choices,
                        overlap=overlap or max(1, max(len(a) for a in per_item.values())), user=user)


def _item_key(raw, q: Question) -> str:
    """The record key in a file's item column (a record number read as a float, such as 3.0, is 3)."""
    item = str(raw if raw is not None else "").strip()
    if item.endswith(".0") and not q.key_column and item[:-2].isdigit():
        item = item[:-2]
    return item


class _Bad(NamedTuple):
    """Why one line of a file cannot be imported."""

    field: str | None
    message: str


@dataclass(frozen=True)
class _RowChecker:
    """Turns the rows of a file into Entries for one question, or says what is wrong with each."""

    question: Question
    cols: ImportColumns
    rows_by_key: dict[str, int]
    version_ref: str
    key_desc: str
    now: datetime
    entered_by: str
    source: str

    @classmethod
    def of(cls, store: Store, q: Question, rows: list[tuple[int, dict]], cols: ImportColumns, *, entered_by: str,
           source: str) -> _RowChecker:
        version = q.version(store)
        keys = sorted({_item_key(r.get(cols.item), q) for _, r in rows if "__error__" not in r})
        key_desc = f"a value of its `{q.key_column}` column" if q.key_column else \
            f"a record number from 1 to {version.row_count:,}"
        return cls(q, cols, record_rows(store, q, keys), version.ref, key_desc, now_utc(), entered_by, source)

    def check(self, rows: list[tuple[int, dict]], max_errors: int) -> tuple[list[Entry], list[dict]]:
        """The good rows as Entries, and the first `max_errors` bad lines: {line, field, error}."""
        good, errors = [], []
        for n, r in rows:
            out = self.entry(r)
            if isinstance(out, Entry):
                good.append(out)
            elif len(errors) < max_errors:
                errors.append({"line": n, "field": out.field, "error": out.message})
        return good, errors

    def entry(self, r: dict) -> Entry | _Bad:
        if "__error__" in r:
            return _Bad(None, r["__error__"])
        item = _item_key(r.get(self.cols.item), self.question)
        annotator = str(r.get(self.cols.annotator) or "").strip()
        if item not in self.rows_by_key:
            return _Bad(self.cols.item, f"{self.cols.item}: {item!r} is not a record of {self.version_ref}; "
                                        f"expected {self.key_desc}")
        if not annotator:
            return _Bad(self.cols.annotator, f"{self.cols.annotator}: empty; expected the annotator's name")
        value = self._value(r)
        if isinstance(value, _Bad):
            return value
        when = self._time(r) if self.cols.time else self.now
        if isinstance(when, _Bad):
            return when
        return Entry(item, self.rows_by_key[item], annotator, value, when, self.entered_by, self.source)

    def _value(self, r: dict) -> str | _Bad:
        raw = r.get(self.cols.value)
        try:
            return self.question.normalize(raw if raw != "" else None)
        except WorkbenchError as exc:
            return _Bad(self.cols.value, f"{self.cols.value}: {exc}")

    def _time(self, r: dict) -> datetime | _Bad:
        raw = r.get(self.cols.time)
        stamp = _parse_time(raw)
        if stamp is None:
            return _Bad(self.cols.time, f"{self.cols.time}: {raw!r} is not a time; expected ISO 8601 such as "
                                        "2024-05-01T13:45:00Z")
        return stamp


def _history_not_stored(store: Store, q: Question, good: list[Entry]) -> list[Entry]:
    """A history with times: each row not stored already (same record, annotator, value and time)."""
    stored = set(store.cursor().execute(
        "SELECT item, annotator, value, created_at FROM wb_annotations WHERE question_id = ?",
        [q.question_id]).fetchall())
    return [g for g in dict.fromkeys(good) if (g.item, g.annotator, g.value, g.created_at) not in stored]


def _changed_answers(store: Store, q: Question, good: list[Entry]) -> list[Entry]:
    """No times: the file's last answer of each annotator per record, unless it is already the current one."""
    last = {(g.item, g.annotator): g for g in good}
    current = {(i, a): v for i, a, v in store.cursor().execute(
        f"SELECT item, annotator, value FROM ({LATEST_SQL})", {"qid": q.question_id}).fetchall()}
    return [g for key, g in last.items() if current.get(key) != g.value]


def _store_entries(store: Store, q: Question, entries: list[Entry]) -> None:
    store.retry(lambda cur: _insert_annotations(cur, q.question_id, entries))
    if len(entries) > 10_000:
        try:  # a bulk load: fold the WAL into the database file now rather than on the next open
            store.checkpoint()
        except duckdb.Error:  # another transaction is running (the app); DuckDB checkpoints later by itself
            pass


def _read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) from CSV/TSV (header is line 1), JSONL, a JSON list, or Parquet (record number).
    A line that cannot be read is {'__error__': why}."""
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".tsv": _read_csv, ".txt": _read_csv, ".jsonl": _read_jsonl,
               ".ndjson": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    if suffix not in readers:
        raise WorkbenchError(f"{path.name}: annotation files are .csv, .tsv, .jsonl, .json or .parquet")
    return readers[suffix](path)


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        _ = reader.fieldnames  # reads the header: line 1
        line = reader.line_num
        for row in reader:
            yield line + 1, {k: unescape_csv_value(v) for k, v in row.items() if k is not None}
            line = reader.line_num


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
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


def _read_json(path: Path) -> Iterator[tuple[int, dict]]:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if not isinstance(data, list):
        raise WorkbenchError(f"{path.name}: expected a JSON list of objects")
    for n, obj in enumerate(data, 1):
        yield n, obj if isinstance(obj, dict) else {"__error__": "not a JSON object"}


def _read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(65_536):
        for row in batch.to_pylist():
            n += 1
            yield n, row


def _parse_time(value) -> datetime | None:
    """A time as naive UTC, or None when the value is not a time."""
    try:
        stamp = pd.Timestamp(value if isinstance(value, datetime) else str(value).strip())
    except (ValueError, TypeError):
        return None
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _plain(v) -> str:
    text = str(v).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


# ---------------------------------------------------------------- export to a file

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
    if dataset and question:
        get_question(store, dataset, question)
    sql, params = _export_sql(dataset, question, history_rows)
    cur = store.con.cursor()
    try:
        with files.atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            count = _write_rows(f, fmt, cur.sql(sql, params=params).to_arrow_reader(50_000))
    finally:
        cur.close()
    return {"path": str(out), "records": count, "format": fmt}


def _export_sql(dataset: str | None, question: str | None, history_rows: bool) -> tuple[str, list]:
    where, params = [], []
    if dataset:
        where.append("q.dataset = ?")
        params.append(dataset)
    if question:
        where.append("q.name = ?")
        params.append(question)
    latest = "" if history_rows else (
        "QUALIFY row_number() OVER (PARTITION BY a.question_id, a.item, a.annotator "
        "ORDER BY a.created_at DESC, a.annotation_id DESC) = 1")
    sql = (f"SELECT q.dataset, v.number AS version, q.name AS question, a.item, a.record_row + 1 AS row, "
           f"a.annotator, a.value, strftime(a.created_at, '%Y-%m-%dT%H:%M:%S.%fZ') AS time, a.entered_by, a.source "
           f"FROM wb_annotations a JOIN wb_questions q USING (question_id) "
           f"JOIN wb_versions v ON v.version_id = q.version_id "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} {latest} "
           f"ORDER BY q.dataset, q.name, a.record_row, a.annotator, a.created_at, a.annotation_id")
    return sql, params


def _write_rows(f, fmt: str, reader) -> int:
    """Write the reader's rows to an open text file as CSV (with a header) or JSONL; returns how many."""
    writer = csv.writer(f) if fmt == "csv" else None
    if writer:
        writer.writerow(EXPORT_COLUMNS)
    count = 0
    for batch in reader:
        for row in batch.to_pylist():
            count += 1
            if writer:
                writer.writerow([_csv_safe(row[c]) for c in EXPORT_COLUMNS])
            else:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return count


def _csv_safe(value):
    """Same rule as dataset exports: a cell a spreadsheet would run as a formula gets a leading '."""
    if isinstance(value, str) and value[:1] in FORMULA_START:
        return "'" + value
    return value
