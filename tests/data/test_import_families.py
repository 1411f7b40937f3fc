"""Format detection by column-name families (instruction/response, question/answer, utterance/intent, ...),
a clear error naming the candidates when two columns could play one part, and the column listing and guesses
the app's column mapping starts from."""

import csv
import json

import datasets
import pandas as pd
import pytest

from tests.conftest import write_jsonl
from workbench.core.errors import WorkbenchError
from workbench.core.formats import FormatUnclear, guess_mapping, resolve_mapping
from workbench.core.versions import get_version
from workbench.data.importer import column_choices, import_file
from workbench.data.readers import list_columns


def stored(store, ref, cols):
    v = get_version(store, ref)
    return store.cursor().execute(f"SELECT {cols} FROM {v.table_name} ORDER BY _row").fetchall()


def records(columns: list[str], n: int = 3) -> list[dict]:
    """n records whose every value says its column and row, so a wrong mapping shows."""
    return [{c: f"{c} {i}" for c in columns} for i in range(n)]


PAIRS = [  # columns in the file, then the prompt and completion columns expected
    (["flags", "instruction", "category", "intent", "response"], "instruction", "response"),  # Bitext's shape
    (["question", "answer"], "question", "answer"),
    (["query", "reply", "id"], "query", "reply"),
    (["request", "response"], "request", "response"),
    (["input", "output"], "input", "output"),
    (["user", "assistant"], "user", "assistant"),
    (["customer", "agent_response"], "customer", "agent_response"),
    (["ticket", "resolution", "priority"], "ticket", "resolution"),
    (["Instruction", "Response"], "Instruction", "Response"),  # a spreadsheet's capitals
    (["Customer Message", "Agent Response"], "Customer Message", "Agent Response"),
    (["prompt", "question", "completion"], "prompt", "completion"),  # the canonical name wins over the family
    (["customer", "question", "answer"], "question", "answer"),  # a stronger name wins over a weaker one
]


@pytest.mark.parametrize("columns, prompt, completion", PAIRS, ids=["-".join(p[0]) for p in PAIRS])
def test_prompt_and_answer_families(store, tmp_path, columns, prompt, completion):
    rows = records(columns)
    r = import_file(store, write_jsonl(tmp_path / "f.jsonl", rows), "f")
    assert r.format == "prompt-completion"
    assert stored(store, "f", "prompt, completion") == [(x[prompt], x[completion]) for x in rows]
    extras = [c for c in columns if c not in (prompt, completion)]
    if extras:  # the other columns are kept under their names
        quoted = ", ".join(f'"{c}"' for c in extras)
        assert stored(store, "f", quoted) == [tuple(x[c] for c in extras) for x in rows]
    assert r.version.recipe["mapping"] == {"prompt": prompt, "completion": completion}
    assert r.version.info["source_columns"] == {"prompt": prompt, "completion": completion}


def test_alpaca_stays_alpaca_and_takes_a_response_column(store, tmp_path):
    rows = [{"instruction": "Summarise", "input": "Long text", "output": "Short"}]
    r = import_file(store, write_jsonl(tmp_path / "a.jsonl", rows), "a")
    assert r.format == "alpaca" and stored(store, "a", "prompt, completion") == [("Summarise\n\nLong text", "Short")]
    rows = [{"instruction": "Translate", "input": "Hallo", "response": "Hello"}]
    r = import_file(store, write_jsonl(tmp_path / "b.jsonl", rows), "b")
    assert r.format == "alpaca" and stored(store, "b", "prompt, completion") == [("Translate\n\nHallo", "Hello")]
    assert r.version.recipe["mapping"] == {"instruction": "instruction", "input": "input", "output": "response"}


CLASSES = [
    (["utterance", "intent"], "utterance", "intent"),
    (["query", "category"], "query", "category"),
    (["sentence", "label", "id"], "sentence", "label"),
    (["text", "topic"], "text", "topic"),
    (["body", "sentiment"], "body", "sentiment"),
    (["text", "label", "category"], "text", "label"),  # the canonical name wins
]


@pytest.mark.parametrize("columns, text, label", CLASSES, ids=["-".join(c[0]) for c in CLASSES])
def test_text_and_label_families(store, tmp_path, columns, text, label):
    path = tmp_path / "c.csv"
    rows = records(columns)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    r = import_file(store, path, "c")
    assert r.format == "classification" and r.version.label_column == label
    assert stored(store, "c", f"prompt, completion, {label}") == [(x[text], None, x[label]) for x in rows]
    assert r.version.recipe["mapping"] == {"text": text, "label": label}


