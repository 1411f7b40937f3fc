"""`workbench annotations import|export|final`, `workbench questions add|change|list` and
`workbench users add|list|remove`."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from workbench.cli import common
from workbench.core.errors import WorkbenchError

# ---------------------------------------------------------------- annotations

def cmd_annotations_import(args) -> int:
    from workbench.labels.annotations import AnnotationsRejected, import_annotations

    with common.open_store(args) as store:
        try:
            result = import_annotations(store, args.file, dataset=args.dataset, question=args.question,
                                        item_col=args.item_col, annotator_col=args.annotator_col,
                                        value_col=args.value_col, time_col=args.time_col,
                                        question_col=args.question_col, kind=args.kind, overlap=args.overlap,
                                        on_error=args.on_error)
        except AnnotationsRejected as exc:
            if args.json:
                print(json.dumps(exc.result, default=str, ensure_ascii=False))
            else:
                for err in exc.result["errors"][:20]:
                    print(f"line {err['line']}: {err['error']}", file=sys.stderr)
                if exc.result["error_count"] > 20:
                    print(f"... and {exc.result['error_count'] - 20} more", file=sys.stderr)
            raise
    text = (f"imported {result['imported']:,} answers to {result['dataset']}:{result['question']} ({result['kind']}) "
            f"from {result['annotators']} annotators on {result['items']:,} records")
    if result["unchanged"]:
        text += f"; {result['unchanged']:,} were already there"
    if result["skipped"]:
        text += f"; skipped {result['skipped']:,} bad lines"
        text += "".join(f"\n  line {e['line']}: {e['error']}" for e in result["errors"][:20])
    common.emit(args, result, text)
    return 0


def cmd_annotations_export(args) -> int:
    from workbench.labels.annotations import export_annotations

    with common.open_store(args) as store:
        out = export_annotations(store, args.out, dataset=args.dataset, question=args.question,
                                 history_rows=args.history)
    common.emit(args, out, f"wrote {out['records']:,} annotations to {out['path']}")
    return 0


def cmd_annotations_final(args) -> int:
    from workbench.labels.adjudication import apply_final_labels, status_counts
    from workbench.labels.questions import get_question

    with common.open_store(args) as store:
        q = get_question(store, args.dataset, args.question)
        counts = status_counts(store, q)
        version = apply_final_labels(store, q, column=args.column)
    payload = {"dataset": version.dataset, "version": version.number, "records": version.row_count,
               "labels": version.recipe.get("labels"), "column": version.recipe.get("column"), "counts": counts}
    common.emit(args, payload, f"wrote {payload['labels']:,} final values of {args.question} into column "
                             f"{payload['column']} of {version.ref} ({counts.get('disputed', 0):,} records still "
                             "disputed)")
    return 0


# ---------------------------------------------------------------- questions

def _read_guidelines(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise WorkbenchError(f"cannot read the guidelines file {path}: {exc.strerror}") from None


def cmd_questions_add(args) -> int:
    from workbench.labels.questions import add_question, parse_anchors

    guidelines = _read_guidelines(args.guidelines) or ""
    anchors = parse_anchors(args.anchors)
    choices = [c for c in (args.choices or "").split(",") if c.strip()] or None
    with common.open_store(args) as store:
        q = add_question(store, args.dataset, args.name, args.kind, choices=choices, choices_from=args.choices_from,
                         anchors=anchors, column=args.column, overlap=args.overlap, majority=args.majority,
                         guidelines=guidelines, shown_columns=[c.strip() for c in args.show_columns.split(",")
                                                               if c.strip()] if args.show_columns else None,
                         order=args.queue_order)
    payload = _question_json(q)
    common.emit(args, payload, f"added question {q.name} ({q.kind}) to {q.dataset}: {q.overlap} annotators per "
                             f"record{', choices ' + ', '.join(q.choices) if q.choices else ''}")
    return 0


def cmd_questions_change(args) -> int:
    from workbench.labels.questions import update_question

    with common.open_store(args) as store:
        q = update_question(store, args.dataset, args.name, overlap=args.overlap, majority=args.majority,
                            guidelines=_read_guidelines(args.guidelines), order=args.queue_order)
    common.emit(args, _question_json(q), f"question {q.name} of {q.dataset}: {q.overlap} annotators per record, "
                                         f"queue order {q.queue_order}")
    return 0


def _question_json(q) -> dict:
    return {"dataset": q.dataset, "name": q.name, "kind": q.kind, "choices": list(q.choices), "anchors": q.anchors,
            "overlap": q.overlap, "majority": q.majority, "column": q.column, "key_column": q.key_column or "row",
            "version_id": q.version_id, "choices_from": q.choices_from,
            "shown_columns": None if q.shown_columns is None else list(q.shown_columns), "queue_order": q.queue_order}


def cmd_questions_list(args) -> int:
    from workbench.labels.adjudication import status_counts
    from workbench.labels.questions import list_questions

    with common.open_store(args) as store:
        rows = []
        for q in list_questions(store, args.dataset):
            rows.append({**_question_json(q), "version": q.version(store).number, "counts": status_counts(store, q)})
    lines = [f"{r['dataset']}:{r['name']:<16} {r['kind']:<14} v{r['version']} overlap {r['overlap']}  "
             + " ".join(f"{k} {n}" for k, n in sorted(r["counts"].items())) for r in rows]
    common.emit(args, {"questions": rows}, "\n".join(lines) or "no questions yet")
    return 0


# ---------------------------------------------------------------- users

def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise WorkbenchError("no terminal to ask for the password; pipe it in with --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise WorkbenchError("the two passwords differ; nothing was changed")
    return password


def cmd_users_add(args) -> int:
    from workbench.core.auth import add_user

    password = _read_password(args)
    with common.open_store(args) as store:
        user = add_user(store, args.name, args.role, password, replace=args.replace)
    common.emit(args, {"name": user.name, "role": user.role},
              f"{'updated' if args.replace else 'added'} {user.name} ({user.role}); the app now asks to sign in")
    return 0


def cmd_users_list(args) -> int:
    from workbench.core.auth import list_users

    with common.open_store(args) as store:
        users = list_users(store)
    text = "\n".join(f"{u['name']:<24} {u['role']}" for u in users) or \
        "no users: the app runs as one local user on 127.0.0.1"
    common.emit(args, {"users": users}, text)
    return 0


def cmd_users_remove(args) -> int:
    from workbench.core.auth import remove_user

    with common.open_store(args) as store:
        remove_user(store, args.name)
    common.emit(args, {"removed": args.name}, f"removed {args.name}; their annotations stay")
    return 0


# ---------------------------------------------------------------- parser

def register(sub, common, reporting) -> None:
    from workbench.core.auth import ROLES
    from workbench.labels.kinds import NAMES as KINDS
    from workbench.labels.queue_order import ORDERS

    QUEUE_ORDER_HELP = "the order records are handed out in: " + "; ".join(f"{k}: {v}" for k, v in ORDERS.items())

    p = sub.add_parser("annotations", parents=[common], help="import, export and apply annotations")
    asub = p.add_subparsers(dest="annotations_command", required=True, metavar="ACTION")

    a = asub.add_parser("import", parents=[common, reporting], help="append long-format annotations to a question")
    a.add_argument("file", help="CSV, TSV, JSONL, JSON or Parquet: one row per record, annotator (and question)")
    a.add_argument("--dataset", required=True, help="the dataset the records belong to")
    a.add_argument("--question", required=True, help="the question answered (created if it does not exist)")
    a.add_argument("--item-col", required=True, help="column with the record key (the `id`, else the record number)")
    a.add_argument("--annotator-col", required=True, help="column with the annotator's name")
    a.add_argument("--value-col", required=True, help="column with the answer")
    a.add_argument("--time-col", help="column with when it was answered (ISO 8601; default: now)")
    a.add_argument("--question-col", help="column naming the question of each row; rows of other questions are "
                                          "passed over (default: a column named `question` when there is one)")
    a.add_argument("--kind", choices=KINDS, help="kind of a new question (default: guessed from the values)")
    a.add_argument("--overlap", type=int, help="annotators per record of a new question (default: as in the file)")
    a.add_argument("--on-error", default="fail", choices=["fail", "skip"],
                   help="fail: import nothing if any line is bad; skip: import the good lines")
    a.set_defaults(func=cmd_annotations_import)

    a = asub.add_parser("export", parents=[common, reporting], help="write annotations in long format")
    a.add_argument("--out", required=True, help="output file, .csv or .jsonl")
    a.add_argument("--dataset", help="only this dataset's questions")
    a.add_argument("--question", help="only this question")
    a.add_argument("--history", action="store_true", help="every answer ever given, not only the current ones")
    a.set_defaults(func=cmd_annotations_export)

    a = asub.add_parser("final", parents=[common, reporting],
                        help="write the final (agreed, majority or adjudicated) values into a new dataset version")
    a.add_argument("--dataset", required=True)
    a.add_argument("--question", required=True)
    a.add_argument("--column", help="column to update (default: the question's column)")
    a.set_defaults(func=cmd_annotations_final)

    p = sub.add_parser("questions", parents=[common], help="what annotators are asked")
    qsub = p.add_subparsers(dest="questions_command", required=True, metavar="ACTION")
    a = qsub.add_parser("add", parents=[common, reporting], help="ask a question of every record of a version")
    a.add_argument("name", help="question name, for example category")
    a.add_argument("--dataset", required=True, metavar="NAME[@VERSION]", help="the version to label")
    a.add_argument("--kind", required=True, choices=KINDS)
    a.add_argument("--choices", help="comma-separated choices or tags (rating: the scale, default 1,2,3,4,5)")
    a.add_argument("--choices-from", metavar="COLUMN", help="take the choices from a column's values")
    a.add_argument("--anchors", help="rating anchors, for example '1=useless,3=usable,5=perfect'")
    a.add_argument("--overlap", type=int, default=1, help="how many annotators answer each record (default 1)")
    a.add_argument("--majority", action=argparse.BooleanOptionalAction, default=None,
                   help="a strict majority of the answers is final (default: yes for single-choice, else no)")
    a.add_argument("--show-columns", metavar="COL,COL",
                   help="the metadata columns annotators see (default: all but --choices-from's column)")
    a.add_argument("--column", help="column the final values go to (default: the question's name; text: completion)")
    a.add_argument("--guidelines", metavar="FILE", help="markdown file shown to annotators beside each record")
    a.add_argument("--queue-order", choices=list(ORDERS), default=None, help=QUEUE_ORDER_HELP + " (default: default)")
    a.set_defaults(func=cmd_questions_add)
    a = qsub.add_parser("change", parents=[common, reporting],
                        help="change what may change once answers exist (overlap, majority, guidelines, queue order)")
    a.add_argument("name", help="the question's name")
    a.add_argument("--dataset", required=True, help="the dataset the question belongs to")
    a.add_argument("--overlap", type=int, help="how many annotators answer each record")
    a.add_argument("--majority", action=argparse.BooleanOptionalAction, default=None,
                   help="a strict majority of the answers is final")
    a.add_argument("--guidelines", metavar="FILE", help="markdown file shown to annotators beside each record")
    a.add_argument("--queue-order", choices=list(ORDERS), default=None, help=QUEUE_ORDER_HELP + " (left out: unchanged)")
    a.set_defaults(func=cmd_questions_change)
    a = qsub.add_parser("list", parents=[common, reporting], help="questions and how far they are")
    a.add_argument("--dataset")
    a.set_defaults(func=cmd_questions_list)

    p = sub.add_parser("users", parents=[common], help="accounts of the app (with any, it asks to sign in)")
    usub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    a = usub.add_parser("add", parents=[common, reporting], help="add an account (the first must be an admin)")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    a.add_argument("--replace", action="store_true", help="set a new role and password for an existing account")
    a.set_defaults(func=cmd_users_add)
    a = usub.add_parser("list", parents=[common, reporting], help="list accounts")
    a.set_defaults(func=cmd_users_list)
    a = usub.add_parser("remove", parents=[common, reporting], help="remove an account (its annotations stay)")
    a.add_argument("name")
    a.set_defaults(func=cmd_users_remove)
