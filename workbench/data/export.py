"""Export a dataset version as chat JSONL, alpaca, prompt-completion, preference (DPO/KTO), CSV, Parquet or a HF
DatasetDict.

Every export re-imports to the same records and the same content hash. CSV cells that a
spreadsheet would run as a formula are prefixed with a quote; such a file then ends its header with
the empty column CSV_ESCAPE_MARKER, and the importer undoes the quotes only in files that carry it
(a cell like `'-) wink` written by another tool keeps its apostrophe).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from workbench.core import files
from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL, FORMAT_COLUMNS, PREFERENCE_FORMATS
from workbench.core.store import Store, quote_ident, quote_literal
from workbench.core.versions import Version, version_columns

EXPORT_FORMATS = ("chat", "alpaca", "prompt-completion", "csv", "parquet", "hf", "preference", "kto")
# A preference version exports as TRL reads it: text columns (its own format, CSV, Parquet) or conversational
# message lists (chat JSONL, hf); the other formats cannot hold a pair or a label.
PREFERENCE_EXPORTS = ("chat", "csv", "parquet", "hf")
# A leading =, +, -, @, tab or CR makes spreadsheets evaluate a cell; a leading quote marks our escape.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_UNESCAPE_RE = "^'[=+\\-@\\t\\r']"
# The last, empty column of a CSV export in which some cell was escaped: the only files the importer unescapes.
CSV_ESCAPE_MARKER = "_workbench_escaped_formulas"


def export_version(store: Store, version: Version, fmt: str, out: str | os.PathLike, *,
                   split: str | None = None, redact: tuple[str, ...] | None = None,
                   progress=None, user=None) -> dict:
    """Write the version (or one split of it) to out; returns {path, records, format}.

    redact: PII types (`workbench.inspect.pii.TYPES`) replaced by typed placeholders such as [EMAIL] in the
    exported text; the stored version keeps its records (`workbench pii --redact` makes a new version)."""
    from workbench.core.auth import require_role

    require_role(user, "read_all")  # an export is every record: not for annotators or reviewers
    if fmt not in EXPORT_FORMATS:
        raise WorkbenchError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out).expanduser().resolve()
    _check_preference_export(version, fmt)
    columns = version_columns(store, version)
    names = [c for c, _ in columns]
    extras = [c for c in names if c not in CANONICAL]
    where = ""
    if split is not None:
        if "split" not in names:
            raise WorkbenchError(f"{version.ref} has no split column; make splits with `workbench split` first")
        where = f"WHERE split = {quote_literal(split)}"
    cur = store.con.cursor()
    try:
        records = cur.execute(f"SELECT count(*) FROM {version.table_name} {where}").fetchall()[0][0]
        if records == 0:
            raise WorkbenchError(f"{version.ref} has no records" + (f" in split {split!r}" if split else ""))
        has = {c: cur.execute(f"SELECT count({c}) FROM {version.table_name} {where}").fetchall()[0][0] > 0
               for c in ("system", "messages")}
        text_col = version.info.get("source_columns", {}).get("text", "text") if version.format == "classification" \
            else None
        label = version.label_column
        if fmt in ("alpaca", "prompt-completion") and version.format != "classification":
            blocked = {"messages": "has several turns", "system": "has a system message"}
            if fmt == "prompt-completion":
                blocked.pop("system")  # carried in a `system` field
            for col, why in blocked.items():
                if has[col]:
                    bad = cur.execute(f"SELECT count({col}) FROM {version.table_name} {where}").fetchall()[0][0]
                    raise WorkbenchError(f"{bad} record(s) of {version.ref} {why}, which {fmt} cannot hold; "
                                         "export as chat, csv, parquet or hf")
        if version.format in PREFERENCE_FORMATS:
            select = _preference_select(fmt, version.format, extras, has)
        else:
            select = _select(fmt, version.format, extras, has, text_col, label)
        table = version.table_name
        replaced: dict = {}
        if redact:
            table = _register_redacted(cur, store, version, redact, progress, replaced)
        source = f"(SELECT {select} FROM {table} {where})"  # file order is record order
        with files.atomic_path(out) as tmp:  # the export appears whole or not at all
            if fmt in ("chat", "alpaca", "prompt-completion", *PREFERENCE_FORMATS):
                cur.execute(f"COPY {source} TO {quote_literal(str(tmp))} (FORMAT json)")
            elif fmt == "parquet":
                cur.execute(f"COPY {source} TO {quote_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
            elif fmt == "csv":
                cur.execute(f"COPY {_csv_source(cur, source)} TO {quote_literal(str(tmp))} (FORMAT csv, HEADER true)")
            else:
                _export_hf(cur, source, tmp)
    finally:
        cur.close()
    result = {"path": str(out), "records": records, "format": fmt, "dataset": version.dataset,
              "version": version.number, "content_hash": version.content_hash}
    if redact:
        result["redacted"] = replaced
    return result


def _register_redacted(cur, store: Store, version: Version, types, progress, replaced: dict) -> str:
    """The version's records with PII replaced, streamed to DuckDB as an Arrow reader; its relation name."""
    from workbench.inspect.pii import redacted_batches

    batches = redacted_batches(store, version, types=types, progress=progress, replaced=replaced)
    first = next(batches)
    reader = pa.RecordBatchReader.from_batches(
        first.schema, (b for t in ([first], batches) for table in t for b in table.to_batches()))
    cur.register("wb_export_redacted", reader)
    return "wb_export_redacted"


