"""The text-search index gives exactly the records, order and columns of DuckDB's RE2 scan.

The reference is DuckDB itself: `browse.page`/`browse.count` before the index exists run RE2
`(?i)` over every record; after `search.build` the same calls go through the index.
"""

import random
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.conftest import write_jsonl
from workbench.data import browse, search
from workbench.data.importer import import_file

WORDS = ["refund", "REFUND", "Refund", "ship", "ſhip", "SHIP", "kit", "Kit", "KIT", "Straße", "STRASSE", "strasse",
         "İstanbul", "istanbul", "ıi", "Jürgen", "JÜRGEN", "jürgen", "ORD-3727", "ord-3727", "ORD-1234", "😀",
         "a.b*c", "x\\Ey", "(50%)", "under_score", "café", "CAFÉ", "Σίσυφος", "ΣΊΣΥΦΟΣ", "tracking number",
         "the", "and", "please", "order", "zz", "q", "\tTab", "new\nline"]
QUERIES = ["refund", "REFUND", "ship", "ſhip", "SHIP", "kit", "KIT", "Kit", "straße", "STRASSE", "İstanbul",
           "ISTANBUL", "ı", "jürgen", "JÜRGEN", "Jürgen", "ord-3727", "3727", "😀", "a.b*c", "\\E", "(50%)", "_",
           "café", "CAFÉ", "σίσυφος", "ΣΊΣΥΦΟΣ", "tracking number", "g n", "q", "zz", "e", "no-such-word-xyz",
           "  refund  ", "tab", "new\nline", "w\nl", "please order", "d\x00x"]
CATEGORIES = [None, "billing", ["billing", "shipping"], "shipping", "nope", [], "refund"]


def _records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))
        completion = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6)))
        row = {"prompt": prompt or "x", "completion": completion or "ok"}
        cat = rng.choice(["billing", "shipping", "refund", "refund", None])
        if cat is not None:
            row["category"] = cat
        out.append(row)
    return out


@pytest.fixture
def version(store, tmp_path):
    return import_file(store, write_jsonl(tmp_path / "r.jsonl", _records(600, 7)), "r").version


def _reference(store, version):
    """DuckDB's answers, taken before the index exists."""
    assert search.ready(store, version) is None
    out = {}
    for q in QUERIES:
        for cat in CATEGORIES:
            key = (q, repr(cat))
            out[key] = (browse.page(store, version, text=q, category=cat, limit=40),
                        browse.page(store, version, text=q, category=cat, offset=7, limit=5),
                        browse.count(store, version, text=q, category=cat))
    return out


@pytest.mark.parametrize("block_records,bloom_bits", [(3, 6), (32, 13), (1000, 8)])
def test_index_pages_and_counts_equal_duckdb(store, version, block_records, bloom_bits):
    expected = _reference(store, version)
    search.build(store, version, block_records=block_records, bloom_bits=bloom_bits)
    index = search.ready(store, version)
    assert index is not None and index.meta["records"] == version.row_count
    used = 0
    for (q, cat_repr), (page, later, count) in expected.items():
        cat = eval(cat_repr)  # noqa: S307 - our own repr of a test constant
        got = browse.page(store, version, text=q, category=cat, limit=40)
        assert got.equals(page), (q, cat)  # same records, same order, same columns and types
        assert browse.page(store, version, text=q, category=cat, offset=7, limit=5).equals(later), (q, cat)
        assert browse.count(store, version, text=q, category=cat) == count, (q, cat)
        if q.strip() and "\x00" not in q:
            assert index.count(q, browse._categories(cat)) == count, (q, cat)
            used += 1
    assert used > 200
    # the tests mean something: some queries match, some do not, some only through case folding
    assert expected[("ſhip", "None")][2] == expected[("SHIP", "None")][2] > 0
    assert expected[("KIT", "None")][2] > 0 and expected[("no-such-word-xyz", "None")][2] == 0


