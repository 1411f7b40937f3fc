"""`workbench balance`, `workbench split`, `workbench leakage` and `workbench drift`."""

from __future__ import annotations

from workbench.cli.common import ProgressBar, emit, open_store
from workbench.core.errors import WorkbenchError


def _plan_lines(plan_json: dict) -> list[str]:
    before, target, counts = plan_json["before"], plan_json["target"], plan_json["counts"]
    cats = list(target)
    width = max([len(str(c)) for c in cats] + [8])
    lines = [f"{'category':<{width}} {'before':>9} {'target':>9} {'result':>9}"]
    for c in cats:
        lines.append(f"{str(c):<{width}} {before.get(c, 0):>9,} {target[c]:>9,} {counts.get(c, 0):>9,}")
    for s in plan_json["shortfalls"]:
        lines.append(f"cannot: {s['message']}")
    return lines


def cmd_balance(args) -> int:
    from workbench.core.versions import get_version
    from workbench.curation.balance import apply_balance, plan_balance

    if not args.preview and not args.out:
        raise WorkbenchError("name the new dataset with --out NEWNAME (or look first with --preview)")
    drop_first = [d.strip() for d in (args.drop_first or "").split(",") if d.strip()]
    with open_store(args) as store:
        version = get_version(store, args.name)
        plan = plan_balance(store, version, by=args.by, target=args.target, size=args.size, strategy=args.strategy,
                            seed=args.seed, minimum=args.min, maximum=args.max,
                            max_copies=None if args.max_copies == 0 else args.max_copies,
                            drop_first=drop_first, reference=args.reference, threshold=args.threshold)
        if args.preview:
            payload = plan.to_json() | {"preview": True}
            head = (f"preview of {version.ref} balanced by {plan.column} ({plan.target.describe()}, {plan.strategy}, "
                    f"seed {plan.seed}): {plan.records:,} records" + ("" if plan.exact else " (target not met)"))
            emit(args, payload, "\n".join([head] + _plan_lines(payload)))
            return 0
        new, report = apply_balance(store, plan, args.out, allow_short=args.allow_short,
                                    progress=ProgressBar(not args.json))
    report["preview"] = False
    text = [f"wrote {new.ref}: {new.row_count:,} records from {version.ref} ({plan.strategy}, seed {plan.seed}); "
            f"content hash {new.content_hash[:16]}"] + _plan_lines(report)
    if report["added_copies"]:
        text.append(f"{report['added_copies']:,} copies added; a record appears at most "
                    f"{report['max_copies_used']} times")
    emit(args, report, "\n".join(text))
    return 0


def cmd_split(args) -> int:
    from workbench.core.versions import get_version
    from workbench.curation.splits import split_version

    with open_store(args) as store:
        version = get_version(store, args.name)
        result = split_version(store, version, args.ratios, stratify=args.stratify, group=args.group, seed=args.seed,
                               threshold=args.threshold, out=args.out, progress=ProgressBar(not args.json))
    r = result.report
    leak = r["leakage"]
    lines = [f"wrote {result.version.ref}: {r['records']:,} records with a split column "
             f"(content hash {r['content_hash'][:16]})"]
    lines += [f"  {name:<8} {n:>9,}  {n / max(r['records'], 1):6.1%}" for name, n in r["counts"].items()]
    lines.append(f"{r['clusters']:,} duplicate clusters ({r['clustered_records']:,} records) kept whole; "
                 f"leakage: {leak['exact_groups_across_splits']} exact duplicate groups across splits"
                 + (f", {leak['near_groups_across_splits']} near-duplicate clusters across splits"
                    if leak["near_groups_across_splits"] is not None else ""))
    emit(args, r, "\n".join(lines))
    return 0


def cmd_leakage(args) -> int:
    from workbench.core.versions import get_version
    from workbench.curation.splits import leakage_report, near_duplicate_groups

    with open_store(args) as store:
        version = get_version(store, args.name)
        groups = near_duplicate_groups(store, version, threshold=args.threshold) if args.near else None
        out = leakage_report(store, version, groups=groups)
    out = {"dataset": version.dataset, "version": version.number} | out
    text = (f"{version.ref}: {out['exact_groups_across_splits']} exact duplicate groups "
            f"({out['exact_records_across_splits']} records) across splits")
    if out["near_groups_across_splits"] is not None:
        text += (f"; {out['near_groups_across_splits']} near-duplicate clusters "
                 f"({out['near_records_across_splits']} records) across splits")
    emit(args, out, text + ("; no leakage" if out["clean"] else ""))
    return 0


