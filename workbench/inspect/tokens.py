"""Token lengths of a dataset version, counted the way training will see them.

With a base model's tokenizer, which tokens are *supervised* (carry a loss) is decided by
`trainers.supervision`, the one definition training uses too: each record is rendered with the
model's chat template (assistant turns located as character spans, the end-of-turn marker
included), encoded with the fast tokenizer in batches, and a token is supervised when its first
character lies in an assistant span, the first token of a record excepted. A tokenizer
without a chat template sees the message contents joined by a blank line, with its own special
tokens added.

Without a tokenizer the count is **approximate**: every message content counts
ceil(UTF-8 bytes / 4) tokens (the usual rule of thumb for English BPE vocabularies), and chat
markers count nothing. It is computed in DuckDB SQL (a million records in about a second, where a
regex word-piece count took 25 s), so it suits a first look, not a budget.

Per record the cache keeps `_row`, `prompt_tokens`, `completion_tokens` (supervised), `total_tokens`
and `spans` (the supervised token ranges [start, stop)), so any max sequence length can be judged
later without encoding again: truncating at L loses sum(max(0, stop - max(start, L))) supervised
tokens of a record.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trainers import supervision
from workbench.core import files
from workbench.core.canonical import canonical_to_messages
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import ROW_COLUMN, Version
from workbench.inspect.cache import cache_path, parquet_sql

APPROXIMATE = "approximate"
APPROX_RULE = "approximate: ceil(UTF-8 bytes / 4) tokens per message; chat-template markers not counted"
BATCH_ROWS = 4096
TRUNCATION_LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
LENGTH_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens")
SPAN = pa.struct([("start", pa.int32()), ("stop", pa.int32())])
SCHEMA = pa.schema([(ROW_COLUMN, pa.int64()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
                    ("total_tokens", pa.int32()), ("spans", pa.list_(SPAN))])
ALGO = 1  # bump when counts of the same tokenizer would change; old cache files are then ignored

Progress = Callable[[float, str], None]


def _noop(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------- tokenizers

@dataclass
class TokenCounter:
    """A tokenizer to count with, or none (the approximate rule)."""

    name: str
    tokenizer: object | None = None
    source: str = ""
    renderer: ChatRenderer | None = field(default=None, repr=False)

    @property
    def approximate(self) -> bool:
        return self.tokenizer is None

    @property
    def rule(self) -> str:
        if self.tokenizer is None:
            return APPROX_RULE
        if getattr(self.tokenizer, "chat_template", None):
            return f"{self.name} tokenizer with its chat template"
        return f"{self.name} tokenizer on the message contents joined by a blank line (it has no chat template)"

    @property
    def cache_tag(self) -> str:
        """The name plus a hash of the tokenizer and template, so a rebuilt `tiny` never reuses old counts."""
        if self.tokenizer is None:
            return f"approx{ALGO}"
        h = hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode())
        h.update((getattr(self.tokenizer, "chat_template", None) or "").encode())
        return f"{Path(self.name).name[:40]}-{h.hexdigest()[:12]}-a{ALGO}"


def approximate() -> TokenCounter:
    return TokenCounter(APPROXIMATE)


def load_tokenizer(store: Store, base_model: str | None) -> TokenCounter:
    """None, '' or 'approximate': the approximate rule. 'tiny': the project's tiny base (models/tiny).
    A folder: `AutoTokenizer.from_pretrained(folder)`. Otherwise a Hugging Face id that must already be
    in the local cache (nothing is downloaded)."""
    if not base_model or base_model in (APPROXIMATE, "approx"):
        return approximate()
    from transformers import AutoTokenizer  # slow to import; only when a tokenizer is asked for

    if base_model == "tiny":
        folder = store.project.models_dir / "tiny"
        if not (folder / "tokenizer_config.json").exists() and not (folder / "tokenizer.json").exists():
            raise WorkbenchError(f"the tiny base model is not built yet ({folder}); train once with "
                                 "`workbench train` to build it, or leave --tokenizer out for approximate counts")
        source, kwargs = str(folder), {}
    elif Path(base_model).expanduser().is_dir():
        source, kwargs = str(Path(base_model).expanduser().resolve()), {}
    elif Path(base_model).expanduser().exists() or base_model.startswith((".", "/", "~")):
        raise WorkbenchError(f"{base_model!r} is not a model folder; give a folder holding tokenizer files, "
                             "'tiny', or a Hugging Face model id in the local cache")
    else:
        source, kwargs = base_model, {"local_files_only": True}
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        where = "in the local Hugging Face cache (nothing is downloaded)" if kwargs else f"in {source}"
        raise WorkbenchError(f"cannot load a tokenizer for {base_model!r} {where}: {str(exc).splitlines()[0]}. "
                             "Give a model folder, 'tiny', or leave --tokenizer out for approximate counts") from None
    if not getattr(tok, "is_fast", False):
        raise WorkbenchError(f"the tokenizer of {base_model!r} is not a fast (Rust) tokenizer; token counting needs "
                             "one (save it with tokenizer.json)")
    return TokenCounter(base_model, tok, source, ChatRenderer(tok))


def source_stamp(store: Store, base_model: str | None) -> str:
    """Changes when the tokenizer behind a choice is rebuilt (the tiny base, a model folder): a cache key part."""
    folder = store.project.models_dir / "tiny" if base_model == "tiny" else Path(base_model or "").expanduser()
    if not base_model or not folder.is_dir():
        return ""
    return ";".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("tokenizer*")))


def tokenizer_choices(store: Store) -> list[str]:
    """What the Inspect page offers: approximate, tiny (when built), model folders under models/, and
    model ids in the local Hugging Face cache."""
    out = [APPROXIMATE]
    models = store.project.models_dir
    if models.is_dir():
        for folder in sorted(p for p in models.iterdir() if p.is_dir()):
            if (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists():
                out.append("tiny" if folder.name == "tiny" else str(folder))
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    hub = hub.expanduser()
    if hub.is_dir():
        for entry in sorted(hub.glob("models--*")):
            if any(entry.glob("snapshots/*/tokenizer*")):
                out.append(entry.name[len("models--"):].replace("--", "/"))
    return out


# ---------------------------------------------------------------- rendering

class ChatRenderer(supervision.ChatRenderer):
    """`trainers.supervision.ChatRenderer` (the one definition of supervised tokens, shared with training);
    a tokenizer without a chat template renders the contents joined by a blank line (`_plain`), and a
    template that cannot be split into turns raises a WorkbenchError."""

    def render(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        if not self.template:
            return _plain(messages)
        return super().render(messages)

    def slow(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        try:
            return super().slow(messages)
        except supervision.TemplateError as exc:
            raise WorkbenchError(str(exc)) from None


def _plain(messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """No chat template: the contents joined by a blank line; assistant contents are the spans."""
    text, spans = "", []
    for i, m in enumerate(messages):
        if i:
            text += "\n\n"
        if m["role"] == "assistant":
            spans.append((len(text), len(text) + len(m["content"])))
        text += m["content"]
    return text, spans


def _starts(enc, text_len: int, special: bool) -> list[int]:
    """Each token's first character; special tokens added by the tokenizer sit at 0 (leading) or the end."""
    if not special:
        return [a for a, _ in enc.offsets]
    return [(text_len if k else 0) if sp else a for k, ((a, _), sp) in enumerate(zip(enc.offsets,
                                                                                    enc.special_tokens_mask))]


