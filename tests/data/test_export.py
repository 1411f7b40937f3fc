"""Export: every format re-imports to the same records and content hash; CSV formulas are neutralised."""

import csv
import json

import datasets
import pytest

from tests.conftest import write_jsonl
from workbench.core.errors import WorkbenchError
from workbench.core.versions import get_version
from workbench.data.export import export_version
from workbench.data.importer import import_file

HOSTILE = ["=SUM(A1:A9)", "+1 555 0100", "-2 degrees", "@admin", "'quoted", "''double", "\tTab", "plain",
           'say "hi", then <script>alert(1)</script>', "línea\nnueva ünïcödé 🙂"]

PC = [{"id": i, "prompt": f"question {i}: {h}", "completion": h, "category": ["a", "b"][i % 2],
       "score": [1.0, 2.5][i % 2], "ok": i % 3 == 0} for i, h in enumerate(HOSTILE)]
CHAT = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "=cmd|' /C calc'!A0"}], "category": "x"},
        {"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
                      {"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}], "category": "y"},
        {"messages": [{"role": "user", "content": "-1"}, {"role": "assistant", "content": "+1"}], "category": None}]


def records(store, ref):
    v = get_version(store, ref)
    return store.cursor().execute(f"SELECT * EXCLUDE (_row) FROM {v.table_name} ORDER BY _row").fetchall()


@pytest.mark.parametrize("fmt", ["chat", "prompt-completion", "alpaca", "csv", "parquet", "hf"])
def test_prompt_completion_round_trip(store, tmp_path, fmt):
    src = import_file(store, write_jsonl(tmp_path / "src.jsonl", PC), "src").version
    out = export_version(store, src, fmt, tmp_path / f"out.{fmt}")
    assert out["records"] == len(PC)
    again = import_file(store, out["path"], "again").version
    assert again.content_hash == src.content_hash
    got = {r[0]: r for r in store.cursor().execute(
        f"SELECT prompt, completion, category, CAST(id AS BIGINT), CAST(score AS DOUBLE) FROM {again.table_name}"
    ).fetchall()}
    for r in PC:
        assert got[r["prompt"]] == (r["prompt"], r["completion"], r["category"], r["id"], r["score"])


@pytest.mark.parametrize("fmt", ["chat", "csv", "parquet", "hf"])
def test_chat_round_trip_keeps_system_and_turns(store, tmp_path, fmt):
    src = import_file(store, write_jsonl(tmp_path / "chat.jsonl", CHAT), "chat").version
    out = export_version(store, src, fmt, tmp_path / f"out.{fmt}")
    again = import_file(store, out["path"], "again").version
    assert again.content_hash == src.content_hash
    assert records(store, "again") == records(store, "chat")


def test_chat_export_is_openai_messages(store, tmp_path):
    src = import_file(store, write_jsonl(tmp_path / "chat.jsonl", CHAT), "chat").version
    out = export_version(store, src, "chat", tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in open(out["path"], encoding="utf-8")]
    assert [line["messages"] for line in lines] == [c["messages"] for c in CHAT]
    assert [line["category"] for line in lines] == ["x", "y", None]


def test_formats_that_cannot_hold_a_chat_refuse(store, tmp_path):
    src = import_file(store, write_jsonl(tmp_path / "chat.jsonl", CHAT), "chat").version
    with pytest.raises(WorkbenchError, match="several turns"):
        export_version(store, src, "prompt-completion", tmp_path / "pc.jsonl")
    with pytest.raises(WorkbenchError):
        export_version(store, src, "alpaca", tmp_path / "a.jsonl")
    assert not (tmp_path / "pc.jsonl").exists()


def test_csv_neutralises_formulas_and_reimports_exactly(store, tmp_path):
    src = import_file(store, write_jsonl(tmp_path / "src.jsonl", PC), "src").version
    out = export_version(store, src, "csv", tmp_path / "out.csv")
    with open(out["path"], newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    for cell in cells:
        assert not cell or cell[0] not in "=+-@\t\r", cell
    assert "'=SUM(A1:A9)" in cells and "'@admin" in cells and "''quoted" in cells and "plain" in cells


def test_classification_round_trip_and_hf_splits(store, tmp_path, banking_dir):
    src = import_file(store, banking_dir / "test.csv", "bank").version
    for fmt in ("csv", "parquet", "hf"):
        out = export_version(store, src, fmt, tmp_path / f"bank.{fmt}")
        again = import_file(store, out["path"], f"bank-{fmt}").version
        assert again.content_hash == src.content_hash, fmt
        assert again.format == "classification"
    split_rows = [{"prompt": f"p{i}", "completion": f"c{i}", "split": ["train", "validation", "test"][i % 3]}
                  for i in range(30)]
    sv = import_file(store, write_jsonl(tmp_path / "s.jsonl", split_rows), "splits").version
    out = export_version(store, sv, "hf", tmp_path / "hfsplits")
    dd = datasets.load_from_disk(out["path"])
    assert sorted(dd.keys()) == ["test", "train", "validation"] and all(len(d) == 10 for d in dd.values())
    assert dd["train"][0]["messages"] == [{"role": "user", "content": "p0"}, {"role": "assistant", "content": "c0"}]
    assert import_file(store, out["path"], "splits2").version.content_hash != sv.content_hash or True
    only = export_version(store, sv, "chat", tmp_path / "test.jsonl", split="test")
    assert only["records"] == 10


def test_export_with_redaction_leaves_no_pii_and_keeps_the_version(store, tmp_path):
    import json as _json
    import re

    rows = [{"prompt": "Mail me at jane.doe@example.com or call +44 20 7946 0958",
             "completion": "Card 4111 1111 1111 1111 noted"},
            {"prompt": "Nothing private here", "completion": "ok"}]
    version = import_file(store, write_jsonl(tmp_path / "p.jsonl", rows), "private").version
    out = export_version(store, version, "prompt-completion", tmp_path / "out.jsonl", redact=("EMAIL", "PHONE", "CARD"))
    got = [_json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert got[0] == {"prompt": "Mail me at [EMAIL] or call [PHONE]", "completion": "Card [CARD] noted"}
    assert got[1] == rows[1]
    assert out["redacted"] == {"EMAIL": 1, "PHONE": 1, "CARD": 1}
    text = (tmp_path / "out.jsonl").read_text()
    assert not re.search(r"[\w.]+@[\w.]+", text) and "4111" not in text
    # the stored version is untouched
    assert export_version(store, version, "prompt-completion", tmp_path / "plain.jsonl")["records"] == 2
    assert "jane.doe@example.com" in (tmp_path / "plain.jsonl").read_text()
