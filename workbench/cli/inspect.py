"""`workbench pii`, `workbench tokens` and the token/flag part of `workbench stats`."""

from __future__ import annotations

from workbench.cli.common import ProgressBar, emit, open_store
from workbench.core.errors import WorkbenchError


def inspect_stats(store, version, *, tokenizer: str | None, max_length: int | None, progress) -> dict:
    """What `workbench stats` adds: token lengths (approximate without --tokenizer) and quality flags."""
    from workbench.inspect import quality, tokens

    counter = tokens.load_tokenizer(store, tokenizer)
    out = {"tokens": tokens.token_summary(store, version, counter, max_length=max_length, progress=progress)}
    report = quality.quality_report(store, version, progress=progress)
    out["flags"] = report["flags"]
    out["flagged"] = report["flagged"]
    out["language"] = report["language"]
    return out


def inspect_lines(out: dict) -> list[str]:
    t = out["tokens"]
    label = "approximate tokens" if t["approximate"] else f"tokens ({t['tokenizer']})"
    lines = [f"{label}:          p50      p95      max"]
    for part in ("prompt", "completion", "total"):
        s = t[part]
        lines.append(f"  {part:<18} {s['p50']:>8,} {s['p95']:>8,} {s['max']:>8,}")
    if t["approximate"]:
        lines.append(f"  ({t['rule']})")
    if "truncation" in t:
        tr = t["truncation"]
        lines.append(f"max length {tr['max_length']:,}: {tr['truncated_records']:,} records truncated, "
                     f"{tr['supervised_tokens_lost']:,} of {tr['supervised_tokens']:,} supervised tokens lost "
                     f"({tr['supervised_lost_fraction']:.2%})")
    flagged = ", ".join(f"{k} {v:,}" for k, v in out["flags"].items() if v) or "none"
    lines.append(f"quality flags: {flagged}")
    return lines


def cmd_pii(args) -> int:
    from workbench.core.versions import get_version
    from workbench.inspect import pii

    bar = ProgressBar(not args.json)
    with open_store(args) as store:
        version = get_version(store, args.name)
        if args.redact:
            if not args.out:
                raise WorkbenchError("--redact needs --out NEWNAME: the dataset that receives the redacted version "
                                     f"(the same name, {version.dataset}, adds a version to it)")
            types = [t.strip().upper() for t in args.types.split(",") if t.strip()] if args.types \
                else list(pii.PERSONAL)
            new, replaced = pii.redact_version(store, version, args.out, types=types, region=args.phone_region,
                                               progress=bar)
        report = pii.pii_report(store, version, region=args.phone_region, progress=bar)
    lines = [f"{version.ref}: {report['records_with_pii']:,} of {report['records']:,} records hold personal data"]
    for kind, info in report["types"].items():
        if not info["occurrences"]:
            continue
        fields = ", ".join(f"{f} {n:,}" for f, n in info["by_field"].items())
        note = "" if info["personal"] else "; not personal data, redacted only with --types"
        lines.append(f"  {kind:<8} {info['occurrences']:>9,} in {info['records']:,} records ({fields}{note})")
        for ex in info["examples"][:3]:
            lines.append(f"           row {ex['row']:,} {ex['field']}: {ex['value']}")
    if args.redact:
        report["redacted"] = {"dataset": new.dataset, "version": new.number, "records": new.row_count,
                              "content_hash": new.content_hash, "replaced": replaced, "types": types}
        lines.append(f"wrote {new.ref} with {sum(replaced.values()):,} values replaced by placeholders "
                     f"({', '.join(types)})")
    emit(args, report, "\n".join(lines))
    return 0


def cmd_tokens(args) -> int:
    from workbench.core.versions import get_version
    from workbench.inspect import tokens

    bar = ProgressBar(not args.json)
    with open_store(args) as store:
        version = get_version(store, args.name)
        counter = tokens.load_tokenizer(store, args.tokenizer)
        out = tokens.token_summary(store, version, counter, max_length=args.max_length, progress=bar)
        path = tokens.count_tokens(store, version, counter)
        out["dataset"], out["version"] = version.dataset, version.number
        out["by_max_length"] = tokens.truncation_table(store, path)
        out["histograms"] = {col: tokens.token_histogram(store, path, col, bins=args.bins)
                             for col in tokens.LENGTH_COLUMNS}
    lines = inspect_lines({"tokens": out, "flags": {}})[:-1]
    lines.append("max length   truncated records   supervised tokens lost")
    for tr in out["by_max_length"]:
        lines.append(f"  {tr['max_length']:>8,} {tr['truncated_records']:>19,} {tr['supervised_tokens_lost']:>24,}")
    emit(args, out, "\n".join(lines))
    return 0


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of tokens") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_token_options(p) -> None:
    p.add_argument("--tokenizer", metavar="MODEL", default=None,
                   help="count with this base model's tokenizer: 'tiny', a model folder, or a Hugging Face id in "
                        "the local cache (default: an approximate count, ceil(UTF-8 bytes / 4))")
    p.add_argument("--max-length", type=_positive, metavar="N", default=None,
                   help="also report how many records and supervised tokens a max sequence length of N cuts")


def cmd_index(args) -> int:
    """Build a version's text-search index now (the app builds it in the background otherwise)."""
    import time

    from workbench.core.versions import get_version
    from workbench.data import search

    bar = ProgressBar(not args.json)
    with open_store(args) as store:
        version = get_version(store, args.name)
        started = time.perf_counter()
        folder = search.build(store, version, progress=lambda done, total: bar(done / max(total, 1), "indexing"))
        meta = search.ready(store, version).meta
    out = {"dataset": version.dataset, "version": version.number, "records": meta["records"],
           "blocks": meta["blocks"], "category_column": meta["category_column"],
           "seconds": round(time.perf_counter() - started, 2),
           "bytes": sum(f.stat().st_size for f in folder.iterdir()), "folder": str(folder)}
    emit(args, out, f"{version.ref}: search index of {out['records']:,} records in {out['blocks']:,} blocks, "
                     f"{out['bytes'] / 1e6:.0f} MB, {out['seconds']:.1f} s ({folder})")
    return 0


def register(sub, common, reporting) -> None:
    p = sub.add_parser("index", parents=[common, reporting],
                       help="build a version's text-search index now (the app otherwise builds it in the background)")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("pii", parents=[common, reporting], help="find personal data; optionally redact it")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.add_argument("--phone-region", metavar="CC", default=None,
                   help="region for phone numbers written without +country code (default: [pii] phone_region "
                        "in workbench.toml, else US; '' for international numbers only)")
    p.add_argument("--redact", action="store_true",
                   help="write a new version with the personal data replaced by [EMAIL], [NAME], ... placeholders")
    p.add_argument("--types", metavar="T,T", default=None,
                   help="with --redact: these types (EMAIL, PHONE, NAME, ADDRESS, CARD, IBAN, IP, ACCOUNT, ORDER; "
                        "default all personal types, that is all but ORDER: order/tracking/reference numbers)")
    p.add_argument("--out", metavar="NEWNAME", help="with --redact: the dataset that receives the redacted version")
    p.set_defaults(func=cmd_pii)

    p = sub.add_parser("tokens", parents=[common, reporting],
                       help="token length distributions and what a max sequence length cuts")
    p.add_argument("name", metavar="NAME[@VERSION]")
    add_token_options(p)
    p.add_argument("--bins", type=_positive, default=40, help="histogram bins (default 40)")
    p.set_defaults(func=cmd_tokens)
