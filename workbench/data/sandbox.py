"""The engine-level wall of the SQL console: a separate in-memory DuckDB that runs the user's query.

The project's own connection must keep file access (dataset versions are Parquet views, export
writes files) and DuckDB's access settings are per database instance, so console queries run in
another instance, which the engine itself forbids from reading files outside the project's `data/`
folder, installing or loading extensions and changing its configuration
(`enable_external_access=false`, `allowed_directories`, autoload/autoinstall off,
`lock_configuration=true`). It holds a snapshot of what the query names: the catalog's tables
(account tables left out), with rows for those the query reads directly or through views; the views
it reads, replayed over the same Parquet files; the other views as empty stand-ins with their columns.
The project file itself cannot be attached twice in one process, hence the copy.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from workbench.core.errors import WorkbenchError
from workbench.core.store import quote_ident, quote_literal

# The sandbox's own memory cap; a result is also capped by max_bytes while it is read.
MEMORY_LIMIT = "1GB"
# After the timeout the query is interrupted; if DuckDB has not stopped by then (a blocked read),
# the caller gets its answer anyway and the thread is left to finish on its own.
GRACE_S = 1.0
ROWS_PER_BATCH = 256


@dataclass
class Snapshot:
    """What the sandbox is built from, read on the caller's thread from the project's cursor."""
    database: str
    allowed: list[str]
    enums: list[tuple[str, list[str]]] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)  # name, column definitions
    rows: dict[str, pa.Table] = field(default_factory=dict)
    views: list[tuple[str, str]] = field(default_factory=list)  # name, CREATE VIEW statement
    stubs: list[tuple[str, str]] = field(default_factory=list)  # views the query does not read: name, NULL columns


def _data_dirs(cursor, data_dir) -> list[str]:
    if data_dir is None:
        path = cursor.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                              ).fetchone()[0]
        if not path:  # an in-memory store has no folder of its own
            return []
        data_dir = Path(path).parent / "data"
    forms = {str(Path(data_dir)), str(Path(data_dir).resolve())}
    return sorted(f.rstrip("/") + "/" for f in forms)


def _closure(names: set[str], views: dict[str, str]) -> tuple[set[str], str]:
    """The views the query reads (those it names, and those they name, by their SQL text: a superset
    is fine), and all their SQL text in lower case."""
    seen, todo, text = set(), [n for n in names if n in views], ""
    while todo:
        view = todo.pop()
        if view in seen:
            continue
        seen.add(view)
        body = views[view].lower()
        text += body
        todo += [v for v in views if v not in seen and (v in body or v.replace('"', '""') in body)]
    return seen, text


def take_snapshot(cursor, names: set[str], private: frozenset, *, data_dir=None) -> Snapshot:
    """Read what the query needs in one consistent read, on a cursor of our own (the caller's
    cursor may be inside a transaction, and a failed BEGIN would abort it)."""
    own = cursor.cursor()
    try:
        own.execute("BEGIN TRANSACTION")
        return _read(own, names, private, data_dir)
    finally:
        own.close()  # rolls back


def _read(cursor, names, private, data_dir) -> Snapshot:
    where = "database_name = current_database() AND schema_name = 'main' AND NOT internal"
    snap = Snapshot(cursor.execute("SELECT current_database()").fetchone()[0], _data_dirs(cursor, data_dir))
    for (name,) in cursor.execute(f"SELECT type_name FROM duckdb_types() WHERE {where} "
                                  "AND logical_type = 'ENUM'").fetchall():
        values = cursor.execute(f"SELECT enum_range(NULL::{quote_ident(name)})").fetchone()[0]
        snap.enums.append((name, values))
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in cursor.execute(
            f"SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE {where} "
            "ORDER BY table_name, column_index").fetchall():
        if table.lower() not in private:
            columns.setdefault(table, []).append((column, dtype))
    tables = [t for (t,) in cursor.execute(f"SELECT table_name FROM duckdb_tables() WHERE {where}").fetchall()
              if t in columns]
    snap.tables = [(t, ", ".join(f"{quote_ident(c)} {dtype}" for c, dtype in columns[t])) for t in tables]
    views = {v: sql for v, sql in cursor.execute(
        f"SELECT view_name, sql FROM duckdb_views() WHERE {where} ORDER BY view_oid").fetchall()
        if v.lower() not in private}
    read, text = _closure(names, {v.lower(): sql for v, sql in views.items()})
    # Views the query does not read keep their names and columns but not their definitions, so a
    # view whose files misbehave (a blocked read) cannot stall every other query.
    snap.views = [(v, sql) for v, sql in views.items() if v.lower() in read]
    snap.stubs = [(v, ", ".join(f"CAST(NULL AS {dtype}) AS {quote_ident(c)}" for c, dtype in columns[v]))
                  for v in views if v.lower() not in read and v in columns]
    for table in tables:
        low = table.lower()
        if low in names or low in text or low.replace('"', '""') in text:
            snap.rows[table] = cursor.sql(f"SELECT * FROM {quote_ident(table)}").to_arrow_table()
    return snap


def _build(snap: Snapshot) -> duckdb.DuckDBPyConnection:
    """The sandbox: locked first, then filled, so even our own replayed views run under its rules."""
    box = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "python_enable_replacements": False, "memory_limit": MEMORY_LIMIT, "threads": 2,
        "temp_directory": ""})  # never spills to disk: a query past the memory limit fails instead
    if snap.database.lower() not in ("memory", "system", "temp"):  # so `project.main.t` still works
        box.execute(f"ATTACH ':memory:' AS {quote_ident(snap.database)}")
        box.execute(f"USE {quote_ident(snap.database)}")
    box.execute(f"SET allowed_directories = [{', '.join(quote_literal(d) for d in snap.allowed)}]")
    box.execute("SET enable_external_access = false")
    box.execute("SET lock_configuration = true")
    for name, values in snap.enums:
        box.execute(f"CREATE TYPE {quote_ident(name)} AS ENUM ({', '.join(quote_literal(v) for v in values)})")
    for name, columns in snap.tables:
        box.execute(f"CREATE TABLE {quote_ident(name)} ({columns})")
        if name in snap.rows:
            box.register("__workbench_rows", snap.rows[name])
            box.execute(f"INSERT INTO {quote_ident(name)} SELECT * FROM __workbench_rows")
            box.unregister("__workbench_rows")
    for name, nulls in snap.stubs:
        try:
            box.execute(f"CREATE VIEW {quote_ident(name)} AS SELECT {nulls} WHERE false")
        except duckdb.Error:
            pass
    pending = list(snap.views)
    while pending:  # a view can name a view created after it (CREATE OR REPLACE)
        failed = []
        for name, sql in pending:
            try:
                box.execute(sql)
            except duckdb.Error:
                failed.append((name, sql))
        if len(failed) == len(pending):
            break  # what is left cannot be built here (e.g. it reads files outside data/)
        pending = failed
    return box


def _fetch(box, sql: str, max_rows: int, max_bytes: int) -> pa.Table:
    reader = box.sql(sql).to_arrow_reader(ROWS_PER_BATCH)
    try:
        batches, count, size = [], 0, 0
        for batch in reader:
            size += batch.get_total_buffer_size()
            if size > max_bytes:
                raise WorkbenchError(
                    f"the result is larger than {max_bytes / 2**20:g} MB; select fewer or shorter columns "
                    "(for example left(text, 200)) or add a LIMIT")
            batches.append(batch)
            count += batch.num_rows
            if count > max_rows:
                break
        return pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        reader.close()


def run(snap: Snapshot, sql: str, *, max_rows: int, max_bytes: int, timeout_s: float) -> pa.Table:
    """Build the sandbox and run sql in it on a worker thread; answer within timeout_s + GRACE_S."""
    from workbench.data.sqlconsole import _sql_error

    outcome: dict = {}

    def work() -> None:
        try:
            outcome["box"] = box = _build(snap)
            outcome["table"] = _fetch(box, sql, max_rows, max_bytes)
        except WorkbenchError as exc:
            outcome["error"] = exc
        except (duckdb.Error, pa.ArrowException, MemoryError, OSError) as exc:
            outcome["error"] = _sql_error(exc)
        finally:
            box = outcome.get("box")
            if box is not None and not outcome.get("abandoned"):
                box.close()

    worker = threading.Thread(target=work, name="sql-console", daemon=True)
    worker.start()
    worker.join(timeout_s)
    while worker.is_alive() and not outcome.get("abandoned"):
        # An interrupt sent before DuckDB starts executing is lost: repeat it for the grace period.
        for _ in range(int(GRACE_S / 0.05)):
            try:
                if "box" in outcome:
                    outcome["box"].interrupt()
            except duckdb.Error:  # closed by the worker just now: it has finished
                pass
            worker.join(0.05)
            if not worker.is_alive():
                break
        outcome["abandoned"] = worker.is_alive()
        outcome["timed_out"] = True
    if outcome.get("timed_out"):
        raise WorkbenchError(f"query stopped after {timeout_s:g} s; add a filter or LIMIT")
    if "error" in outcome:
        raise outcome["error"]
    table = outcome["table"]
    metadata = dict(table.schema.metadata or {})
    metadata[b"workbench.truncated"] = b"true" if table.num_rows > max_rows else b"false"
    return table.slice(0, max_rows).replace_schema_metadata(metadata)