def test_banking77_stays_classification(store, banking_dir):
    path = banking_dir / "test.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reference = list(csv.DictReader(f))
    r = import_file(store, path, "banking")
    assert r.format == "classification" and r.imported == len(reference) == 3080
    assert r.version.recipe["mapping"] == r.version.info["source_columns"] == {"text": "text", "label": "category"}
    assert stored(store, "banking", "prompt, category")[:50] == [(x["text"], x["category"]) for x in reference[:50]]
    assert column_choices(path).format == "classification"


@pytest.mark.parametrize("columns, role, candidates", [
    (["question", "query", "answer"], "prompt", "question, query"),
    (["instruction", "response", "reply"], "completion", "response, reply"),
    (["text", "category", "intent"], "label", "category, intent"),
])
def test_two_candidates_for_one_part_name_both(store, tmp_path, columns, role, candidates):
    path = write_jsonl(tmp_path / "amb.jsonl", records(columns))
    with pytest.raises(FormatUnclear) as info:
        import_file(store, path, "amb")
    message = str(info.value)
    assert f"2 columns could be the {role}" in message and candidates in message and "\n" not in message
    assert f"--{'label' if role == 'label' else role}-col" in message  # the CLI says which flag settles it
    assert "--" not in info.value.reason  # the app shows the reason without CLI wording
    flag = {"prompt": "prompt_col", "completion": "completion_col", "label": "label_col"}[role]
    chosen = candidates.split(", ")[1]
    r = import_file(store, path, "amb", **{flag: chosen})
    assert r.version.recipe["mapping"][role] == chosen


def test_an_unknown_shape_is_unclear_and_the_guesses_fit_it(store, tmp_path):
    rows = [{"ticket_body": f"My order {i} is late", "agent_reply": f"Order {i} ships today"} for i in range(3)]
    path = write_jsonl(tmp_path / "odd.jsonl", rows)
    with pytest.raises(FormatUnclear, match="cannot tell the format") as info:
        import_file(store, path, "odd")
    assert info.value.columns == ["ticket_body", "agent_reply"] and "--" not in info.value.reason
    choices = column_choices(path)
    assert choices.columns == ["ticket_body", "agent_reply"] and choices.format == "prompt-completion"
    assert (choices.guess["prompt_col"], choices.guess["completion_col"]) == ("ticket_body", "agent_reply")
    r = import_file(store, path, "odd", prompt_col="ticket_body", completion_col="agent_reply")
    assert stored(store, "odd", "prompt, completion") == [(x["ticket_body"], x["agent_reply"]) for x in rows]
    assert r.version.recipe["mapping"] == {"prompt": "ticket_body", "completion": "agent_reply"}


def test_one_column_cannot_play_two_parts(store, tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", records(["a", "b"]))
    with pytest.raises(WorkbenchError, match="one column plays two parts"):
        import_file(store, path, "x", prompt_col="a", completion_col="a")


def test_the_guesses_when_nothing_is_named():
    assert resolve_mapping(["question", "answer"]).columns == {"prompt": "question", "completion": "answer"}
    guess = guess_mapping(["col1", "col2", "col3"])  # no word to go by: the first two columns, in order
    assert guess == {"format": "prompt-completion", "prompt_col": "col1", "completion_col": "col2",
                     "text_col": "col1", "label_col": "col2", "messages_col": "col1"}
    assert guess_mapping(["id", "conversations"])["format"] == "chat"  # ShareGPT's name says it
    assert guess_mapping(["id", "conversations"])["messages_col"] == "conversations"
    guess = guess_mapping(["ticket_id", "ticket_body", "agent_reply"])  # an id column is never the text
    assert (guess["prompt_col"], guess["completion_col"]) == ("ticket_body", "agent_reply")
    guess = guess_mapping(["review_text", "star_rating", "sentiment_class"])
    assert guess["format"] == "classification" and (guess["text_col"], guess["label_col"]) == ("review_text",
                                                                                             "sentiment_class")


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "tsv", "parquet", "hf"])
def test_list_columns_reads_the_head_of_every_kind(tmp_path, kind):
    rows = [{"ticket_body": "a", "agent_reply": "b"}, {"ticket_body": "c", "agent_reply": "d", "team": "x"}]
    path = tmp_path / f"f.{kind}"
    frame = pd.DataFrame(rows)
    if kind == "jsonl":
        write_jsonl(path, rows)
    elif kind == "json":
        path.write_text(json.dumps(rows))
    elif kind in ("csv", "tsv"):
        frame.to_csv(path, index=False, sep="," if kind == "csv" else "\t")
    elif kind == "parquet":
        frame.to_parquet(path)
    else:
        datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(path))
    assert list_columns(path, kind) == ["ticket_body", "agent_reply", "team"]
    assert column_choices(path).columns == ["ticket_body", "agent_reply", "team"]
