"""A text-search index that finds the first records matching a text filter without reading them all.

The Datasets page asks for "the first 50 records, in version order, whose prompt or completion
contains this text (any case), in these categories". On a million records DuckDB answers by
scanning every text (0.4-1 s); this index answers in milliseconds and gives the same records.

How it works. Records are grouped by category (nulls last) and, inside a category, cut in version
order into blocks of `BLOCK_RECORDS`. Each block keeps:

- a Bloom filter of the byte trigrams of its folded text (`BLOOM_BITS` bits, one hash): a block
  whose filter lacks one of the query's trigrams cannot hold a match and is never opened;
- its folded text (`fold`: ASCII letters lower-cased, the two non-ASCII letters that RE2 folds onto
  ASCII ones, KELVIN SIGN and LATIN SMALL LETTER LONG S, written as k and s), LZ4-compressed.

The records themselves are stored in index order, `RECORD_BATCH` to an Arrow record batch, to show
the hits.

A query is the same case-insensitive literal match that `browse` runs in DuckDB (RE2 `(?i)\\Q..\\E`
over prompt and completion). For an ASCII query that match is exactly "fold(query) occurs in
fold(text)", so candidates are checked with a byte search on the folded text. Any other query is
checked with RE2 itself (pyarrow's) on the block's folded text, which folding leaves matching the
same way. Blocks are visited in order of their first record, so a page stops as soon as its
records are certain.

The index lives in cache/search_v<id>_<hash16>/ (written aside, renamed into place, never read
half-written); about 0.4 of the version's text size on disk (278 MB for the 1M-ticket benchmark).
Build it with `build`
(the Datasets page starts it in the background for versions of `MIN_RECORDS` or more); until it exists, `browse`
scans with DuckDB.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from workbench.core.store import Store, quote_ident
from workbench.core.textkernels import string_buffers
from workbench.core.versions import ROW_COLUMN, Version

BLOCK_RECORDS = 32
BLOOM_BITS = 13  # 8,192 bits per block: about a quarter set for 32 support tickets
RECORD_BATCH = 1024  # records per stored record batch (the hits of a page are read from these)
MIN_RECORDS = 100_000  # below this a DuckDB scan is fast enough and no index is built
FORMAT = 1
_HASH = 0x9E3779B1
# the only non-ASCII characters that RE2's case folding maps onto ASCII letters (checked in tests)
ASCII_PARTNERS = {"\u212a": "k", "\u017f": "s"}


def fold(text: str) -> bytes:
    """ASCII letters lower-cased and KELVIN SIGN / LONG S written as k / s, as UTF-8 bytes."""
    for odd, plain in ASCII_PARTNERS.items():
        text = text.replace(odd, plain)
    return text.encode("utf-8").lower()  # bytes.lower() changes only ASCII letters


def _fold_array(arr: pa.Array) -> pa.Array:
    out = pc.ascii_lower(pc.fill_null(arr, ""))
    for odd, plain in ASCII_PARTNERS.items():
        out = pc.replace_substring(out, odd, plain)
    return out


def _hashes(data: np.ndarray, bits: int) -> np.ndarray:
    """The Bloom position of every byte trigram of data (uint8, padded with one zero byte)."""
    n = len(data) - 3
    if n <= 0:
        return np.zeros(0, np.uint32)
    words = np.ndarray((n,), dtype="<u4", buffer=data, strides=(1,))
    return ((words & np.uint32(0xFFFFFF)) * np.uint32(_HASH)) >> np.uint32(32 - bits)


def query_hashes(folded: bytes, bits: int) -> list[int]:
    """Bloom positions of the query's trigrams made only of ASCII bytes (others may be written
    with different bytes in a matching text, so they cannot rule a block out)."""
    out = set()
    for i in range(len(folded) - 2):
        tri = folded[i:i + 3]
        if max(tri) < 0x80:
            key = tri[0] | tri[1] << 8 | tri[2] << 16
            out.add(((key * _HASH) & 0xFFFFFFFF) >> (32 - bits))
    return sorted(out)


def index_dir(store: Store, version: Version) -> Path:
    return store.project.cache_dir / f"search_v{version.version_id}_{version.content_hash[:16]}"


# ---------------------------------------------------------------------------------------- build


class _Writer:
    """Collects blocks as they are cut and writes the index files into a side folder."""

    def __init__(self, folder: Path, schema: pa.Schema, bits: int):
        self.folder, self.bits = folder, bits
        self.text = open(folder / "text.lz4", "wb")
        self.records = ipc.new_file(str(folder / "records.arrow"), schema,
                                    options=ipc.IpcWriteOptions(compression="zstd"))
        self.rows, self.rec_off, self.block_start = [], [], [0]
        self.block_cat, self.text_off, self.text_len, self.blooms = [], [0], [], []
        self.codes: dict[str | None, int] = {}
        self.pending: pa.Table | None = None

    def add(self, records: pa.Table, rows: np.ndarray, cats: list, folded: pa.Array, starts: np.ndarray) -> None:
        """Blocks records[starts[i]:starts[i+1]] (all of one category each)."""
        raw, offs = string_buffers(folded)
        data = np.concatenate((raw[offs[0]:offs[-1]], np.zeros(1, np.uint8)))
        local = offs - offs[0]
        nb, m = len(starts) - 1, 1 << self.bits
        hashes = _hashes(data, self.bits)
        # a trigram belongs to the block it starts in (one that runs into the next block only adds bits)
        block_of = np.repeat(np.arange(nb, dtype=np.uint32), np.diff(local[starts]))[:len(hashes)]
        bloom = np.zeros(nb * m, dtype=bool)
        bloom[block_of * np.uint32(m) + hashes] = True
        self.blooms.append(np.packbits(bloom.reshape(nb, m), axis=1))
        self._queue_records(records)
        for i in range(nb):
            s, e = int(starts[i]), int(starts[i + 1])
            text = data[local[s]:local[e]].tobytes()
            packed = pa.compress(text, codec="lz4_raw", asbytes=True) if text else b""
            self.text.write(packed)
            self.text_off.append(self.text_off[-1] + len(packed))
            self.text_len.append(len(text))
            self.rec_off.append((local[s:e] - local[s]).astype(np.int32))
            self.rows.append(rows[s:e])
            self.block_start.append(self.block_start[-1] + (e - s))
            self.block_cat.append(self.codes.setdefault(cats[s], len(self.codes)))

    def _queue_records(self, records: pa.Table | None) -> None:
        """Write records in index order as record batches of exactly RECORD_BATCH (the last may be short)."""
        if records is not None:
            self.pending = pa.concat_tables([self.pending, records]) if self.pending is not None else records
        if self.pending is None:
            return
        full = self.pending.num_rows if records is None else self.pending.num_rows // RECORD_BATCH * RECORD_BATCH
        if full:
            for batch in self.pending.slice(0, full).combine_chunks().to_batches(max_chunksize=RECORD_BATCH):
                self.records.write_batch(batch)
        self.pending = self.pending.slice(full)

    def close(self, version: Version, column: str | None, seconds: float) -> None:
        self._queue_records(None)
        self.text.close()
        self.records.close()
        arrays = {
            "rows": np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64),
            "rec_off": np.concatenate(self.rec_off) if self.rec_off else np.zeros(0, np.int32),
            "block_start": np.asarray(self.block_start, np.int64),
            "block_cat": np.asarray(self.block_cat, np.int32),
            "text_off": np.asarray(self.text_off, np.int64),
            "text_len": np.asarray(self.text_len, np.int64),
            "bloom": (np.concatenate(self.blooms) if self.blooms
                      else np.zeros((0, (1 << self.bits) // 8), np.uint8)),
        }
        for name, arr in arrays.items():
            np.save(self.folder / f"{name}.npy", arr)
        meta = {"format": FORMAT, "version_id": version.version_id, "content_hash": version.content_hash,
                "category_column": column, "categories": list(self.codes), "bloom_bits": self.bits,
                "record_batch": RECORD_BATCH, "records": int(len(arrays["rows"])), "blocks": len(self.text_len),
                "build_seconds": round(seconds, 2)}
        (self.folder / "meta.json").write_text(json.dumps(meta))

    def abort(self) -> None:
        self.text.close()
        try:
            self.records.close()
        except Exception:
            pass


def build(store: Store, version: Version, *, block_records: int = BLOCK_RECORDS, bloom_bits: int = BLOOM_BITS,
          progress: Callable[[int, int], None] | None = None) -> Path:
    """Build (or find) the search index of a version; returns its folder."""
    from workbench.data.browse import category_column

    final = index_dir(store, version)
    if (final / "meta.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.partial-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.perf_counter()
    column = category_column(store, version)
    cat_sql = f"CAST({quote_ident(column)} AS VARCHAR)" if column else "CAST(NULL AS VARCHAR)"
    sql = (f"SELECT {ROW_COLUMN} + 1 AS row, * EXCLUDE ({ROW_COLUMN}), {cat_sql} AS __wb_cat "
           f"FROM {version.table_name} ORDER BY __wb_cat NULLS LAST, row")
    writer = None
    try:
        reader = store.cursor().sql(sql).to_arrow_reader(16_384)
        schema = pa.schema([f for f in reader.schema if f.name != "__wb_cat"])
        writer = _Writer(tmp, schema, bloom_bits)
        pending: pa.Table | None = None
        done = 0
        for batch in reader:
            table = pa.Table.from_batches([batch])
            table = pa.concat_tables([pending, table]) if pending is not None else table
            pending = _emit(writer, table, block_records, final_chunk=False)
            done += batch.num_rows
            if progress:
                progress(done, version.row_count)
        if pending is not None and pending.num_rows:
            _emit(writer, pending, block_records, final_chunk=True)
        writer.close(version, column, time.perf_counter() - started)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: its index is the same
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _emit(writer: _Writer, table: pa.Table, block_records: int, *, final_chunk: bool) -> pa.Table | None:
    """Cut table into blocks (a new block at each change of category and every block_records records);
    write all but the last block, which may continue in the next chunk, and return it."""
    n = table.num_rows
    cat = table.column("__wb_cat")
    cats = cat.to_pylist()
    codes = pc.fill_null(cat, "").to_numpy(zero_copy_only=False)
    nulls = pc.is_null(cat).to_numpy(zero_copy_only=False)
    change = np.ones(n, dtype=bool)
    if n > 1:
        change[1:] = (codes[1:] != codes[:-1]) | (nulls[1:] != nulls[:-1])
    run_start = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    starts = np.flatnonzero(change | ((np.arange(n) - run_start) % block_records == 0))
    cut = n if final_chunk else int(starts[-1])
    if cut > 0:
        keep = starts[starts < cut]
        head = table.slice(0, cut).combine_chunks()
        folded = pc.binary_join_element_wise(_fold_array(head.column("prompt").combine_chunks()),
                                             _fold_array(head.column("completion").combine_chunks()),
                                             pa.nulls(cut, pa.string()).fill_null(""), "\x00")
        rows = head.column("row").to_numpy() - 1
        writer.add(head.drop_columns(["__wb_cat"]), rows, cats[:cut], folded, np.append(keep, cut))
    return None if final_chunk else table.slice(cut)


# ---------------------------------------------------------------------------------------- query


@dataclass
class SearchIndex:
    folder: Path
    meta: dict
    rows: np.ndarray
    rec_off: np.ndarray
    block_start: np.ndarray
    block_cat: np.ndarray
    text_off: np.ndarray
    text_len: np.ndarray
    bloom: np.ndarray
    text: mmap.mmap | bytes
    records: ipc.RecordBatchFileReader

    @classmethod
    def open(cls, folder: Path) -> SearchIndex:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {name: np.load(folder / f"{name}.npy")  # about 45 MB for 1M records, read once
                  for name in ("rows", "rec_off", "block_start", "block_cat", "text_off", "text_len", "bloom")}
        with open(folder / "text.lz4", "rb") as f:
            text = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.path.getsize(folder / "text.lz4") else b""
        records = ipc.open_file(pa.memory_map(str(folder / "records.arrow")))
        return cls(folder, meta, text=text, records=records, **arrays)

    @property
    def blocks(self) -> int:
        return len(self.text_len)

    def block_text(self, j: int) -> bytes:
        size = int(self.text_len[j])
        if not size:
            return b""
        return pa.decompress(self.text[int(self.text_off[j]):int(self.text_off[j + 1])], decompressed_size=size,
                             codec="lz4_raw", asbytes=True)

    def candidates(self, text: str, categories: list[str] | None) -> np.ndarray:
        """Blocks that may hold a match, in order of their first record."""
        return self._candidates(fold(text.strip()), categories)

    def _candidates(self, folded: bytes, categories: list[str] | None) -> np.ndarray:
        keep = np.ones(self.blocks, dtype=bool)
        if categories is not None:
            names = self.meta["categories"]
            codes = [names.index(c) for c in set(categories) if c in names]
            keep &= np.isin(self.block_cat, codes)
        for h in query_hashes(folded, self.meta["bloom_bits"]):
            keep &= (self.bloom[:, h >> 3] & (0x80 >> (h & 7))) != 0
        blocks = np.flatnonzero(keep)
        first = self.rows[self.block_start[blocks]]
        return blocks[np.argsort(first, kind="stable")]

    def _matches(self, j: int, needle: bytes | None, pattern: str) -> list[tuple[int, int]]:
        """(row, position in the index) of each record of block j that matches."""
        s = int(self.block_start[j])
        data = self.block_text(j)
        offs = self.rec_off[s:int(self.block_start[j + 1])]
        if needle is not None:  # ASCII query: a byte search on the folded text is exact
            out, pos = [], data.find(needle)
            while pos >= 0:
                k = bisect.bisect_right(offs, pos) - 1
                out.append((int(self.rows[s + k]), s + k))
                end = int(offs[k + 1]) if k + 1 < len(offs) else len(data)
                pos = data.find(needle, end)
            return out
        # any other query: RE2 itself on the folded text (folding keeps every character in its case class)
        ends = np.append(offs, len(data)).astype(np.int32)
        texts = pa.StringArray.from_buffers(len(offs), pa.py_buffer(ends.tobytes()), pa.py_buffer(data))
        hit = pc.match_substring_regex(texts, pattern).to_numpy(zero_copy_only=False)
        return [(int(self.rows[s + k]), s + k) for k in np.flatnonzero(hit)]

    def _search(self, text: str, categories, stop: int | None, *, max_blocks: int | None = None
                ) -> list[tuple[int, int]] | None:
        """Sorted (row, position) of the matches; only the first `stop` are sure to be there. None when
        more than max_blocks blocks would have to be opened."""
        from workbench.data.browse import text_pattern

        folded = fold(text.strip())
        needle = folded if max(folded, default=0) < 0x80 else None
        pattern = text_pattern(text)
        blocks = self._candidates(folded, categories)
        if max_blocks is not None and len(blocks) > max_blocks:
            return None
        firsts = self.rows[self.block_start[blocks]] if len(blocks) else np.zeros(0, np.int64)
        found: list[tuple[int, int]] = []
        for i, j in enumerate(blocks):
            found.extend(self._matches(int(j), needle, pattern))
            if stop is not None and len(found) >= stop:
                nxt = int(firsts[i + 1]) if i + 1 < len(blocks) else None
                if nxt is None or sum(1 for r, _ in found if r < nxt) >= stop:
                    break
        found.sort()
        return found

    def page(self, text: str, categories, offset: int, limit: int) -> pa.Table:
        """Records offset..offset+limit, in version order, whose prompt or completion contains text
        (any case) and, when categories is a list, whose category is one of them."""
        hits = self._search(text, categories, offset + limit)[offset:offset + limit]
        size = self.meta["record_batch"]
        by_batch: dict[int, list[int]] = {}
        for _, p in hits:
            by_batch.setdefault(p // size, []).append(p % size)
        parts = [pa.Table.from_batches([self.records.get_batch(b)]).take(pa.array(ks)) for b, ks in by_batch.items()]
        if not parts:
            return self.records.schema.empty_table()
        out = pa.concat_tables(parts)
        return out.take(pc.sort_indices(out.column("row")))

    def count(self, text: str, categories, *, only_if_cheap: bool = False) -> int | None:
        """Records matching text (and categories). only_if_cheap: None instead when so many blocks
        would have to be opened that a DuckDB scan is faster."""
        found = self._search(text, categories, None,
                             max_blocks=max(64, self.blocks // 16) if only_if_cheap else None)
        return None if found is None else len(found)


# ---------------------------------------------------------------------------------------- cache

@dataclass
class _Indexes:
    """The store's open indexes and background builds (by index folder)."""
    open: dict[Path, SearchIndex] = field(default_factory=dict)
    building: dict[Path, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _indexes(store: Store) -> _Indexes:
    return store.state("search_indexes", _Indexes)


def ready(store: Store, version: Version) -> SearchIndex | None:
    """The version's index if it has been built (opened once per process), else None."""
    ix = _indexes(store)
    folder = index_dir(store, version)
    with ix.lock:
        found = ix.open.get(folder)
    if found is not None:
        return found
    if not (folder / "meta.json").exists():
        return None
    opened = SearchIndex.open(folder)
    with ix.lock:
        ix.open[folder] = opened
    return opened


def status(store: Store, version: Version) -> dict:
    """{'state': 'ready'|'building'|'absent'|'small', 'done': records read, 'total': ...}."""
    ix = _indexes(store)
    folder = index_dir(store, version)
    if (folder / "meta.json").exists():
        return {"state": "ready", "done": version.row_count, "total": version.row_count}
    with ix.lock:
        job = ix.building.get(folder)
    if job and job.get("error"):
        return {"state": "failed", "error": job["error"], "done": 0, "total": version.row_count}
    if job:
        return {"state": "building", "done": job["done"], "total": version.row_count}
    if version.row_count < MIN_RECORDS:
        return {"state": "small", "done": 0, "total": version.row_count}
    return {"state": "absent", "done": 0, "total": version.row_count}


def ensure_background(store: Store, version: Version) -> dict:
    """Start building the index in a background thread of this process when the version is large
    and has none; returns `status`."""
    ix = _indexes(store)
    folder = index_dir(store, version)
    state = status(store, version)
    if state["state"] != "absent":
        return state
    with ix.lock:
        if folder in ix.building:
            return status(store, version)
        job = {"done": 0}
        ix.building[folder] = job

    def work():
        try:
            build(store, version, progress=lambda done, total: job.__setitem__("done", done))
            with ix.lock:
                ix.building.pop(folder, None)
        except Exception as exc:  # shown on the page; browsing goes on with DuckDB scans
            job["error"] = f"{type(exc).__name__}: {exc}"

    threading.Thread(target=work, name=f"wb-search-{version.version_id}", daemon=True).start()
    return status(store, version)
