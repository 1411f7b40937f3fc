"""`workbench label-errors`: suspected label errors, ranked; flag the top ones for relabelling or
write a relabelled version."""

from __future__ import annotations

from workbench.cli.common import ProgressBar, emit, open_store, terminal_safe
from workbench.core.errors import WorkbenchError


def cmd_label_errors(args) -> int:
    from workbench.core.versions import get_version
    from workbench.inspect import label_errors

    if args.relabel_top and not args.out:
        raise WorkbenchError("--relabel-top needs --out NAME: the dataset that receives the relabelled version "
                             "(the same name adds a version to it)")
    with open_store(args) as store:
        version = get_version(store, args.name)
        result = label_errors.find_label_errors(store, version, args.label_col, folds=args.folds, seed=args.seed,
                                                near=not args.no_near, progress=ProgressBar(not args.json))
        payload = result.to_json()
        if args.flag_top:
            payload["flagged"] = label_errors.flag_suspects(store, result, args.flag_top)
        if args.relabel_top:
            _, info = label_errors.relabel_suspects(store, result, args.relabel_top, out=args.out)
            payload["relabelled"] = info
    emit(args, payload, _text(result, payload, args.show))
    return 0


def _text(result, payload: dict, show: int) -> str:
    lines = [f"{result.version.ref}: {payload['records']:,} records, {payload['scored']:,} labelled in "
             f"{payload['classes']} categories of {result.label_col!r}; {payload['suspected']:,} suspected label errors "
             f"({payload['seconds']:.1f} s)"]
    if payload["suspects"]:
        lines.append(f"{'row':>7}  {'quality':>9}  given -> suggested")
    for s in payload["suspects"][:show]:
        who = f" (id {s['id']})" if s.get("id") is not None else ""
        lines.append(terminal_safe(f"{s['row'] + 1:>7}  {s['quality']:>9.3g}  {s['given']} -> {s['suggested']}{who}"))
        for why in s["reasons"][1:]:
            lines.append(terminal_safe(f"{'':>18}also: {why}"))
    if len(payload["suspects"]) > show:
        lines.append(f"... and {len(payload['suspects']) - show:,} more (--show N, or --json for all)")
    if payload["confusions"]:
        top = ", ".join(f"{c['given']} -> {c['suggested']} ({c['records']})" for c in payload["confusions"][:5])
        lines.append(terminal_safe(f"most common confusions: {top}"))
    if "flagged" in payload:
        lines.append(f"flagged {payload['flagged']:,} records for relabelling; the Label page's queue shows them first")
    if "relabelled" in payload:
        r = payload["relabelled"]
        lines.append(f"wrote {r['version']}: {r['records']:,} records, {r['changed']:,} relabelled "
                     f"({r['source']} is unchanged)")
    return "\n".join(lines)


def register(sub, common, reporting) -> None:
    p = sub.add_parser("label-errors", parents=[common, reporting],
                       help="suspected label errors, ranked (out-of-fold classifier + cleanlab, duplicates, "
                            "annotators)")
    p.add_argument("name", help="dataset name, NAME@VERSION for an older version")
    p.add_argument("--label-col", help="the column of labels to check (default: the import's label column, "
                                       "else category, intent or label)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds; every label needs at least "
                                                        "this many records (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    p.add_argument("--no-near", action="store_true", help="look only at exact duplicates with different labels, "
                                                          "not near ones")
    p.add_argument("--show", type=int, default=20, help="suspects to list in the text output (default 20)")
    p.add_argument("--flag-top", type=int, metavar="N", help="flag the N first suspects for relabelling, with "
                                                             "the reason (the Label queue shows them first)")
    p.add_argument("--relabel-top", type=int, metavar="N", help="write a new version where the N first suspects "
                                                                "carry the suggested label (admin)")
    p.add_argument("--out", metavar="NAME", help="with --relabel-top: the dataset that receives the new version")
    p.set_defaults(func=cmd_label_errors)
