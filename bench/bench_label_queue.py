"""How fast the Label page's calls are on a large version: claim the next record, submit, progress,
final values, write labels into a new version.

    python bench/bench_label_queue.py [--records 1000000] [--answers 30000]

Prints one line per step (median of repeated calls where it repeats). Uses a temporary project.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pyarrow as pa

from workbench.core.auth import User
from workbench.core.store import Store
from workbench.core.versions import write_version
from workbench.labels import adjudication as J
from workbench.labels import annotations as A
from workbench.labels import questions as Q


def timed(fn, repeat: int = 1):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--answers", type=int, default=30_000, help="answers already stored (3 per record)")
    args = ap.parse_args()
    cats = ["billing", "refund", "shipping", "warranty"]
    with tempfile.TemporaryDirectory() as tmp, Store.open(tmp) as store:
        def batches():
            for start in range(0, args.records, 100_000):
                n = min(100_000, args.records - start)
                yield pa.table({"prompt": [f"ticket {i} about my order" for i in range(start, start + n)],
                                "completion": [f"reply {i}" for i in range(start, start + n)],
                                "category": [cats[i % 4] for i in range(start, start + n)],
                                "id": [f"T{i:08d}" for i in range(start, start + n)]})
        secs, version = timed(lambda: write_version(store, "big", batches(), kind="import", fmt="prompt-completion",
                                                    recipe={}))
        print(f"write {args.records:,}-record version: {secs:.1f} s")
        secs, q = timed(lambda: Q.add_question(store, version, "category", "single-choice", choices=cats, overlap=3))
        print(f"add question (checks the id column is unique): {secs:.2f} s")
        path = f"{tmp}/ann.csv"
        with open(path, "w") as f:
            f.write("item,annotator,value\n")
            for k in range(args.answers):
                f.write(f"T{k // 3:08d},a{k % 3},{cats[(k // 3 + (k % 3 == 2 and k % 5 == 0)) % 4]}\n")
        secs, _ = timed(lambda: A.import_annotations(store, path, dataset="big", question="category", item_col="item",
                                                     annotator_col="annotator", value_col="value"))
        print(f"import {args.answers:,} answers: {secs:.2f} s ({args.answers / secs:,.0f} lines/s)")
        me = User("bench", "annotator")
        secs, item = timed(lambda: A.next_item(store, q, me), repeat=7)
        print(f"next_item (claim) on {args.records:,} records: {secs * 1000:.0f} ms")
        secs, _ = timed(lambda: Q.record(store, q, item), repeat=7)
        print(f"record by key: {secs * 1000:.0f} ms")

        def answer_and_next():
            it = A.next_item(store, q, me)
            A.submit(store, q, it, "billing", user=me)
        secs, _ = timed(answer_and_next, repeat=7)
        print(f"submit + next claim: {secs * 1000:.0f} ms")
        secs, p = timed(lambda: A.progress(store, q, me), repeat=5)
        print(f"progress: {secs * 1000:.0f} ms ({p})")
        secs, g = timed(lambda: J.gold(store, q), repeat=3)
        print(f"gold ({len(g):,} final values): {secs * 1000:.0f} ms")
        secs, d = timed(lambda: J.disputed(store, q, limit=500), repeat=3)
        print(f"disputed queue (first 500): {secs * 1000:.0f} ms")
        secs, v = timed(lambda: J.apply_final_labels(store, q))
        print(f"final labels into a new {v.row_count:,}-record version: {secs:.1f} s")


if __name__ == "__main__":
    main()
