"""The project's DuckDB store: one read-write connection per process, a cursor per thread.

Record data of each dataset version lives in immutable Parquet files under `data/v<id>/`,
seen through the view `wb_v<id>`; metadata, quarantine and (later) annotations live in
`wb_*` tables. A view named after each dataset points at its newest version so SQL users
can write `SELECT ... FROM banking` (and `"banking@2"` for an older version).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from workbench.core.errors import StoreBusy, WorkbenchError
from workbench.core.project import Project, open_project
from workbench.core.schema import MIGRATIONS

# Keep quarantined raw rows readable but bounded.
QUARANTINE_RAW_CHARS = 100_000


def quote_ident(name: str) -> str:
    """A SQL identifier, quoted: dataset and column names come from users."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Store:
    """The read-write DuckDB connection of this process."""

    def __init__(self, project: Project, *, memory_limit: str = "1GB"):
        self.project = project
        try:
            self.con = duckdb.connect(str(project.db_path))
        except duckdb.IOException as exc:
            msg = str(exc).splitlines()[0]
            raise StoreBusy(
                f"cannot open {project.db_path}: {msg}. Is another workbench process (app or CLI) using this project?"
            ) from None
        self.con.execute(f"SET memory_limit='{memory_limit}'")
        self.con.execute("SET preserve_insertion_order=true")
        self._local = threading.local()
        self._state: dict[str, object] = {}
        self._state_lock = threading.Lock()
        self._migrate()
        project.data_dir.mkdir(parents=True, exist_ok=True)
        from workbench.core.versions import remove_orphans  # versions builds on the store

        remove_orphans(self)

    @classmethod
    def open(cls, project_dir=None, *, create: bool = True) -> Store:
        return cls(open_project(project_dir, create=create))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared across threads)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self.con.cursor()
        return cur

    @contextmanager
    def transaction(self, retries: int = 5) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short write transaction on a fresh cursor; commits on success, rolls back on error.

        Conflicts with a concurrent writer are retried by `retry`, not here: a
        generator cannot re-run its body.
        """
        cur = self.con.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass
            raise
        finally:
            cur.close()

    def retry(self, fn, *, attempts: int = 6, key_races: bool = False):
        """Run fn(cursor) in a transaction, retrying DuckDB write-write conflicts.

        key_races: fn's inserts are INSERT ... ON CONFLICT, or pick their key inside the transaction (max + 1).
        Such an insert cannot break its key by itself, but DuckDB raises a ConstraintException ('Duplicate key')
        when another transaction inserted the same key after this one began: a race to retry, since a fresh
        transaction sees that row (and updates it, or picks the next key). One that outlives the retries is real."""
        conflicts: tuple[type[Exception], ...] = (
            (duckdb.TransactionException, duckdb.ConstraintException) if key_races else (duckdb.TransactionException,))
        for attempt in range(attempts):
            try:
                with self.transaction() as cur:
                    return fn(cur)
            except conflicts as e:
                if attempt == attempts - 1:
                    if isinstance(e, duckdb.ConstraintException):
                        raise
                    raise WorkbenchError("the store stayed busy with another write; try again") from None
                time.sleep(0.05 * 2**attempt)

    def _migrate(self) -> None:
        """Apply the schema's migrations that this database has not seen yet, in order, each in one
        transaction with the version it brings the database to."""
        cur = self.con.cursor()
        try:
            cur.execute("CREATE TABLE IF NOT EXISTS wb_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            row = cur.execute("SELECT value FROM wb_meta WHERE key = 'schema_version'").fetchone()
            applied = int(row[0]) if row else 0
            newest = MIGRATIONS[-1].number
            if applied > newest:
                raise WorkbenchError(
                    f"{self.project.db_path} was written by a newer Workbench (schema {applied}, this one knows "
                    f"{newest}); upgrade Workbench to open it")
            for migration in MIGRATIONS:
                if migration.number <= applied:
                    continue
                cur.execute("BEGIN TRANSACTION")
                cur.execute(migration.ddl)
                cur.execute("INSERT OR REPLACE INTO wb_meta VALUES ('schema_version', ?)", [str(migration.number)])
                cur.execute("COMMIT")
        finally:
            cur.close()

    def state(self, name: str, factory):
        """A module's state that lives as long as this store (open indexes, background builds, locks),
        created once by factory(): kept here rather than in module globals, so it dies with the store."""
        with self._state_lock:
            if name not in self._state:
                self._state[name] = factory()
            return self._state[name]

    def checkpoint(self) -> None:
        self.con.execute("CHECKPOINT")

    def close(self) -> None:
        # Closing explicitly flushes the WAL and keeps the duckdb bindings quiet at exit.
        cur = getattr(self._local, "cursor", None)
        if cur is not None:
            cur.close()
            self._local.cursor = None
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
