"""A question's queue order: 'default' (flagged first, then record order) and 'uncertain' (flagged first, then
records whose answers disagree, then those the label-error classifier is least sure about). Expected orders are
worked out by hand from the constructed answers and certainties."""

import json

import numpy as np
import pytest

from tests.conftest import write_jsonl
from tests.inspect.test_label_errors import separable_rows
from workbench.cli.main import main
from workbench.core.auth import User
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.data.importer import import_file
from workbench.inspect import label_errors
from workbench.labels import annotations, flags, questions, queue_order

ANN, BOB, CARL = User("ann", "annotator"), User("bob", "annotator"), User("carl", "annotator")


@pytest.fixture
def tickets(store, tmp_path):
    rows = [{"id": f"T{i}", "prompt": f"question {i}", "completion": f"answer {i}", "category": "a"} for i in range(8)]
    return import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets").version


def answer_disagreeing(store, q) -> None:
    """T5 and T2: ann and bob disagree; T3: they agree; T6: only ann answered."""
    for item, a, b in (("T5", "a", "b"), ("T2", "b", "a"), ("T3", "a", "a")):
        annotations.submit(store, q, item, a, user=ANN)
        annotations.submit(store, q, item, b, user=BOB)
    annotations.submit(store, q, "T6", "b", user=ANN)


def claim_order(store, q, user=CARL) -> list[str]:
    order = []
    while (item := annotations.next_item(store, q, user)) is not None:
        order.append(item)
        annotations.submit(store, q, item, "a", user=user)
    return order


def test_default_order_is_unchanged_flagged_then_record_order(store, tickets):
    q = questions.add_question(store, tickets, "category", "single-choice", choices=["a", "b"], overlap=3)
    assert q.queue_order == "default"
    answer_disagreeing(store, q)
    flags.flag_records(store, tickets, [4], "the model copied it")
    assert claim_order(store, q) == ["T4", "T0", "T1", "T2", "T3", "T5", "T6", "T7"]


def test_uncertain_order_puts_disagreement_first_when_no_classifier_result_is_stored(store, tickets):
    q = questions.add_question(store, tickets, "category", "single-choice", choices=["a", "b"], overlap=3,
                               order="uncertain")
    assert q.queue_order == "uncertain" and q.certainty_file is None
    answer_disagreeing(store, q)
    flags.flag_records(store, tickets, [4], "the model copied it")
    # flagged T4 first; then the records whose answers disagree (T2, T5) in record order; then record order
    assert claim_order(store, q) == ["T4", "T2", "T5", "T0", "T1", "T3", "T6", "T7"]


def test_stored_certainty_puts_the_least_sure_records_first(store, tickets):
    q = questions.add_question(store, tickets, "category", "single-choice", choices=["a", "b"], overlap=3,
                               order="uncertain")
    answer_disagreeing(store, q)
    certainty = [0.9, 0.3, 0.95, 0.5, np.nan, 0.31, 0.99, 0.7]  # T4 not scored by the classifier
    queue_order.save_certainty(store, tickets, "category", np.array(certainty))
    q = questions.get_question(store, "tickets", "category")  # the file is found when the question is loaded
    assert q.certainty_file is not None
    flags.flag_records(store, tickets, [6], "the model copied it")
    # flagged T6; disagreeing T5 (0.31) before T2 (0.95); then 0.3, 0.5, 0.7, 0.9; unscored T4 last
    assert claim_order(store, q) == ["T6", "T5", "T2", "T1", "T3", "T7", "T0", "T4"]

    # the default order ignores the stored certainty
    questions.update_question(store, "tickets", "category", order="default")
    q = questions.get_question(store, "tickets", "category")
    assert q.certainty_file is None
    # T2, T3 and T5 have their three answers now
    assert claim_order(store, q, User("dora", "annotator")) == ["T6", "T0", "T1", "T4", "T7"]


def test_an_unknown_order_is_a_clear_error(store, tickets):
    with pytest.raises(WorkbenchError, match="queue order 'random' is not known; expected one of default, uncertain"):
        questions.add_question(store, tickets, "category", "single-choice", choices=["a", "b"], order="random")


def test_the_label_error_finder_stores_its_certainty_for_the_queue(tmp_path):
    rows, _ = separable_rows(flips=6)
    with Store.open(tmp_path / "project") as store:
        version = import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets").version
        q = questions.add_question(store, version, "category", "single-choice", choices=["billing", "shipping"],
                                   order="uncertain")
        assert q.certainty_file is None
        result = label_errors.find_label_errors(store, version, "category", near=False)
        q = questions.get_question(store, "tickets", "category")
        certainty = store.cursor().execute(
            f"SELECT certainty FROM read_parquet('{q.certainty_file}') ORDER BY _row").fetchnumpy()["certainty"]
        first = annotations.next_item(store, q, CARL)
    scored = np.flatnonzero(~np.isnan(result.quality))
    assert len(certainty) == len(rows) == len(scored)
    certainty = np.asarray(certainty, float)
    # the largest probability is at least the given label's (cleanlab's self-confidence), and equals it where
    # the suggested label is the given one
    assert np.all(certainty >= result.quality[scored] - 1e-12) and np.all(certainty <= 1 + 1e-12)
    same = np.array([result.suggested[r] == result.given[r] for r in scored])
    assert same.any() and np.allclose(certainty[same], result.quality[scored][same])
    # nothing is answered or flagged: the record the classifier is least sure about comes first
    first_row = next(r for r, row in enumerate(rows) if row["id"] == first)
    assert certainty[first_row] - certainty.min() < 1 / queue_order.CERTAINTY_STEPS


def test_cli_questions_add_and_change_queue_order(tmp_path, capsys):
    project = tmp_path / "project"
    rows = [{"id": f"T{i}", "prompt": f"q {i}", "completion": f"a {i}", "category": "a"} for i in range(3)]
    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets")

    def run(*argv):
        assert main(["--project", str(project), *argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    added = run("questions", "add", "category", "--dataset", "tickets", "--kind", "single-choice", "--choices", "a,b",
                "--queue-order", "uncertain")
    assert added["queue_order"] == "uncertain"
    changed = run("questions", "change", "category", "--dataset", "tickets", "--queue-order", "default",
                  "--overlap", "2")
    assert changed["queue_order"] == "default" and changed["overlap"] == 2
    assert run("questions", "list")["questions"][0]["queue_order"] == "default"
    with Store.open(project) as store:
        assert questions.get_question(store, "tickets", "category").queue_order == "default"
    with pytest.raises(SystemExit):
        main(["--project", str(project), "questions", "change", "category", "--dataset", "tickets",
              "--queue-order", "random"])
    assert "invalid choice: 'random'" in capsys.readouterr().err
