"""Import a file into a new dataset version, with every bad row reported by line and field.

Two paths, one result. The fast path streams Arrow batches (pyarrow's multi-threaded
JSON and CSV readers, Parquet, Hugging Face folders) and checks whole columns at once.
When a text file has anything wrong with it, the exact path re-reads it line by line
so that each error names the real line number, and reports every bad row.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from workbench.core.errors import WorkbenchError
from workbench.core.formats import (
    CANONICAL,
    MAX_JSON_DEPTH,
    MAX_NESTING,
    Mapping,
    RowError,
    check_batch,
    convert_row,
    json_depth,
    jsonl_file_too_deep,
    resolve_mapping,
    too_deep_reason,
)
from workbench.core.store import QUARANTINE_RAW_CHARS, Store
from workbench.core.versions import Version, check_name, write_version
from workbench.data.export import CSV_ESCAPE_MARKER, unescape_csv, unescape_csv_value

KINDS = ("jsonl", "json", "csv", "tsv", "parquet", "hf")
MAX_REPORTED_ERRORS = 1000
BLOCK_BYTES = 4 << 20
SLOW_CHUNK_ROWS = 20_000

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


class _SlowPath(Exception):
    """The fast path met something it cannot place on a line; re-read exactly."""


def _where(kind: str) -> str:
    return "line" if kind in ("jsonl", "csv", "tsv") else "record"


# ---------------------------------------------------------------- file kinds

def detect_kind(path: Path) -> str:
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
            return "hf"
        raise WorkbenchError(f"{path} is a folder but not a Hugging Face dataset saved with save_to_disk "
                             "(no dataset_dict.json or state.json)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in (".parquet", ".pq"):
        return "parquet"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "json" if suffix == ".json" and _single_json_document(path) else "jsonl"
    raise WorkbenchError(f"{path.name}: cannot tell the file type; use .jsonl, .json, .csv, .tsv or .parquet")


def _single_json_document(path: Path) -> bool:
    with open(path, "rb") as f:
        first = f.readline()
    if json_depth(first) > MAX_JSON_DEPTH:
        return True  # not parsed here: the document reader says it is too deep
    try:
        json.loads(first)
        return False  # the first line is a whole object: JSON lines
    except ValueError:
        return True


def _check_not_empty(path: Path, kind: str) -> None:
    if kind == "hf":
        return
    if path.stat().st_size == 0:
        raise WorkbenchError(f"{path.name} is empty: there are no records to import")
    with open(path, "rb") as f:
        if not f.read(1 << 16).strip(b" \t\r\n\xef\xbb\xbf"):
            raise WorkbenchError(f"{path.name} holds only whitespace: there are no records to import")


# ---------------------------------------------------------------- fast readers (Arrow batches)

def _fast_batches(path: Path, kind: str) -> Iterator[tuple[pa.Table, float]]:
    """(batch, fraction of the file read) in file order."""
    size = max(path.stat().st_size, 1) if kind != "hf" else 1
    if kind == "jsonl":
        if jsonl_file_too_deep(path, BLOCK_BYTES):
            raise _SlowPath()  # Arrow's reader would overflow its stack; each line is checked on its own
        with open(path, "rb") as f:
            reader = pajson.open_json(f, read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))
            for batch in reader:
                yield pa.Table.from_batches([batch]), min(f.tell() / size, 0.99)
    elif kind in ("csv", "tsv"):
        delimiter = "\t" if kind == "tsv" else ","
        header = _csv_header(path, delimiter)
        with open(path, "rb") as f:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                # Text stays text: ids like 00123 keep their zeros, and the content hash matches JSON's.
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                     strings_can_be_null=True, quoted_strings_can_be_null=True),
            )
            ours = header[-1] == CSV_ESCAPE_MARKER  # our own export: undo its formula escapes
            keep = len(header) - 1 if ours else len(header)
            for batch in reader:
                # One new table, not one per column (set_column copies the schema: quadratic when wide).
                columns = [unescape_csv(c) if ours else c for c in batch.columns[:keep]]
                yield pa.Table.from_arrays(columns, names=batch.schema.names[:keep]), min(f.tell() / size, 0.99)
    elif kind == "parquet":
        pf = pq.ParquetFile(path)
        total = max(pf.metadata.num_rows, 1)
        done = 0
        for batch in pf.iter_batches(batch_size=65_536):
            done += batch.num_rows
            yield pa.Table.from_batches([batch]), done / total
    elif kind == "json":
        records = _load_json_records(path)
        for start in range(0, len(records), SLOW_CHUNK_ROWS):
            chunk = records[start: start + SLOW_CHUNK_ROWS]
            if not all(isinstance(r, dict) for r in chunk):
                raise _SlowPath()
            try:
                table = _from_dicts(chunk)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise _SlowPath() from None
            yield table, min((start + len(chunk)) / max(len(records), 1), 1.0)
    elif kind == "hf":
        yield from _hf_batches(path)


def _csv_header(path: Path, delimiter: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
    except UnicodeDecodeError:
        raise _SlowPath() from None
    if not header:
        raise WorkbenchError(f"{path.name}: the first line should name the columns, and it is empty")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise WorkbenchError(f"{path.name}: line 1 names the column {dup!r} twice; column names must be unique")
    return header


def _load_json_records(path: Path) -> list:
    raw = path.read_bytes()
    if json_depth(raw) > MAX_JSON_DEPTH:  # checked before parsing: json recurses once per level
        raise WorkbenchError(f"{path.name}: nested more than {MAX_NESTING} levels deep; flatten the deep values "
                             "or leave them out")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{path.name}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                             f"{exc.start}); save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path.name}: line {exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") \
            from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
        else:
            data = [data]
    if not isinstance(data, list):
        raise WorkbenchError(f"{path.name}: expected a JSON list of records, found {type(data).__name__}")
    if not data:
        raise WorkbenchError(f"{path.name} holds an empty list: there are no records to import")
    return data


def _hf_batches(path: Path) -> Iterator[tuple[pa.Table, float]]:
    import datasets  # imported here: it is slow to import and only this file kind needs it

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # the library raises many kinds for a broken folder
        raise WorkbenchError(f"{path.name}: cannot read the Hugging Face dataset ({str(exc).splitlines()[0]})") \
            from None
    parts = list(ds.items()) if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    total = max(sum(len(d) for _, d in parts), 1)
    done = 0
    for split, part in parts:
        table = part.flatten_indices().data.table if part._indices is not None else part.data.table
        for batch in table.to_batches(max_chunksize=65_536):
            t = pa.Table.from_batches([batch])
            t = _decode_class_labels(t, part.features)
            if split is not None and len(parts) > 1 and "split" not in t.column_names:
                t = t.append_column("split", pa.array([split] * t.num_rows, pa.string()))
            done += t.num_rows
            yield t, done / total


def _decode_class_labels(table: pa.Table, features) -> pa.Table:
    """ClassLabel integers become their names, as a person would read them."""
    import datasets

    for name, feat in features.items():
        if isinstance(feat, datasets.ClassLabel) and name in table.column_names:
            names = pa.array(feat.names, pa.string())
            decoded = pa.compute.take(names, table.column(name))
            table = table.set_column(table.column_names.index(name), name, decoded)
    return table


# ---------------------------------------------------------------- exact readers (one row at a time)

def _exact_rows(path: Path, kind: str) -> Iterator[tuple[int, object, str]]:
    """(line or record number, parsed object or RowError, raw text for the quarantine)."""
    if kind == "jsonl":
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield lineno, RowError(None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                                 f"{exc.start + 1}); save the file as UTF-8"), \
                        raw.decode("utf-8", "replace")
                    continue
                text = text.rstrip("\r\n")
                deep = too_deep_reason(raw)
                if deep:
                    yield lineno, RowError(None, deep), text[:1000]
                    continue
                try:
                    yield lineno, json.loads(text), text
                except json.JSONDecodeError as exc:
                    yield lineno, RowError(None, f"malformed JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"), text
                except RecursionError:
                    yield lineno, RowError(None, "malformed JSON (nested too deeply)"), text[:1000]
    elif kind in ("csv", "tsv"):
        yield from _exact_csv_rows(path, "\t" if kind == "tsv" else ",")
    else:  # json, parquet, hf: record numbers are exact already; re-read rows as Python objects
        if kind == "json":
            for i, rec in enumerate(_load_json_records(path), start=1):
                yield i, rec, ""
            return
        number = 0
        for table, _ in _guarded(_fast_batches(path, kind), None, path):
            for rec in table.to_pylist():
                number += 1
                yield number, rec, ""


READ_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError)


def _guarded(batches: Iterator, on_error: type | None, path: Path | None = None) -> Iterator:
    """Reader failures become _SlowPath (text files: re-read exactly) or a one-line user error."""
    try:
        yield from batches
    except READ_ERRORS as exc:
        if on_error is not None:
            raise on_error() from None
        raise WorkbenchError(f"{path.name}: cannot read the file ({str(exc).splitlines()[0]})") from None


def _coalesced(batches: Iterator, rows: int = 8192, nbytes: int = 64 << 20) -> Iterator:
    """(table, fraction) batches joined up to `rows` rows: every later step costs a little per column and
    batch, and a wide file's 4 MB blocks hold a row or two (quadratic in the columns otherwise)."""
    pending: list[pa.Table] = []
    read = 0.0  # the fraction of the file read by the end of pending

    def joined() -> pa.Table:
        return pending[0] if len(pending) == 1 else pa.concat_tables(pending).combine_chunks()

    for table, fraction in batches:
        if pending and table.schema != pending[0].schema:
            yield joined(), read
            pending = []
        pending.append(table)
        read = fraction
        if sum(t.num_rows for t in pending) >= rows or sum(t.nbytes for t in pending) >= nbytes:
            yield joined(), read
            pending = []
    if pending:
        yield joined(), read


