"""Compiled loops (numba) over the UTF-8 bytes of Arrow string arrays, for work that DuckDB's string
functions make slow on a million records: one pass instead of a chain of lower/replace/regexp.

`normalized_hashes` gives, for every string, a 64-bit hash of its normalised text, the text that
`dedup.norm_sql` computes in DuckDB: DuckDB's own `lower()` (read from DuckDB itself, character by
character), each run of ASCII whitespace (tab, LF, VT, FF, CR, space) as one space, then DuckDB's
`trim()` (which also drops NO-BREAK SPACE and the other typographic spaces at either end). Equal
normalised texts give equal hashes; tests check the groups against DuckDB's.
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


@numba.njit(nogil=True, cache=True, inline="always")
def _emit(h, acc, nacc, v, k):
    """Append k bytes (v, low byte first) to the stream; every full 8 bytes are mixed into h."""
    if nacc == 0:
        if k == 8:
            return _mix(h, v), np.uint64(0), 0
        return h, v, k
    shift = np.uint64(8 * nacc)
    full = acc | (v << shift)
    if nacc + k >= 8:
        return _mix(h, full), v >> (np.uint64(64) - shift), nacc + k - 8
    return h, full, nacc + k


@numba.njit(nogil=True, cache=True, inline="always")
def _decode(data, p):
    """(code point, next position) of the UTF-8 character starting at p (DuckDB text is valid UTF-8)."""
    b = np.int64(data[p])
    if b < 0x80:
        return b, p + 1
    if b >= 0xF0:
        return (((b & 0x07) << 18) | ((np.int64(data[p + 1]) & 0x3F) << 12)
                | ((np.int64(data[p + 2]) & 0x3F) << 6) | (np.int64(data[p + 3]) & 0x3F)), p + 4
    if b >= 0xE0:
        return ((b & 0x0F) << 12) | ((np.int64(data[p + 1]) & 0x3F) << 6) | (np.int64(data[p + 2]) & 0x3F), p + 3
    return ((b & 0x1F) << 6) | (np.int64(data[p + 1]) & 0x3F), p + 2


@numba.njit(nogil=True, cache=True, inline="always")
def _code(cp):
    """(bytes, count) of a lowered code point in the stream: ASCII as itself, others as three bytes."""
    if cp < 0x80:
        return np.uint64(cp), 1
    return np.uint64((0x80 | (cp >> 14)) | (((cp >> 7) & 0x7F) << 8) | ((cp & 0x7F) << 16)), 3


@numba.njit(nogil=True, cache=True)
def _flush_run(data, a, b, lower, h, acc, nacc):
    """Emit a pending run of spaces (ASCII whitespace and DuckDB's trimmed spaces) found inside a text:
    each run of ASCII whitespace as one space, the others as themselves. Returns (h, acc, nacc, bytes)."""
    n = 0
    prev_ws = False
    p = a
    while p < b:
        cp, p = _decode(data, p)
        if cp < 0x80:
            if not prev_ws:
                h, acc, nacc = _emit(h, acc, nacc, np.uint64(32), 1)
                n += 1
            prev_ws = True
        else:
            v, k = _code(np.int64(lower[cp]))
            h, acc, nacc = _emit(h, acc, nacc, v, k)
            n += k
            prev_ws = False
    return h, acc, nacc, n


@numba.njit(nogil=True, cache=True, inline="always")
def _flush_pending(data, pend, pend_at, upto, lower, h, acc, nacc):
    """Emit the spaces waiting before the character at upto: none, one, or a run (see `_flush_run`)."""
    if pend == 1:
        h, acc, nacc = _emit(h, acc, nacc, np.uint64(32), 1)
        return h, acc, nacc, 1
    if pend == 2:
        return _flush_run(data, pend_at, upto, lower, h, acc, nacc)
    return h, acc, nacc, 0


@numba.njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _stream_hashes(data, dwords, offsets, lower, trims, ascii_table, out):
    """The normalised text of each string as a byte stream (an ASCII character as its byte, NUL as 'A'
    (never written otherwise), any other character as 0x80|cp>>14, cp>>7&127, cp&127: decodable, so
    equal streams mean equal texts), hashed 8 bytes at a time as it is produced. Spaces wait until a
    character follows them (trailing ones are dropped); eight plain ASCII bytes go in one step."""
    for i in numba.prange(len(offsets) - 1):
        h = np.uint64(0x243F6A8885A308D3)
        acc = np.uint64(0)
        nacc = 0
        total = 0
        started = False  # a character other than a space has been written
        pend = 0  # 0: no space waiting; 1: one ASCII space; 2: a run with other spaces, from pend_at
        pend_at = 0
        p, end = offsets[i], offsets[i + 1]
        while p < end:
            if (p & 7) == 0 and p + 8 <= end:  # eight bytes at once while they need no collapsing
                w = dwords[p >> 3]
                if (w & _HIGH) == 0 and ((w - _ONES) & ~w & _HIGH) == 0:  # ASCII, no NUL
                    ctrl = _in_range(w, 9, 13)
                    ws = ctrl | _in_range(w, 32, 32)
                    if (ws & (ws << np.uint64(8))) == 0 and not ((pend or not started) and (ws & np.uint64(0x80))):
                        h, acc, nacc, n = _flush_pending(data, pend, pend_at, p, lower, h, acc, nacc)
                        total += n
                        full = (ctrl >> np.uint64(7)) * np.uint64(0xFF)
                        w = (w & ~full) | (full & np.uint64(0x2020202020202020)) | (_in_range(w, 65, 90) >> np.uint64(2))
                        if ws >> np.uint64(63):  # ends in a space: it waits
                            h, acc, nacc = _emit(h, acc, nacc, w & np.uint64(0x00FFFFFFFFFFFFFF), 7)
                            total += 7
                            pend = 1
                            pend_at = p + 7
                        else:
                            h, acc, nacc = _emit(h, acc, nacc, w, 8)
                            total += 8
                            pend = 0
                        started = True
                        p += 8
                        continue
            at = p
            b = np.int64(data[p])
            if b < 0x80:
                c = np.int64(ascii_table[b])
                p += 1
                if c < 0:  # ASCII whitespace: waits (dropped at the start)
                    if started and pend == 0:
                        pend = 1
                        pend_at = at
                    continue
                v, k = np.uint64(c), 1
            else:
                cp, p = _decode(data, p)
                cp = np.int64(lower[cp])
                if trims[cp]:  # NO-BREAK SPACE and kin: kept only between characters
                    if started:
                        if pend == 0:
                            pend_at = at
                        pend = 2
                    continue
                v, k = _code(cp)
            h, acc, nacc, n = _flush_pending(data, pend, pend_at, at, lower, h, acc, nacc)
            total += n
            pend = 0
            h, acc, nacc = _emit(h, acc, nacc, v, k)
            total += k
            started = True
        out[i] = _mix(_mix(h, acc), np.uint64(total))  # the length ends the text: fields stay apart


def string_buffers(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(the UTF-8 bytes of a string array's data buffer, as uint8; the offsets of its strings into them,
    as int64, one more than there are strings), without copying the text. A null is an empty string."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    data = arr.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    return values, offsets


def normalized_hashes(arr: pa.Array) -> np.ndarray:
    """uint64 hash of the normalised text of every string of arr (see the module docstring)."""
    if arr.null_count:
        raise ValueError("normalized_hashes needs a string array without nulls (coalesce them first)")
    values, offsets = string_buffers(arr)
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    dwords = values[:len(values) // 8 * 8].view(np.uint64)  # the same bytes, eight at a time
    with _ONE_AT_A_TIME:
        _stream_hashes(values, dwords, offsets, lower_table(), trim_table(), ASCII, out)
    return out


def combine(h: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Fold a field's hashes into the record hashes, order-sensitively (fields are not interchangeable)."""
    h = (h ^ field) * np.uint64(0xBF58476D1CE4E5B9)
    return h ^ (h >> np.uint64(31))
