"""Records flagged from an evaluation or a review come first in the labelling queue."""
from tests.conftest import write_jsonl
from workbench.data.importer import import_file
from workbench.labels import annotations, flags, questions


def test_flagged_records_come_first_with_their_reason(store, tmp_path):
    rows = [{"id": f"T{i}", "prompt": f"question {i}", "completion": f"answer {i}", "category": "a"} for i in range(6)]
    version = import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets").version
    question = questions.add_question(store, version, "category", "single-choice", choices=["a", "b"], overlap=1)
    assert annotations.next_item(store, question) == "T0"  # record order while nothing is flagged
    annotations.skip(store, question)

    flags.flag_records(store, version, [4, 2], "the model copied a wrong answer from here")
    order = []
    while (item := annotations.next_item(store, question)) is not None:
        order.append(item)
        annotations.submit(store, question, item, "a")
    assert order == ["T2", "T4", "T0", "T1", "T3", "T5"]
    assert annotations.flag_reasons(store, question, 4) == ["the model copied a wrong answer from here"]
    assert annotations.flag_reasons(store, question, 1) == []