def test_blocks_never_mix_categories_and_every_record_is_indexed_once(store, version):
    search.build(store, version, block_records=5)
    index = search.ready(store, version)
    rows = sorted(int(r) for r in index.rows)
    assert rows == list(range(version.row_count))
    cats = browse.page(store, version, limit=version.row_count).column("category").to_pylist()
    names = index.meta["categories"]
    for j in range(index.blocks):
        members = index.rows[index.block_start[j]:index.block_start[j + 1]]
        assert 1 <= len(members) <= 5
        assert {cats[int(r)] for r in members} == {names[int(index.block_cat[j])]}
        assert list(members) == sorted(members)


def test_candidate_blocks_skip_what_cannot_match(store, tmp_path):
    rows = [{"prompt": f"ticket {i} about shipping", "completion": "ok", "category": "a"} for i in range(300)]
    rows[250]["prompt"] = "where is my zebra crossing"
    version = import_file(store, write_jsonl(tmp_path / "z.jsonl", rows), "z").version
    search.build(store, version, block_records=10)
    index = search.ready(store, version)
    assert len(index.candidates("zebra", None)) == 1  # 30 blocks; the Bloom filters rule out 29
    assert browse.page(store, version, text="ZEBRA").column("row").to_pylist() == [251]
    assert len(index.candidates("shipping", None)) == index.blocks


def test_re2_folds_only_kelvin_and_long_s_onto_ascii_letters():
    """Why `fold` may treat every other non-ASCII character as opaque: RE2 (pyarrow's and DuckDB's)
    case-insensitive matching maps no other character onto an ASCII letter."""
    chars = pa.array([chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF])
    partners = {}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        hits = pc.filter(chars, pc.match_substring_regex(chars, f"(?i){letter}")).to_pylist()
        for h in hits:
            partners[h] = letter
    assert partners == search.ASCII_PARTNERS
    import duckdb

    con = duckdb.connect()
    assert con.execute("SELECT regexp_matches(chr(8490), '(?i)k'), regexp_matches(chr(383), '(?i)S'), "
                       "regexp_matches(chr(304), '(?i)i'), regexp_matches(chr(305), '(?i)i')").fetchall() == [
        (True, True, False, False)]


def test_a_failed_build_leaves_nothing_and_a_partial_folder_is_never_read(store, version):
    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.build(store, version, progress=stop)
    folder = search.index_dir(store, version)
    assert not folder.exists()
    assert not list(folder.parent.glob(folder.name + "*"))
    # a folder without meta.json (say a copy in progress) is not an index
    folder.mkdir(parents=True)
    assert search.ready(store, version) is None
    shutil.rmtree(folder)
    search.build(store, version)
    assert search.ready(store, version) is not None


def test_background_build_on_a_large_version(store, version, monkeypatch):
    monkeypatch.setattr(search, "MIN_RECORDS", 10)
    state = search.ensure_background(store, version)
    assert state["state"] in ("building", "ready")
    import time

    deadline = time.time() + 60
    while search.status(store, version)["state"] != "ready":
        assert time.time() < deadline and search.status(store, version)["state"] != "failed"
        time.sleep(0.05)
    assert search.ready(store, version).meta["records"] == 600


def test_small_versions_get_no_index(store, version):
    assert search.status(store, version)["state"] == "small"
    assert search.ensure_background(store, version)["state"] == "small"
    assert search.ready(store, version) is None


def test_cli_builds_the_index_and_reports_it(tmp_path):
    import json
    import subprocess
    import sys

    project = tmp_path / "p"
    rows = [{"prompt": f"where is order ORD-{i:04d}", "completion": "on its way", "category": "shipping"}
            for i in range(300)]
    data = write_jsonl(tmp_path / "o.jsonl", rows)
    run = lambda *a: subprocess.run([sys.executable, "-m", "workbench.cli.main", *a, "--project", str(project)],  # noqa: E731
                                    capture_output=True, text=True)
    assert run("import", str(data), "--dataset", "orders").returncode == 0
    done = run("index", "orders", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["records"] == 300 and out["category_column"] == "category" and out["blocks"] >= 300 // 32
    from workbench.core.store import Store
    from workbench.core.versions import get_version

    with Store.open(project) as store:
        version = get_version(store, "orders")
        assert search.ready(store, version) is not None
        assert browse.page(store, version, text="ord-0042").column("row").to_pylist() == [43]
