"""Read-only SQL console for `workbench sql` and the app's SQL page.

Users may query the project's own tables and views, nothing else: no writes, no
settings, no files, no network. Defence in depth, because the caller's cursor
belongs to a read-write connection whose global settings we must not touch:

1. DuckDB's own parser must see exactly one SELECT statement.
2. The query's AST (`json_serialize_sql`) is walked: table functions must be on
   an allow-list, every table name must resolve to a catalog table/view or an
   in-scope CTE, functions that reach outside are refused, and so are unknown
   functions and types (DuckDB would auto-install an extension from the network).
3. It runs in a transaction that is always rolled back, with a row cap and a
   timer that interrupts it.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from workbench.core.errors import WorkbenchError

ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "json_each", "json_tree",
    "duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_schemas",
    "duckdb_types", "duckdb_functions", "duckdb_keywords", "pragma_table_info",
})
BLOCKED_FUNCTIONS = frozenset({
    # current_setting: an extension's setting name autoinstalls the extension
    # (network + disk), and extension settings can hold credentials.
    "getenv", "current_setting", "nextval", "setval", "write_log", "glob", "query", "query_table",
    "sniff_csv", "json_execute_serialized_sql", "checkpoint", "force_checkpoint",
})
BLOCKED_PREFIXES = ("read_", "file_", "parquet_", "iceberg_", "delta_", "__internal")
# Table-reference node types whose children the walker knows how to check.
KNOWN_REFS = frozenset({"BASE_TABLE", "TABLE_FUNCTION", "JOIN", "SUBQUERY", "EMPTY",
                        "EXPRESSION_LIST", "PIVOT", "SHOW_REF"})

_T = duckdb.StatementType
_REASONS = {  # why a statement kind is refused, for the error message
    "changes data": {_T.INSERT, _T.UPDATE, _T.DELETE, _T.CREATE, _T.DROP, _T.ALTER, _T.CREATE_FUNC,
                     _T.MERGE_INTO, _T.COPY_DATABASE, _T.VACUUM, _T.ANALYZE},
    "reads or writes files": {_T.COPY, _T.EXPORT}, "attaches or detaches databases": {_T.ATTACH, _T.DETACH},
    "installs or loads extensions": {_T.LOAD, _T.EXTENSION}, "controls transactions": {_T.TRANSACTION},
    "changes settings": {_T.SET, _T.VARIABLE_SET, _T.PRAGMA},
}


def _sql_error(exc: BaseException) -> WorkbenchError:
    """DuckDB's message, first line only, so the CLI can print it on one line."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return WorkbenchError(f"SQL error: {lines[0]}")


@dataclass(frozen=True)
class _Catalog:
    """What already exists: anything else could make DuckDB read a file or
    auto-install an extension from the network (unknown functions and types do)."""
    relations: frozenset  # (database, schema, name), lower case
    current: str
    functions: frozenset
    types: frozenset

    @classmethod
    def load(cls, cursor) -> "_Catalog":
        def rows(sql):
            return [tuple(str(x).lower() for x in row) for row in cursor.execute(sql).fetchall()]
        return cls(
            frozenset(rows("SELECT database_name, schema_name, table_name FROM duckdb_tables() UNION ALL "
                           "SELECT database_name, schema_name, view_name FROM duckdb_views()")),
            rows("SELECT current_database()")[0][0],
            frozenset(n for (n,) in rows("SELECT function_name FROM duckdb_functions()")),
            frozenset(n for (n,) in rows("SELECT type_name FROM duckdb_types()")))


# Tables no query may read, even an admin's: password hashes can be cracked offline.
PRIVATE_TABLES = frozenset({"wb_users", "wb_sessions"})


def _resolves(ref: dict, catalog: _Catalog) -> bool:
    """True if DuckDB would bind ref to a catalog entry rather than a replacement
    scan: an unknown name, even a schema-qualified one, is read as a *file*."""
    name = ref.get("table_name", "").lower()
    schema, db = ref.get("schema_name", "").lower(), ref.get("catalog_name", "").lower()
    current = catalog.current
    if db:
        candidates = {(db, schema or "main")}
    elif schema:  # `x.name` means schema x in a default database, or database x
        candidates = {(d, schema) for d in (current, "temp", "system")} | {(schema, "main")}
    else:  # DuckDB's search path for unqualified names
        candidates = {("temp", "main"), (current, "main"), ("system", "main"),
                      ("system", "pg_catalog")}
    return any((d, s, name) in catalog.relations for d, s in candidates)


def _walk(node, scope: frozenset, catalog: _Catalog) -> None:
    """Recurse through every dict/list of the AST, so subqueries, CTEs, joins,
    set operations, lambdas and expressions are all covered without naming them."""
    if isinstance(node, list):
        for item in node:
            _walk(item, scope, catalog)
    if not isinstance(node, dict):
        return
    ctes = (node.get("cte_map") or {}).get("map") or []
    if ctes:
        # A CTE body only sees the CTEs defined before it (plus itself if
        # recursive); anything else named there would be a file read.
        keys = [entry["key"].lower() for entry in ctes]
        for i, entry in enumerate(ctes):
            own = keys[i:i + 1] if entry["value"]["query_node"].get("type") == "RECURSIVE_CTE_NODE" else []
            _walk(entry["value"], scope | set(keys[:i]) | set(own), catalog)
        scope = scope | set(keys)
        node = {k: v for k, v in node.items() if k != "cte_map"}
    _inspect(node, scope, catalog)
    for value in node.values():
        _walk(value, scope, catalog)


