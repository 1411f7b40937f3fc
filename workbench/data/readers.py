"""The file readers of the import: which kind a file is, and two ways to read it.

FastReader streams Arrow batches (pyarrow's multi-threaded JSON and CSV readers, Parquet, Hugging Face
folders) for whole-column checks. When it meets something it cannot place on a line, it stops and says
so (`exact_needed`), and exact_rows re-reads the file one row at a time, each with its line number.
"""

from __future__ import annotations

import csv
import itertools
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from workbench.core.errors import WorkbenchError
from workbench.core.formats import RowError
from workbench.core.nesting import MAX_JSON_DEPTH, MAX_NESTING, json_depth, jsonl_file_too_deep, too_deep_reason
from workbench.data.export import CSV_ESCAPE_MARKER, unescape_csv, unescape_csv_value

KINDS = ("jsonl", "json", "csv", "tsv", "parquet", "hf")
BLOCK_BYTES = 4 << 20
SLOW_CHUNK_ROWS = 20_000
READ_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError)

Batches = Iterator[tuple[pa.Table, float]]  # (table, fraction of the file read by its end)
Rows = Iterator[tuple[int, object, str]]  # (line or record number, parsed object or RowError, raw text)


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


def check_not_empty(path: Path, kind: str) -> None:
    if kind == "hf":
        return
    if path.stat().st_size == 0:
        raise WorkbenchError(f"{path.name} is empty: there are no records to import")
    with open(path, "rb") as f:
        if not f.read(1 << 16).strip(b" \t\r\n\xef\xbb\xbf"):
            raise WorkbenchError(f"{path.name} holds only whitespace: there are no records to import")


# ---------------------------------------------------------------- the columns, from the head of the file

HEAD_RECORDS = 200


def list_columns(path: Path, kind: str) -> list[str]:
    """The file's column names in file order, read cheaply: a CSV's header, a Parquet or Hugging Face schema,
    or the keys of the first HEAD_RECORDS records of JSON lines (every row is read only by the import)."""
    if kind in ("csv", "tsv"):
        header = _csv_header(path, "\t" if kind == "tsv" else ",")
        if header is None:
            raise WorkbenchError(f"{path.name}: not valid UTF-8; save the file as UTF-8")
        return header[:-1] if header[-1] == CSV_ESCAPE_MARKER else header
    if kind == "parquet":
        return list(pq.read_schema(path).names)
    if kind == "hf":
        first = next(iter(_or_user_error(hf_batches(path), path)), None)
        return first[0].column_names if first is not None else []
    if kind == "json":
        records = load_json_records(path)[:HEAD_RECORDS]
    else:
        records = [obj for _, obj, _ in itertools.islice(_exact_jsonl_rows(path), HEAD_RECORDS)]
    return list(dict.fromkeys(k for r in records if isinstance(r, dict) for k in r))


# ---------------------------------------------------------------- the fast reader (Arrow batches)

