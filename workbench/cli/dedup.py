"""`workbench dedup`: exact and near duplicates, conflicting labels, leakage across splits, and a
deduplicated new version."""

from __future__ import annotations

import time

from workbench.cli.common import ProgressBar, emit, open_store
from workbench.core.errors import WorkbenchError


def _groups(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(g) - 1 for g in text.split(",") if g.strip()]  # shown 1-based, like row numbers
    except ValueError:
        raise WorkbenchError(f"--keep-all {text!r}: expected cluster numbers separated by commas, like 12,40") from None


def cmd_dedup(args) -> int:
    from workbench.core.versions import get_version
    from workbench.inspect import dedup

    t0 = time.perf_counter()
    bar = ProgressBar(not args.json)
    with open_store(args) as store:
        version = get_version(store, args.name)
        result = dedup.find_duplicates(store, version, near=args.near, threshold=args.threshold, progress=bar,
                                       use_cache=not args.no_cache)
        payload = result.summary()
        payload["conflicts"] = dedup.conflicts(store, version, limit=args.show)
        payload["leakage"] = dedup.leakage(store, result, limit=args.show)
        payload["top_clusters"] = dedup.clusters(store, result, limit=args.show).to_pylist()
        if args.resolve:
            new, info = dedup.resolve(store, version, near=args.near, threshold=args.threshold,
                                      keep_all=_groups(args.keep_all), out=args.out, progress=bar)
            payload["resolved"] = info
        payload["seconds"] = round(time.perf_counter() - t0, 3)
    lines = [f"{version.ref}: {payload['records']:,} records",
             f"exact duplicates: {payload['exact_duplicates']:,} redundant copies in "
             f"{payload['exact_clusters']:,} clusters (same text after lower-casing and collapsing whitespace)"]
    if args.near:
        lines.append(f"near duplicates (Jaccard >= {payload['threshold']}): {payload['near_duplicates']:,} more in "
                     f"{payload['near_clusters']:,} clusters; {payload['duplicates']:,} records would go with keep-one")
    for c in payload["top_clusters"]:
        lines.append(f"  cluster {c['group'] + 1:>8}  {c['size']:>5} records  {c['kind']:<5}  {c['preview'][:80]}")
    conf = payload["conflicts"]
    lines.append(f"conflicts (same prompt, different {conf['label_column'] or 'label'} or completion): "
                 f"{conf['groups']:,} prompts, {conf['records']:,} records")
    for item in conf["items"]:
        labels = ", ".join(item["labels"] or [])
        lines.append(f"  rows {[r + 1 for r in item['rows'][:6]]}  labels [{labels}]  {(item['prompt'] or '')[:70]}")
    leak = payload["leakage"]
    if leak:
        lines.append(f"leakage across {leak['split_column']}: {leak['clusters']:,} clusters straddle splits "
                     f"({leak['exact_pairs']:,} exact pairs, {leak['near_pairs']:,} near pairs)")
        for p in leak["by_pair"]:
            lines.append(f"  {p['splits'][0]} / {p['splits'][1]}: {p['exact_pairs']:,} exact, {p['near_pairs']:,} near")
    if args.resolve:
        r = payload["resolved"]
        lines.append(f"wrote {r['version']}: {r['records']:,} records ({r['dropped']:,} duplicates dropped; "
                     f"{r['source']} is unchanged)")
    lines.append(f"{payload['seconds']:.1f} s")
    emit(args, payload, "\n".join(lines))
    return 0


def register(sub, common, reporting) -> None:
    p = sub.add_parser("dedup", parents=[common, reporting],
                       help="exact and near duplicates, conflicting labels and leakage across splits")
    p.add_argument("name", help="dataset name, NAME@VERSION for an older version")
    p.add_argument("--near", action="store_true",
                   help="also find near duplicates (MinHash LSH over word 3-grams; character 4-grams for texts "
                        "under 16 words)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="Jaccard similarity of shingles at which two records count as near duplicates (default 0.8)")
    p.add_argument("--resolve", choices=["keep-one"],
                   help="write a new version keeping the first record of each cluster (the source is unchanged)")
    p.add_argument("--keep-all", metavar="N,N", help="with --resolve: clusters to keep whole, by the number "
                                                   "listed (the row number of their first record)")
    p.add_argument("--out", metavar="NEWNAME", help="with --resolve: dataset to write to (default: a new version "
                                                    "of the same dataset)")
    p.add_argument("--show", type=int, default=10, help="clusters, conflicts and leaking pairs to list (default 10)")
    p.add_argument("--no-cache", action="store_true", help="recompute instead of reading the cached result")
    p.set_defaults(func=cmd_dedup)
