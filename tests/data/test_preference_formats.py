"""The preference formats (TRL's prompt/chosen/rejected for DPO, prompt/completion/label for KTO): detected on
import, bad rows named by line and field, and every export re-imports to the same content hash."""

import json

import pytest

from tests.conftest import write_jsonl
from workbench.core.errors import WorkbenchError
from workbench.core.versions import get_version
from workbench.data.export import export_version
from workbench.data.importer import ImportRejected, import_file

PAIRS = [
    {"prompt": "Where is order ORD-1234?", "chosen": "Order ORD-1234 ships today.", "rejected": "No idea.",
     "id": 1},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund please"}],
     "chosen": [{"role": "assistant", "content": "Your refund is on its way."}],
     "rejected": [{"role": "assistant", "content": "=SUM(A1) no"}], "id": 2},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": "Card blocked"}],
     "chosen": "I have unblocked your card.", "rejected": "Try again later.", "id": 3},
]
UNPAIRED = [
    {"prompt": "Where is order ORD-9?", "completion": "Order ORD-9 left the depot.", "label": True},
    {"prompt": "Where is order ORD-9?", "completion": "Dunno.", "label": False},
    {"prompt": [{"role": "user", "content": "Cancel my plan"}],
     "completion": [{"role": "assistant", "content": "Cancelled."}], "label": True},
]


def _rows(store, version):
    return store.cursor().execute(f"SELECT * FROM {version.table_name}").fetchall()


def test_pairs_import_as_preference_and_every_export_reimports_to_the_same_hash(store, tmp_path):
    result = import_file(store, write_jsonl(tmp_path / "pairs.jsonl", PAIRS), "pairs")
    assert result.format == "preference" and result.imported == 3
    version = result.version
    cur = store.cursor()
    got = cur.execute(f"SELECT prompt, completion, rejected, system, messages FROM {version.table_name} "
                      "ORDER BY id").fetchall()
    assert got[0] == ("Where is order ORD-1234?", "Order ORD-1234 ships today.", "No idea.", None, None)
    assert got[1][:4] == ("Refund please", "Your refund is on its way.", "=SUM(A1) no", "Be brief.")
    assert json.loads(got[2][4]) == PAIRS[2]["prompt"]  # a multi-turn prompt keeps its turns
    for fmt, name in [("preference", "p.jsonl"), ("chat", "c.jsonl"), ("csv", "p.csv"), ("parquet", "p.parquet"),
                      ("hf", "hf")]:
        out = export_version(store, version, fmt, tmp_path / name)
        again = import_file(store, out["path"], f"again-{fmt}")
        assert again.format == "preference", fmt
        assert again.version.content_hash == version.content_hash, fmt


def test_the_chat_export_is_trls_conversational_form(store, tmp_path):
    from trl.data_utils import is_conversational

    version = import_file(store, write_jsonl(tmp_path / "pairs.jsonl", PAIRS), "pairs").version
    out = export_version(store, version, "chat", tmp_path / "c.jsonl")
    records = [json.loads(line) for line in open(out["path"], encoding="utf-8")]
    assert all(is_conversational(r) for r in records)
    assert records[1]["prompt"] == PAIRS[1]["prompt"] and records[1]["chosen"] == PAIRS[1]["chosen"]
    assert records[2]["prompt"] == PAIRS[2]["prompt"]
    plain = [json.loads(line) for line in open(export_version(store, version, "preference", tmp_path / "p.jsonl")
                                               ["path"], encoding="utf-8")]
    assert plain[0] == {"prompt": PAIRS[0]["prompt"], "chosen": PAIRS[0]["chosen"], "rejected": PAIRS[0]["rejected"],
                        "system": None, "messages": None, "id": 1}
    with pytest.raises(WorkbenchError, match="preference dataset; export it as"):
        export_version(store, version, "alpaca", tmp_path / "a.jsonl")


def test_unpaired_examples_import_as_kto_with_true_false_labels(store, tmp_path):
    result = import_file(store, write_jsonl(tmp_path / "kto.jsonl", UNPAIRED), "kto")
    assert result.format == "kto"
    labels = [r[0] for r in store.cursor().execute(f"SELECT label FROM {result.version.table_name}").fetchall()]
    assert labels == [True, False, True]
    csv = tmp_path / "kto.csv"
    csv.write_text("prompt,completion,label\nhi,hello,true\nhi,go away,FALSE\n", encoding="utf-8")
    from_csv = import_file(store, csv, "kto-csv")
    assert from_csv.format == "kto"
    assert [r[0] for r in store.cursor().execute(f"SELECT label FROM {from_csv.version.table_name}").fetchall()] \
        == [True, False]
    for fmt, name in [("kto", "k.jsonl"), ("chat", "k-chat.jsonl"), ("csv", "k.csv"), ("hf", "k-hf")]:
        again = import_file(store, export_version(store, result.version, fmt, tmp_path / name)["path"], f"k-{fmt}")
        assert (again.format, again.version.content_hash) == ("kto", result.version.content_hash), fmt
    with pytest.raises(WorkbenchError, match="kto dataset; export it as kto, chat"):
        export_version(store, get_version(store, "kto"), "preference", tmp_path / "x.jsonl")
    chat = import_file(store, write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]), "chat").version
    with pytest.raises(WorkbenchError, match="chat dataset, not kto"):
        export_version(store, chat, "kto", tmp_path / "y.jsonl")


def test_bad_rows_are_named_by_line_and_field(store, tmp_path):
    rows = [PAIRS[0],
            {"prompt": "a", "chosen": [{"role": "user", "content": "x"}], "rejected": "b"},
            {"prompt": "a", "chosen": "c"},
            {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "c",
             "rejected": "d"},
            {"prompt": "a", "chosen": "  ", "rejected": "d"}]
    with pytest.raises(ImportRejected) as err:
        import_file(store, write_jsonl(tmp_path / "bad.jsonl", rows), "bad")
    errors = {(e["line"], e["field"]): e["error"] for e in err.value.result.errors}
    assert errors == {
        (2, "chosen[0].role"): "`chosen[0].role` is 'user'; expected assistant",
        (3, "rejected"): "`rejected` is missing",
        (4, "prompt"): "`prompt` does not end with a user message",
        (5, "chosen"): "`chosen` is empty",
    }
    skipped = import_file(store, tmp_path / "bad.jsonl", "bad", on_error="skip")
    assert (skipped.imported, skipped.skipped) == (1, 4)
    kto = write_jsonl(tmp_path / "badkto.jsonl", [UNPAIRED[0], {"prompt": "a", "completion": "b", "label": "billing"}])
    with pytest.raises(ImportRejected) as err:
        import_file(store, kto, "badkto")
    first = err.value.result.errors[0]
    assert (first["line"], first["field"]) == (2, "label") and "expected true or false" in first["error"]
