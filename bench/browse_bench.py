"""Browse 1,000,000 records through the functions the Datasets page calls.

    python bench/browse_bench.py [--records 1000000] [--repeat 5]

Makes (once) a project under bench/data/ with the generated tickets imported, then times:
a page of 50 records with a text filter and a category filter (p50/p95 over a mix of
common, rare and absent words and of large and small categories) first as a DuckDB scan, then
with the version's search index (`workbench.data.search`: build time and size reported, pages checked
equal to the scan's), category counts, the filtered match count, and the Datasets page rendered
by Streamlit's AppTest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.import_bench import DATA, ensure_file  # noqa: E402

TERMS = ["refund", "tracking number", "yoga mat", "ORD-3727", "Jürgen", "invoice", "password", "no-such-word-xyz"]
CATEGORIES = [None, "shipping", "refund", "data_privacy"]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def timed(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from workbench.core.store import Store
    from workbench.core.versions import get_version
    from workbench.data import browse
    from workbench.data.importer import import_file

    project = DATA / f"project_{args.records}"
    store = Store.open(project)
    try:
        version = get_version(store, "tickets")
    except Exception:
        version = import_file(store, ensure_file(args.records), "tickets").version
    print(f"{version.row_count:,} records; {os.cpu_count()} cores")

    import shutil

    from workbench.data import search

    shutil.rmtree(search.index_dir(store, version), ignore_errors=True)
    scan_ms, scanned = [], {}
    for term in TERMS:
        for cat in CATEGORIES:
            scan_ms += timed(lambda: browse.page(store, version, text=term, category=cat, limit=50), 1)
            scanned[(term, cat)] = browse.page(store, version, text=term, category=cat, limit=50)
    print(f"without the index (DuckDB RE2 scan): page of 50, text + category filter: p50 {pct(scan_ms, .5):.0f} ms, "
          f"p95 {pct(scan_ms, .95):.0f} ms, max {max(scan_ms):.0f} ms")
    t = time.perf_counter()
    folder = search.build(store, version)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    print(f"search index build: {time.perf_counter() - t:.1f} s, {size:.0f} MB on disk")
    first = timed(lambda: browse.page(store, version, text="refund", category="shipping", limit=50), 1)[0]
    print(f"first search after the build (opens the index): {first:.0f} ms")
    page_ms, count_ms, worst = [], [], []
    for term in TERMS:
        for cat in CATEGORIES:
            runs = timed(lambda: browse.page(store, version, text=term, category=cat, limit=50), args.repeat)
            page_ms += runs
            worst.append((max(runs), term, cat))
            assert browse.page(store, version, text=term, category=cat, limit=50).equals(scanned[(term, cat)])
            count_ms += timed(lambda: browse.count(store, version, text=term, category=cat), 1)
    print("slowest filters:", ", ".join(f"{t!r}+{c}: {m:.0f} ms" for m, t, c in sorted(worst, reverse=True)[:3]))
    deep = timed(lambda: browse.page(store, version, offset=900_000, limit=50), args.repeat)
    counts = timed(lambda: browse.value_counts(store, version), args.repeat * 4)
    print(f"with the index: page of 50, text + category filter ({len(TERMS)} words x {len(CATEGORIES)} categories): "
          f"p50 {pct(page_ms, .5):.0f} ms, p95 {pct(page_ms, .95):.0f} ms, max {max(page_ms):.0f} ms (target p95 <= 100)")
    print(f"page of 50 at offset 900,000, no filter: p50 {pct(deep, .5):.0f} ms, p95 {pct(deep, .95):.0f} ms")
    print(f"category counts: p50 {pct(counts, .5):.0f} ms, p95 {pct(counts, .95):.0f} ms (target <= 50)")
    print(f"matching-record count with filters: p50 {pct(count_ms, .5):.0f} ms, p95 {pct(count_ms, .95):.0f} ms")
    store.close()

    from streamlit.testing.v1 import AppTest

    os.environ["WORKBENCH_PROJECT"] = str(project)
    renders = []
    for _ in range(3):
        at = AppTest.from_file(str(HERE.parent / "pages" / "page_datasets.py"), default_timeout=60)
        t = time.perf_counter()
        at.run()
        renders.append(time.perf_counter() - t)
        assert not at.exception, at.exception
    print(f"Datasets page render (AppTest, fresh session): {', '.join(f'{r:.2f}' for r in renders)} s "
          f"(target <= 2 s)")


if __name__ == "__main__":
    main()
