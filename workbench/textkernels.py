"""Compiled loops (numba) over the UTF-8 bytes of Arrow string arrays, for work that DuckDB's string
functions make slow on a million records: one pass instead of a chain of lower/replace/regexp.

`normalized_hashes` gives, for every string, a 64-bit hash of its normalised text, the text that
`dedup.norm_sql` computes in DuckDB: DuckDB's own `lower()` (read from DuckDB itself, character by
character), each run of ASCII whitespace (tab, LF, VT, FF, CR, space) as one space, then DuckDB's
`trim()` (which also drops NO-BREAK SPACE and the other typographic spaces at either end). Equal normalised texts give equal hashes; tests check the groups against DuckDB's.
"""

from __future__ import annotations

import functools
import threading

import numba
import numpy as np
import pyarrow as pa

SEED = np.uint64(0x243F6A8885A308D3)
# numba's fallback thread pool (workqueue, used where OpenMP is missing) aborts the process when two
# Python threads launch parallel kernels at once, as two app sessions could
_ONE_AT_A_TIME = threading.Lock()


@functools.lru_cache(maxsize=1)
def _duckdb_tables() -> tuple[np.ndarray, np.ndarray]:
    import duckdb

    lower = np.arange(0x110000, dtype=np.int32)
    trims = np.zeros(0x110000, dtype=np.uint8)
    con = duckdb.connect()
    try:
        got = con.execute("SELECT cp::INT AS c, unicode(lower(chr(cp::INT))) AS l, trim(chr(cp::INT)) = '' AS t "
                          "FROM range(0, 1114112) r(cp) WHERE (cp < 55296 OR cp > 57343) "
                          "AND (lower(chr(cp::INT)) <> chr(cp::INT) OR trim(chr(cp::INT)) = '')").fetchnumpy()
    finally:
        con.close()
    c = got["c"].astype(np.int64)
    lower[c] = got["l"].astype(np.int32)
    trims[c[got["t"].astype(bool)]] = 1
    return lower, trims


def lower_table() -> np.ndarray:
    """code point -> code point of DuckDB's lower() of it, for every code point (read from DuckDB once
    per process, 0.2 s)."""
    return _duckdb_tables()[0]


def trim_table() -> np.ndarray:
    """1 for the code points DuckDB's trim() removes from either end (space, NO-BREAK SPACE, the
    typographic spaces...), 0 for the rest."""
    return _duckdb_tables()[1]


@numba.njit(nogil=True, cache=True, inline="always")
def _mix(h, x):
    h = (h ^ np.uint64(x)) * np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(29))


def _ascii_table() -> np.ndarray:
    """byte -> its lower-case byte; -1 for ASCII whitespace (tab, LF, VT, FF, CR, space)."""
    table = np.arange(128, dtype=np.int16)
    table[65:91] += 32
    table[[9, 10, 11, 12, 13, 32]] = -1
    table[0] = ord("A")  # upper-case letters are never written, so NUL cannot be confused with a letter
    return table


ASCII = _ascii_table()


_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)


@numba.njit(nogil=True, cache=True, inline="always")
def _in_range(w, lo, hi):
    """0x80 in each byte of w (all bytes < 0x80) that lies in lo..hi, 0 elsewhere; exact, no carries."""
    ge = w + np.uint64(0x80 - lo) * _ONES
    gt = w + np.uint64(0x7F - hi) * _ONES
    return ge & ~gt & _HIGH


