"""Whole Arrow batches of an import -> their errors, or their canonical table; and line endings.

Chats (nested lists) and our own exports with system/messages columns go row by row through `canonical`; the
other formats are checked and converted a column at a time with Arrow kernels (the fast path).
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from workbench.core.canonical import chat_to_canonical, check_size, convert_row
from workbench.core.formats import (
    CANONICAL,
    FORMAT_COLUMNS,
    FORMAT_FIELDS,
    OPTIONAL_FIELDS,
    PREFERENCE_FORMATS,
    BatchErrors,
    Mapping,
    RowError,
)
from workbench.core.nesting import MAX_NESTING, nesting_reason, type_depth


def is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _as_string(arr: pa.ChunkedArray | pa.Array):
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def check_batch(table: pa.Table, mapping: Mapping,
                max_bytes: int) -> tuple[BatchErrors, pa.Table | None]:
    """(errors, canonical table) for a batch: errors as (row index, field, reason); the table only if none.

    Chats (nested lists) and our own exports with system/messages columns are converted row by
    row, once; the other formats are checked and converted a column at a time with Arrow kernels.
    """
    deep = _too_deep_extras(table, mapping)
    if deep:
        return deep, None
    if _row_wise(mapping):
        return _check_rows(table, mapping, max_bytes)
    errors = _column_errors(table, mapping, max_bytes)
    return errors, None if errors else _canonical_columns(table, mapping)


def _too_deep_extras(table: pa.Table, mapping: Mapping) -> BatchErrors:
    errors: BatchErrors = []
    for name in table.column_names:
        if name not in mapping.consumed() and type_depth(table.schema.field(name).type) > MAX_NESTING:
            valid = pc.is_valid(table.column(name)).to_pylist()
            errors.extend((i, name, nesting_reason(name)) for i, ok in enumerate(valid) if ok)
    return errors


def _row_wise(mapping: Mapping) -> bool:
    return mapping.format in ("chat", *PREFERENCE_FORMATS) or (
        mapping.format == "prompt-completion" and ("system" in mapping.columns or "messages" in mapping.columns))


def _check_rows(table: pa.Table, mapping: Mapping, max_bytes: int) -> tuple[BatchErrors, pa.Table | None]:
    errors: BatchErrors = []
    rows: list[dict] = []
    if mapping.format == "chat":
        col = mapping.columns["messages"]
        values = table.column(col).to_pylist() if col in table.column_names else [None] * table.num_rows
        convert = lambda value: chat_to_canonical(value, max_bytes, col)  # noqa: E731
    else:
        values = table.select([c for c in mapping.columns.values() if c in table.column_names]).to_pylist()
        convert = lambda value: convert_row(value, mapping, max_bytes)  # noqa: E731
    for i, value in enumerate(values):
        try:
            rows.append(convert(value))
        except RowError as exc:
            errors.append((i, exc.field, exc.reason))
    if errors:
        return errors, None
    canon = {k: pa.array([r[k] for r in rows], pa.string()) for k in CANONICAL}
    for k, typ in FORMAT_COLUMNS.get(mapping.format, {}).items():
        canon[k] = pa.array([r[k] for r in rows], typ)
    return errors, _with_extras(canon, table, mapping)


def _column_errors(table: pa.Table, mapping: Mapping, max_bytes: int) -> BatchErrors:
    errors: BatchErrors = []
    for name in FORMAT_FIELDS[mapping.format]:
        col = mapping.columns.get(name)
        if col is None:
            continue
        optional = name in OPTIONAL_FIELDS
        if col not in table.column_names:
            if not optional:
                errors.extend((i, name, f"`{name}` is missing") for i in range(table.num_rows))
            continue
        arr = table.column(col)
        if name == "label":
            if is_text_type(arr.type):
                bad = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(_as_string(arr))), 0), True)
            else:
                bad = pc.is_null(arr)
            errors.extend((i, "label", f"`{col}` (the label) is missing or empty") for i in _true_indices(bad))
            continue
        if pa.types.is_null(arr.type):
            if not optional:
                errors.extend((i, name, f"`{name}` is missing") for i in range(table.num_rows))
            continue
        if not is_text_type(arr.type):
            errors.extend((i, name, f"`{name}` is {arr.type}; expected text") for i in range(table.num_rows)
                          if arr[i].is_valid)
            if not optional:
                errors.extend((i, name, f"`{name}` is missing") for i in _true_indices(pc.is_null(arr)))
            continue
        arr = _as_string(arr)
        if not optional:
            errors.extend((i, name, f"`{name}` is missing") for i in _true_indices(pc.is_null(arr)))
            # utf8_is_space stops at the first visible character: far cheaper than trimming copies
            empty = pc.or_(pc.equal(pc.binary_length(arr), 0), pc.utf8_is_space(arr))
            errors.extend((i, name, f"`{name}` is empty") for i in _true_indices(empty))
        big = pc.greater(pc.binary_length(arr), max_bytes)
        for i in _true_indices(big):
            try:
                check_size(name, arr[i].as_py(), max_bytes)
            except RowError as exc:
                errors.append((i, name, exc.reason))
    errors.sort()
    return errors


def _true_indices(mask) -> list[int]:
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask).to_pylist()


def _canonical_columns(table: pa.Table, mapping: Mapping) -> pa.Table:
    """A column-wise batch with no bad rows -> canonical columns first, then the extras as they came."""
    n = table.num_rows
    nulls = pa.nulls(n, pa.string())
    col = mapping.columns
    if mapping.format == "prompt-completion":
        canon = {"prompt": _as_string(table.column(col["prompt"])),
                 "completion": _as_string(table.column(col["completion"])), "system": nulls, "messages": nulls}
    elif mapping.format == "alpaca":
        prompt = _as_string(table.column(col["instruction"]))
        if "input" in col and col["input"] in table.column_names:
            extra = table.column(col["input"])
            extra = _as_string(extra) if not pa.types.is_null(extra.type) else pa.nulls(n, pa.string())
            has = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(extra)), 0), False)
            prompt = pc.if_else(has, pc.binary_join_element_wise(prompt, extra, "\n\n"), prompt)
        canon = {"prompt": prompt, "completion": _as_string(table.column(col["output"])),
                 "system": nulls, "messages": nulls}
    else:
        canon = {"prompt": _as_string(table.column(col["text"])), "completion": nulls,
                 "system": nulls, "messages": nulls}
    return _with_extras(canon, table, mapping)


def _with_extras(canon: dict, table: pa.Table, mapping: Mapping) -> pa.Table:
    extras = [c for c in table.column_names if c not in mapping.consumed()]
    return pa.table(list(canon.values()) + [_plain(table.column(c)) for c in extras], names=list(canon) + extras)


def _plain(arr):
    """Large and view string types become plain strings so every batch has one schema."""
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        return pc.cast(arr, pa.string())
    if pa.types.is_null(arr.type):
        return pc.cast(arr, pa.string())
    return arr


# ---------------------------------------------------------------- line endings

def line_ending_fields(fmt: str) -> tuple[str, ...]:
    """The canonical text a model learns from, whose line endings the import normalises."""
    return (*CANONICAL, *(c for c, t in FORMAT_COLUMNS.get(fmt, {}).items() if pa.types.is_string(t)))


def normalise_line_endings(table: pa.Table, fields: tuple[str, ...]) -> tuple[pa.Table, dict[str, int], int]:
    """CRLF and lone CR become LF in the given text columns (in `messages`, in each message's content), so a
    model never learns to print a carriage return. Returns the table, the records changed per column, and
    the records changed in all. A table without a CR in those columns comes back as it was (the same hash)."""
    changed_any = None
    per_field: dict[str, int] = {}
    for name in fields:
        if name not in table.column_names or not is_text_type(table.column(name).type):
            continue
        column = table.column(name)
        # A JSON message list holds a CR escaped as backslash-r; the other columns hold it as it is.
        needle = "\\r" if name == "messages" else "\r"
        if not _may_hold(column, needle) or not pc.any(pc.fill_null(pc.match_substring(column, needle), False)).as_py():
            continue
        fixed = _lf_messages(column) if name == "messages" else pc.replace_substring_regex(column, "\r\n?", "\n")
        changed = pc.fill_null(pc.not_equal(column, fixed), False)
        if count := pc.sum(pc.cast(changed, pa.int64())).as_py():
            per_field[name] = count
            table = table.set_column(table.column_names.index(name), name, fixed)
            changed_any = changed if changed_any is None else pc.or_(changed_any, changed)
    total = pc.sum(pc.cast(changed_any, pa.int64())).as_py() if changed_any is not None else 0
    return table, per_field, total


def _may_hold(column: pa.ChunkedArray, needle: str) -> bool:
    """False when no value can hold needle: one scan of the raw text bytes, about ten times faster than Arrow's
    per-value search (True may come from bytes a sliced array leaves outside its values)."""
    pattern = re.compile(re.escape(needle.encode()))
    for chunk in column.chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return True
        data = chunk.buffers()[2]
        if data is not None and pattern.search(memoryview(data)):
            return True
    return False


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _lf_messages(column) -> pa.Array:
    """Each message's content with LF line endings, re-serialised as the import serialises message lists."""
    out = []
    for value in _as_string(column).to_pylist():
        if value is not None and "\\r" in value:
            messages = json.loads(value)
            fixed = [{**m, "content": _lf(m["content"])} if isinstance(m.get("content"), str) else m
                     for m in messages]
            if fixed != messages:
                value = json.dumps(fixed, ensure_ascii=False)
        out.append(value)
    return pa.array(out, pa.string())
