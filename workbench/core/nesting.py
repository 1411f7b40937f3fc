"""Values and JSON text nested too deep for the parsers and the stores: found without recursing.

An attacker's file may nest 10,000s of levels deep: pyarrow's JSON reader overflows its stack (a segfault), Python's
json recurses (RecursionError), Parquet and DuckDB refuse such schemas. Every check here is a loop or a byte scan.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa

# Parquet and DuckDB refuse schemas nested hundreds of levels deep; real metadata never is.
MAX_NESTING = 32


def type_depth(t: pa.DataType) -> int:
    depth, stack = 0, [(t, 0)]
    while stack:
        t, d = stack.pop()
        depth = max(depth, d)
        stack.extend((t.field(i).type, d + 1) for i in range(t.num_fields))
    return depth


def value_depth(value) -> int:
    depth, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if d > MAX_NESTING:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return depth


def nesting_reason(name: str) -> str:
    return f"`{name}` is nested more than {MAX_NESTING} levels deep; flatten it or leave the column out"


# JSON text nested deeper than this is refused before any parser sees it: pyarrow's JSON reader
# overflows its stack (a segfault) and Python's json recurses (RecursionError) on 10,000s of levels.
# Depths between MAX_NESTING and this are parsed and named by the column checks.
MAX_JSON_DEPTH = 200
_JSON_TOKEN = re.compile(rb'"(?:[^"\\\n]++|\\.)*+"|[\[\]{}]')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_OPENS_OR_NEWLINE = bytes(b for b in range(256) if b not in b"[{\n")
_SCAN_CHUNK = 1 << 22


def _outside_strings(data: bytes) -> bytes:
    """The brackets of data that lie outside JSON strings, in order (escaped quotes and backslashes
    are blanked first, then every other piece between quotes is a string)."""
    plain = data.replace(b"\\\\", b"..").replace(b'\\"', b"..")
    return b"".join(plain.split(b'"')[0::2]).translate(None, _NOT_BRACKETS)


def json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep the brackets of one JSON text nest, counting only brackets outside strings. A scan of
    bytes, not a parse, so it cannot recurse; any answer above limit only means 'more than limit'."""
    if data.count(b"[") + data.count(b"{") <= limit:  # an upper bound, and the common case
        return limit
    brackets = _outside_strings(data)
    deepest, level = 0, 0
    for start in range(0, len(brackets), _SCAN_CHUNK):  # vectorised, in chunks to bound memory
        arr = np.frombuffer(brackets, np.uint8, count=min(_SCAN_CHUNK, len(brackets) - start), offset=start)
        levels = np.cumsum(np.where((arr == ord("[")) | (arr == ord("{")), 1, -1), dtype=np.int64) + level
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
        if deepest > limit:
            break
    return deepest


def lines_too_deep(buf: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if some line of JSON-lines text nests deeper than limit. Only lines with more than limit
    opening brackets (rare: a long chat) are scanned one by one."""
    marks = np.frombuffer(buf.translate(None, _NOT_OPENS_OR_NEWLINE), np.uint8)
    opens_per_line = np.diff(np.concatenate(([-1], np.flatnonzero(marks == ord("\n")), [len(marks)]))) - 1
    busy = np.flatnonzero(opens_per_line > limit)
    if not busy.size:
        return False
    newlines = np.flatnonzero(np.frombuffer(buf, np.uint8) == ord("\n"))
    starts, ends = np.concatenate(([0], newlines + 1)), np.concatenate((newlines, [len(buf)]))
    return any(json_depth(buf[starts[i]: ends[i]], limit) > limit for i in busy)


def jsonl_file_too_deep(path, block_bytes: int = 4 << 20) -> bool:
    """True if some line of a JSON-lines file nests deeper than MAX_JSON_DEPTH, read block by block."""
    with open(path, "rb") as f:
        pending: list[bytes] = []
        while block := f.read(block_bytes):
            cut = block.rfind(b"\n") + 1
            if not cut:  # a long line: keep its pieces until it ends
                pending.append(block)
                continue
            if lines_too_deep(b"".join(pending) + block[:cut]):
                return True
            pending = [block[cut:]]
        return lines_too_deep(b"".join(pending))


def too_deep_reason(line: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """For a JSON line nested deeper than limit, the column check's message naming the top-level key
    that holds the deep value (a token scan, no parse); None if the line is not that deep."""
    if json_depth(line, limit) <= limit:
        return None
    level, key = 0, None
    for token in _JSON_TOKEN.finditer(line):
        t = token.group()
        if t[:1] == b'"':
            if level == 1:
                key = t
        else:
            level += 1 if t in (b"[", b"{") else -1
            if level > limit:
                break
    try:
        name = json.loads(key) if key is not None else None
    except ValueError:
        name = None
    return nesting_reason(name) if isinstance(name, str) else \
        f"nested more than {MAX_NESTING} levels deep; flatten the deep values or leave them out"