@numba.njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _normalized_hashes(data, dwords, offsets, lower, trims, ascii_table, scratch, out):
    """Each string's normalised text is first written to its own 8-aligned stretch of scratch as a
    byte stream (an ASCII character as its byte, NUL as 'A' (never written otherwise), any other
    character as 0x80|cp>>14, cp>>7&127, cp&127: decodable, so equal streams mean equal texts), with
    few unpredictable branches; the stream is then hashed a 64-bit word at a time."""
    words = scratch.view(np.uint64)
    for i in numba.prange(len(offsets) - 1):
        p, end = offsets[i], offsets[i + 1]
        start = 8 * ((3 * offsets[i] // 2) // 8 + 2 * i)
        q = start
        kept = start  # where the text ends once trailing spaces (DuckDB's trim set) are dropped
        prev_space = True  # drops leading whitespace
        while p < end:
            stop = end
            r = p
            while r < end:  # a stretch of ASCII
                if (r & 7) == 0 and r + 8 <= end:  # eight bytes at once while they need no collapsing
                    w = dwords[r >> 3]
                    if (w & _HIGH) == 0 and ((w - _ONES) & ~w & _HIGH) == 0:  # ASCII, no NUL
                        ctrl = _in_range(w, 9, 13)
                        ws = ctrl | _in_range(w, 32, 32)
                        if (ws & (ws << np.uint64(8))) == 0 and not (prev_space and (ws & np.uint64(0x80))):
                            full = (ctrl >> np.uint64(7)) * np.uint64(0xFF)
                            w = (w & ~full) | (full & np.uint64(0x2020202020202020)) | (_in_range(w, 65, 90) >> np.uint64(2))
                            shift = np.uint64(8 * (q & 7))
                            if shift == 0:
                                words[q >> 3] = w
                            else:  # the eight bytes straddle two words of scratch
                                keep = (np.uint64(1) << shift) - np.uint64(1)
                                words[q >> 3] = (words[q >> 3] & keep) | (w << shift)
                                words[(q >> 3) + 1] = w >> (np.uint64(64) - shift)
                            q += 8
                            prev_space = (ws >> np.uint64(63)) != 0
                            kept = q - 1 if prev_space else q  # no two spaces in a row: byte 6 is kept
                            r += 8
                            continue
                b = data[r]
                if b >= 0x80:
                    stop = r
                    break
                c = ascii_table[b]
                space = c < 0
                scratch[q] = 32 if space else c
                q += 0 if (space and prev_space) else 1  # a run of whitespace leaves one space
                kept = kept if space else q
                prev_space = space
                r += 1
            p = stop
            if p >= end:
                break
            b = np.int64(data[p])
            if b >= 0xF0:
                cp = ((b & 0x07) << 18) | ((np.int64(data[p + 1]) & 0x3F) << 12) | \
                     ((np.int64(data[p + 2]) & 0x3F) << 6) | (np.int64(data[p + 3]) & 0x3F)
                p += 4
            elif b >= 0xE0:
                cp = ((b & 0x0F) << 12) | ((np.int64(data[p + 1]) & 0x3F) << 6) | (np.int64(data[p + 2]) & 0x3F)
                p += 3
            else:
                cp = ((b & 0x1F) << 6) | (np.int64(data[p + 1]) & 0x3F)
                p += 2
            cp = np.int64(lower[cp])
            if trims[cp] and kept == start:  # leading NO-BREAK SPACE and kin: trimmed
                continue
            if cp < 0x80:  # DuckDB lowers two characters to ASCII letters (KELVIN SIGN, dotted capital I)
                scratch[q] = cp
                q += 1
            else:
                scratch[q] = 0x80 | (cp >> 14)
                scratch[q + 1] = (cp >> 7) & 0x7F
                scratch[q + 2] = cp & 0x7F
                q += 3
            kept = kept if trims[cp] else q
            prev_space = False
        q = kept  # drops trailing whitespace and trimmed spaces
        n = q - start
        for k in range(8):  # zero the rest of the last word
            scratch[q + k] = 0
        h = np.uint64(0x243F6A8885A308D3) ^ np.uint64(n)
        for w in range(start // 8, (q + 7) // 8):
            h = _mix(h, words[w])
        out[i] = _mix(h, np.uint64(n))


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError("normalized_hashes needs a string array without nulls (coalesce them first)")
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    data = arr.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    return values, offsets


class Scratch:
    """A work buffer kept between calls: fresh memory costs a page fault per 4 KB, and on a VM that
    is slower than the whole pass over the text."""

    def __init__(self):
        self.buffer = np.empty(0, dtype=np.uint8)

    def get(self, size: int) -> np.ndarray:
        if self.buffer.size < size:
            self.buffer = np.empty(max(size, int(self.buffer.size * 1.25)) // 8 * 8 + 8, dtype=np.uint8)
        return self.buffer[:size]  # size is a multiple of 8: the kernel reads it as 64-bit words


def normalized_hashes(arr: pa.Array, scratch: Scratch | None = None) -> np.ndarray:
    """uint64 hash of the normalised text of every string of arr (see the module docstring)."""
    values, offsets = _buffers(arr)
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    work = (scratch or Scratch()).get(8 * ((3 * int(offsets[-1]) // 2) // 8 + 2 * n + 2))
    dwords = values[:len(values) // 8 * 8].view(np.uint64)  # the same bytes, eight at a time
    with _ONE_AT_A_TIME:
        _normalized_hashes(values, dwords, offsets, lower_table(), trim_table(), ASCII, work, out)
    return out


def combine(h: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Fold a field's hashes into the record hashes, order-sensitively (fields are not interchangeable)."""
    h = (h ^ field) * np.uint64(0xBF58476D1CE4E5B9)
    return h ^ (h >> np.uint64(31))
