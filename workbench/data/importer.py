"""Import a file into a new dataset version, with every bad row reported by line and field.

Two paths, one result. The fast path streams Arrow batches (readers.FastReader: pyarrow's multi-threaded
JSON and CSV readers, Parquet, Hugging Face folders) and checks whole columns at once.
When a text file has anything wrong with it, the exact path re-reads it line by line (readers.exact_rows)
so that each error names the real line number, and reports every bad row.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from workbench.core.batches import check_batch, line_ending_fields, normalise_line_endings
from workbench.core.canonical import convert_row
from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL, Mapping, RowError, guess_mapping, resolve_mapping
from workbench.core.store import QUARANTINE_RAW_CHARS, Store
from workbench.core.versions import Version, check_name, write_version
from workbench.data.readers import (
    READ_ERRORS,
    SLOW_CHUNK_ROWS,
    FastReader,
    check_not_empty,
    detect_kind,
    exact_rows,
    from_dicts,
    list_columns,
)

MAX_REPORTED_ERRORS = 1000

Progress = Callable[[float, str], None]


@dataclass
class ImportResult:
    dataset: str
    version: Version | None
    imported: int
    skipped: int
    errors: list[dict] = field(default_factory=list)
    error_count: int = 0
    format: str = ""
    kind: str = ""
    seconds: float = 0.0
    line_endings_normalised: int = 0  # records whose text had CRLF or lone CR line endings, now LF
    line_endings_by_field: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "version": self.version.number if self.version else None,
            "version_id": self.version.version_id if self.version else None,
            "content_hash": self.version.content_hash if self.version else None,
            "records": self.imported,
            "imported": self.imported,
            "skipped": self.skipped,
            "format": self.format,
            "file_kind": self.kind,
            "error_count": self.error_count,
            "errors": self.errors,
            "line_endings_normalised": self.line_endings_normalised,
            "seconds": round(self.seconds, 3),
        }


class ImportRejected(WorkbenchError):
    """--on-error fail and some rows are bad: nothing was imported."""

    def __init__(self, result: ImportResult):
        self.result = result
        first = result.errors[0]
        super().__init__(
            f"{result.error_count} bad row{'s' if result.error_count != 1 else ''}, nothing imported; first: "
            f"{_where(result.kind)} {first['line']}: {first['error']}. Fix them or use --on-error skip"
        )


def _where(kind: str) -> str:
    return "line" if kind in ("jsonl", "csv", "tsv") else "record"


# ---------------------------------------------------------------- the import

def import_file(
    store: Store,
    path: str | os.PathLike,
    dataset: str,
    *,
    fmt: str = "auto",
    on_error: str = "fail",
    prompt_col: str | None = None,
    completion_col: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    messages_col: str | None = None,
    input_col: str | None = None,
    chosen_col: str | None = None,
    rejected_col: str | None = None,
    progress: Progress | None = None,
    created_by: str | None = None,
    max_field_mb: float | None = None,
    user=None,
) -> ImportResult:
    """Import a file as a new version of `dataset` (created when new).

    on_error='fail': any bad row means nothing is imported and ImportRejected lists them.
    on_error='skip': good rows are imported; bad ones go to the quarantine table.
    """
    from workbench.core.auth import require_role

    require_role(user, "import")  # user: the signed-in account; None is the local owner (CLI, scripts)
    created_by = created_by or (user.name if user is not None else None)
    t0 = time.perf_counter()
    path = Path(path).expanduser()
    check_name(dataset)
    if on_error not in ("fail", "skip"):
        raise WorkbenchError(f"--on-error must be fail or skip, not {on_error!r}")
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file")
    kind = detect_kind(path)
    check_not_empty(path, kind)
    if max_field_mb is None:
        max_field_mb = float(store.project.setting("import", "max_field_mb", 1.0))
    progress = progress or _no_progress
    overrides = dict(prompt_col=prompt_col, completion_col=completion_col, text_col=text_col, label_col=label_col,
                     messages_col=messages_col, input_col=input_col, chosen_col=chosen_col, rejected_col=rejected_col)
    result = _Import(store, path, dataset, kind, fmt=fmt, overrides=overrides, on_error=on_error,
                     max_bytes=int(max_field_mb * 1_000_000), progress=progress, created_by=created_by).run()
    result.seconds = time.perf_counter() - t0
    progress(1.0, f"imported {result.imported:,} records")
    return result


def _no_progress(fraction: float, message: str) -> None:
    pass


class _Abandon(Exception):
    """Raised out of write_version's batches: the one way to stop it with nothing stored. Only
    _Import._write_fast raises it, and it catches it at once."""


class _Import:
    """One import, step by step: the fast path, and the exact path when the fast one gives up.

    State both paths share, in the open: `result` (counts, errors, format), `mapping` (resolved from the
    first columns or record either path sees, kept for the other) and `quarantined` (bad rows to store
    when on_error='skip').
    """

    def __init__(self, store: Store, path: Path, dataset: str, kind: str, *, fmt: str, overrides: dict,
                 on_error: str, max_bytes: int, progress: Progress, created_by: str | None):
        self.store, self.path, self.dataset, self.kind = store, path, dataset, kind
        self.fmt, self.overrides, self.on_error, self.max_bytes = fmt, overrides, on_error, max_bytes
        self.progress, self.created_by = progress, created_by
        self.result = ImportResult(dataset, None, 0, 0, kind=kind)
        self.mapping: Mapping | None = None
        self.quarantined: list[tuple] = []
        self.parent = _latest_version_id(store, dataset)

    def run(self) -> ImportResult:
        version = self._write_fast()
        if version is None:  # a bad row, or a file the fast path cannot place on lines: re-read it row by row
            version = self._write_exact()
        self.result.version = version
        if self.result.skipped:
            _quarantine(self.store, self.dataset, version, self.path, self.quarantined)
        return self.result

    # ------------------------------------------------ the fast path

    def _write_fast(self) -> Version | None:
        """The file through Arrow batches, checked whole columns at a time; None (nothing stored) when a batch
        has a bad row or the reader cannot place the file on lines."""
        try:
            return self._write(self._fast_tables(FastReader(self.path, self.kind)))
        except _Abandon:
            return None

    def _fast_tables(self, reader: FastReader) -> Iterator[pa.Table]:
        for table, fraction in reader.batches():
            canonical = self._checked(table)
            if canonical is None:
                raise _Abandon()
            yield canonical
            self.progress(fraction, f"read {fraction:.0%}")
        if reader.exact_needed:
            raise _Abandon()

    def _checked(self, table: pa.Table) -> pa.Table | None:
        """The batch in canonical columns; None when a row is bad or the batch cannot be checked (the exact
        path then gives exact line numbers, every error, the quarantine)."""
        mapping = self._mapping_for(table.column_names)
        try:
            table.validate(full=True)  # the JSON reader lets invalid UTF-8 through
            errors, canonical = check_batch(table, mapping, self.max_bytes)
        except READ_ERRORS:
            return None
        return None if errors else canonical

    def _mapping_for(self, columns: list[str]) -> Mapping:
        if self.mapping is None:
            self.mapping = resolve_mapping(columns, self.fmt, **self.overrides)
            self.result.format = self.mapping.format
        return self.mapping

    # ------------------------------------------------ the exact path

    def _write_exact(self) -> Version:
        """Every row checked on its own. Raises ImportRejected (on_error='fail' and a row is bad), or a
        WorkbenchError that says so when every row is bad."""
        result = self.result
        result.imported, result.line_endings_normalised, result.line_endings_by_field = 0, 0, {}
        self.progress(0.0, "checking every line")
        try:
            return self._write(self._exact_tables())
        except ImportRejected:
            raise
        except WorkbenchError:
            if result.imported or not result.error_count:
                raise
            _quarantine(self.store, self.dataset, None, self.path, self.quarantined)
            first = result.errors[0]
            raise WorkbenchError(f"no good records in {self.path.name}: all {result.error_count} rows are bad; "
                                 f"first: {_where(self.kind)} {first['line']}: {first['error']}") from None

    def _exact_tables(self) -> Iterator[pa.Table]:
        rows: list[dict] = []
        for number, obj, raw in exact_rows(self.path, self.kind):
            row = self._converted(obj)
            if isinstance(row, RowError):
                self._count_bad_row(number, obj, raw, row)
            elif not self._rejected():
                rows.append(row)
                if len(rows) >= SLOW_CHUNK_ROWS:
                    yield _rows_to_table(rows)
                    rows = []
        if self._rejected():
            raise ImportRejected(self.result)
        if rows:
            yield _rows_to_table(rows)
        self.result.skipped = self.result.error_count  # known once every row is read, before the recipe is written

    def _converted(self, obj: object) -> dict | RowError:
        """A parsed record in canonical fields, or why it cannot be imported."""
        if isinstance(obj, RowError):
            return obj
        if isinstance(obj, dict):
            self._mapping_for(list(obj.keys()))
        if self.mapping is None:
            return RowError(None, "expected an object with fields")
        try:
            row = convert_row(obj, self.mapping, self.max_bytes)
        except RowError as exc:
            return exc
        return RowError(None, "expected an object with fields") if row is None else row

    def _count_bad_row(self, number: int, obj: object, raw: str, error: RowError) -> None:
        result = self.result
        result.error_count += 1
        if len(result.errors) < MAX_REPORTED_ERRORS:
            result.errors.append({"line": number, "field": error.field, "error": error.reason})
            if self.on_error == "skip":
                text = (raw or json.dumps(obj, default=str))[:QUARANTINE_RAW_CHARS]
                self.quarantined.append((number, error.field, error.reason, text))

    def _rejected(self) -> bool:
        """on_error='fail' and a row is bad: nothing will be imported, errors are only counted."""
        return self.on_error == "fail" and self.result.error_count > 0

    # ------------------------------------------------ the version

    def _write(self, tables: Iterator[pa.Table]) -> Version:
        return write_version(self.store, self.dataset, self._counted(tables), kind="import", fmt=self._format,
                             recipe=self._recipe, info=self._info, parent_id=self.parent, created_by=self.created_by)

    def _counted(self, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """The canonical batches as stored: counted, and their line endings made LF."""
        result = self.result
        for t in tables:
            t, per_field, changed = normalise_line_endings(t, line_ending_fields(self._format()))
            result.line_endings_normalised += changed
            for name, n in per_field.items():
                result.line_endings_by_field[name] = result.line_endings_by_field.get(name, 0) + n
            result.imported += t.num_rows
            yield t

    def _resolved(self) -> Mapping:
        """The mapping: write_version asks for format, recipe and info only once rows are stored, so it is set."""
        assert self.mapping is not None
        return self.mapping

    def _format(self) -> str:
        return self._resolved().format

    def _info(self) -> dict:
        mapping = self._resolved()
        return {"label_column": mapping.label_column, "source_columns": mapping.columns}

    def _recipe(self) -> dict:
        mapping = self._resolved()
        stat = self.path.stat() if self.path.is_file() else None
        return {"source": str(self.path.resolve()), "file_kind": self.kind,
                "file_bytes": stat.st_size if stat else None, "format": mapping.format, "mapping": mapping.columns,
                "on_error": self.on_error, "skipped": self.result.skipped,
                "line_endings": {"normalised": self.result.line_endings_normalised,
                                 "by_field": dict(self.result.line_endings_by_field)}}


@dataclass
class ColumnChoices:
    """What the app's column mapping offers for a file: its columns and the best guesses."""

    columns: list[str]
    format: str  # prompt-completion, classification or chat
    guess: dict[str, str | None]  # prompt_col, completion_col, text_col, label_col, messages_col -> a column


