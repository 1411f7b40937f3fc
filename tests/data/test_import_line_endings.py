"""Import makes CRLF and lone CR line endings LF in the text a model learns from, records how many records it
changed in the version's recipe, says so (result, --json, CLI line), and leaves clean files exactly as before."""

import csv
import json
import re

import pytest

from tests.conftest import write_jsonl
from workbench.cli.main import main
from workbench.core.versions import get_version
from workbench.data.export import export_version
from workbench.data.importer import import_file

CLEAN = [{"prompt": "My card was charged twice.\nPlease help.", "completion": "Sorry about that.\n\nI have refunded it.",
          "category": "billing"},
         {"prompt": "Where is order ORD-1?", "completion": "It ships today.", "category": "shipping"}]
# The content hash of CLEAN imported by the code before line endings were normalised (HEAD 394e558): clean data
# must keep its hash.
CLEAN_HASH = "67bb6897061fad60f7fdbc56e5be9bc8c2a6f17607323aa90bab9fb3788cac19"


def windows(text: str) -> str:
    return text.replace("\n", "\r\n")


def lf(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


def write_csv(path, rows, terminator: str):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator=terminator)
        w.writeheader()
        w.writerows(rows)
    return path


def stored(store, ref, cols="prompt, completion, system, messages, category"):
    v = get_version(store, ref)
    cur = store.cursor().execute(f"SELECT {cols} FROM {v.table_name} ORDER BY _row")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def no_cr(rows) -> bool:
    return not any("\r" in v for r in rows for v in r.values() if isinstance(v, str))


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_clean_file_keeps_its_hash_and_reports_nothing(store, tmp_path, kind):
    path = write_csv(tmp_path / "clean.csv", CLEAN, "\n") if kind == "csv" else \
        write_jsonl(tmp_path / "clean.jsonl", CLEAN)
    r = import_file(store, path, "clean")
    assert r.version.content_hash == CLEAN_HASH
    assert r.line_endings_normalised == 0 and r.to_json()["line_endings_normalised"] == 0
    assert r.version.recipe["line_endings"] == {"normalised": 0, "by_field": {}}


def test_crlf_csv_rows_and_quoted_fields_become_lf(store, tmp_path):
    # CRLF in the prompt, lone CRs (old Mac files) in the completion, the second record clean
    rows = [{**CLEAN[0], "prompt": windows(CLEAN[0]["prompt"]), "completion": CLEAN[0]["completion"].replace("\n", "\r")},
            CLEAN[1]]
    path = write_csv(tmp_path / "crlf.csv", rows, "\r\n")
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == 3 + 1 and b'"My card was charged twice.\r\nPlease help."' in raw  # rows + quoted
    with open(path, newline="", encoding="utf-8") as f:
        reference = list(csv.DictReader(f))  # the standard library reads the CRs back, as a model would see them
    assert [sum("\r" in v for v in r.values()) for r in reference] == [2, 0]

    r = import_file(store, path, "crlf")
    got = stored(store, "crlf", "prompt, completion, category")
    assert no_cr(got)
    assert got == [{"prompt": lf(x["prompt"]), "completion": lf(x["completion"]), "category": x["category"]}
                   for x in reference]
    assert r.line_endings_normalised == 1 and r.to_json()["line_endings_normalised"] == 1  # records, not fields
    assert r.version.recipe["line_endings"] == {"normalised": 1, "by_field": {"prompt": 1, "completion": 1}}
    assert r.version.content_hash == CLEAN_HASH  # after normalising, the same records as the clean file


def test_jsonl_strings_chats_and_system_messages(store, tmp_path):
    chat = [{"messages": [{"role": "system", "content": "Be brief.\r\nBe kind."},
                          {"role": "user", "content": "Hi\r\nthere"}, {"role": "assistant", "content": "Hello"},
                          {"role": "user", "content": "Card?"}, {"role": "assistant", "content": "Blocked.\r"}]},
            {"messages": [{"role": "user", "content": "No CR here"}, {"role": "assistant", "content": "Fine"}]}]
    path = tmp_path / "chat.jsonl"
    # CRLF line terminators too; the strings hold CRs as JSON escapes, as a Windows export writes them
    path.write_bytes(b"".join(json.dumps(c).encode() + b"\r\n" for c in chat))
    assert b"\\r\\n" in path.read_bytes()
    r = import_file(store, path, "chat")
    assert r.format == "chat" and r.line_endings_normalised == 1
    assert r.version.recipe["line_endings"] == {"normalised": 1, "by_field": {"completion": 1, "system": 1,
                                                                              "messages": 1}}
    got = stored(store, "chat", "prompt, completion, system, messages")
    assert no_cr(got) and "\\r" not in got[0]["messages"]
    assert got[0]["system"] == "Be brief.\nBe kind." and got[0]["completion"] == "Blocked.\n"
    assert json.loads(got[0]["messages"]) == [{**m, "content": lf(m["content"])} for m in chat[0]["messages"]]
    assert got[1] == {"prompt": "No CR here", "completion": "Fine", "system": None, "messages": None}