class FastReader:
    """A file as Arrow batches, in file order, each with the fraction of the file read by its end.

    When the file holds something a batch cannot place on a line (a read error, text that is not UTF-8,
    JSON lines nested too deep for Arrow, a JSON list of mixed records), the batches stop early and
    `exact_needed` is set: the caller re-reads the file with exact_rows. It is set before the last
    batch is handed over, in the reading thread.
    """

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self.exact_needed = False

    def batches(self) -> Batches:
        """The batches joined up (see _coalesced) and read ahead in a background thread."""
        return prefetch(self._coalesced(self._read()))

    def _read(self) -> Batches:
        try:
            if self.kind == "jsonl":
                yield from self._jsonl()
            elif self.kind in ("csv", "tsv"):
                yield from self._csv("\t" if self.kind == "tsv" else ",")
            elif self.kind == "parquet":
                yield from parquet_batches(self.path)
            elif self.kind == "json":
                yield from self._json()
            elif self.kind == "hf":
                yield from hf_batches(self.path)
        except READ_ERRORS:
            self.exact_needed = True

    def _jsonl(self) -> Batches:
        size = max(self.path.stat().st_size, 1)
        if jsonl_file_too_deep(self.path, BLOCK_BYTES):
            self.exact_needed = True  # Arrow's reader would overflow its stack; each line is checked on its own
            return
        with open(self.path, "rb") as f:
            reader = pajson.open_json(f, read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))
            for batch in reader:
                yield pa.Table.from_batches([batch]), min(f.tell() / size, 0.99)

    def _csv(self, delimiter: str) -> Batches:
        size = max(self.path.stat().st_size, 1)
        header = _csv_header(self.path, delimiter)
        if header is None:
            self.exact_needed = True  # not UTF-8: the exact reader names the line
            return
        with open(self.path, "rb") as f:
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

    def _json(self) -> Batches:
        records = load_json_records(self.path)
        for start in range(0, len(records), SLOW_CHUNK_ROWS):
            chunk = records[start: start + SLOW_CHUNK_ROWS]
            table = _records_table(chunk)
            if table is None:
                self.exact_needed = True
                return
            yield table, min((start + len(chunk)) / max(len(records), 1), 1.0)

    def _coalesced(self, batches: Batches, rows: int = 8192, nbytes: int = 64 << 20) -> Batches:
        """Batches joined up to `rows` rows: every later step costs a little per column and batch, and a wide
        file's 4 MB blocks hold a row or two (quadratic in the columns otherwise). When the reading stopped
        early, the tables still waiting are dropped: the file is re-read whole."""
        pending: list[pa.Table] = []
        read = 0.0  # the fraction of the file read by the end of pending
        for table, fraction in batches:
            if pending and table.schema != pending[0].schema:
                yield _joined(pending), read
                pending = []
            pending.append(table)
            read = fraction
            if sum(t.num_rows for t in pending) >= rows or sum(t.nbytes for t in pending) >= nbytes:
                yield _joined(pending), read
                pending = []
        if pending and not self.exact_needed:
            yield _joined(pending), read


