"""Duplicates: exact over 1,000,000 records, near over 100,000, recall against brute force.

    python bench/dedup_bench.py [--records 1000000] [--near-records 100000] [--sample 5000] [--repeat 3]

Makes (once) its own project under bench/data/dedup_<records>/ with the generated tickets imported
(the generator makes ~5% near-duplicates and 0.2% exact copies) and a second dataset holding the
first --near-records of them. Then times, each cold (cache off):
- exact duplicates over all records (`find_duplicates(near=False)`), beside DuckDB grouping on the
  raw text hash as a floor;
- near duplicates over --near-records in a fresh process (wall time and peak RSS);
- recall: on --sample consecutive records, every pair with true Jaccard >= threshold (plain Python
  shingles, all pairs by a sparse matrix product) is checked to be in one cluster; precision: every
  near pair found there has true Jaccard >= threshold.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.import_bench import DATA, ensure_file  # noqa: E402

CHILD = """
import resource, sys, time, json
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.inspect import dedup
store = Store.open(sys.argv[1])
v = get_version(store, sys.argv[2])
t = time.perf_counter()
r = dedup.find_duplicates(store, v, near=True, threshold=float(sys.argv[3]), use_cache=False)
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, **r.summary()}))
store.close()
"""


def ref_norm(text: str) -> str:
    return re.sub(r"[\t\n\v\f\r ]+", " ", text.lower()).strip(" ")


def ref_shingles(text: str) -> set:
    words = text.split(" ")
    if len(words) >= 16:
        return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}
    return {text[i:i + 4] for i in range(max(len(text) - 3, 1))}


def ensure_project(records: int, near_records: int):
    from workbench.core.errors import WorkbenchError
    from workbench.core.store import Store
    from workbench.core.versions import get_version, iter_version, write_version
    from workbench.data.importer import import_file

    store = Store.open(DATA / f"dedup_{records}")
    try:
        big = get_version(store, "tickets")
    except WorkbenchError:
        big = import_file(store, ensure_file(records), "tickets").version
    name = f"tickets{near_records}"
    try:
        small = get_version(store, name)
    except WorkbenchError:
        small = write_version(store, name, iter_version(store, big, where=f"WHERE _row < {near_records}"),
                              kind="sample", fmt=big.format, recipe={"first": near_records}, info=big.info,
                              parent_id=big.version_id)
    return store, big, small


def recall(store, version, result, sample: int, threshold: float) -> dict:
    import numpy as np
    from scipy.sparse import csr_matrix

    table = store.cursor().sql(f"SELECT _row, system, prompt, completion FROM {version.table_name} "
                               f"WHERE _row < {sample} ORDER BY _row").to_arrow_table().to_pylist()
    norm = [ref_norm(" ".join(t for t in (r["system"], r["prompt"], r["completion"]) if t is not None)) for r in table]
    vocab, rows, cols = {}, [], []
    for i, t in enumerate(norm):
        for s in ref_shingles(t):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    m = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(norm), len(vocab)))
    sizes = np.asarray(m.sum(1)).ravel()
    inter = (m @ m.T).tocoo()
    keep = inter.row < inter.col
    i, j, x = inter.row[keep], inter.col[keep], inter.data[keep]
    jac = x / (sizes[i] + sizes[j] - x)
    true = [(a, b) for a, b, s in zip(i, j, jac) if s >= threshold - 1e-9]
    group = dict(zip(result.groups.column("_row").to_pylist(), result.groups.column("group").to_pylist()))
    hit = sum(1 for a, b in true if a in group and group.get(b) == group[a])
    truth = {(int(a), int(b)): s for a, b, s in zip(i, j, jac)}
    pairs = zip(result.near_pairs.column("a").to_pylist(), result.near_pairs.column("b").to_pylist())
    found = [(a, b) for a, b in pairs if b < sample]
    good = sum(1 for p in found if truth.get(p, 0) >= threshold - 1e-9)
    return {"true_pairs": len(true), "recall": hit / len(true) if true else 1.0,
            "found_pairs": len(found), "precision": good / len(found) if found else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--near-records", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=5000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import json

    from workbench.inspect import dedup

    store, big, small = ensure_project(args.records, args.near_records)
    print(f"{big.row_count:,} records; {os.cpu_count()} cores")

    raw = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        store.cursor().execute(f"SELECT count(*) FROM (SELECT hash(system, prompt, completion, messages) h "
                               f"FROM {big.table_name} GROUP BY h HAVING count(*) > 1)").fetchall()
        raw.append(time.perf_counter() - t)
    from workbench.core import textkernels

    t = time.perf_counter()
    textkernels.normalized_hashes(pa.array(["warm up"]))
    print(f"compiled kernel loaded (numba cache) and DuckDB's lower/trim tables read: {time.perf_counter() - t:.2f} s")
    exact, summary = [], None
    for _ in range(args.repeat):
        t = time.perf_counter()
        summary = dedup.find_duplicates(store, big, near=False, use_cache=False).summary()
        exact.append(time.perf_counter() - t)
    t = time.perf_counter()
    dedup.find_duplicates(store, big, near=False)
    cached = time.perf_counter() - t
    print(f"exact duplicates over {big.row_count:,}: median {statistics.median(exact):.2f} s "
          f"({', '.join(f'{x:.2f}' for x in exact)}), {summary['exact_duplicates']:,} copies in "
          f"{summary['exact_clusters']:,} clusters (target <= 2 s); cached {cached:.3f} s; "
          f"raw-hash grouping floor {statistics.median(raw):.2f} s")
    small_ref, project = small.ref, str(store.project.root)
    store.close()

    out = subprocess.run([sys.executable, "-c", CHILD, project, small_ref, str(args.threshold)],
                         capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode:
        raise SystemExit(out.stderr)
    near = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"near duplicates over {small.row_count:,} (threshold {args.threshold}): {near['seconds']:.1f} s "
          f"(target <= 60 s), peak RSS {near['rss'] / 2**20:.0f} MB (target <= 2048 MB); "
          f"{near['near_duplicates']:,} near + {near['exact_duplicates']:,} exact copies, "
          f"{near['candidate_pairs']:,} candidate pairs -> {near['near_pairs']:,} verified")

    from workbench.core.store import Store

    with Store.open(project) as store:
        result = dedup.find_duplicates(store, small, threshold=args.threshold)
        r = recall(store, small, result, args.sample, args.threshold)
    print(f"recall on the first {args.sample:,} records vs brute-force Jaccard: {r['recall']:.4f} of "
          f"{r['true_pairs']:,} pairs with J >= {args.threshold} in one cluster (target >= 0.95); "
          f"precision of verified pairs {r['precision']:.4f} ({r['found_pairs']:,} pairs)")


if __name__ == "__main__":
    main()