def column_choices(path: str | os.PathLike) -> ColumnChoices:
    """The file's columns (read from its head only) and guesses for mapping them, for a user to confirm."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file")
    kind = detect_kind(path)
    check_not_empty(path, kind)
    columns = list_columns(path, kind)
    if not columns:
        raise WorkbenchError(f"{path.name}: no columns found in its first records")
    guess = guess_mapping(columns)
    return ColumnChoices(columns, str(guess.pop("format")), guess)


def _latest_version_id(store: Store, dataset: str) -> int | None:
    """A re-import continues the dataset's lineage: its parent is the newest version so far."""
    rows = store.cursor().execute("SELECT max(version_id) FROM wb_versions WHERE dataset = ?", [dataset]).fetchall()
    return rows[0][0]


def _rows_to_table(rows: list[dict]) -> pa.Table:
    try:
        table = from_dicts(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed types in an extra column: keep its values as text.
        keys = list(dict.fromkeys(k for r in rows for k in r))
        cols = {}
        for k in keys:
            vals = [r.get(k) for r in rows]
            try:
                cols[k] = pa.array(vals)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                cols[k] = pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v))
                                    for v in vals], pa.string())
        table = pa.table(cols)
    order = [c for c in CANONICAL] + [c for c in table.column_names if c not in CANONICAL]
    return table.select(order)


def _quarantine(store: Store, dataset: str, version: Version | None, path: Path, rows: list) -> None:
    def insert(cur):
        cur.executemany(
            "INSERT INTO wb_quarantine (dataset, version_id, source, line, field, error, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(dataset, version.version_id if version else None, str(path), n, f, e, raw) for n, f, e, raw in rows])
    store.retry(insert)


def quarantine(store: Store, dataset: str | None = None, *, limit: int = 1000) -> list[dict]:
    sql = "SELECT dataset, version_id, source, line, field, error, raw, created_at FROM wb_quarantine"
    params: list = []
    if dataset:
        sql += " WHERE dataset = ?"
        params.append(dataset)
    cur = store.cursor()
    rows = cur.execute(sql + " ORDER BY created_at, line LIMIT ?", params + [limit]).fetchall()
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in rows]
