"""`workbench agreement`: inter-annotator agreement of a stored question or of a long-format file."""

from __future__ import annotations

from workbench.core.errors import WorkbenchError

COEFFICIENT_NAMES = {
    "krippendorff_alpha": "Krippendorff's alpha",
    "fleiss_kappa": "Fleiss' kappa",
    "cohen_kappa_mean": "Cohen's kappa (mean of pairs)",
    "cohen_kappa_linear_mean": "Cohen's kappa, linear weights",
    "cohen_kappa_quadratic_mean": "Cohen's kappa, quadratic weights",
    "percent_agreement": "Percent agreement",
}


def register(sub, common, reporting) -> None:
    p = sub.add_parser(
        "agreement", parents=[common, reporting],
        help="inter-annotator agreement: alpha, kappas, per label, disputed records, annotator quality",
        description="Agreement of a stored question (NAME --question Q) or of a long-format file "
                    "(--file FILE --item-col C --annotator-col C --value-col C).")
    p.add_argument("name", nargs="?", metavar="NAME", help="dataset whose stored question to measure")
    p.add_argument("--question", help="the question (with --file: keep only rows of this question)")
    p.add_argument("--file", help="long-format answers: CSV, TSV, JSONL, JSON or Parquet, one row per answer")
    p.add_argument("--item-col", help="--file: the column naming the item (record)")
    p.add_argument("--annotator-col", help="--file: the column naming the annotator")
    p.add_argument("--value-col", help="--file: the column holding the answer")
    p.add_argument("--question-col", help="--file: the column naming the question (default: `question`)")
    p.add_argument("--gold-annotator", metavar="NAME",
                   help="--file: answers by this name are gold labels, not an annotator's")
    p.add_argument("--level", choices=["nominal", "ordinal", "interval", "ratio"],
                   help="level of measurement (default: ordinal for rating questions, else nominal)")
    p.add_argument("--labels", metavar="A,B,C",
                   help="every possible answer, in order (lowest first for ordinal); unused ones are listed too")
    p.add_argument("--resamples", type=int, default=1000,
                   help="bootstrap resamples of items for the 95%% intervals (0: no intervals; default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--top", type=int, default=20, help="how many of the most disputed records to list (default 20)")
    p.add_argument("--confusion", metavar="A,B", help="also print the confusion matrix between annotators A and B")
    p.add_argument("--write-consensus", choices=["majority", "dawid-skene"],
                   help="stored question: write the consensus labels as a new dataset version")
    p.set_defaults(func=cmd_agreement)


def cmd_agreement(args) -> int:
    from workbench.cli.common import ProgressBar, emit, open_store
    from workbench.labels import agreement

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    options = dict(resamples=args.resamples, seed=args.seed, top=args.top, progress=ProgressBar(not args.json))
    if args.file:
        if args.name:
            raise WorkbenchError("give either a dataset NAME with --question, or --file, not both")
        missing = [flag for flag, v in (("--item-col", args.item_col), ("--annotator-col", args.annotator_col),
                                        ("--value-col", args.value_col)) if not v]
        if missing:
            raise WorkbenchError(f"--file needs {', '.join(missing)}: the columns that name the item, the annotator "
                                 "and the answer")
        if args.write_consensus:
            raise WorkbenchError("--write-consensus works on a stored question; import the file first with "
                                 "`workbench annotations import`")
        report = agreement.file_report(args.file, item_col=args.item_col, annotator_col=args.annotator_col,
                                       value_col=args.value_col, question=args.question,
                                       question_col=args.question_col, level=args.level or "nominal",
                                       labels=labels, gold_annotator=args.gold_annotator, **options)
        answers = None
        if args.confusion:
            answers = agreement.read_answers_file(args.file, item_col=args.item_col, annotator_col=args.annotator_col,
                                                  value_col=args.value_col, question=args.question,
                                                  question_col=args.question_col)
    else:
        if not args.name or not args.question:
            raise WorkbenchError("name a dataset and its question (workbench agreement NAME --question Q), or "
                                 "give a long-format file with --file FILE --item-col C --annotator-col C --value-col C")
        with open_store(args) as store:
            report = agreement.question_report(store, args.name, args.question, level=args.level, labels=labels,
                                               **options)
            answers = agreement.stored_answers(store, args.name, args.question)[0] if args.confusion else None
            if args.write_consensus:
                report["consensus"] = agreement.write_consensus(store, args.name, args.question,
                                                                method=args.write_consensus)
    if args.confusion:
        pair = [x.strip() for x in args.confusion.split(",")]
        if len(pair) != 2:
            raise WorkbenchError(f"--confusion takes two annotators as A,B; got {args.confusion!r}")
        table = agreement.confusion_table(answers, pair[0], pair[1], labels=report["labels"])
        report["confusion"] = {"a": pair[0], "b": pair[1], "labels": list(table.columns),
                               "counts": table.to_numpy().tolist()}
    emit(args, report, render_text(report))
    return 0


