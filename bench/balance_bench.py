"""Balance 1,000,000 records to a target mix, then split the result stratified and duplicate-grouped.

    python bench/balance_bench.py [--records 1000000] [--rounds 2] [--near]

Makes (once) a project under bench/data/ with the generated tickets imported (as browse_bench
does), then for each round copies it aside (untimed) and times, through the same functions the
CLI and the Balance page call:

1. balance: hybrid strategy to explicit shares that lift the rare categories (data_privacy from
   0.5% to 3%, copies capped at 10), 1,000,000 records out, written as a new version;
2. split 0.8/0.1/0.1 of that result, stratified by category, exact duplicates kept in one split
   (every upsampled record's copies form a cluster: about 190,000 clusters), written as a new
   version, then the leakage report on the stored split version.

`--near` groups near-duplicates too (workbench.inspect.dedup, MinHash over 1M texts; much slower, reported
separately). Wall time is what counts; CPU time (all threads of the process) is printed too, because
on a shared machine it says more about the work than the wall clock. Records are never loaded into
pandas: selection is numpy over two narrow columns, records stream from DuckDB as Arrow batches into
write_version.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.import_bench import DATA, ensure_file  # noqa: E402

SHARES = ("shipping=0.30,refund=0.15,billing=0.12,account_access=0.10,product_defect=0.08,order_change=0.07,"
          "cancellation=0.06,warranty=0.05,gift_card=0.04,data_privacy=0.03")


def base_project(records: int) -> Path:
    from workbench.core.store import Store
    from workbench.core.versions import list_versions
    from workbench.data.importer import import_file

    project = DATA / f"balance_project_{records}"
    with Store.open(project) as store:
        if not list_versions(store, "tickets"):
            t = time.perf_counter()
            import_file(store, ensure_file(records), "tickets")
            print(f"imported {records:,} tickets in {time.perf_counter() - t:.1f} s (once)", file=sys.stderr)
        store.checkpoint()
    return project


def one_round(project: Path, records: int, near: bool) -> dict:
    from workbench.core.store import Store
    from workbench.core.versions import get_version
    from workbench.curation.balance import apply_balance, plan_balance
    from workbench.curation.splits import split_version

    out = {}
    with Store.open(project) as store:
        version = get_version(store, "tickets@1")
        t0, c0 = time.perf_counter(), time.process_time()
        plan = plan_balance(store, version, target=SHARES, size=records, strategy="hybrid", seed=7)
        balanced, report = apply_balance(store, plan, "tickets-balanced")
        t1, c1 = time.perf_counter(), time.process_time()
        split = split_version(store, balanced, "0.8,0.1,0.1", stratify="category",
                              group="near-dup" if near else "exact", seed=7)
        t2, c2 = time.perf_counter(), time.process_time()
        out.update(balance=t1 - t0, split=t2 - t1, total=t2 - t0, cpu_balance=c1 - c0, cpu_split=c2 - c1,
                   records=balanced.row_count,
                   copies=report["added_copies"], clusters=split.report["clusters"],
                   counts=split.report["counts"], leakage=split.report["leakage"],
                   hash_balance=balanced.content_hash[:16], hash_split=split.version.content_hash[:16])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--near", action="store_true", help="group near-duplicates too (workbench.inspect.dedup)")
    args = ap.parse_args()
    base = base_project(args.records)
    print(f"{args.records:,} records; {os.cpu_count()} cores; target shares {SHARES}")
    rounds = []
    for i in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="wb-balance-", dir=DATA))
        try:
            shutil.copytree(base, work / "p")  # untimed: every round starts from the imported version alone
            r = one_round(work / "p", args.records, args.near)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rounds.append(r)
        print(f"round {i + 1}: balance {r['balance']:.2f} s ({r['records']:,} records, {r['copies']:,} copies "
              f"added) + split {r['split']:.2f} s ({r['clusters']:,} clusters kept whole; {r['counts']}) "
              f"= {r['total']:.2f} s; leakage {r['leakage']['exact_groups_across_splits']} exact"
              + (f", {r['leakage']['near_groups_across_splits']} near" if args.near else "")
              + f"; CPU {r['cpu_balance']:.1f} + {r['cpu_split']:.1f} s (all threads); hashes "
              f"{r['hash_balance']} / {r['hash_split']}")
    totals = [r["total"] for r in rounds]
    same = len({(r["hash_balance"], r["hash_split"]) for r in rounds}) == 1
    print(f"balance + stratified, duplicate-grouped split of {args.records:,} records: median "
          f"{statistics.median(totals):.2f} s (target <= 10 s); balance median "
          f"{statistics.median(r['balance'] for r in rounds):.2f} s, split median "
          f"{statistics.median(r['split'] for r in rounds):.2f} s; same hashes every round: {same}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
