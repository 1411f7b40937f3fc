"""Immutable dataset versions: write one whole or not at all, hash its content, find it again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL
from workbench.core.store import Store, quote_ident, quote_literal

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
        present = dict(zip(table.column_names, table.columns))  # by name in O(1): wide files have 10,000s
        for name in present:
            if name not in self.columns:
                self.columns[name] = (hashlib.sha256(), hashlib.sha256(), hashlib.sha256())
                self._feed_nulls(name, self.rows)  # a column first seen now was NULL in every earlier row
        for name in self.columns:
            if name in present:
                self._feed(name, present[name])
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

ROW_GROUP_ROWS = 16_384
ROW_COLUMN = "_row"  # 0-based position of the record in its version, stored with the data


class _PartWriter:
    """Parquet parts of one version's folder; a new part starts when the columns change."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True)
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.parts = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        table = table.append_column(ROW_COLUMN, pa.array(range(self.rows, self.rows + table.num_rows), pa.int64()))
        self.rows += table.num_rows
        schema = self.pending[0].schema if self.pending else self.writer.schema if self.writer else None
        if schema is not None and table.schema != schema:
            try:
                table = table.cast(schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                self._flush()
                self._close_part()
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        if self.writer is None:
            text = [f.name for f in table.schema if pa.types.is_string(f.type)]
            self.writer = pq.ParquetWriter(
                self.folder / f"part-{self.parts:05d}.parquet", table.schema, compression="lz4",
                # Statistics on long texts cost time and help no query; keep them for short columns.
                write_statistics=[f.name for f in table.schema if f.name not in ("prompt", "completion", "messages")],
                use_dictionary=[c for c in text if c not in ("prompt", "completion", "messages", "system")])
            self.parts += 1
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def _close_part(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def close(self) -> None:
        self._flush()
        self._close_part()


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
) -> Version:
    """Store batches as a new immutable version: it appears whole or not at all.

    The records go to Parquet files in `data/v<id>/` (written aside, then renamed); the
    version row and its views are committed in one DuckDB transaction after that. Hashing
    runs in a second thread beside the Parquet writer. fmt, recipe and info may be callables,
    evaluated once every batch is stored (an import knows its format and skipped rows only then).
    """
    check_name(dataset)
    version_id = store.cursor().execute("SELECT nextval('wb_version_seq')").fetchall()[0][0]
    folder = store.project.data_dir / f"v{version_id}"
    partial = folder.with_name(folder.name + ".partial")
    hasher = ContentHasher()
    try:
        writer = _PartWriter(partial)
        with ThreadPoolExecutor(1) as pool:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                hashing = pool.submit(hasher.update, batch)
                writer.write(batch)
                hashing.result()
        writer.close()
        if not writer.rows:
            raise WorkbenchError("no records to store: the result is empty")
        os.replace(partial, folder)
        fmt_text = fmt() if callable(fmt) else fmt
        recipe_dict = recipe() if callable(recipe) else recipe
        info_dict = info() if callable(info) else info
        number = store.retry(lambda cur: _commit_version(  # two imports into one dataset race for its next number
            cur, version_id, dataset, parent_id, kind, fmt_text, recipe_dict, info_dict, hasher, folder, created_by),
            key_races=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return get_version(store, f"{dataset}@{number}")


def _commit_version(cur, version_id, dataset, parent_id, kind, fmt, recipe, info, hasher, folder, created_by) -> int:
    # A new version of an archived dataset brings it back into the lists: someone is working on it again.
    cur.execute("INSERT INTO wb_datasets (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET archived_at = NULL, "
                "archived_by = NULL", [dataset])
    number = cur.execute("SELECT coalesce(max(number), 0) + 1 FROM wb_versions WHERE dataset = ?",
                         [dataset]).fetchall()[0][0]
    table = f"wb_v{version_id}"
    cur.execute(
        "INSERT INTO wb_versions (version_id, dataset, number, parent_id, kind, format, recipe, row_count,"
        " content_hash, table_name, info, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [version_id, dataset, number, parent_id, kind, fmt, json.dumps(recipe, default=str), hasher.rows,
         hasher.hexdigest(), table, json.dumps(info or {}), created_by])
    files = quote_literal(str(folder / "*.parquet"))
    cur.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files}, union_by_name = true)")
    for name in (dataset, f"{dataset}@{number}"):
        name_view(cur, name, table)
    return number


def name_view(cur, name: str, table: str) -> None:
    """The view SQL users query by dataset name ('tickets', 'tickets@2'); the row column stays internal."""
    cur.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS SELECT * EXCLUDE ({ROW_COLUMN}) FROM {table}")