def test_alpaca_and_classification_text(store, tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Sum up\r\nthis", "input": "Line 1\r\nLine 2",
                                                 "output": "Short."}])
    r = import_file(store, alpaca, "alp")
    assert r.format == "alpaca" and r.line_endings_normalised == 1
    assert stored(store, "alp", "prompt")[0]["prompt"] == "Sum up\nthis\n\nLine 1\nLine 2"
    cls = write_csv(tmp_path / "c.csv", [{"text": "lost\r\nmy card", "category": "lost_card"},
                                         {"text": "new pin", "category": "pin"}], "\r\n")
    r = import_file(store, cls, "cls")
    assert r.format == "classification" and r.line_endings_normalised == 1
    assert stored(store, "cls", "prompt, category") == [{"prompt": "lost\nmy card", "category": "lost_card"},
                                                        {"prompt": "new pin", "category": "pin"}]


def test_the_exact_path_normalises_too(store, tmp_path):
    """A bad row sends the import down the row-by-row path; skip keeps the good rows, normalised and counted."""
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"prompt": "a\r\nb", "completion": "c"}) + "\n{broken\n"
                    + json.dumps({"prompt": "d", "completion": "e\r"}) + "\n", encoding="utf-8")
    r = import_file(store, path, "mixed", on_error="skip")
    assert (r.imported, r.skipped, r.line_endings_normalised) == (2, 1, 2)
    assert stored(store, "mixed", "prompt, completion") == [{"prompt": "a\nb", "completion": "c"},
                                                            {"prompt": "d", "completion": "e\n"}]
    assert r.version.recipe["line_endings"]["normalised"] == 2


@pytest.mark.parametrize("fmt", ["prompt-completion", "chat", "csv", "parquet"])
def test_a_normalised_version_exports_and_reimports_unchanged(store, tmp_path, fmt):
    rows = [{"prompt": "Hi\r\nthere", "completion": "Hello\r\nagain", "category": "greet"},
            {"prompt": "Refund?", "completion": "Done.", "category": "refund"}]
    first = import_file(store, write_jsonl(tmp_path / "in.jsonl", rows), "rt")
    assert first.line_endings_normalised == 1
    out = tmp_path / f"out.{'csv' if fmt == 'csv' else 'parquet' if fmt == 'parquet' else 'jsonl'}"
    export_version(store, first.version, fmt, out)
    if fmt in ("prompt-completion", "chat"):
        assert b"\\r" not in out.read_bytes()
    again = import_file(store, out, "rt")
    assert again.line_endings_normalised == 0
    assert again.version.content_hash == first.version.content_hash
    assert no_cr(stored(store, "rt@2", "prompt, completion, category"))


def test_the_cli_says_so(capsys, tmp_path):
    proj = str(tmp_path / "p")
    path = write_csv(tmp_path / "crlf.csv", [{"prompt": "a\r\nb", "completion": "c\r\nd"},
                                             {"prompt": "e", "completion": "f"}], "\r\n")
    assert main(["import", str(path), "--dataset", "d", "--project", proj, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["line_endings_normalised"] == 1
    assert main(["import", str(path), "--dataset", "d", "--project", proj]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("imported 2 records into d@2") and "line endings made LF (\\n) in 1 record " in line


def test_only_real_carriage_returns_count():
    """A CR outside a sliced batch's values, or a backslash and an r typed in a message, is no line ending."""
    import pyarrow as pa

    from workbench.core.batches import line_ending_fields, normalise_line_endings

    whole = pa.table({"prompt": ["a\r\nb", "c", "d"], "completion": ["x", "y", "z"]})
    part = whole.slice(1)  # its data buffer still holds the first value's CR
    assert normalise_line_endings(part, line_ending_fields("prompt-completion")) == (part, {}, 0)
    typed = json.dumps([{"role": "user", "content": "open C:\\reports"}, {"role": "assistant", "content": "ok"}])
    table = pa.table({"prompt": ["open C:\\reports"], "messages": [typed]})
    assert normalise_line_endings(table, line_ending_fields("chat")) == (table, {}, 0)