def _check_preference_export(version: Version, fmt: str) -> None:
    if version.format in PREFERENCE_FORMATS:
        allowed = (version.format, *PREFERENCE_EXPORTS)
        if fmt not in allowed:
            raise WorkbenchError(f"{version.ref} is a {version.format} dataset; export it as {', '.join(allowed)}")
    elif fmt in PREFERENCE_FORMATS:
        raise WorkbenchError(f"{version.ref} is a {version.format} dataset, not {fmt}; make preference data with "
                             "`workbench review preferences` or import prompt/chosen/rejected records")


def _preference_select(fmt: str, source_format: str, extras: list[str], has: dict) -> str:
    """Pairs as prompt/chosen/rejected, unpaired examples as prompt/completion/label (TRL's names): text columns,
    or for chat and hf the conversational form (the prompt as messages, each answer one assistant message)."""
    own = list(FORMAT_COLUMNS[source_format])
    keep = "".join(", " + quote_ident(c) for c in extras if c not in own)
    answer = "chosen" if source_format == "preference" else "completion"
    if fmt in ("chat", "hf"):
        def said(col: str) -> str:
            return f"[{{'role': 'assistant', 'content': {col}}}]"
        prompt = ("list_concat(CASE WHEN system IS NOT NULL THEN [{'role': 'system', 'content': system}] "
                  "ELSE [] END, [{'role': 'user', 'content': prompt}])")
        if has["messages"]:
            prompt = f"coalesce(CAST(CAST(messages AS JSON) AS STRUCT(role VARCHAR, content VARCHAR)[]), {prompt})"
        second = f"{said('rejected')} AS rejected" if source_format == "preference" else "label"
        return f"{prompt} AS prompt, {said('completion')} AS {answer}, {second}{keep}"
    cols = ["prompt", f"completion AS {answer}", *own] + [c for c in ("system", "messages") if has[c]]
    return ", ".join(cols) + keep


