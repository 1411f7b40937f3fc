"""The `workbench` command. Every command takes --project; reporting commands take --json and then
print exactly one JSON object on stdout. Errors exit non-zero with one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from workbench.cli import common
from workbench.cli.common import ProgressBar, SafeStream, emit, open_store
from workbench.core.errors import WorkbenchError

# workbench.core.formats.FORMATS and workbench.data.export.EXPORT_FORMATS, spelled out so that the CLI starts
# without pyarrow (tests/cli check they stay equal)
IMPORT_FORMATS = ("chat", "prompt-completion", "alpaca", "classification", "preference", "kto")
EXPORT_FORMATS = ("chat", "alpaca", "prompt-completion", "csv", "parquet", "hf", "preference", "kto")

EXIT_USER_ERROR = 1
EXIT_INTERNAL = 2


# ---------------------------------------------------------------- commands

def cmd_init(args) -> int:
    from workbench.core.project import init_project

    project = init_project(args.project)
    with open_store(args):
        pass
    emit(args, {"project": str(project.root), "database": str(project.db_path)},
          f"project ready at {project.root}")
    return 0


def cmd_import(args) -> int:
    from workbench.core.formats import COLUMN_FLAGS
    from workbench.data.importer import ImportRejected, import_file

    with open_store(args) as store:
        try:
            result = import_file(store, args.path, args.dataset, fmt=args.format, on_error=args.on_error,
                                 progress=ProgressBar(not args.json),
                                 **{flag: getattr(args, flag) for flag in COLUMN_FLAGS})
        except ImportRejected as exc:
            if args.json:
                print(json.dumps(exc.result.to_json(), default=str))
            else:
                for err in exc.result.errors[:20]:
                    where = "line" if exc.result.kind in ("jsonl", "csv", "tsv") else "record"
                    print(f"{where} {err['line']}: {err['error']}", file=sys.stderr)
                if exc.result.error_count > 20:
                    print(f"... and {exc.result.error_count - 20} more", file=sys.stderr)
            raise
    payload = result.to_json()
    text = (f"imported {result.imported:,} records into {args.dataset}@{result.version.number} "
            f"({result.format}, {result.seconds:.1f} s)")
    if n := result.line_endings_normalised:
        text += f"; line endings made LF (\\n) in {n:,} record{'s' if n != 1 else ''} (CRLF or CR in the file)"
    if result.skipped:
        text += (f"; skipped {result.skipped} bad row{'s' if result.skipped != 1 else ''} "
                 f"(see `workbench quarantine {args.dataset}`)")
        for err in result.errors[:20]:
            text += f"\n  line {err['line']}: {err['error']}"
    emit(args, payload, text)
    return 0


def cmd_datasets(args) -> int:
    from workbench.core.versions import list_datasets, list_versions

    if args.rename or args.archive or args.unarchive:
        return _manage_dataset(args)
    with open_store(args) as store:
        rows = list_datasets(store, archived=True if args.archived else None if args.all else False)
        versions = {r["name"]: [
            {"version": v.number, "records": v.row_count, "kind": v.kind, "parent_id": v.parent_id,
             "content_hash": v.content_hash, "created_at": v.created_at}
            for v in list_versions(store, r["name"])] for r in rows} if args.versions else {}
    if args.versions:
        for r in rows:
            r["all_versions"] = versions[r["name"]]
    lines = [f"{'dataset':<24} {'version':>7} {'records':>10}  format"]
    for r in rows:
        archived = f"  (archived {r['archived_at'][:16]})" if r.get("archived_at") else ""
        lines.append(f"{r['name']:<24} {r['version']:>7} {r['records']:>10,}  {r['format']}{archived}")
        for v in reversed(versions.get(r["name"], [])):  # --versions: every version under its dataset, newest first
            origin = f"from @{v['parent_id']}" if v["parent_id"] else "imported"
            lines.append(f"  @{v['version']:<5} {v['records']:>10,}  {v['kind']:<10} {origin:<10} "
                         f"{str(v['created_at'])[:19]}  {str(v['content_hash'])[:12]}")
    if not rows:
        lines = ["no archived datasets" if args.archived else
                 "no datasets yet; import one with `workbench import FILE --dataset NAME`"]
    emit(args, {"datasets": rows}, "\n".join(lines))
    return 0


def _manage_dataset(args) -> int:
    """--rename OLD NEW, --archive NAME, --unarchive NAME: one action, its result as one JSON object."""
    from workbench.data import manage

    with open_store(args) as store:
        if args.rename:
            out = manage.rename_dataset(store, *args.rename)
            moved = [f"{out[k]} {k.replace('_', ' ')}" for k in ("questions", "runs", "evaluations") if out[k]]
            text = (f"renamed {out['renamed_from']} to {out['dataset']} ({out['versions']} version"
                    f"{'s' if out['versions'] != 1 else ''}" + (f"; {', '.join(moved)} follow it" if moved else "")
                    + ")")
        elif args.archive:
            out = manage.archive_dataset(store, args.archive)
            text = (f"archived {out['dataset']}: it leaves the lists; its versions stay readable as "
                    f"{out['dataset']}@N, and `workbench datasets --archived` lists it")
        else:
            out = manage.unarchive_dataset(store, args.unarchive)
            text = f"{out['dataset']} is listed again"
    emit(args, out, text)
    return 0


def cmd_stats(args) -> int:
    from workbench.cli.inspect import inspect_lines, inspect_stats
    from workbench.core.versions import get_version
    from workbench.data.browse import stats

    with open_store(args) as store:
        version = get_version(store, args.name)
        out = stats(store, version)
        out.update(inspect_stats(store, version, tokenizer=args.tokenizer, max_length=args.max_length,
                                 progress=ProgressBar(not args.json)))
    lines = [f"{out['dataset']}@{out['version']}: {out['records']:,} records, {out['format']}",
             f"content hash {out['content_hash'][:16]}"]
    if out["by_category"]:
        lines.append(f"{out['categories']} values of {out['category_column']}:")
        width = max(len(str(k)) for k in out["by_category"])
        for k, n in out["by_category"].items():
            lines.append(f"  {str(k):<{width}} {n:>9,}  {n / out['records']:6.1%}")
    lines += inspect_lines(out)
    emit(args, out, "\n".join(lines))
    return 0


def cmd_sql(args) -> int:
    from workbench.data.sqlconsole import run_readonly

    with open_store(args) as store:
        table = run_readonly(store.cursor(), args.query, max_rows=args.max_rows, data_dir=store.project.data_dir)
    rows = table.to_pylist()
    payload = {"columns": table.column_names, "rows": rows, "row_count": len(rows)}
    try:
        if args.json:
            print(json.dumps(payload, default=str, ensure_ascii=False))
        else:
            import pandas as pd

            with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
                print(table.to_pandas().to_string(index=False) if rows else "(no rows)")
    except BrokenPipeError:
        raise
    except (OSError, MemoryError) as exc:  # e.g. a full disk behind a redirect
        raise WorkbenchError(f"could not print the result ({exc}); use --max-rows or a LIMIT") from None
    return 0


def cmd_export(args) -> int:
    from workbench.core.versions import get_version
    from workbench.data.export import export_version

    with open_store(args) as store:
        redact = tuple(t.strip().upper() for t in args.redact.split(",") if t.strip()) if args.redact else None
        if args.redact == "all":  # every personal type; order numbers stay unless named
            from workbench.inspect.pii import PERSONAL as redact
        out = export_version(store, get_version(store, args.name), args.format, args.out, split=args.split,
                             redact=redact, progress=ProgressBar(not args.json))
    text = f"wrote {out['records']:,} records to {out['path']} ({args.format})"
    if "redacted" in out:
        text += "; replaced " + (", ".join(f"{n:,} {t}" for t, n in out["redacted"].items() if n) or "no PII")
    emit(args, out, text)
    return 0


def cmd_quarantine(args) -> int:
    from workbench.data.importer import quarantine

    with open_store(args) as store:
        rows = quarantine(store, args.dataset, limit=args.limit)
    text = "\n".join(f"{r['dataset']} {Path(r['source']).name} line {r['line']}: {r['error']}" for r in rows) \
        or "the quarantine is empty"
    emit(args, {"rows": rows, "count": len(rows)}, text)
    return 0


def cmd_serve(args) -> int:
    from workbench.cli.serve import serve

    return serve(args.project, host=args.host, port=args.port)


def cmd_demo(args) -> int:
    from workbench.data.demo_project import make_demo_project

    info = make_demo_project(args.project, records=args.records)
    if args.no_serve:
        emit(args, info, f"demo project ready at {info['project']}: {info['records']:,} tickets in "
                          f"{info['dataset']}; start it with `workbench serve --project {info['project']}`")
        return 0
    print(f"demo project ready at {info['project']}", file=sys.stderr)
    from workbench.cli.serve import serve

    return serve(info["project"], host=args.host, port=args.port)


# ---------------------------------------------------------------- parser

def _common_options(default) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", metavar="DIR", default=default,
                        help="project folder (default: $WORKBENCH_PROJECT or ./workbench-data)")
    common.add_argument("--debug", action="store_true", default=default, help="show tracebacks for errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    # The options are accepted before and after the command. Only the main parser has defaults: a
    # subparser's default would overwrite what was given before the command (`--project DIR init`).
    common = _common_options(argparse.SUPPRESS)
    reporting = argparse.ArgumentParser(add_help=False)
    reporting.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    parser = argparse.ArgumentParser(prog="workbench", description="Curate, label, balance, train and evaluate "
                                     "fine-tuning datasets.", parents=[_common_options(None)])
    parser.set_defaults(debug=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", parents=[common, reporting], help="create a project folder")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", parents=[common, reporting], help="import a file as a new dataset version")
    p.add_argument("path", help="JSONL, JSON, CSV/TSV, Parquet file or a Hugging Face save_to_disk folder")
    p.add_argument("--dataset", required=True, help="dataset name (a new version if it exists)")
    p.add_argument("--format", default="auto", choices=["auto", *IMPORT_FORMATS],
                   help="auto: from the columns; preference: prompt, chosen, rejected; kto: prompt, completion, label")
    p.add_argument("--text-col", help="classification: the text column")
    p.add_argument("--label-col", help="classification: the label column")
    p.add_argument("--prompt-col", help="prompt-completion: the prompt column (alpaca: instruction)")
    p.add_argument("--completion-col", help="prompt-completion: the completion column (alpaca: output)")
    p.add_argument("--messages-col", help="chat: the column holding each conversation's message list")
    p.add_argument("--input-col", help="alpaca: the input column (optional)")
    p.add_argument("--chosen-col", help="preference: the preferred answer's column")
    p.add_argument("--rejected-col", help="preference: the other answer's column")
    p.add_argument("--on-error", default="fail", choices=["fail", "skip"],
                   help="fail: import nothing if any row is bad; skip: import good rows, quarantine bad ones")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("datasets", parents=[common, reporting], help="list, rename or archive datasets")
    p.add_argument("--versions", action="store_true", help="list every version too")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--archived", action="store_true", help="list only the archived datasets")
    shown.add_argument("--all", action="store_true", help="list the archived datasets too")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"),
                        help="give a dataset a new name; its versions, questions, runs and evaluations follow it")
    action.add_argument("--archive", metavar="NAME",
                        help="leave a dataset out of the lists; its versions stay readable as NAME@N")
    action.add_argument("--unarchive", metavar="NAME", help="list an archived dataset again")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("stats", parents=[common, reporting], help="record count, categories, lengths")
    p.add_argument("name", metavar="NAME[@VERSION]")
    from workbench.cli.inspect import add_token_options  # --tokenizer, --max-length

    add_token_options(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("sql", parents=[common, reporting], help="run a read-only SQL query")
    p.add_argument("query")
    p.add_argument("--max-rows", type=int, default=10_000)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("export", parents=[common, reporting], help="write a version to a file")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.add_argument("--format", required=True, choices=list(EXPORT_FORMATS),
                   help="preference and kto: the pairs of a preference dataset (TRL's DPO and KTO columns)")
    p.add_argument("--split", help="only records whose split column has this value")
    p.add_argument("--redact", nargs="?", const="all", metavar="TYPES",
                   help="replace PII with placeholders such as [EMAIL] in the exported text: every personal type, or a "
                        "list like EMAIL,PHONE (NAME, ADDRESS, EMAIL, PHONE, CARD, IBAN, IP, ACCOUNT; ORDER for "
                        "order and tracking numbers, which are not personal)")
    p.add_argument("--out", required=True, help="output file (a folder for hf)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quarantine", parents=[common, reporting], help="rows rejected by --on-error skip")
    p.add_argument("dataset", nargs="?")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(func=cmd_quarantine)

    for name, helptext in (("serve", "start the app"), ("demo", "make a demo project and serve it")):
        p = sub.add_parser(name, parents=[common, reporting], help=helptext)
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
        p.add_argument("--port", type=int, default=8501)
        if name == "demo":
            p.add_argument("--no-serve", action="store_true", help="only make the project")
            p.add_argument("--records", type=int, default=2000, help="how many synthetic tickets")
        p.set_defaults(func=cmd_serve if name == "serve" else cmd_demo)

    # Each area of the product keeps its commands beside its code: workbench/cli/<area>.py has
    # register(sub, common, reporting) and uses the shared helpers of this module. Listed here, not
    # discovered, so a renamed module fails loudly instead of losing its commands.
    from workbench.cli import (
        agreement,
        annotations,
        balance,
        chat,
        dedup,
        evaluate,
        export_model,
        inspect,
        judge,
        label_errors,
        review,
        serve_model,
        sweep,
        train,
    )

    for area in (inspect, dedup, label_errors, annotations, agreement, balance, train, evaluate, review, chat, judge,
                 serve_model, export_model, sweep):
        area.register(sub, common, reporting)
    return parser



def main(argv: list[str] | None = None) -> int:
    from trainers.quiet import quiet_libraries

    quiet_libraries()  # no library progress bars or FutureWarnings between our own lines
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    common.absolute_paths(args)
    forwarded = _forward_if_served(args, argv)
    if forwarded is not None:
        return forwarded
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(stdout), SafeStream(stderr)
    try:
        return _run(args)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _forward_if_served(args, argv: list[str]) -> int | None:
    """While `workbench serve` holds this project, hand the command to it (cli/remote.py)."""
    from workbench.cli import remote
    from workbench.core.project import project_dir

    if args.command in remote.NOT_FORWARDED or common.borrowed_store() is not None:
        return None
    root = project_dir(args.project)
    info = remote.served(root)
    if info is None:
        return None
    stdin_text = sys.stdin.readline() if getattr(args, "password_stdin", False) else None
    return remote.forward(info, [*argv, "--project", str(root)], stdin_text=stdin_text)


def _run(args) -> int:
    try:
        return args.func(args)
    except WorkbenchError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug of ours: say so briefly, show details only with --debug
        if args.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
