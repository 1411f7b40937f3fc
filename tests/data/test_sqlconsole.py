"""The SQL console must only ever read the project's own tables and views."""
import json
import re

import duckdb
import pytest

from workbench.core.errors import WorkbenchError
from workbench.data.sqlconsole import check_readonly, run_readonly

ROWS = [(1, "a"), (2, "b"), (3, "a")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A real project file, with a decoy data.csv in the working directory that
    DuckDB's replacement scans would happily read if we let them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("secret\nleaked\n")
    con = duckdb.connect(str(tmp_path / "project.duckdb"))
    con.execute("CREATE TABLE t(id INT, category VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", ROWS)
    con.execute("CREATE TABLE labels(category VARCHAR, label VARCHAR)")
    con.execute("INSERT INTO labels VALUES ('a', 'alpha'), ('b', 'beta')")
    con.execute("CREATE VIEW v AS SELECT id FROM t WHERE category = 'a'")
    con.execute('CREATE VIEW "banking@v1" AS SELECT * FROM t WHERE id > 1')
    con.execute("CREATE TYPE mood AS ENUM ('a', 'b')")
    con.execute("CHECKPOINT")
    cursor = con.cursor()
    before = sorted(p.name for p in tmp_path.iterdir())
    yield con, cursor
    # Whatever a test ran, data and the directory must be as they were.
    assert con.execute("SELECT * FROM t ORDER BY id").fetchall() == ROWS
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"t", "labels"}
    assert [r[0] for r in con.execute("SELECT database_name FROM duckdb_databases() "
                                      "WHERE NOT internal").fetchall()] == ["project"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    con.close()


REFUSED = {
    # statement kinds -> message fragment
    "DROP TABLE t": "`DROP` changes data",
    "DELETE FROM t": "`DELETE` changes data",
    "UPDATE t SET category = 'x'": "`UPDATE` changes data",
    "INSERT INTO t VALUES (9, 'z')": "`INSERT` changes data",
    "CREATE TABLE x AS SELECT 1": "`CREATE` changes data",
    "CREATE MACRO m(x) AS x": "changes data",
    "ALTER TABLE t ADD COLUMN c INT": "`ALTER` changes data",
    "ATTACH 'other.duckdb' AS other": "`ATTACH`",
    "DETACH project": "`DETACH`",
    "COPY t TO 'out.csv'": "`COPY` reads or writes files",
    "COPY t FROM 'data.csv'": "`COPY` reads or writes files",
    "EXPORT DATABASE 'exported'": "`EXPORT`",
    "INSTALL httpfs": "extensions",
    "LOAD httpfs": "extensions",
    "SET threads = 1": "changes settings",
    "RESET threads": "changes settings",
    "SET VARIABLE x = 1": "changes settings",
    "PRAGMA enable_profiling": "changes settings",
    "CHECKPOINT": "only SELECT queries are allowed",
    "BEGIN TRANSACTION": "controls transactions",
    "EXPLAIN SELECT 1": "only SELECT queries are allowed",
    "/* x */ DROP TABLE t": "`DROP` changes data",
    "-- comment\n  drop   TABLE t": "`DROP` changes data",
    "SELECT 1; DROP TABLE t": "found 2 statements",
    "SELECT 1; SELECT 2": "found 2 statements",
    "": "exactly one SELECT query",
    "  ;  ": "exactly one SELECT query",
    # file readers and other table functions
    "SELECT * FROM read_csv('/etc/passwd')": "`read_csv()` is not allowed",
    "sElEcT * FrOm READ_CSV('/etc/passwd')": "`read_csv()` is not allowed",
    "SELECT * FROM read_csv_auto('data.csv')": "`read_csv_auto()`",
    "SELECT * FROM read_json('data.csv')": "`read_json()`",
    "SELECT * FROM read_json_auto('data.csv')": "`read_json_auto()`",
    "SELECT * FROM read_parquet('data.csv')": "`read_parquet()`",
    "SELECT * FROM parquet_scan('data.csv')": "`parquet_scan()`",
    "SELECT * FROM read_text('/etc/passwd')": "`read_text()`",
    "SELECT * FROM read_blob('/etc/passwd')": "`read_blob()`",
    "SELECT * FROM glob('/*')": "`glob()`",
    "SELECT * FROM sniff_csv('data.csv')": "`sniff_csv()`",
    "SELECT * FROM query('SELECT 1')": "`query()`",
    "SELECT * FROM query_table('t')": "`query_table()`",
    "SELECT * FROM main.read_csv('data.csv')": "`read_csv()`",
    "SELECT * FROM checkpoint()": "`checkpoint()`",
    "CALL checkpoint()": "only SELECT queries are allowed",
    # replacement scans: a quoted path where a table name goes
    "SELECT * FROM '/etc/passwd'": "`/etc/passwd` is not a table or view",
    "FROM '/etc/hosts'": "`/etc/hosts` is not a table or view",
    "SELECT * FROM 'data.csv'": "`data.csv` is not a table or view",
    'SELECT * FROM "data.csv"': "`data.csv` is not a table or view",
    'SELECT * FROM main."data.csv"': "`data.csv` is not a table or view",
    'SELECT * FROM project."data.csv"': "`data.csv` is not a table or view",
    'SELECT * FROM project.main."data.csv"': "`data.csv` is not a table or view",
    "SELECT * FROM no_such_table": "`no_such_table` is not a table or view",
    "SUMMARIZE 'data.csv'": "`data.csv` is not a table or view",
    "DESCRIBE 'data.csv'": "`data.csv` is not a table or view",
    "SHOW 'data.csv'": "`data.csv` is not a table or view",
    # readers hidden deeper in the query
    "SELECT * FROM (SELECT * FROM read_csv('data.csv'))": "`read_csv()`",
    "WITH c AS (SELECT * FROM read_csv('data.csv')) SELECT * FROM c": "`read_csv()`",
    "SELECT id::VARCHAR FROM t UNION SELECT * FROM read_csv('data.csv')": "`read_csv()`",
    "SELECT (SELECT count(*) FROM read_csv('data.csv')) AS n": "`read_csv()`",
    "SELECT * FROM t WHERE category IN (SELECT * FROM read_csv('data.csv'))": "`read_csv()`",
    "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM 'data.csv')": "`data.csv`",
    "SELECT * FROM t JOIN read_csv('data.csv') r ON true": "`read_csv()`",
    "SELECT * FROM t, LATERAL (SELECT * FROM read_csv('data.csv')) s": "`read_csv()`",
    "SELECT list_transform([1], x -> (SELECT count(*) FROM 'data.csv'))": "`data.csv`",
    "SELECT * FROM t ORDER BY (SELECT count(*) FROM read_text('data.csv'))": "`read_text()`",
    # CTE names only shadow files where DuckDB's scoping says so
    'WITH "data.csv" AS (SELECT * FROM "data.csv") SELECT * FROM "data.csv"': "`data.csv`",
    'WITH y AS (SELECT * FROM "data.csv"), "data.csv" AS (SELECT 1) SELECT * FROM y': "`data.csv`",
    'SELECT * FROM (WITH "data.csv" AS (SELECT 1) SELECT * FROM "data.csv"), "data.csv"': "`data.csv`",
    # scalar functions that reach outside or change state
    "SELECT getenv('HOME')": "`getenv()` is not allowed",
    "SELECT nextval('s')": "`nextval()` is not allowed",
    "SELECT write_log('x')": "`write_log()` is not allowed",
    "SELECT current_setting('s3_region')": "`current_setting()` is not allowed",
    "SELECT * FROM t WHERE read_x(id)": "`read_x()` is not allowed",
    # unknown names would make DuckDB auto-install an extension from the network
    "SELECT excel_text(1, '0')": "unknown function `excel_text()`",
    "SELECT '127.0.0.1'::INET": "unknown type `INET`",
    "SELECT * FROM 's3://bucket/x.parquet'": "`s3://bucket/x.parquet` is not a table or view",
    "SELECT * FROM 'https://example.com/x.csv'": "is not a table or view",
}


@pytest.mark.parametrize("sql", list(REFUSED), ids=repr)
def test_refused(project, sql):
    con, cursor = project
    with pytest.raises(WorkbenchError) as info:
        run_readonly(cursor, sql)
    message = str(info.value)
    assert REFUSED[sql] in message
    assert "\n" not in message
    with pytest.raises(WorkbenchError):  # the checker alone refuses it too
        check_readonly(cursor, sql)


GOOD = {
    "SELECT 1": [(1,)],
    "SELECT * FROM t ORDER BY id": ROWS,
    "FROM t SELECT id ORDER BY id": [(1,), (2,), (3,)],
    "SELECT category, count(*) FROM t GROUP BY ALL ORDER BY 1": [("a", 2), ("b", 1)],
    "SELECT t.id, l.label FROM t JOIN labels l USING (category) ORDER BY 1":
        [(1, "alpha"), (2, "beta"), (3, "alpha")],
    "WITH c AS (SELECT * FROM t WHERE category = 'a') SELECT count(*) FROM c": [(2,)],
    "WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 FROM a) SELECT * FROM b": [(2,)],
    "WITH RECURSIVE r AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM r WHERE x < 3) "
    "SELECT * FROM r": [(1,), (2,), (3,)],
    "SELECT id, row_number() OVER (PARTITION BY category ORDER BY id) FROM t ORDER BY id":
        [(1, 1), (2, 1), (3, 2)],
    "SELECT * FROM range(5)": [(0,), (1,), (2,), (3,), (4,)],
    "SELECT * FROM v ORDER BY id": [(1,), (3,)],
    'SELECT id FROM "banking@v1" ORDER BY id': [(2,), (3,)],
    'SELECT id FROM main."banking@v1" ORDER BY id': [(2,), (3,)],
    'SELECT id FROM project.main.T ORDER BY id': [(1,), (2,), (3,)],
    "SELECT * FROM t WHERE id IN (SELECT id FROM v) ORDER BY id": [(1, "a"), (3, "a")],
    "SELECT (SELECT max(id) FROM t), EXISTS (SELECT 1 FROM labels)": [(3, True)],
    "SELECT id FROM t UNION SELECT 10 ORDER BY 1": [(1,), (2,), (3,), (10,)],
    "SELECT count(*) FROM duckdb_tables()": [(2,)],
    "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'": [(1,)],
    "SELECT column_name FROM (DESCRIBE t)": [("id",), ("category",)],
    "SHOW TABLES": [("banking@v1",), ("labels",), ("t",), ("v",)],
    "SELECT count(*) FROM (SUMMARIZE t)": [(2,)],
    "SELECT list_transform([1, 2], lambda x: x * 10)": [([10, 20],)],
    "SELECT 'a'::mood, DATE '2020-01-02' + INTERVAL 1 DAY > now() - INTERVAL 100 YEAR": [("a", True)],
    "SELECT * FROM (VALUES (1, 'x')) v(a, b)": [(1, "x")],
    "SELECT * FROM t PIVOT (count(*) FOR category IN ('a', 'b')) ORDER BY id": [(1, 1, 0), (2, 0, 1), (3, 1, 0)],
    "/* comment */ SELECT 1;": [(1,)],
}


@pytest.mark.parametrize("sql", list(GOOD), ids=repr)
def test_good_queries(project, sql):
    _, cursor = project
    table = run_readonly(cursor, sql)
    assert [tuple(r.values()) for r in table.to_pylist()] == GOOD[sql]
    assert table.schema.metadata[b"workbench.truncated"] == b"false"


def test_max_rows_truncates(project):
    _, cursor = project
    table = run_readonly(cursor, "SELECT * FROM range(1000000000000)", max_rows=7)
    assert table.num_rows == 7
    assert table.schema.metadata[b"workbench.truncated"] == b"true"
    assert run_readonly(cursor, "SELECT * FROM t", max_rows=3).schema.metadata[
        b"workbench.truncated"] == b"false"


def test_empty_result_keeps_columns(project):
    _, cursor = project
    table = run_readonly(cursor, "SELECT * FROM t WHERE id < 0")
    assert table.num_rows == 0 and table.column_names == ["id", "category"]


def test_timeout(project):
    _, cursor = project
    sql = "SELECT count(*) FROM range(1000000) a, range(1000000) b"
    with pytest.raises(WorkbenchError, match=r"query stopped after 0\.2 s"):
        run_readonly(cursor, sql, timeout_s=0.2)
    assert run_readonly(cursor, "SELECT 1").num_rows == 1  # cursor still usable


@pytest.mark.parametrize("sql, fragment", [
    ("SELEC 1", "SQL error: Parser Error"),
    ("SELECT nope FROM t", "SQL error: Binder Error"),
    ("SELECT 1/'x'", "SQL error:"),
])
def test_duckdb_errors_are_one_line(project, sql, fragment):
    _, cursor = project
    with pytest.raises(WorkbenchError) as info:
        run_readonly(cursor, sql)
    assert str(info.value).startswith(fragment) and "\n" not in str(info.value)


def test_rolled_back_and_cursor_reusable(project):
    con, cursor = project
    run_readonly(cursor, "SELECT 1")
    cursor.execute("BEGIN TRANSACTION")  # would fail if ours were left open
    cursor.execute("ROLLBACK")
    other = con.cursor()
    other.execute("BEGIN TRANSACTION")  # the caller's transaction is neither used nor disturbed
    assert run_readonly(other, "SELECT count(*) AS n FROM t").to_pylist() == [{"n": 3}]
    other.execute("ROLLBACK")


# ------------------------------------------------------------ the engine's own wall

def _unchecked(cursor, sql, **kw):
    """Run sql in the console's engine without the walker: what the engine alone allows."""
    from workbench.data import sandbox
    from workbench.data.sqlconsole import PRIVATE_TABLES

    snap = sandbox.take_snapshot(cursor, {"t", "labels"}, PRIVATE_TABLES)
    return sandbox.run(snap, sql, **{"max_rows": 100, "max_bytes": 1 << 20, "timeout_s": 10, **kw})


@pytest.mark.parametrize("sql, fragment", [
    ("SELECT * FROM read_text('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM 'data.csv'", "file system operations are disabled"),
    ("SELECT * FROM read_csv('data.csv')", "file system operations are disabled"),
    ("SELECT * FROM glob('/etc/*')", "disabled"),
    ("INSTALL httpfs", "disabled"),
    ("LOAD httpfs", "disabled"),
    ("SELECT '127.0.0.1'::INET", "inet extension"),  # not auto-installed
    ("SET enable_external_access = true", "configuration has been locked"),
    ("RESET lock_configuration", "configuration has been locked"),
    ("SET allowed_directories = ['/']", "configuration has been locked"),
    ("ATTACH 'other.duckdb' AS other", "disabled"),
    ("COPY t TO 'out.csv'", "disabled"),
    ("SELECT * FROM wb_users", "does not exist"),
])
def test_engine_forbids_files_extensions_and_settings(project, sql, fragment):
    """Whatever the walker misses, the engine running console SQL refuses by itself."""
    _, cursor = project
    with pytest.raises(WorkbenchError, match=fragment):
        _unchecked(cursor, sql)


@pytest.mark.parametrize("sql", [
    # json_serialize_plan binds (plans) the SQL text it is given: the old console let DuckDB open files
    "SELECT json_serialize_plan('SELECT * FROM ''s.json''')",
    "SELECT json_serialize_plan('SELECT * FROM read_json(''s.json'')')",
])
def test_sql_text_planned_inside_a_query_cannot_read_files(project, tmp_path, sql):
    _, cursor = project
    (tmp_path / "s.json").write_text('{"a": "TOPSECRET-1"}\n{"a": TOPSECRET-2\n')
    try:
        answer = json.dumps(run_readonly(cursor, sql).to_pylist())
    except WorkbenchError as exc:
        answer = str(exc)
    assert "Malformed JSON" not in answer and "TOPSECRET" not in answer and "line 3" not in answer
    assert "disabled by configuration" in answer
    (tmp_path / "s.json").unlink()


@pytest.mark.parametrize("sql, fragment", [
    ("SELECT * FROM pg_settings", "`pg_settings` is a system view"),
    ("SELECT * FROM pg_catalog.pg_settings", "system view"),
    ("SELECT path FROM duckdb_databases", "`duckdb_databases` is a system view"),
    ("SELECT * FROM sqlite_master", "system view"),
    ("SELECT * FROM duckdb_settings()", "`duckdb_settings()` is not allowed"),
    ("SELECT * FROM duckdb_databases()", "`duckdb_databases()` is not allowed"),
])
def test_system_views_are_hidden(project, sql, fragment):
    _, cursor = project
    with pytest.raises(WorkbenchError, match=re.escape(fragment)):
        run_readonly(cursor, sql)


def test_account_tables_are_not_even_in_the_catalog(project):
    con, cursor = project
    con.execute("CREATE TABLE wb_users(name VARCHAR, password_hash VARCHAR)")
    try:
        for sql in ("SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'wb_users'",
                    "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'wb_users'",
                    "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'wb_users'"):
            assert run_readonly(cursor, sql).to_pylist() == [{"n": 0}], sql
    finally:
        con.execute("DROP TABLE wb_users")
        con.execute("CHECKPOINT")


def test_result_has_a_byte_limit(project):
    _, cursor = project
    with pytest.raises(WorkbenchError, match="the result is larger than 4 MB"):
        run_readonly(cursor, "SELECT repeat('x', 1000000) AS s FROM range(10)", max_bytes=4 << 20)
    assert run_readonly(cursor, "SELECT repeat('x', 1000) AS s FROM range(10)", max_bytes=4 << 20).num_rows == 10


def test_timeout_stops_a_query_blocked_in_a_read(project, tmp_path):
    """A read that never returns (a FIFO among the data files) cannot be interrupted inside DuckDB;
    the console still answers."""
    import os
    import threading

    con, cursor = project
    data = tmp_path / "data"
    data.mkdir()
    (data / "pipe.csv").write_text("a\n1\n")
    con.execute(f"CREATE VIEW piped AS SELECT * FROM read_csv('{data / 'pipe.csv'}')")
    (data / "pipe.csv").unlink()
    os.mkfifo(data / "pipe.csv")
    answer = []

    def ask():
        try:
            run_readonly(cursor, "SELECT * FROM piped", timeout_s=0.5)
        except WorkbenchError as exc:
            answer.append(str(exc))

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(60)  # not a timing assert: without the fix it never returns
    try:
        assert not asker.is_alive() and answer and "query stopped after 0.5 s" in answer[0]
    finally:
        fd = os.open(data / "pipe.csv", os.O_WRONLY | os.O_NONBLOCK)  # let the blocked reader finish
        os.close(fd)
        con.execute("DROP VIEW piped")
        con.execute("CHECKPOINT")
        (data / "pipe.csv").unlink()
        data.rmdir()
