"""Quality flags of a dataset version's records, counted and cached per version.

Flags (a record may carry several; "response" is the completion, absent for classification data):

    empty            the prompt or the response is empty or whitespace only
    short_response   the response has fewer than `min_response_chars` characters (default 15)
    long_response    the response is longer than 3x the dataset's 95th-percentile response length
                     (and longer than 200 characters); the percentile comes from 16 evenly spaced
                     blocks of 125 records (all records of a smaller version)
    repeats_prompt   the response equals the prompt (ignoring case and surrounding whitespace) or
                     contains the whole prompt (prompts of 10+ characters)
    junk             prompt or response is mostly symbols or markup rather than words: among its
                     non-space characters, symbols (ASCII punctuation and digits, Latin-1 signs,
                     the U+2000-U+2FFF punctuation/arrows/box-drawing block, emoji and other
                     4-byte characters) outnumber letters (every other character) in a text of 8+
                     bytes; or HTML/XML tags make up more than half of a text with 2+ tags
    language         the record's language differs from the dataset's main language. Cheap
                     heuristic: each language has a list of very common words (or, for scripts
                     like Han, Hangul, Arabic, a letter of that script). The dataset's language is
                     the one whose words appear in most sampled records of 5+ words (runs of
                     letters), judged on their first 300 characters of prompt and response; off
                     when no language covers half the sample. A record of 5+ words whose prompt
                     and response contain none of the main language's words is flagged.

Everything but `junk` is DuckDB SQL; `junk` counts character classes over the Arrow buffers with
numpy (UTF-8 bytes classed by their lead byte), because DuckDB's regexp_replace runs at ~10 MB/s.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workbench.core import files
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.textkernels import string_buffers
from workbench.core.versions import ROW_COLUMN, Version, version_columns
from workbench.inspect.cache import cache_path, parquet_sql

FLAGS = {
    "empty": "prompt or response is empty or whitespace only",
    "short_response": "response shorter than {min_response_chars} characters",
    "long_response": "response longer than 3x the dataset's 95th-percentile response length",
    "repeats_prompt": "response repeats the prompt",
    "junk": "mostly symbols or markup rather than words",
    "language": "language differs from the dataset's main language",
}
PII_FLAG = "pii"  # browse can also filter on records with PII once a PII scan is cached
ALGO = 1
CHUNK_ROWS = 16_384
SAMPLE_BLOCKS, SAMPLE_BLOCK_ROWS = 16, 125  # whole row groups are read: a few blocks cost less than spread rows
HEAD_CHARS = 300
MIN_SIGNAL = 8

# Very common words by language (lower case); scripts whose letters alone tell the language.
STOPWORDS = {
    "en": "the and you your is are was to of in for with this that have not my me it what how can please i".split(),
    "de": "und ich nicht das ist mit sie auf für ein eine bitte mein meine der die den dem zu wir".split(),
    "fr": "le les et je vous est pas une avec pour mon ma merci nous des du au ce sur".split(),
    "es": "el los las y que por para con una mi gracias está pero del se lo como".split(),
    "it": "il che non per sono una mio della grazie con gli di è ho questo".split(),
    "pt": "não que uma para com meu minha obrigado você está os do da em por".split(),
    "nl": "het een en ik niet van dat mijn met bedankt je op voor".split(),
    "ru": "и в не на я что с по это как вы мой у за".split(),
}
SCRIPTS = {"zh": r"\p{Han}", "ja": r"[\p{Hiragana}\p{Katakana}]", "ko": r"\p{Hangul}", "ar": r"\p{Arabic}",
           "he": r"\p{Hebrew}", "el": r"\p{Greek}", "hi": r"\p{Devanagari}", "th": r"\p{Thai}"}
FIVE_WORDS = r"(?:\pL+[^\pL]+){4}\pL"  # five runs of letters: enough text to judge its language

Progress = Callable[[float, str], None]


def language_pattern(lang: str) -> str:
    """The RE2 pattern (also valid for Python's `regex`) that marks text of one language."""
    if lang in SCRIPTS:
        return SCRIPTS[lang]
    words = "|".join(sorted(STOPWORDS[lang], key=len, reverse=True))
    return rf"(?i)(?:^|[^\pL])(?:{words})(?:[^\pL]|$)"


# ---------------------------------------------------------------- character classes (junk)

def _class_table() -> bytes:
    """Per UTF-8 byte, as a signed byte: +1 letter, -1 symbol, 0 space or continuation byte (so each
    character counts once, by its lead byte)."""
    table = bytearray(256)
    for b in range(128):
        ch = chr(b)
        table[b] = 1 if ch.isalpha() else 0 if (ch.isspace() or b < 32 or b == 127) else 255
    for b in range(0xC0, 0x100):
        table[b] = 1
    for b in (0xC2, 0xE2) + tuple(range(0xF0, 0x100)):
        table[b] = 255  # Latin-1 signs, U+2000-U+2FFF punctuation/arrows/box drawing, emoji and 4-byte
    return bytes(table)


_CLASSES = _class_table()
_CLASS_LUT = np.frombuffer(_CLASSES, np.int8)
_TAG_RE = re.compile(r"<[^<>]*>")


def char_classes(text: str) -> tuple[int, int]:
    """(letters, symbols) of one text, character by character: the reference for `_junk_mask`."""
    letters = symbols = 0
    for ch in text:
        v = _CLASSES[ch.encode("utf-8")[0]]
        letters += v == 1
        symbols += v == 255
    return letters, symbols


def is_junk(text: str | None) -> bool:
    """The junk rule for one text (the batch code below computes the same)."""
    if not text:
        return False
    letters, symbols = char_classes(text)
    if len(text.encode("utf-8")) >= MIN_SIGNAL and symbols > letters:
        return True
    return "<" in text and _markup_heavy(text)


def _markup_heavy(text: str) -> bool:
    return text.count("<") >= 2 and sum(len(m) for m in _TAG_RE.findall(text)) * 2 > len(text)


def _text_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first record, as int64; the records' UTF-8 bytes) of a string array."""
    values, offsets = string_buffers(arr)
    start, stop = int(offsets[0]), int(offsets[-1])
    return offsets - start, values[start:stop] if stop > start else np.zeros(0, np.uint8)


def _per_record_sum(values: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Sum of int8 values per record (records cut at rel; an empty record sums to 0)."""
    padded = np.empty(len(values) + 1, np.int8)
    padded[:-1] = values
    padded[-1] = 0
    starts = np.minimum(rel[:-1], len(values))  # an empty last record points at the pad byte
    out = np.add.reduceat(padded, starts, dtype=np.int32)  # int32 runs ~6x faster than int64 here
    out[rel[1:] == rel[:-1]] = 0  # reduceat gives an empty record the next byte's class
    return out


def _junk_mask(arr: pa.Array | pa.ChunkedArray, has_lt: np.ndarray | None = None) -> np.ndarray:
    """is_junk of every string of an Arrow array, over its bytes, no copy of the text.

    First a bound that settles almost every record in three vector passes that release the GIL:
    letters >= ASCII letters and symbols <= bytes that are not ASCII letters, so a text whose bytes
    are more than half ASCII letters is not junk by the counting rule. The rest are counted exactly:
    a table lookup to classes and one `np.add.reduceat` per record. has_lt: which records hold a '<'
    (found in the same bytes when not given); only those are checked for markup, in Python."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, bool)
    rel, body = _text_buffers(arr)
    lengths = np.diff(rel)
    scratch = np.bitwise_or(body, 32)
    np.subtract(scratch, 97, out=scratch)  # ASCII letters -> 0..25 (uint8 wraps the rest above 25)
    alpha = _per_record_sum(np.less(scratch, 26).view(np.int8), rel)
    del scratch
    junk = np.zeros(n, bool)
    open_ = np.flatnonzero((lengths >= MIN_SIGNAL) & (2 * alpha <= lengths))
    if len(open_):
        sub = arr.take(pa.array(open_))
        sub_rel, sub_body = _text_buffers(sub)
        score = _per_record_sum(_CLASS_LUT[sub_body], sub_rel)
        junk[open_] = score < 0  # symbols outnumber letters
    valid = np.ones(n, bool) if arr.null_count == 0 else np.asarray(
        arr.is_valid().to_numpy(zero_copy_only=False), bool)
    if has_lt is None:
        has_lt = np.zeros(n, bool)
        has_lt[np.searchsorted(rel, np.flatnonzero(body == 60), "right") - 1] = True
    for i in np.flatnonzero(has_lt & ~junk & valid):
        junk[i] = _markup_heavy(arr[int(i)].as_py())
    return junk & valid


# ---------------------------------------------------------------- rules that need the whole dataset

def _settings(store: Store) -> dict:
    return {"min_response_chars": int(store.project.setting("quality", "min_response_chars", 15))}


def sample_where(version: Version) -> str:
    """A WHERE clause picking 16 evenly spaced blocks of 125 records (all records when fewer):
    Parquet row-group statistics on `_row` let DuckDB read only those parts of the version."""
    n = version.row_count
    if n <= SAMPLE_BLOCKS * SAMPLE_BLOCK_ROWS:
        return "WHERE true"
    starts = [round(i * (n - SAMPLE_BLOCK_ROWS) / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)]
    return "WHERE " + " OR ".join(f"({ROW_COLUMN} >= {a} AND {ROW_COLUMN} < {a + SAMPLE_BLOCK_ROWS})" for a in starts)


def dataset_language(store: Store, version: Version, columns: set[str] | None = None) -> tuple[str | None, dict]:
    """(main language or None, {language: share of sampled records of 5+ words}) from `sample_where`."""
    columns = columns or {c for c, _ in version_columns(store, version)}
    langs = list(STOPWORDS) + list(SCRIPTS)
    cases = ", ".join(f"count(*) FILTER (WHERE regexp_matches(head, '{language_pattern(lang)}'))" for lang in langs)
    row = store.cursor().execute(
        f"SELECT count(*), {cases} FROM (SELECT {_head_sql(columns)} AS head FROM {version.table_name} "
        f"{sample_where(version)}) WHERE regexp_matches(head, '{FIVE_WORDS}')").fetchall()[0]
    sampled = row[0]
    if not sampled:
        return None, {}
    shares = {lang: round(n / sampled, 4) for lang, n in zip(langs, row[1:]) if n}
    best = max(shares, key=shares.get) if shares else None
    return (best if best and shares[best] >= 0.5 else None), shares


def _head_sql(columns: set[str]) -> str:
    completion = f"left(coalesce(completion, ''), {HEAD_CHARS})" if "completion" in columns else "''"
    return f"(left(coalesce(prompt, ''), {HEAD_CHARS}) || ' ' || {completion})"


def _flag_sql(store: Store, version: Version, columns: set[str], language: str | None) -> tuple[str, dict]:
    settings = _settings(store)
    has_completion = "completion" in columns and store.cursor().execute(
        f"SELECT count(completion) FROM {version.table_name}").fetchall()[0][0] > 0
    blank = "(length({0}) = 0 OR regexp_full_match({0}, '\\s*'))"
    if has_completion:
        p95 = store.cursor().execute(f"SELECT quantile_disc(length(completion), 0.95) FROM {version.table_name} "
                                     f"{sample_where(version)}").fetchall()[0][0] or 0
        long_chars = max(3 * p95, 200)
        settings["long_response_chars"] = long_chars
        empty = f"(prompt IS NULL OR {blank.format('prompt')} OR completion IS NULL OR {blank.format('completion')})"
        short = f"coalesce(length(completion) < {settings['min_response_chars']} AND NOT {blank.format('completion')}, false)"
        long = f"coalesce(length(completion) > {long_chars}, false)"
        repeats = ("coalesce(CASE WHEN abs(length(completion) - length(prompt)) <= 8 "
                   "AND lower(trim(completion)) = lower(trim(prompt)) AND length(trim(prompt)) > 0 THEN true "
                   "WHEN length(prompt) >= 10 THEN contains(completion, prompt) ELSE false END, false)")
    else:
        empty = f"(prompt IS NULL OR {blank.format('prompt')})"
        short = long = repeats = "false"
    if language:
        pattern = language_pattern(language)
        fields = ["prompt"] + (["completion"] if "completion" in columns else [])
        # RE2 stops at the first common word, so a record in the main language costs a few words
        lang = ("CASE " + " ".join(f"WHEN regexp_matches({f}, '{pattern}') THEN false" for f in fields)
                + f" ELSE regexp_matches({_head_sql(columns)}, '{FIVE_WORDS}') END")
    else:
        lang = "false"
    sql = (f"SELECT {ROW_COLUMN}, {empty} AS empty, {short} AS short_response, {long} AS long_response, "
           f"{repeats} AS repeats_prompt, {lang} AS language FROM {version.table_name}")
    return sql, settings


SCHEMA = pa.schema([(ROW_COLUMN, pa.int64())] + [(name, pa.bool_()) for name in FLAGS])


def _flags_path(store: Store, version: Version) -> Path:
    return cache_path(store, version, "quality", f"a{ALGO}-m{_settings(store)['min_response_chars']}")


def is_computed(store: Store, version: Version) -> bool:
    return _flags_path(store, version).exists()


def _text_batches(store: Store, version: Version, fields: list[str]):
    """Batches of `_row` and the text fields, straight from the version's Parquet parts when they are
    where `write_version` puts them (pyarrow reads them about 2x faster than DuckDB exports them),
    else through DuckDB."""
    parts = sorted((store.project.data_dir / f"v{version.version_id}").glob("*.parquet"))
    if parts:
        for part in parts:
            pf = pq.ParquetFile(part)
            names = set(pf.schema_arrow.names)
            for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=[c for c in (ROW_COLUMN, *fields) if c in names]):
                yield batch.num_rows, batch.column(ROW_COLUMN), [batch.column(f) if f in names else None for f in fields]
        return
    cur = store.con.cursor()
    try:
        for batch in cur.sql(f"SELECT {ROW_COLUMN}, {', '.join(fields)} FROM {version.table_name}").to_arrow_reader(CHUNK_ROWS):
            yield batch.num_rows, batch.column(ROW_COLUMN), [batch.column(f) for f in fields]
    finally:
        cur.close()


def junk_by_row(store: Store, version: Version, columns: set[str], *, progress=None) -> np.ndarray:
    """The junk flag of every record, indexed by `_row` (prompt or response junk); two threads count
    characters (numpy releases the GIL) while the next batch is read."""
    fields = [f for f in ("prompt", "completion") if f in columns]
    out = np.zeros(version.row_count, bool)

    def one(rows, texts) -> None:
        mask = np.zeros(len(rows), bool)
        for t in texts:
            if t is not None:
                mask |= _junk_mask(t)
        out[rows.to_numpy()] = mask

    done = 0
    with ThreadPoolExecutor(2) as pool:
        pending: deque = deque()
        for n, rows, texts in _text_batches(store, version, fields):
            pending.append(pool.submit(one, rows, texts))
            done += n
            while len(pending) > 3:
                pending.popleft().result()
            if progress:
                progress(min(done / max(version.row_count, 1), 1.0))
        for f in pending:
            f.result()
    return out


def compute_flags(store: Store, version: Version, *, progress: Progress | None = None) -> Path:
    """Every record's flags, once per version and rule settings; returns the cache file."""
    progress = progress or (lambda fraction, message: None)
    path = _flags_path(store, version)
    if path.exists():
        return path
    columns = {c for c, _ in version_columns(store, version)}
    progress(0.0, "finding the dataset's language")
    language, shares = dataset_language(store, version, columns)
    sql, settings = _flag_sql(store, version, columns, language)
    progress(0.05, "checking records")
    cur = store.con.cursor()
    try:
        table = cur.sql(sql).to_arrow_table()
    finally:
        cur.close()
    progress(0.4, "looking for symbols and markup")
    junk = junk_by_row(store, version, columns, progress=lambda f: progress(0.4 + 0.55 * f, "looking for symbols and markup"))
    rows = table.column(ROW_COLUMN).to_numpy()
    table = table.append_column("junk", pa.array(junk[rows])).select(SCHEMA.names).cast(SCHEMA)
    with files.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=CHUNK_ROWS * 8)
    meta = {"language": language, "language_shares": shares, **settings}
    path.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def quality_report(store: Store, version: Version, *, progress: Progress | None = None) -> dict:
    """{flags: {name: records}, flagged: records with any flag, language, rules}."""
    path = compute_flags(store, version, progress=progress)
    counts = ", ".join(f"count(*) FILTER (WHERE {name})" for name in FLAGS)
    any_flag = " OR ".join(FLAGS)
    row = store.cursor().execute(
        f"SELECT {counts}, count(*) FILTER (WHERE {any_flag}) FROM {parquet_sql(path)}").fetchall()[0]
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
    rules = {name: text.format(**meta) if "{" in text else text for name, text in FLAGS.items()}
    if meta.get("long_response_chars"):
        rules["long_response"] += f" (> {meta['long_response_chars']:,} characters here)"
    rules["language"] += f" ({meta.get('language') or 'off: no main language'})"
    return {"flags": dict(zip(FLAGS, row[:-1])), "flagged": row[-1], "language": meta.get("language"),
            "language_shares": meta.get("language_shares", {}), "rules": rules}


def flag_names() -> list[str]:
    return list(FLAGS)


def browse_flags(store: Store, version: Version) -> list[str]:
    """Flags a browser can filter on: the quality flags, and 'pii' once a PII scan of the version is cached."""
    from workbench.inspect import pii

    return [*FLAGS, PII_FLAG] if pii.is_scanned(store, version) else list(FLAGS)


def flag_rows_sql(store: Store, version: Version, flag: str) -> str:
    """A subquery of the `_row`s carrying a flag (a quality flag, or 'pii' once a PII scan is cached)."""
    if flag == PII_FLAG:
        from workbench.inspect import pii

        return pii.pii_rows_sql(pii.scan(store, version))
    if flag not in FLAGS:
        raise WorkbenchError(f"unknown flag {flag!r}; choose one of {', '.join([*FLAGS, PII_FLAG])}")
    return f"SELECT {ROW_COLUMN} FROM {parquet_sql(compute_flags(store, version))} WHERE {flag}"