def remove_orphans(store: Store) -> list[Path]:
    """Version folders that no committed version owns (a crash mid-write) are deleted."""
    data = store.project.data_dir
    if not data.exists():
        return []
    owned = {f"v{r[0]}" for r in store.cursor().execute("SELECT version_id FROM wb_versions").fetchall()}
    removed = [p for p in data.iterdir() if p.name not in owned]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return removed


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
        rows = cur.execute(f"SELECT {_VERSION_COLS} FROM wb_versions WHERE dataset = ? ORDER BY number DESC LIMIT 1",
                           [name]).fetchall()
    else:
        if not number.lstrip("v").isdigit():
            raise WorkbenchError(f"{ref!r}: the version after '@' must be a number, for example {name}@2")
        rows = cur.execute(f"SELECT {_VERSION_COLS} FROM wb_versions WHERE dataset = ? AND number = ?",
                           [name, int(number.lstrip("v"))]).fetchall()
    row = rows[0] if rows else None
    if row is None:
        known = dict(cur.execute("SELECT name, archived_at IS NOT NULL FROM wb_datasets ORDER BY name").fetchall())
        if name in known:
            raise WorkbenchError(f"dataset {name!r} has no version {number}; see `workbench datasets --versions`")
        now = current_name(store, name)
        if now != name:
            raise WorkbenchError(f"no dataset named {name!r}: it was renamed to {now!r}")
        listed = [n for n, archived in known.items() if not archived]
        hint = f"; datasets here: {', '.join(listed)}" if listed else "; import one with `workbench import`"
        raise WorkbenchError(f"no dataset named {name!r}{hint}")
    return _version(row)


def current_name(store: Store, name: str) -> str:
    """The name a dataset has now, following its renames (a -> b -> c); `name` itself when it is in use or was
    never renamed. For names stored before a rename (a sweep's settings, a run's config); a name a user types
    is not followed silently (get_version says where it went)."""
    cur = store.cursor()
    now, seen = name, {name}
    while not cur.execute("SELECT 1 FROM wb_datasets WHERE name = ?", [now]).fetchall():
        later = cur.execute("SELECT new_name FROM wb_dataset_renames WHERE old_name = ? ORDER BY renamed_at DESC "
                            "LIMIT 1", [now]).fetchall()
        if not later or later[0][0] in seen:
            break
        now = later[0][0]
        seen.add(now)
    return now


def list_versions(store: Store, dataset: str | None = None) -> list[Version]:
    sql = f"SELECT {_VERSION_COLS} FROM wb_versions"
    params = []
    if dataset:
        sql += " WHERE dataset = ?"
        params.append(dataset)
    return [_version(r) for r in store.cursor().execute(sql + " ORDER BY dataset, number", params).fetchall()]


def archived_at(store: Store) -> dict[str, datetime]:
    """When each archived dataset was archived (archived datasets leave the lists; their versions stay)."""
    return dict(store.cursor().execute(
        "SELECT name, archived_at FROM wb_datasets WHERE archived_at IS NOT NULL").fetchall())


def list_datasets(store: Store, *, archived: bool | None = False) -> list[dict]:
    """One row per dataset: its newest version and how many versions it has.

    archived=False (the lists, the pickers): the datasets in use; True: only the archived ones;
    None: all. Both of the latter add `archived_at` (None while in use) to each row."""
    hidden = archived_at(store)
    latest: dict[str, dict] = {}
    for v in list_versions(store):
        if archived is not None and (v.dataset in hidden) != archived:
            continue
        latest[v.dataset] = {
            "name": v.dataset, "version": v.number, "versions": v.number, "records": v.row_count,
            "format": v.format, "content_hash": v.content_hash, "kind": v.kind,
            "created_at": _when(v.created_at),
        }
        if archived is not False:
            latest[v.dataset]["archived_at"] = _when(hidden.get(v.dataset))
    return list(latest.values())


def _when(stamp: datetime | None) -> str | None:
    return stamp.isoformat(sep=" ", timespec="seconds") if stamp else None


def version_columns(store: Store, version: Version) -> list[tuple[str, str]]:
    """(name, type) of the version's record columns, without the internal row column."""
    rows = store.cursor().execute(f"DESCRIBE {version.table_name}").fetchall()
    return [(r[0], r[1]) for r in rows if r[0] != ROW_COLUMN]


# `scan_strings` keeps few, small batches in flight: pyarrow's defaults (16 x 64K rows) hold most of a
# 1M-record version in memory at once, and first-touch page faults then cost more than the scan
SCAN_READAHEAD = 4


def parquet_files(store: Store, version: Version) -> list[Path]:
    """The Parquet files that hold a version's records (its DuckDB view reads the same files)."""
    return sorted((store.project.data_dir / f"v{version.version_id}").glob("*.parquet"))


def scan_strings(store: Store, version: Version, columns: list[str], *, batch_rows: int = 8_192):
    """Record batches of `_row` and the given string columns, straight from the version's Parquet
    files with pyarrow (about 3x faster than a DuckDB scan into Arrow on 1M records), in no
    particular order; None when a file lacks a column or holds it as another type (read with DuckDB)."""
    import pyarrow.dataset as ds

    files = parquet_files(store, version)
    if not files:
        return None
    for f in files:
        schema = pq.read_schema(f)
        for name in [ROW_COLUMN, *columns]:
            if name not in schema.names:
                return None
            kind = schema.field(name).type
            if name != ROW_COLUMN and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                return None
    return ds.dataset([str(f) for f in files], format="parquet").to_batches(
        columns=[ROW_COLUMN, *columns], batch_size=batch_rows, batch_readahead=SCAN_READAHEAD)


def iter_version(store: Store, version: Version, *, batch_rows: int = 50_000, where: str = ""):
    """The version's rows in order, as Arrow tables (never the whole version in memory)."""
    cur = store.con.cursor()
    try:
        reader = cur.sql(f"SELECT * EXCLUDE ({ROW_COLUMN}) FROM {version.table_name} {where}").to_arrow_reader(
            batch_rows)
        for batch in reader:
            yield pa.Table.from_batches([batch])
    finally:
        cur.close()
