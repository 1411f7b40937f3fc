"""Read-only SQL console for `workbench sql` and the app's SQL page.

Users may query the project's own tables and views, nothing else: no writes, no
settings, no files, no network. Two walls:

1. A walker, for clear messages: DuckDB's parser must see exactly one SELECT; its AST
   (`json_serialize_sql`) is walked so that table functions are on an allow-list, every
   table name resolves to a catalog table/view or an in-scope CTE, system views that show
   settings or paths are hidden, and functions that reach outside or are unknown are refused.
2. The engine itself (sandbox.py): the query runs in a separate in-memory DuckDB that cannot
   read files outside the project's `data/` folder, cannot install or load extensions and cannot
   change its configuration, holding a snapshot of the tables the query names (never the
   account tables). So a function nobody listed cannot reach outside either.

It has a row cap, a byte cap and a timeout that returns even when DuckDB does not stop.
"""
from __future__ import annotations

import json
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
# System views that are safe to show; the others show settings, paths, logs and table DDL.
SYSTEM_VIEWS = frozenset({
    ("information_schema", "tables"), ("information_schema", "columns"), ("information_schema", "schemata"),
    ("information_schema", "views"), ("main", "duckdb_tables"), ("main", "duckdb_views"),
    ("main", "duckdb_columns"), ("main", "duckdb_schemas"), ("main", "duckdb_types"),
    ("main", "duckdb_constraints"), ("main", "duckdb_indexes"),
})
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
    def load(cls, cursor) -> _Catalog:
        def rows(sql):
            return [tuple(str(x).lower() for x in row) for row in cursor.execute(sql).fetchall()]
        return cls(
            frozenset(rows("SELECT database_name, schema_name, table_name FROM duckdb_tables() UNION ALL "
                           "SELECT database_name, schema_name, view_name FROM duckdb_views()")),
            rows("SELECT current_database()")[0][0],
            frozenset(n for (n,) in rows("SELECT function_name FROM duckdb_functions()")),
            frozenset(n for (n,) in rows("SELECT type_name FROM duckdb_types()")))


# Tables no query may read, even an admin's: password hashes can be cracked offline.
PRIVATE_TABLES = frozenset({"wb_users", "wb_sessions", "wb_signin_failures"})


def _resolve(ref: dict, catalog: _Catalog) -> tuple | None:
    """The catalog entry (database, schema, name) DuckDB would bind ref to, or None where it would
    try a replacement scan: an unknown name, even a schema-qualified one, is read as a *file*."""
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
    order = sorted(candidates, key=lambda c: (c[0] == "system", c[1] == "pg_catalog"))
    return next(((d, s, name) for d, s in order if (d, s, name) in catalog.relations), None)


def _check_relation(node: dict, catalog: _Catalog) -> None:
    """A table name must be a table or view of this project, or one of the harmless system views."""
    found = _resolve(node, catalog)
    if found is None:
        raise WorkbenchError(f"`{node['table_name']}` is not a table or view in this project "
                             "(the SQL console cannot read files)")
    if found[0] == "system" and found[1:] not in SYSTEM_VIEWS:
        raise WorkbenchError(f"`{node['table_name']}` is a system view that the SQL console does not show; "
                             "query the project's tables, information_schema.tables or information_schema.columns")


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
        _check_relation(node, catalog)
    elif kind == "BASE_TABLE":
        name = node.get("table_name", "")
        unqualified = not node.get("schema_name") and not node.get("catalog_name")
        if not (unqualified and name.lower() in scope):
            _check_relation(node, catalog)


def _table_names(node) -> set[str]:
    """Every table name the AST mentions, lower case (CTE names too: a superset is fine)."""
    if isinstance(node, list):
        return set().union(*(_table_names(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    names = {str(node["table_name"]).lower()} if node.get("type") in ("BASE_TABLE", "SHOW_REF") \
        and node.get("table_name") else set()
    return names.union(*(_table_names(value) for value in node.values()))


def check_readonly(cursor, sql: str) -> set[str]:
    """Raise WorkbenchError if sql is not a single read-only query over the project's own tables/views.

    Returns the table names the query mentions, lower case."""
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
        # json_serialize_sql only parses (binding would read files); blocked for users, fine for us.
        tree = json.loads(cursor.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
        catalog = _Catalog.load(cursor)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise WorkbenchError(f"SQL error: {tree.get('error_message', 'could not analyse the query')}")
    _walk(tree["statements"], frozenset(), catalog)
    return _table_names(tree["statements"])


def run_readonly(cursor, sql: str, *, max_rows: int = 10_000, max_bytes: int = 64 << 20,
                 timeout_s: float = 30.0, data_dir=None) -> pa.Table:
    """Run one read-only query over the project's tables and return at most max_rows rows as an Arrow table.

    cursor is a cursor of the project's store; it is only read from (a snapshot of the tables the query
    names), never used to run the query. data_dir (default: `data/` beside the database file) is the
    only folder the query's engine may read, for the dataset versions' Parquet files.
    Raises WorkbenchError with a clear one-line message for anything refused or failing.
    The schema metadata key b"workbench.truncated" is b"true" when rows were cut off.
    """
    from workbench.data import sandbox

    names = check_readonly(cursor, sql)
    try:
        snapshot = sandbox.take_snapshot(cursor, names, PRIVATE_TABLES, data_dir=data_dir)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    return sandbox.run(snapshot, sql, max_rows=max_rows, max_bytes=max_bytes, timeout_s=timeout_s)


def example_query(dataset: str, category_column: str | None) -> str:
    """The console's starting query: the category mix, or a first look at the records."""
    from workbench.core.store import quote_ident

    if category_column:
        return (f"SELECT {quote_ident(category_column)}, count(*) AS n\nFROM {quote_ident(dataset)}\n"
                "GROUP BY 1\nORDER BY n DESC")
    return f"SELECT *\nFROM {quote_ident(dataset)}\nLIMIT 20"
