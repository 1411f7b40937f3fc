"""A chat column written as JSON text (the only way a CSV cell holds a message list; some JSON-lines files
double-encode it too) imports as the same chat records as the list itself; text that is not a JSON list, or is
nested thousands deep, is a bad row naming its line and field, never a traceback."""

import csv
import json
import time

import pytest

from tests.conftest import write_jsonl
from tests.data.test_import_sharegpt import SHAREGPT, as_openai, records
from workbench.cli.main import main as cli
from workbench.data.importer import ImportRejected, import_file


def write_csv(path, rows: list[dict], column: str) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:  # the csv module's own quoting, as pandas writes it
        w = csv.writer(f)
        w.writerow(["id", column])
        for r in rows:
            w.writerow([r["id"], json.dumps(r[column], ensure_ascii=False)])
    return str(path)


def test_a_csv_of_json_messages_imports_as_the_same_chats_as_json_lines(store, tmp_path):
    openai = as_openai(SHAREGPT)
    as_lists = import_file(store, write_jsonl(tmp_path / "openai.jsonl", openai), "lists").version
    from_csv = import_file(store, write_csv(tmp_path / "openai.csv", openai, "messages"), "csv").version
    from_share = import_file(store, write_csv(tmp_path / "share.csv", SHAREGPT, "conversations"), "share").version
    doubled = [{**r, "messages": json.dumps(r["messages"])} for r in openai]  # a JSON string inside JSON lines
    from_doubled = import_file(store, write_jsonl(tmp_path / "doubled.jsonl", doubled), "doubled").version
    assert from_csv.format == from_share.format == from_doubled.format == "chat"
    assert records(store, "csv") == records(store, "share") == records(store, "doubled") == records(store, "lists")
    assert from_csv.content_hash == from_share.content_hash == as_lists.content_hash


def test_text_that_is_not_a_message_list_names_its_line_and_field(store, tmp_path, capsys):
    deep = "[" * 10_000 + "]" * 10_000  # an attacker's cell: json.loads would recurse 10,000 levels
    rows = [{"id": "ok", "messages": as_openai(SHAREGPT)[0]["messages"]},
            {"id": "cut", "messages": '[{"role": "user", "content": "hi"}, {"role": "assis'},
            {"id": "obj", "messages": '[{"role": "user", "content": "hi"}] trailing'},
            {"id": "deep", "messages": deep}]
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "messages"])
        w.writerow([rows[0]["id"], json.dumps(rows[0]["messages"])])
        for r in rows[1:]:
            w.writerow([r["id"], r["messages"]])
    started = time.monotonic()
    with pytest.raises(ImportRejected) as info:
        import_file(store, str(path), "bad")
    assert time.monotonic() - started < 30
    errors = info.value.result.errors
    assert [(e["line"], e["field"]) for e in errors] == [(3, "messages"), (4, "messages"), (5, "messages")]
    assert "`messages` is text that is not valid JSON" in errors[0]["error"]
    assert "`messages` is text that is not valid JSON" in errors[1]["error"]
    assert "`messages` is JSON text nested more than 32 levels deep" in errors[2]["error"]
    # the command line: the message, no traceback
    assert cli(["--project", str(tmp_path / "p"), "import", str(path), "--dataset", "bad"]) != 0
    err = capsys.readouterr().err
    assert "line 3: `messages` is text that is not valid JSON" in err and "Traceback" not in err


def test_every_column_flag_an_error_names_exists_on_the_command_line(tmp_path, capsys):
    """The errors say 'Name it with --messages-col' (or --chosen-col, --rejected-col, --input-col): those flags
    used to be missing from `workbench import`, so the advice ended in argparse's 'unrecognized arguments'."""
    project = str(tmp_path / "p")
    chats = str(write_jsonl(tmp_path / "dialogs.jsonl", [{"dialog": m["messages"]} for m in as_openai(SHAREGPT)]))
    assert cli(["--project", project, "import", chats, "--dataset", "d", "--format", "chat"]) != 0
    assert "Name it with --messages-col" in capsys.readouterr().err
    assert cli(["--project", project, "import", chats, "--dataset", "d", "--messages-col", "dialog", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "chat"
    pairs = str(write_jsonl(tmp_path / "pairs.jsonl", [{"q": "Where is ORD-1?", "good": "It ships today.", "bad": "No."}]))
    assert cli(["--project", project, "import", pairs, "--dataset", "pr", "--format", "preference"]) != 0
    assert "Name it with --prompt-col" in capsys.readouterr().err
    assert cli(["--project", project, "import", pairs, "--dataset", "pr", "--prompt-col", "q", "--chosen-col", "good",
                "--rejected-col", "bad", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "preference"
    alpaca = str(write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Say hi", "context": "to Ana", "output": "Hi Ana"}]))
    assert cli(["--project", project, "import", alpaca, "--dataset", "al", "--input-col", "context", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "alpaca"