def _fmt(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def render_text(report: dict) -> str:
    src = report["source"]
    where = f"{src['dataset']} / {src['question']}" if src.get("dataset") else (
        src.get("file", "answers") + (f" / {src['question']}" if src.get("question") else ""))
    lines = [f"{where} ({report['level']}): {report['n_items']:,} items, {report['n_annotators']} annotators, "
             f"{report['n_answers']:,} answers; {report['n_items_compared']:,} items have two or more answers", ""]
    boot = report["bootstrap"]
    head = f"{'coefficient':<33} {'value':>6}  {'95% interval':<16} {'items':>7} {'annot.':>6}"
    lines += [head, "-" * len(head)]
    readings = []
    for key, name in COEFFICIENT_NAMES.items():
        c = report["coefficients"].get(key)
        if c is None:
            continue
        ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]" if c["ci_low"] is not None else "—"
        lines.append(f"{name:<33} {_fmt(c['value']):>6}  {ci:<16} {c['n_items']:>7,} {c['n_annotators']:>6}")
        readings.append(f"  {name}: {c['reading']}")
    lines += ["", "What the numbers say:", *readings]
    lines.append(f"  (intervals: {boot['resamples']} bootstrap resamples of items, seed {boot['seed']})"
                 if boot["resamples"] else "  (no intervals: --resamples 0)")
    by_level = report["alpha_by_level"]
    if len(by_level) > 1:
        lines.append("  alpha at each level: " + ", ".join(f"{lvl} {_fmt(v['value'])}" for lvl, v in by_level.items()))

    pw = report["pairwise"]
    names = pw["annotators"]
    if len(names) >= 2:
        width = max(8, *(len(n) for n in names)) + 1
        lines += ["", "Cohen's kappa between annotators:", " " * width + "".join(f"{n:>{width}}" for n in names)]
        for n, row in zip(names, pw["none"]["kappa"]):
            lines.append(f"{n:<{width}}" + "".join(f"{_fmt(x):>{width}}" for x in row))

    lines += ["", "Per label:", f"  {'label':<24} {'answers':>8} {'agreement':>10} {'vs rest':>8}  most confused with"]
    for row in report["per_label"]:
        confused = f"{row['confused_with']} ({row['confused_share']:.0%})" if row["confused_with"] else ""
        tail = confused or (row["reason"] or "")
        lines.append(f"  {row['label'][:24]:<24} {row['answers']:>8,} {_fmt(row['specific_agreement'], 2):>10} "
                     f"{_fmt(row['alpha_vs_rest'], 2):>8}  {tail}")

    lines += ["", "Annotators:", f"  {'annotator':<16} {'answers':>8} {'w/ consensus':>12} {'mean kappa':>10} "
                                 f"{'gold acc.':>9} {'Dawid-Skene acc.':>16}"]
    for row in report["annotators"]:
        gold = _fmt(row["gold_accuracy"], 2) + (f" ({row['gold_items']})" if row["gold_items"] else "")
        lines.append(f"  {row['annotator'][:16]:<16} {row['answers']:>8,} {_fmt(row['consensus_agreement'], 2):>12} "
                     f"{_fmt(row['mean_kappa'], 2):>10} {gold:>9} {_fmt(row['dawid_skene_accuracy'], 2):>16}")

    accuracy = report.get("annotator_accuracy")
    if accuracy and any(r["items"] for r in accuracy["rows"]):
        pct = f"{accuracy['confidence']:.0%}"
        lines += ["", f"Accuracy per annotator ({pct} {accuracy['interval']} intervals):",
                  f"  {'annotator':<16} {'against':<16} {'items':>7} {'accuracy':>9}  {pct} interval"]
        for row in accuracy["rows"]:
            if row["items"]:
                lines.append(f"  {row['annotator'][:16]:<16} {row['reference'].replace('_', ' '):<16} "
                             f"{row['items']:>7,} {_fmt(row['accuracy'], 2):>9}  "
                             f"[{_fmt(row['ci_low'], 2)}, {_fmt(row['ci_high'], 2)}]")
        for name, meaning in accuracy["references"].items():
            lines.append(f"  {name.replace('_', ' ')}: {meaning}")

    if report["disputed"]:
        lines += ["", f"Most disputed records (top {len(report['disputed'])}):"]
        for d in report["disputed"]:
            given = ", ".join(f"{a}={v}" for a, v in d["given"].items())
            where = f"row {d['row'] + 1}" if d["row"] is not None else ""
            lines.append(f"  {d['item']:<12} {where:<10} disagreement {_fmt(d['disagreement'], 2)}: {given}")
    if report.get("confusion"):
        c = report["confusion"]
        lines += ["", f"Confusion matrix: rows {c['a']}, columns {c['b']}"]
        width = max(6, *(len(x) for x in c["labels"])) + 1
        lines.append(" " * width + "".join(f"{x[:width - 1]:>{width}}" for x in c["labels"]))
        for lab, row in zip(c["labels"], c["counts"]):
            lines.append(f"{lab[:width - 1]:<{width}}" + "".join(f"{x:>{width}}" for x in row))
    if report.get("consensus"):
        c = report["consensus"]
        lines += ["", f"Wrote {c['labels']:,} consensus labels ({c['method']}) as {c['version']}; "
                      f"{c['from_gold']} from adjudicated values, {c['tied_left_out']} tied records left unchanged"]
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