def _inspect(node: dict, scope: frozenset, catalog: _Catalog) -> None:
    kind = node.get("type")
    if "sample" in node and "class" not in node and "modifiers" not in node and kind not in KNOWN_REFS:
        raise WorkbenchError(f"`{kind}` table references are not allowed in the SQL console")
    if kind == "TABLE_FUNCTION":
        name = str(node["function"].get("function_name", "")).lower()
        if name not in ALLOWED_TABLE_FUNCTIONS:
            raise WorkbenchError(
                f"table function `{name}()` is not allowed in the SQL console; query the project's "
                f"tables and views (allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))})")
    elif node.get("class") in ("FUNCTION", "WINDOW"):
        name = str(node.get("function_name", "")).lower()
        if name in BLOCKED_FUNCTIONS or name.startswith(BLOCKED_PREFIXES):
            raise WorkbenchError(f"function `{name}()` is not allowed in the SQL console")
        if name not in catalog.functions:
            raise WorkbenchError(f"unknown function `{name}()` (the SQL console cannot load extensions)")
    elif node.get("class") == "TYPE" and str(node.get("type_name")).lower() not in catalog.types:
        raise WorkbenchError(
            f"unknown type `{node.get('type_name')}` (the SQL console cannot load extensions)")
    elif kind in ("BASE_TABLE", "SHOW_REF") and str(node.get("table_name", "")).lower() in PRIVATE_TABLES and not (
            kind == "BASE_TABLE" and not node.get("schema_name") and not node.get("catalog_name")
            and str(node.get("table_name")).lower() in scope):
        raise WorkbenchError(f"`{node['table_name']}` holds accounts (password hashes, sign-in sessions); the SQL "
                             "console does not show it (`workbench users list` lists the accounts)")
    elif kind == "SHOW_REF" and node.get("table_name") and node.get("show_type") != "SHOW_SPECIAL":
        # `SHOW name`; SHOW_SPECIAL names (SHOW TABLES etc.) are fixed by the parser
        if not _resolves(node, catalog):
            raise WorkbenchError(f"`{node['table_name']}` is not a table or view in this project")
    elif kind == "BASE_TABLE":
        name = node.get("table_name", "")
        unqualified = not node.get("schema_name") and not node.get("catalog_name")
        if not (unqualified and name.lower() in scope) and not _resolves(node, catalog):
            raise WorkbenchError(f"`{name}` is not a table or view in this project "
                                 "(the SQL console cannot read files)")


def check_readonly(cursor, sql: str) -> None:
    """Raise WorkbenchError if sql is not a single read-only query over the project's own tables/views."""
    try:
        statements = duckdb.extract_statements(sql)
        if len(statements) != 1:
            raise WorkbenchError(
                "the SQL console needs exactly one SELECT query"
                + (f"; found {len(statements)} statements" if statements else ""))
        kind = statements[0].type
        if kind != _T.SELECT:
            reason = next((r for r, kinds in _REASONS.items() if kind in kinds), "is not a plain query")
            raise WorkbenchError(
                f"only SELECT queries are allowed in the SQL console; `{kind.name}` {reason}")
        tree = json.loads(cursor.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
        catalog = _Catalog.load(cursor)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise WorkbenchError(f"SQL error: {tree.get('error_message', 'could not analyse the query')}")
    _walk(tree["statements"], frozenset(), catalog)


def run_readonly(cursor, sql: str, *, max_rows: int = 10_000, timeout_s: float = 30.0) -> pa.Table:
    """Run one read-only query on a DuckDB cursor and return at most max_rows rows as an Arrow table.

    Raises WorkbenchError with a clear one-line message for anything refused or failing.
    The schema metadata key b"workbench.truncated" is b"true" when rows were cut off.
    """
    check_readonly(cursor, sql)
    try:  # fails if the caller's cursor already has a transaction open
        cursor.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    fired, done = threading.Event(), threading.Event()

    def stop() -> None:  # an interrupt sent before DuckDB starts executing is lost: repeat it until the end
        fired.set()
        while not done.is_set():
            cursor.interrupt()
            done.wait(0.1)

    timer = threading.Timer(timeout_s, stop)
    timer.start()
    reader = None
    try:
        # Stream batches so a huge result is never materialised; stop past max_rows.
        reader = cursor.sql(sql).to_arrow_reader(max(1, min(max_rows + 1, 65_536)))
        batches, count = [], 0
        for batch in reader:
            batches.append(batch)
            count += batch.num_rows
            if count > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except (duckdb.Error, pa.ArrowException) as exc:
        if fired.is_set():
            raise WorkbenchError(f"query stopped after {timeout_s:g} s; add a filter or LIMIT") from None
        raise _sql_error(exc) from None
    finally:
        done.set()
        timer.cancel()
        timer.join()  # so a late interrupt cannot hit the ROLLBACK below
        if reader is not None:
            reader.close()  # DuckDB refuses new statements while a result is open
        cursor.execute("ROLLBACK")
    metadata = dict(table.schema.metadata or {})
    metadata[b"workbench.truncated"] = b"true" if table.num_rows > max_rows else b"false"
    return table.slice(0, max_rows).replace_schema_metadata(metadata)


def example_query(dataset: str, category_column: str | None) -> str:
    """The console's starting query: the category mix, or a first look at the records."""
    from workbench.core.store import quote_ident

    if category_column:
        return (f"SELECT {quote_ident(category_column)}, count(*) AS n\nFROM {quote_ident(dataset)}\n"
                "GROUP BY 1\nORDER BY n DESC")
    return f"SELECT *\nFROM {quote_ident(dataset)}\nLIMIT 20"