def cmd_drift(args) -> int:
    from workbench.core.versions import get_version
    from workbench.curation.drift import drift

    with open_store(args) as store:
        out = drift(store, get_version(store, args.a), get_version(store, args.b), by=args.by, text=args.text)
    lines = list(out["summary"])
    if out["mix"]:
        lines.append(f"{'category':<28} {'share A':>8} {'share B':>8} {'change':>8}")
        for r in sorted(out["mix"]["categories"], key=lambda r: -abs(r["change"]))[:args.top]:
            lines.append(f"{str(r['category'])[:28]:<28} {r['share_a']:>8.1%} {r['share_b']:>8.1%} "
                         f"{r['change'] * 100:>+7.1f}p")
    emit(args, out, "\n".join(lines))
    return 0


def register(sub, common, reporting) -> None:
    p = sub.add_parser("balance", parents=[common, reporting], help="balance the category mix as a new dataset")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.add_argument("--by", metavar="COLUMN", help="column to balance (default: the category column); "
                   "'prompt length' and 'completion length' are length buckets")
    p.add_argument("--target", required=True, metavar="uniform|proportional|A=0.5,B=0.5|FILE",
                   help="the mix to reach: uniform, proportional (to this dataset, or to --reference), shares "
                        "adding up to 1 (or 100), or a CSV/JSON file of category,share")
    p.add_argument("--size", type=int, metavar="N", help="total records of the result (required)")
    p.add_argument("--strategy", default="downsample", choices=["downsample", "upsample", "hybrid"],
                   help="downsample: never repeat; upsample: never drop; hybrid: both (default downsample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the record order (default 0); same seed, same result")
    p.add_argument("--out", metavar="NEWNAME", help="dataset to write the result to (a new version if it exists)")
    p.add_argument("--min", metavar="N|A=N,B=M", help="fewest records per category (one number or per category)")
    p.add_argument("--max", metavar="N|A=N,B=M", help="most records per category (one number or per category)")
    p.add_argument("--reference", metavar="DATASET[@V]", help="with --target proportional: the mix of this dataset")
    p.add_argument("--max-copies", type=int, default=10, metavar="K",
                   help="upsampling: a record appears at most K times (default 10; 0: no cap)")
    p.add_argument("--drop-first", metavar="LIST",
                   help="downsampling drops these first: duplicates, near-duplicates, flagged (comma-separated)")
    p.add_argument("--threshold", type=float, default=0.8, help="near-duplicate similarity threshold (default 0.8)")
    p.add_argument("--preview", action="store_true", help="show the before/target/result counts; write nothing")
    p.add_argument("--allow-short", action="store_true",
                   help="write the result even where a category cannot reach its target")
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("split", parents=[common, reporting],
                       help="add a train/val/test split column, keeping duplicates in one split")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.add_argument("--ratios", required=True, help="0.8,0.1,0.1 (train,val,test), 0.9,0.1 (train,test) or "
                                                   "named: train=0.8,dev=0.2")
    p.add_argument("--stratify", metavar="COLUMN", help="keep every value of this column in the ratios")
    p.add_argument("--group", default="exact", choices=["exact", "near-dup", "none"],
                   help="keep these together in one split: exact duplicates (default), exact and near "
                        "duplicates, or nothing")
    p.add_argument("--threshold", type=float, default=0.8, help="near-duplicate similarity threshold (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the assignment (default 0)")
    p.add_argument("--out", metavar="NAME", help="dataset to write to (default: a new version of NAME)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("leakage", parents=[common, reporting], help="count duplicates that cross splits")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.add_argument("--near", action="store_true", help="check near-duplicate clusters too")
    p.add_argument("--threshold", type=float, default=0.8, help="near-duplicate similarity threshold (default 0.8)")
    p.set_defaults(func=cmd_leakage)

    p = sub.add_parser("drift", parents=[common, reporting],
                       help="compare the category mix and lengths of two datasets or versions")
    p.add_argument("a", metavar="A[@VERSION]", help="the baseline, e.g. the training data")
    p.add_argument("b", metavar="B[@VERSION]", help="what to compare, e.g. a fresh batch of tickets")
    p.add_argument("--by", metavar="COLUMN", help="column of the mix (default: the category column)")
    p.add_argument("--text", default="prompt", help="text column whose lengths to compare (default prompt)")
    p.add_argument("--top", type=int, default=15, help="categories to list in the text output")
    p.set_defaults(func=cmd_drift)