def count_records(counter: TokenCounter, records: list[dict]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(total tokens, supervised tokens, supervised token spans) of each canonical record
    (keys prompt, completion, system, messages) with a real tokenizer."""
    renderer = counter.renderer
    rendered = []
    for r in records:
        msgs = canonical_to_messages(r.get("prompt") or "", r.get("completion"), r.get("system"), r.get("messages"))
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in msgs]
        try:
            rendered.append(renderer.render(msgs))
        except WorkbenchError:
            rendered.append(_plain(msgs))
    add_special = not renderer.template
    encs = counter.tokenizer.backend_tokenizer.encode_batch([t for t, _ in rendered], add_special_tokens=add_special)
    out = []
    for enc, (text, char_spans) in zip(encs, rendered):
        spans = supervision.token_spans(_starts(enc, len(text), add_special), char_spans, len(text))
        out.append((len(enc), sum(b - a for a, b in spans), spans))
    return out


# ---------------------------------------------------------------- counting a version

def approx_tokens(text: str | None) -> int:
    """The approximate rule for one text (the SQL below computes the same)."""
    return -(-len(text.encode("utf-8")) // 4) if text else 0


def _approx_sql(version: Version, columns: set[str]) -> str:
    def n(expr: str) -> str:
        return f"CAST(ceil(strlen(coalesce({expr}, '')) / 4) AS INTEGER)"

    system = n("system") if "system" in columns else "0"
    completion = "completion" if "completion" in columns else "NULL::VARCHAR"
    single = (f"CASE WHEN {completion} IS NULL THEN []::STRUCT(start INTEGER, stop INTEGER)[] "
              f"ELSE [{{'start': {system} + {n('prompt')}, 'stop': {system} + {n('prompt')} + {n(completion)}}}] END")
    if "messages" in columns:
        turns = ("list_transform(from_json(messages, '[{\"role\":\"VARCHAR\",\"content\":\"VARCHAR\"}]'), "
                 f"lambda m: {{'role': m.role, 'n': {n('m.content')}}})")
        multi = ("list_transform(list_filter(range(1, len(t) + 1), lambda i: t[i].role = 'assistant'), "
                 "lambda i: {'start': CAST(coalesce(list_sum(list_transform(t[1:i - 1], lambda x: x.n)), 0) AS INTEGER), "
                 "'stop': CAST(list_sum(list_transform(t[1:i], lambda x: x.n)) AS INTEGER)})")
        total_multi = "CAST(coalesce(list_sum(list_transform(t, lambda x: x.n)), 0) AS INTEGER)"
        source = (f"(SELECT *, CASE WHEN messages IS NULL THEN NULL ELSE {turns} END AS t "
                  f"FROM {version.table_name})")
        spans = f"CASE WHEN t IS NULL THEN {single} ELSE {multi} END"
        total = (f"CASE WHEN t IS NULL THEN {system} + {n('prompt')} + {n(completion)} ELSE {total_multi} END")
    else:
        source, spans = version.table_name, single
        total = f"{system} + {n('prompt')} + {n(completion)}"
    sup = "CAST(coalesce(list_sum(list_transform(spans, lambda s: s.stop - s.start)), 0) AS INTEGER)"
    return (f"SELECT {ROW_COLUMN}, CAST(total - {sup} AS INTEGER) AS prompt_tokens, {sup} AS completion_tokens, "
            f"CAST(total AS INTEGER) AS total_tokens, spans FROM "
            f"(SELECT {ROW_COLUMN}, {total} AS total, {spans} AS spans FROM {source}) ORDER BY {ROW_COLUMN}")


def count_tokens(store: Store, version: Version, counter: TokenCounter | None = None, *,
                 progress: Progress | None = None, batch_rows: int = BATCH_ROWS) -> Path:
    """Count every record's tokens once per version and tokenizer; returns the cache file."""
    from workbench.core.versions import version_columns
    from workbench.inspect.cache import copy_query

    counter = counter or approximate()
    progress = progress or _noop
    path = cache_path(store, version, "tokens", counter.cache_tag)
    if path.exists():
        return path
    columns = {c for c, _ in version_columns(store, version)}
    if counter.approximate:
        progress(0.0, "counting approximate tokens")
        copy_query(store.con.cursor(), _approx_sql(version, columns), path)
        progress(1.0, "counted")
        return path
    select = ", ".join([ROW_COLUMN] + [c if c in columns else f"NULL::VARCHAR AS {c}"
                                        for c in ("prompt", "completion", "system", "messages")])
    cur = store.con.cursor()
    done = 0
    try:
        reader = cur.sql(f"SELECT {select} FROM {version.table_name}").to_arrow_reader(batch_rows)
        with files.atomic_path(path) as tmp, pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            for batch in reader:
                pending.append(batch)
                if sum(b.num_rows for b in pending) < batch_rows:
                    continue
                done += _write_counts(counter, pa.Table.from_batches(pending), writer)
                pending = []
                progress(min(done / max(version.row_count, 1), 1.0),
                         f"tokenised {done:,} of {version.row_count:,} records")
            if pending:
                done += _write_counts(counter, pa.Table.from_batches(pending), writer)
    finally:
        cur.close()
    progress(1.0, f"tokenised {done:,} records")
    return path


def _write_counts(counter: TokenCounter, table: pa.Table, writer: pq.ParquetWriter) -> int:
    rows = table.column(ROW_COLUMN)
    records = table.drop_columns([ROW_COLUMN]).to_pylist()
    counts = count_records(counter, records)
    total = [c[0] for c in counts]
    sup = [c[1] for c in counts]
    writer.write_table(pa.table({
        ROW_COLUMN: rows, "prompt_tokens": pa.array([t - s for t, s in zip(total, sup)], pa.int32()),
        "completion_tokens": pa.array(sup, pa.int32()), "total_tokens": pa.array(total, pa.int32()),
        "spans": pa.array([[{"start": a, "stop": b} for a, b in c[2]] for c in counts], pa.list_(SPAN)),
    }, schema=SCHEMA))
    return table.num_rows


# ---------------------------------------------------------------- summaries

def _lost_sql(max_length: int) -> str:
    L = int(max_length)
    return f"coalesce(list_sum(list_transform(spans, lambda s: greatest(0, s.stop - greatest(s.start, {L})))), 0)"


def token_summary(store: Store, version: Version, counter: TokenCounter | None = None, *,
                  max_length: int | None = None, progress: Progress | None = None) -> dict:
    """Percentiles of prompt, completion and total tokens, and what a max sequence length would cut."""
    counter = counter or approximate()
    path = count_tokens(store, version, counter, progress=progress)
    src = parquet_sql(path)
    parts = []
    for col in LENGTH_COLUMNS:
        parts += [f"quantile_disc({col}, 0.5)", f"quantile_disc({col}, 0.95)", f"max({col})", f"avg({col})",
                  f"sum({col})"]
    row = store.cursor().execute(f"SELECT count(*), {', '.join(parts)} FROM {src}").fetchall()[0]
    out = {"tokenizer": counter.name, "approximate": counter.approximate, "rule": counter.rule,
           "records": row[0]}
    for i, col in enumerate(LENGTH_COLUMNS):
        p50, p95, mx, mean, total = row[1 + 5 * i: 6 + 5 * i]
        out[col.removesuffix("_tokens")] = {"p50": p50 or 0, "p95": p95 or 0, "max": mx or 0,
                                            "mean": round(mean or 0, 1), "sum": int(total or 0)}
    if max_length is not None:
        out["truncation"] = truncation(store, path, max_length)
    return out


def truncation(store: Store, path: Path, max_length: int) -> dict:
    """Records longer than max_length, supervised tokens cut off, records left with none to learn."""
    return truncation_table(store, path, [max_length])[0]


def truncation_table(store: Store, path: Path, lengths=TRUNCATION_LENGTHS) -> list[dict]:
    """`truncation` at several max sequence lengths, in one pass over the counts."""
    for n in lengths:
        if int(n) < 1:
            raise WorkbenchError(f"max length {n} must be a positive number of tokens, for example 1024")
    parts = []
    for L in map(int, lengths):
        parts += [f"count(*) FILTER (WHERE total_tokens > {L})", f"coalesce(sum({_lost_sql(L)}), 0)",
                  f"count(*) FILTER (WHERE completion_tokens > 0 AND "
                  f"list_min(list_transform(spans, lambda s: s.start)) >= {L})"]
    row = store.cursor().execute(
        f"SELECT count(*), coalesce(sum(completion_tokens), 0), {', '.join(parts)} FROM {parquet_sql(path)}"
    ).fetchall()[0]
    records, supervised = row[0], int(row[1])
    out = []
    for i, L in enumerate(map(int, lengths)):
        truncated, lost, dropped = row[2 + 3 * i: 5 + 3 * i]
        out.append({"max_length": L, "truncated_records": truncated,
                    "truncated_fraction": round(truncated / records, 6) if records else 0.0,
                    "supervised_tokens": supervised, "supervised_tokens_lost": int(lost),
                    "supervised_lost_fraction": round(lost / supervised, 6) if supervised else 0.0,
                    "records_without_supervised_tokens": dropped})
    return out


def is_counted(store: Store, version: Version, counter: TokenCounter) -> bool:
    """Whether this version's counts for this tokenizer are cached (the page then needs no button)."""
    return cache_path(store, version, "tokens", counter.cache_tag).exists()


def token_histogram(store: Store, path: Path, column: str, *, bins: int = 40) -> list[dict]:
    """Equal-width bins over 0..max of one length column: [{start, stop, records}]."""
    if column not in LENGTH_COLUMNS:
        raise WorkbenchError(f"unknown length column {column!r}; expected one of {', '.join(LENGTH_COLUMNS)}")
    src = parquet_sql(path)
    mx = store.cursor().execute(f"SELECT max({column}) FROM {src}").fetchall()[0][0] or 0
    width = max(1, -(-(mx + 1) // bins))
    rows = store.cursor().execute(
        f"SELECT {column} // {width} AS b, count(*) FROM {src} GROUP BY b ORDER BY b").fetchall()
    return [{"start": b * width, "stop": (b + 1) * width, "records": n} for b, n in rows]


def record_lengths(store: Store, path: Path, rows: list[int]) -> dict[int, tuple[int, int, int]]:
    """(prompt, completion, total) tokens of some records, by `_row`."""
    if not rows:
        return {}
    got = store.cursor().execute(
        f"SELECT {ROW_COLUMN}, prompt_tokens, completion_tokens, total_tokens FROM {parquet_sql(path)} "
        f"WHERE {ROW_COLUMN} IN ({', '.join(str(int(r)) for r in rows)})").fetchall()
    return {r[0]: r[1:] for r in got}
