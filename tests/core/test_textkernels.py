"""The compiled normalised-text hash groups strings exactly as DuckDB's `norm_sql` does.

Reference: DuckDB itself (lower(), replace, regexp_replace, trim), run on the same strings.
"""

import json
import random

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import write_jsonl
from workbench.core import textkernels
from workbench.data.importer import import_file
from workbench.inspect import dedup

# letters in both cases, every ASCII whitespace, NUL, the two characters DuckDB lowers to ASCII,
# characters whose lower case has another UTF-8 length, a 4-byte one and a non-ASCII space
ALPHABET = list("aBzZ.9 \t\n\r\x0b\x0c\x00") + ["İ", "i", "I", "K", "k", "ß", "ẞ", "Σ", "σ", "ς", "é", "É",
                                                 "Ω", "Ω", "😀", "\u00a0", "\u3000", "\u2003", "ǅ", "ǆ", "Ǆ"]
CON = duckdb.connect()


def _duck_norms(strings: list[str]) -> list[str]:
    CON.register("strs", pa.table({"s": pa.array(strings, pa.string())}))
    return [r[0] for r in CON.execute(f"SELECT {dedup.norm_sql('s')} FROM strs").fetchall()]


def _variants(rng: random.Random, s: str) -> str:
    """s with case flipped here and there and whitespace runs changed: often equal after normalising."""
    out = []
    for ch in s:
        if ch.isspace() and ch.isascii():
            out.append(rng.choice([" ", "  ", "\n", "\t \r\n", ch]))
        elif rng.random() < 0.3:
            out.append(ch.swapcase() if len(ch.swapcase()) == 1 else ch)
        else:
            out.append(ch)
    if rng.random() < 0.3:
        out.insert(0, rng.choice([" ", "\n", "\t"]))
    if rng.random() < 0.3:
        out.append(rng.choice([" ", "\n\n", "\r\n"]))
    return "".join(out)


def _assert_same_grouping(strings: list[str]) -> None:
    norms = _duck_norms(strings)
    hashes = textkernels.normalized_hashes(pa.array(strings, pa.string())).tolist()
    for i in range(len(strings)):
        for j in range(i + 1, len(strings)):
            assert (norms[i] == norms[j]) == (hashes[i] == hashes[j]), (strings[i], strings[j], norms[i], norms[j])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(ALPHABET), max_size=40), min_size=1, max_size=12), st.integers(0, 99))
def test_groups_equal_duckdb_norm_sql(strings, seed):
    rng = random.Random(seed)
    strings = strings + [_variants(rng, s) for s in strings]
    _assert_same_grouping(strings)


def test_long_texts_cross_every_byte_alignment():
    """The kernel reads eight bytes at a time where it can: texts that start and end at every offset."""
    rng = random.Random(3)
    base = "Dear Support,\n\nMy ORDER ORD-1234 hasn't arrived.  Can you   help?\tThanks, Jürgen İK"
    strings = []
    for shift in range(17):
        strings.append("x" * shift)  # moves the next text's start by one byte
        strings.append(base)
        strings.append(_variants(rng, base))
        strings.append(base.replace("  ", " ").replace("\n\n", "\n"))
        strings.append(base[: 20 + shift])
    _assert_same_grouping(strings)


def test_kernel_ignores_what_lies_outside_a_sliced_array():
    arr = pa.array(["Junk before", "Hello  World", "hello world", "junk after"])
    whole = textkernels.normalized_hashes(arr)
    part = textkernels.normalized_hashes(arr.slice(1, 2))
    assert part.tolist() == whole[1:3].tolist() and part[0] == part[1]


def test_lower_table_is_duckdbs_lower():
    table = textkernels.lower_table()
    rng = random.Random(0)
    cps = [c for c in (rng.randrange(0x110000) for _ in range(3000)) if not 0xD800 <= c <= 0xDFFF]
    cps += [0x130, 0x212A, 0x1E9E, 0x3A3, 0x41, 0x5A, 0x61, 0]
    got = CON.execute("SELECT c, unicode(lower(chr(c))) FROM unnest(?::INT[]) t(c)", [cps]).fetchall()
    assert all(int(table[c]) == low for c, low in got)


def test_exact_groups_equal_the_duckdb_query(store, tmp_path):
    rng = random.Random(11)
    texts = ["Where is my parcel?", "Refund please", "ÜBER  café", "İstanbul office", "KELVIN K", "tab\there", " x "]
    rows = []
    for _ in range(400):
        t = rng.choice(texts)
        rows.append({"system": rng.choice([None, "Be kind.", "be  KIND."]),
                     "prompt": _variants(rng, t) or "x", "completion": rng.choice(["OK", " ok ", "Ok\n", "fine"]),
                     "category": "a"})
    version = import_file(store, write_jsonl(tmp_path / "d.jsonl", rows), "d").version
    fast = dedup.exact_groups(store, version)
    assert fast.equals(dedup.exact_groups_sql(store, version))
    assert fast.num_rows > 100  # the data is built to have many duplicate groups


def test_chat_records_go_through_duckdbs_text_of_messages(store, tmp_path):
    chat = [{"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": "Sure."}]}
            for c in ["Hi  there", "hi there", "HI\tTHERE ", "bye"]]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in chat) + "\n")
    version = import_file(store, path, "c").version
    fast = dedup.exact_groups(store, version)
    assert fast.equals(dedup.exact_groups_sql(store, version))
