"""Immutable dataset versions: write one whole or not at all, hash its content, find it again."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.errors import WorkbenchError
from workbench.formats import CANONICAL
from workbench.store import Store

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Version:
    version_id: int
    dataset: str
    number: int
    parent_id: int | None
    kind: str
    format: str
    recipe: dict
    row_count: int
    content_hash: str
    table_name: str
    info: dict
    created_at: datetime | None = None
    created_by: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.number}"

    @property
    def label_column(self) -> str | None:
        return self.info.get("label_column")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or name.lower().startswith("wb_"):
        raise WorkbenchError(
            f"dataset name {name!r} is not allowed; use letters, digits, '_', '-' or '.', "
            "starting with a letter (and not 'wb_')"
        )
    return name


# ---------------------------------------------------------------- content hash

class ContentHasher:
    """sha256 over the canonical text of every column, in row order, independent of file format.

    Each column is hashed on its own, as three streams (validity, value lengths, value bytes),
    batch by batch, so the hash needs no second pass and does not depend on how the rows were
    chunked. Values are compared as text: the same record read from JSONL, CSV or Parquet
    hashes alike. For extra columns NULL and '' hash alike, because CSV cannot tell them apart.
    """

    def __init__(self):
        self.rows = 0
        self.columns: dict[str, tuple] = {}

    def update(self, table: pa.Table) -> None:
        n = table.num_rows
        for name in table.column_names:
            if name not in self.columns:
                self.columns[name] = (hashlib.sha256(), hashlib.sha256(), hashlib.sha256())
                self._feed_nulls(name, self.rows)  # a column first seen now was NULL in every earlier row
        for name in self.columns:
            if name in table.column_names:
                self._feed(name, table.column(name))
            else:
                self._feed_nulls(name, n)
        self.rows += n

    def _feed_nulls(self, name: str, n: int) -> None:
        valid, lengths, _ = self.columns[name]
        if n:
            lengths.update(np.zeros(n, "<i8").tobytes())
            if name in CANONICAL:
                valid.update(np.zeros(n, np.uint8).tobytes())

    def _feed(self, name: str, col: pa.ChunkedArray | pa.Array) -> None:
        valid, lengths, data = self.columns[name]
        for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
            arr = _as_text(chunk)
            if name in CANONICAL:
                valid.update(arr.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
            arr = pc.fill_null(arr, "")
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1]
            lengths.update(np.diff(offsets).astype("<i8").tobytes())
            if len(arr) and offsets[-1] > offsets[0]:
                data.update(memoryview(arr.buffers()[2])[offsets[0]: offsets[-1]])

    def hexdigest(self) -> str:
        top = hashlib.sha256(f"rows={self.rows}\n".encode())
        for name in sorted(self.columns, key=lambda c: (c not in CANONICAL, c)):
            top.update(name.encode() + b"\0" + b"".join(h.digest() for h in self.columns[name]))
        return top.hexdigest()


def _as_text(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_nested(t):  # lists and structs: canonical JSON per value
        return pa.array([None if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)
                         for v in arr.to_pylist()], pa.string())
    if pa.types.is_floating(t):
        # Integral floats print as integers so 3.0 (JSON) and "3" (CSV) agree.
        vals = arr.to_pylist()
        return pa.array([None if v is None else (str(int(v)) if float(v).is_integer() else repr(v)) for v in vals],
                        pa.string())
    if pa.types.is_boolean(t):
        return pc.if_else(arr, "true", "false")
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())


# ---------------------------------------------------------------- writing

def write_version(
    store: Store,
    dataset: str,
    batches: Iterable[pa.Table],
    *,
    kind: str,
    fmt: str | Callable[[], str],
    recipe: dict | Callable[[], dict],
    info: dict | Callable[[], dict] | None = None,
    parent_id: int | None = None,
    created_by: str | None = None,
    on_batch: Callable[[pa.Table], None] | None = None,
) -> Version:
    """Store batches as a new immutable version, in one transaction: it appears whole or not at all.

    fmt, recipe and info may be callables, evaluated once every batch is stored (an import
    knows its format and skipped rows only then).
    """
    check_name(dataset)
    con = store.con.cursor()
    hasher = ContentHasher()
    table = None
    try:
        con.execute("BEGIN TRANSACTION")
        version_id = con.execute("SELECT nextval('wb_version_seq')").fetchall()[0][0]
        table = f"wb_v{version_id}"
        columns: dict[str, str] = {}
        for batch in batches:
            if batch.num_rows == 0:
                continue
            hasher.update(batch)
            _append(con, table, batch, columns)
            if on_batch:
                on_batch(batch)
        if not columns:
            raise WorkbenchError("no records to store: the result is empty")
        con.execute("INSERT INTO wb_datasets (name) VALUES (?) ON CONFLICT DO NOTHING", [dataset])
        number = con.execute(
            "SELECT coalesce(max(number), 0) + 1 FROM wb_versions WHERE dataset = ?", [dataset]
        ).fetchall()[0][0]
        content_hash = hasher.hexdigest()
        fmt, recipe, info = (x() if callable(x) else x for x in (fmt, recipe, info))
        con.execute(
            "INSERT INTO wb_versions (version_id, dataset, number, parent_id, kind, format, recipe, row_count,"
            " content_hash, table_name, info, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [version_id, dataset, number, parent_id, kind, fmt, json.dumps(recipe, default=str), hasher.rows,
             content_hash, table, json.dumps(info or {}), created_by],
        )
        con.execute(f'CREATE OR REPLACE VIEW "{dataset}" AS SELECT * FROM {table}')
        con.execute(f'CREATE OR REPLACE VIEW "{dataset}@{number}" AS SELECT * FROM {table}')
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    finally:
        con.close()
    store.checkpoint()
    return get_version(store, f"{dataset}@{number}")


def _append(con, table: str, batch: pa.Table, columns: dict[str, str]) -> None:
    """Append a batch; new columns are added and a type clash widens the column to text."""
    con.register("wb_batch", batch)
    try:
        if not columns:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM wb_batch")
        else:
            for name in batch.column_names:
                if name not in columns:
                    ddl_type = con.execute(f'SELECT typeof("{_q(name)}") FROM wb_batch LIMIT 1').fetchall()[0][0]
                    con.execute(f'ALTER TABLE {table} ADD COLUMN "{_q(name)}" {ddl_type}')
            for attempt in range(len(batch.column_names) + 1):
                try:
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM wb_batch")
                    break
                except duckdb.ConversionException:
                    widened = _widen_one(con, table, batch, columns)
                    if not widened:
                        raise
        for name, typ in con.execute(f"SELECT column_name, data_type FROM duckdb_columns() "
                                     f"WHERE table_name = '{table}'").fetchall():
            columns[name] = typ
    finally:
        con.unregister("wb_batch")


def _widen_one(con, table: str, batch: pa.Table, columns: dict[str, str]) -> bool:
    for name in batch.column_names:
        if columns.get(name) not in (None, "VARCHAR"):
            con.execute(f'ALTER TABLE {table} ALTER COLUMN "{_q(name)}" TYPE VARCHAR')
            columns[name] = "VARCHAR"
            return True
    return False


def _q(name: str) -> str:
    return name.replace('"', '""')


# ---------------------------------------------------------------- reading

_VERSION_COLS = ("version_id, dataset, number, parent_id, kind, format, recipe, row_count, content_hash, "
                 "table_name, info, created_at, created_by")


def _version(row) -> Version:
    (vid, ds, num, parent, kind, fmt, recipe, rows, h, table, info, created, by) = row
    return Version(vid, ds, num, parent, kind, fmt, json.loads(recipe or "{}"), rows, h, table,
                   json.loads(info or "{}"), created, by)


def get_version(store: Store, ref: str) -> Version:
    """'name' (newest version), 'name@3' or 'name@latest'."""
    name, _, number = ref.partition("@")
    cur = store.cursor()
    if number in ("", "latest"):
        row = cur.execute(f"SELECT {_VERSION_COLS} FROM wb_versions WHERE dataset = ? ORDER BY number DESC LIMIT 1",
                          [name]).fetchall()
    else:
        if not number.lstrip("v").isdigit():
            raise WorkbenchError(f"{ref!r}: the version after '@' must be a number, for example {name}@2")
        row = cur.execute(f"SELECT {_VERSION_COLS} FROM wb_versions WHERE dataset = ? AND number = ?",
                          [name, int(number.lstrip("v"))]).fetchall()
    row = row[0] if row else None
    if row is None:
        known = [r[0] for r in cur.execute("SELECT name FROM wb_datasets ORDER BY name").fetchall()]
        if name in known:
            raise WorkbenchError(f"dataset {name!r} has no version {number}; see `workbench datasets`")
        hint = f"; datasets here: {', '.join(known)}" if known else "; import one with `workbench import`"
        raise WorkbenchError(f"no dataset named {name!r}{hint}")
    return _version(row)


def list_versions(store: Store, dataset: str | None = None) -> list[Version]:
    sql = f"SELECT {_VERSION_COLS} FROM wb_versions"
    params = []
    if dataset:
        sql += " WHERE dataset = ?"
        params.append(dataset)
    return [_version(r) for r in store.cursor().execute(sql + " ORDER BY dataset, number", params).fetchall()]


def list_datasets(store: Store) -> list[dict]:
    """One row per dataset: its newest version and how many versions it has."""
    latest: dict[str, dict] = {}
    for v in list_versions(store):
        latest[v.dataset] = {
            "name": v.dataset, "version": v.number, "versions": v.number, "records": v.row_count,
            "format": v.format, "content_hash": v.content_hash, "kind": v.kind,
            "created_at": v.created_at.isoformat(sep=" ", timespec="seconds") if v.created_at else None,
        }
    return list(latest.values())


def version_columns(store: Store, version: Version) -> list[tuple[str, str]]:
    return store.cursor().execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
        [version.table_name]).fetchall()


def iter_version(store: Store, version: Version, *, batch_rows: int = 50_000, where: str = ""):
    """The version's rows in order, as Arrow tables (never the whole version in memory)."""
    cur = store.con.cursor()
    try:
        reader = cur.sql(f"SELECT * FROM {version.table_name} {where} ORDER BY rowid").to_arrow_reader(batch_rows)
        for batch in reader:
            yield pa.Table.from_batches([batch])
    finally:
        cur.close()