def _select(fmt: str, source_format: str, extras: list[str], has: dict, text_col: str | None,
            label: str | None) -> str:
    keep = ", ".join(quote_ident(c) for c in extras)
    keep = (", " + keep) if keep else ""
    if source_format == "classification":
        answer = f"CAST({quote_ident(label)} AS VARCHAR)"
        if fmt in ("csv", "parquet", "hf"):
            return f"prompt AS {quote_ident(text_col)}{keep}"
        if fmt == "chat":
            return f"[{{'role': 'user', 'content': prompt}}, {{'role': 'assistant', 'content': {answer}}}] " \
                   f"AS messages{keep}"
        if fmt == "alpaca":
            return f"prompt AS instruction, '' AS input, {answer} AS output{keep}"
        return f"prompt, {answer} AS completion{keep}"
    if fmt == "chat" or fmt == "hf":
        built = ("list_concat(CASE WHEN system IS NOT NULL THEN [{'role': 'system', 'content': system}] "
                 "ELSE [] END, [{'role': 'user', 'content': prompt}, {'role': 'assistant', 'content': completion}])")
        if has["messages"]:
            typed = "STRUCT(role VARCHAR, content VARCHAR)[]"
            built = f"coalesce(CAST(CAST(messages AS JSON) AS {typed}), {built})"
        return f"{built} AS messages{keep}"
    if fmt == "alpaca":
        return f"prompt AS instruction, '' AS input, completion AS output{keep}"
    cols = ["prompt", "completion"] + [c for c in ("system", "messages") if has[c]]
    return ", ".join(cols) + keep


def _csv_source(cur, source: str) -> str:
    """Text cells escaped against formulas (and the marker column added if any was); floats printed
    as the content hash reads them."""
    cols = cur.execute(f"DESCRIBE {source}").fetchall()
    parts, risky = [], []
    starts = ", ".join(quote_literal(s) if s not in ("\t", "\r") else f"chr({ord(s)})" for s in FORMULA_START)
    for name, typ, *_ in cols:
        c = quote_ident(name)
        if typ == "VARCHAR":
            risky.append(f"bool_or(left({c}, 1) IN ({starts}))")
            parts.append(f"CASE WHEN left({c}, 1) IN ({starts}) THEN '''' || {c} ELSE {c} END AS {c}")
        elif typ in ("DOUBLE", "FLOAT"):
            parts.append(f"CASE WHEN {c} = trunc({c}) AND abs({c}) < 1e15 THEN CAST(CAST({c} AS BIGINT) AS VARCHAR)"
                         f" ELSE CAST({c} AS VARCHAR) END AS {c}")
        else:
            parts.append(c)
    if risky and cur.execute(f"SELECT {' OR '.join(risky)} FROM {source}").fetchone()[0]:
        parts.append(f"NULL::VARCHAR AS {quote_ident(CSV_ESCAPE_MARKER)}")
    return f"(SELECT {', '.join(parts)} FROM {source})"


def unescape_csv(arr: pa.Array) -> pa.Array:
    """Undo the export's formula escape: a leading quote before = + - @ tab CR or quote.
    Only for files that end their header with CSV_ESCAPE_MARKER."""
    marked = pc.fill_null(pc.match_substring_regex(arr, _UNESCAPE_RE), False)
    if not pc.any(marked).as_py():
        return arr
    return pc.if_else(marked, pc.utf8_slice_codeunits(arr, 1), arr)


def unescape_csv_value(value: str | None) -> str | None:
    if value and len(value) > 1 and value[0] == "'" and value[1] in FORMULA_START:
        return value[1:]
    return value


def _export_hf(cur, source: str, out: Path) -> None:
    import datasets  # slow to import; only this format needs it

    names = [r[0] for r in cur.execute(f"DESCRIBE {source}").fetchall()]
    if "split" in names:
        splits = [r[0] for r in cur.execute(f"SELECT DISTINCT split FROM {source} ORDER BY 1").fetchall()]
        if any(s is None for s in splits):
            raise WorkbenchError("some records have no split value; every record needs one for a DatasetDict")
        parts = {s: cur.sql(f"SELECT * FROM {source} WHERE split = {quote_literal(s)}").to_arrow_table() for s in splits}
    else:
        parts = {"train": cur.sql(f"SELECT * FROM {source}").to_arrow_table()}
    dd = datasets.DatasetDict({str(k): datasets.Dataset(pa.Table.from_batches(t.to_batches(), t.schema))
                               for k, t in parts.items()})
    datasets.disable_progress_bars()
    dd.save_to_disk(str(out))
