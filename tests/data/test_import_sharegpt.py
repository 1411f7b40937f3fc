"""ShareGPT's conversations ({from, value} lists under `conversations`, as many Hugging Face datasets hold
them) import as chat records: the same canonical records as the conversation written in OpenAI's
{role, content} form, from JSON lines and from a Parquet file written by `datasets`; a bad turn names its
line and its field in the file's own words."""

import datasets
import pytest

from tests.conftest import write_jsonl
from workbench.core.versions import get_version
from workbench.data.export import export_version
from workbench.data.importer import ImportRejected, import_file

SPEAKER = {"system": "system", "human": "user", "gpt": "assistant"}  # ShareGPT's names -> OpenAI's roles

SHAREGPT = [
    {"id": "a1", "conversations": [{"from": "human", "value": "My card was declined twice today."},
                                   {"from": "gpt", "value": "Sorry about that. Which shop, and which card?"}]},
    {"id": "a2", "conversations": [{"from": "system", "value": "You are a bank's support agent."},
                                   {"from": "human", "value": "How do I order a new PIN?"},
                                   {"from": "gpt", "value": "In the app: Cards, then PIN."},
                                   {"from": "human", "value": "And if I have no app?"},
                                   {"from": "gpt", "value": "Call us; we post it within 5 days."}]},
    {"id": "a3", "conversations": [{"from": "human", "value": "Close my account."},
                                   {"from": "gpt", "value": "Done; the balance goes to your linked account."}]},
]


def as_openai(rows: list[dict]) -> list[dict]:
    return [{"id": r["id"], "messages": [{"role": SPEAKER[m["from"]], "content": m["value"]}
                                         for m in r["conversations"]]} for r in rows]


def records(store, ref: str) -> list[tuple]:
    v = get_version(store, ref)
    return store.cursor().execute(f"SELECT prompt, completion, system, messages, id FROM {v.table_name} "
                                  "ORDER BY _row").fetchall()


def test_sharegpt_lines_import_as_the_same_chats_as_openai_messages(store, tmp_path):
    share = import_file(store, write_jsonl(tmp_path / "share.jsonl", SHAREGPT), "share")
    openai = import_file(store, write_jsonl(tmp_path / "openai.jsonl", as_openai(SHAREGPT)), "openai")
    assert share.format == openai.format == "chat" and share.imported == 3
    assert records(store, "share") == records(store, "openai")
    first, second = records(store, "share")[:2]
    assert first[:3] == ("My card was declined twice today.", "Sorry about that. Which shop, and which card?", None)
    assert second[:3] == ("And if I have no app?", "Call us; we post it within 5 days.", "You are a bank's support agent.")
    assert share.version.recipe["mapping"] == {"messages": "conversations"}


def test_a_parquet_file_written_by_datasets_imports_too(store, tmp_path):
    path = tmp_path / "share.parquet"
    datasets.Dataset.from_list(SHAREGPT).to_parquet(str(path))
    import_file(store, path, "sharepq")
    import_file(store, write_jsonl(tmp_path / "openai.jsonl", as_openai(SHAREGPT)), "openai")
    assert records(store, "sharepq") == records(store, "openai")


def test_an_export_of_a_sharegpt_import_reimports_to_the_same_records(store, tmp_path):
    v = import_file(store, write_jsonl(tmp_path / "share.jsonl", SHAREGPT), "share").version
    out = export_version(store, v, "chat", tmp_path / "out.jsonl")
    again = import_file(store, out["path"], "again").version
    assert again.content_hash == v.content_hash


BAD = [
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "tool", "value": "{}"}]},
     "conversations[1].from", "`conversations[1].from` is 'tool'; expected human, gpt or system"),
    ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "hello"}]},
     "conversations[0].value", "`conversations[0].value` is missing; expected text"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "  "}]},
     "conversations[1].value", "`conversations[1].value` is empty"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "system", "value": "late"}]},
     "conversations[1].from", "only the first message may be one"),
    ({"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "bye"}]},
     "conversations", "does not end with an assistant message"),
    ({"conversations": "human: hi"}, "conversations", "`conversations` is text; expected a list"),
]


def test_a_bad_turn_names_its_line_and_field_in_the_files_words(store, tmp_path):
    rows = [SHAREGPT[0]] + [row for row, _, _ in BAD]
    with pytest.raises(ImportRejected) as info:
        import_file(store, write_jsonl(tmp_path / "bad.jsonl", rows), "bad")
    errors = info.value.result.errors
    assert [(e["line"], e["field"]) for e in errors] == [(i + 2, field) for i, (_, field, _) in enumerate(BAD)]
    for e, (_, _, message) in zip(errors, BAD):
        assert message in e["error"], e
    assert "line 2: `conversations[1].from` is 'tool'" in str(info.value)