def _joined(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


def _csv_header(path: Path, delimiter: str) -> list[str] | None:
    """The column names; None when the file is not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
    except UnicodeDecodeError:
        return None
    if not header:
        raise WorkbenchError(f"{path.name}: the first line should name the columns, and it is empty")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise WorkbenchError(f"{path.name}: line 1 names the column {dup!r} twice; column names must be unique")
    return header


def _records_table(records: list) -> pa.Table | None:
    """The records as one table; None when some record is not an object or their values do not fit Arrow."""
    if not all(isinstance(r, dict) for r in records):
        return None
    try:
        return from_dicts(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def from_dicts(rows: list[dict]) -> pa.Table:
    """Like Table.from_pylist, but columns come from every row's keys, not only the first row's."""
    return pa.Table.from_struct_array(pa.array(rows))


def load_json_records(path: Path) -> list:
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


def parquet_batches(path: Path) -> Batches:
    pf = pq.ParquetFile(path)
    total = max(pf.metadata.num_rows, 1)
    done = 0
    for batch in pf.iter_batches(batch_size=65_536):
        done += batch.num_rows
        yield pa.Table.from_batches([batch]), done / total


def hf_batches(path: Path) -> Batches:
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


def prefetch(items: Iterator, depth: int = 4) -> Iterator:
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


# ---------------------------------------------------------------- the exact readers (one row at a time)

def exact_rows(path: Path, kind: str) -> Rows:
    """(line or record number, parsed object or RowError, raw text for the quarantine)."""
    if kind == "jsonl":
        yield from _exact_jsonl_rows(path)
    elif kind in ("csv", "tsv"):
        yield from _ExactCsv(path, "\t" if kind == "tsv" else ",").rows()
    elif kind == "json":  # record numbers are exact already
        for i, rec in enumerate(load_json_records(path), start=1):
            yield i, rec, ""
    else:  # parquet, hf: record numbers are exact already; re-read rows as Python objects
        number = 0
        batches = parquet_batches(path) if kind == "parquet" else hf_batches(path)
        for table, _ in _or_user_error(batches, path):
            for rec in table.to_pylist():
                number += 1
                yield number, rec, ""


def _or_user_error(batches: Batches, path: Path) -> Batches:
    """A reader's failure becomes a one-line user error."""
    try:
        yield from batches
    except READ_ERRORS as exc:
        raise WorkbenchError(f"{path.name}: cannot read the file ({str(exc).splitlines()[0]})") from None


def _exact_jsonl_rows(path: Path) -> Rows:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                obj, text = _parsed_jsonl_line(raw)
                yield lineno, obj, text


def _parsed_jsonl_line(raw: bytes) -> tuple[object, str]:
    """The line's object, or the RowError that says why it has none; and its text for the quarantine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                              "save the file as UTF-8"), raw.decode("utf-8", "replace")
    text = text.rstrip("\r\n")
    deep = too_deep_reason(raw)
    if deep:
        return RowError(None, deep), text[:1000]
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        return RowError(None, f"malformed JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"), text
    except RecursionError:
        return RowError(None, "malformed JSON (nested too deeply)"), text[:1000]


class _ExactCsv:
    """A CSV file row by row. `line` is the last line the csv module has taken; `bad_lines` holds the
    lines it could not read (not UTF-8, not valid CSV), reported on the row that spans them."""

    def __init__(self, path: Path, delimiter: str):
        self.path = path
        self.delimiter = delimiter
        self.line = 0
        self.bad_lines: dict[int, str] = {}

    def rows(self) -> Rows:
        records = self._records()
        header = next(records, None)
        if self.line in self.bad_lines and "CSV" in self.bad_lines[self.line]:
            raise WorkbenchError(f"{self.path.name}: line {self.line} {self.bad_lines[self.line]}")
        if not header:
            raise WorkbenchError(f"{self.path.name}: the first line should name the columns, and it is empty")
        first_line = self.line + 1
        ours = header[-1] == CSV_ESCAPE_MARKER
        for row in records:
            start, first_line = first_line, self.line + 1
            bad = next((self.bad_lines[n] for n in range(start, self.line + 1) if n in self.bad_lines), None)
            if not bad and (not row or all(not c.strip() for c in row)):
                continue
            yield start, _csv_record(row, header, ours, bad), self.delimiter.join(row)

    def _records(self) -> Iterator[list[str]]:
        reader = csv.reader(self._lines(), delimiter=self.delimiter)
        while (row := self._next_record(reader)) is not None:
            yield row

    def _next_record(self, reader) -> list[str] | None:
        """The next row, None at the end. csv.Error (a stray carriage return, a NUL byte) spoils one row: it is
        noted in bad_lines, a placeholder stands for the row, and the reader goes on after it."""
        try:
            return next(reader, None)
        except csv.Error as exc:
            self.bad_lines.setdefault(self.line, f"is not valid CSV ({exc}); quote fields that hold line breaks")
            return ["\0"]

    def _lines(self) -> Iterator[str]:
        with open(self.path, "rb") as f:
            for raw in f:
                self.line += 1
                if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.bad_lines[self.line] = (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                                 f"{exc.start + 1}); save the file as UTF-8")
                    text = raw.decode("utf-8", "replace")
                yield text


def _csv_record(row: list[str], header: list[str], ours: bool, bad: str | None) -> dict | RowError:
    if bad:
        return RowError(None, bad)
    if len(row) != len(header):
        return RowError(None, f"has {len(row)} fields; the header has {len(header)}")
    if ours:  # our own export: undo its formula escapes, leave out the marker column
        return {h: (unescape_csv_value(v) if v != "" else None) for h, v in zip(header[:-1], row)}
    return {h: (v if v != "" else None) for h, v in zip(header, row)}

