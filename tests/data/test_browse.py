"""Browse: filtered pages and counts agree with plain Python over the same records."""

import pytest

from tests.conftest import write_jsonl
from workbench.data import browse
from workbench.data.importer import import_file

TEXTS = ["Refund for order a.b*c", "REFUND (50%) please", "café ÜBER alles", "path C:\\Ex\\E", "[x] done",
         "nothing here", "100% sure", "under_score", "Mix of Refund and café"]
ROWS = [{"prompt": t, "completion": f"reply {i}", "category": ["a", "b", "c"][i % 3]} for i, t in enumerate(TEXTS)]


@pytest.fixture
def version(store, tmp_path):
    return import_file(store, write_jsonl(tmp_path / "r.jsonl", ROWS), "r").version


@pytest.mark.parametrize("term", ["refund", "a.b*c", "(50%)", "Café", "über", "\\E", "[x]", "100%", "_",
                                  "reply 1", "no such", "  refund  "])
def test_text_filter_is_a_literal_case_insensitive_substring(store, version, term):
    needle = term.strip().casefold()
    expected = [i + 1 for i, r in enumerate(ROWS)
                if needle in r["prompt"].casefold() or needle in r["completion"].casefold()]
    assert browse.count(store, version, text=term) == len(expected)
    assert browse.page(store, version, text=term, limit=50).column("row").to_pylist() == expected


def test_category_filter_paging_and_counts(store, version):
    assert browse.count(store, version, category="b") == 3
    got = browse.page(store, version, text="refund", category=["a", "c"]).column("row").to_pylist()
    assert got == [1, 9]
    assert browse.page(store, version, offset=4, limit=3).column("row").to_pylist() == [5, 6, 7]
    assert browse.value_counts(store, version) == [("a", 3), ("b", 3), ("c", 3)]
    assert browse.stats(store, version)["by_category"] == {"a": 3, "b": 3, "c": 3}