def _prefetch(items: Iterator, depth: int = 4) -> Iterator:
    """Run a reader in a background thread, `depth` items ahead, so parsing overlaps checking and writing.

    pyarrow's readers release the GIL; exceptions reach the consumer in order.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put((done, exc))

    worker = threading.Thread(target=produce, daemon=True, name="workbench-reader")
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def _exact_csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, object, str]]:
    bad_lines: dict[int, str] = {}
    state = {"line": 0}

    def lines():
        with open(path, "rb") as f:
            for raw in f:
                state["line"] += 1
                if state["line"] == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad_lines[state["line"]] = (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                                f"{exc.start + 1}); save the file as UTF-8")
                    yield raw.decode("utf-8", "replace")

    reader = csv.reader(lines(), delimiter=delimiter)

    def rows():
        # csv.Error (a stray carriage return, a NUL byte) spoils one row; the reader goes on after it.
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                bad_lines.setdefault(state["line"], f"is not valid CSV ({exc}); quote fields that hold line breaks")
                row = ["\0"]  # a placeholder: the bad_lines entry is what gets reported
            yield row

    records = rows()
    header = next(records, None)
    if state["line"] in bad_lines and "CSV" in bad_lines[state["line"]]:
        raise WorkbenchError(f"{path.name}: line {state['line']} {bad_lines[state['line']]}")
    if not header:
        raise WorkbenchError(f"{path.name}: the first line should name the columns, and it is empty")
    first_line = state["line"] + 1
    ours = header[-1] == CSV_ESCAPE_MARKER
    for row in records:
        start, first_line = first_line, state["line"] + 1
        raw = delimiter.join(row)
        bad = next((bad_lines[n] for n in range(start, state["line"] + 1) if n in bad_lines), None)
        if not bad and (not row or all(not c.strip() for c in row)):
            continue
        if bad:
            yield start, RowError(None, bad), raw
        elif len(row) != len(header):
            yield start, RowError(None, f"has {len(row)} fields; the header has {len(header)}"), raw
        elif ours:
            yield start, {h: (unescape_csv_value(v) if v != "" else None) for h, v in zip(header[:-1], row)}, raw
        else:
            yield start, {h: (v if v != "" else None) for h, v in zip(header, row)}, raw


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
    _check_not_empty(path, kind)
    if max_field_mb is None:
        max_field_mb = float(store.project.setting("import", "max_field_mb", 1.0))
    max_bytes = int(max_field_mb * 1_000_000)
    overrides = dict(prompt_col=prompt_col, completion_col=completion_col, text_col=text_col, label_col=label_col)
    result = ImportResult(dataset, None, 0, 0, kind=kind)
    progress = progress or (lambda fraction, message: None)
    state: dict = {}

    def recipe() -> dict:
        stat = path.stat() if path.is_file() else None
        return {"source": str(path.resolve()), "file_kind": kind, "file_bytes": stat.st_size if stat else None,
                "format": state["mapping"].format, "mapping": state["mapping"].columns, "on_error": on_error,
                "skipped": result.skipped}

    def mapping_for(columns: list[str]) -> Mapping:
        if "mapping" not in state:
            state["mapping"] = resolve_mapping(columns, fmt, **overrides)
            result.format = state["mapping"].format
        return state["mapping"]

    def fast() -> Iterator[pa.Table]:
        for table, fraction in _prefetch(_coalesced(_guarded(_fast_batches(path, kind), _SlowPath))):
            mapping = mapping_for(table.column_names)
            try:
                table.validate(full=True)  # the JSON reader lets invalid UTF-8 through
                errors, canonical = check_batch(table, mapping, max_bytes)
            except READ_ERRORS:
                raise _SlowPath() from None
            if errors:
                raise _SlowPath()  # re-read row by row: exact line numbers, every error, quarantine
            yield canonical
            progress(fraction, f"read {fraction:.0%}")

    def exact() -> Iterator[pa.Table]:
        rows: list[dict] = []
        for number, obj, raw in _exact_rows(path, kind):
            if isinstance(obj, dict) and "mapping" not in state:
                mapping_for(list(obj.keys()))
            try:
                if isinstance(obj, RowError):
                    raise obj
                row = convert_row(obj, state["mapping"], max_bytes) if "mapping" in state else None
                if row is None:
                    raise RowError(None, "expected an object with fields")
            except RowError as exc:
                result.error_count += 1
                if len(result.errors) < MAX_REPORTED_ERRORS:
                    err = {"line": number, "field": exc.field, "error": exc.reason}
                    result.errors.append(err)
                    if on_error == "skip":
                        state.setdefault("quarantine", []).append(
                            (number, exc.field, exc.reason, (raw or json.dumps(obj, default=str))[:QUARANTINE_RAW_CHARS]))
                continue
            if on_error == "fail" and result.error_count:
                continue  # nothing will be imported: only keep counting errors
            rows.append(row)
            if len(rows) >= SLOW_CHUNK_ROWS:
                yield _rows_to_table(rows)
                rows = []
        if rows and not (on_error == "fail" and result.error_count):
            yield _rows_to_table(rows)
        if on_error == "fail" and result.error_count:
            raise ImportRejected(result)

    def counted(batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for t in batches:
            result.imported += t.num_rows
            yield t

    parent = _latest_version_id(store, dataset)

    def write(batches) -> Version:
        return write_version(store, dataset, counted(batches), kind="import", fmt=lambda: state["mapping"].format,
                             recipe=recipe, info=lambda: _info(state["mapping"]), parent_id=parent,
                             created_by=created_by)

    try:
        result.version = write(fast())
    except _SlowPath:
        result.imported = 0
        progress(0.0, "checking every line")
        try:
            result.skipped = 0
            result.version = write(_count_skipped(exact(), result))
        except ImportRejected:
            raise
        except WorkbenchError:
            if result.imported or not result.error_count:
                raise
            _quarantine(store, dataset, None, path, state.get("quarantine", []))
            first = result.errors[0]
            raise WorkbenchError(f"no good records in {path.name}: all {result.error_count} rows are bad; first: "
                                 f"{_where(kind)} {first['line']}: {first['error']}") from None
    if result.skipped:
        _quarantine(store, dataset, result.version, path, state.get("quarantine", []))
    result.seconds = time.perf_counter() - t0
    progress(1.0, f"imported {result.imported:,} records")
    return result


def _latest_version_id(store: Store, dataset: str) -> int | None:
    """A re-import continues the dataset's lineage: its parent is the newest version so far."""
    rows = store.cursor().execute("SELECT max(version_id) FROM wb_versions WHERE dataset = ?", [dataset]).fetchall()
    return rows[0][0]


def _count_skipped(batches: Iterator[pa.Table], result: ImportResult) -> Iterator[pa.Table]:
    yield from batches
    result.skipped = result.error_count  # known once every row is read, before the version's recipe is written


def _info(mapping: Mapping) -> dict:
    return {"label_column": mapping.label_column, "source_columns": mapping.columns}


def _from_dicts(rows: list[dict]) -> pa.Table:
    """Like Table.from_pylist, but columns come from every row's keys, not only the first row's."""
    return pa.Table.from_struct_array(pa.array(rows))


def _rows_to_table(rows: list[dict]) -> pa.Table:
    try:
        table = _from_dicts(rows)
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
