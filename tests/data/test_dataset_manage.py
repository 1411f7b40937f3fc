"""Rename and archive a dataset (workbench.data.manage): versions, records and hashes stay; everything that
names the dataset follows a rename; an archived dataset leaves the lists but stays readable by name."""

from __future__ import annotations

import json

import duckdb
import pytest

from tests.conftest import write_jsonl
from workbench.core import auth
from workbench.core.errors import WorkbenchError
from workbench.core.schema import DATASET_NAME_COLUMNS
from workbench.core.versions import get_version, list_datasets, list_versions, write_version
from workbench.data.importer import import_file, quarantine
from workbench.data.manage import archive_dataset, rename_dataset, unarchive_dataset
from workbench.labels import flags
from workbench.labels.questions import add_question, get_question
from workbench.models import eval_setup, evaluation, runs

RECORDS = [{"prompt": f"ticket {i}: where is order {i}?", "completion": f"Order {i} ships on day {i % 5}.",
            "category": "shipping" if i % 3 else "refund", "split": "test" if i % 4 == 0 else "train"}
           for i in range(24)]


def records_of(store, ref: str) -> list[tuple]:
    v = get_version(store, ref)
    return store.cursor().execute(f"SELECT prompt, completion, category FROM {v.table_name} ORDER BY _row").fetchall()


@pytest.fixture
def project(store, tmp_path):
    """'tickets': v1 imported from a file with one bad line (quarantined), v2 derived from it; 'other' beside it."""
    lines = [json.dumps(r) for r in RECORDS] + ['{"prompt": "cut off']
    import_file(store, write_jsonl(tmp_path / "tickets.jsonl", lines), "tickets", on_error="skip")
    v1 = get_version(store, "tickets@1")
    table = store.con.sql(f"SELECT * EXCLUDE (_row) FROM {v1.table_name} WHERE category = 'shipping' "
                          "ORDER BY _row").to_arrow_table()
    write_version(store, "tickets", [table], kind="filter", fmt=v1.format, recipe={"kept": "shipping"},
                  parent_id=v1.version_id)
    import_file(store, write_jsonl(tmp_path / "other.jsonl", RECORDS[:5]), "other")
    return store


def test_a_renamed_dataset_keeps_its_versions_and_everything_that_names_it(project):
    store = project
    before = [(v.version_id, v.number, v.parent_id, v.row_count, v.content_hash) for v in list_versions(store, "tickets")]
    shipping = [(r["prompt"], r["completion"], r["category"]) for r in RECORDS if r["category"] == "shipping"]
    assert before[1][3] == len(shipping) == 16
    question = add_question(store, "tickets@1", "topic", "single-choice", choices=["shipping", "refund"])
    flags.flag_records(store, "tickets@1", [3], "wrong category")
    run = evaluation.create_eval(store, "tickets@2", model=eval_setup.ModelSpec("base"),
                                 settings={"max_new_tokens": 8})
    run_id = runs.prepare_run(store, "tickets@1", runs.default_config(store))

    out = rename_dataset(store, "tickets", "support")

    assert out == {"dataset": "support", "renamed_from": "tickets", "versions": 2, "questions": 1, "runs": 1,
                   "evaluations": 1, "quarantined_rows": 1}
    after = [(v.version_id, v.number, v.parent_id, v.row_count, v.content_hash) for v in list_versions(store, "support")]
    assert after == before and list_versions(store, "tickets") == []
    assert records_of(store, "support@1") == [(r["prompt"], r["completion"], r["category"]) for r in RECORDS]
    assert records_of(store, "support@2") == shipping
    # the question, the flag, the evaluation and the run find their version under the new name
    moved = get_question(store, "support", "topic")
    assert moved.question_id == question.question_id and moved.version(store).ref == "support@1"
    assert [f["reason"] for f in flags.flags(store, "support@1")] == ["wrong category"]
    assert evaluation.version_of(store, evaluation.get_eval(store, run.eval_id)).ref == "support@2"
    assert runs.trained_on(store, run_id) == "support@1"
    assert [r["dataset"] for r in runs.list_runs(store) if r["run_id"] == run_id] == ["support"]  # not run.json's
    assert [q["line"] for q in quarantine(store, "support")] == [25] and quarantine(store, "tickets") == []
    # SQL users query the new names; the old ones are gone
    cur = store.cursor()
    assert cur.execute('SELECT count(*) FROM "support@1"').fetchall() == [(24,)]
    assert cur.execute('SELECT count(*) FROM support').fetchall() == [(16,)]  # the newest version
    with pytest.raises(duckdb.CatalogException):
        cur.execute("SELECT count(*) FROM tickets")
    with pytest.raises(WorkbenchError, match="no dataset named 'tickets': it was renamed to 'support'"):
        get_version(store, "tickets@1")
    assert [d["name"] for d in list_datasets(store)] == ["other", "support"]
    # a new version continues the numbering under the new name
    table = store.con.sql(f"SELECT * EXCLUDE (_row) FROM wb_v{after[0][0]} LIMIT 2").to_arrow_table()
    assert write_version(store, "support", [table], kind="filter", fmt="prompt-completion", recipe={}).number == 3


def test_the_old_name_is_free_again_and_a_rename_can_be_undone(project):
    store = project
    hashes = [v.content_hash for v in list_versions(store, "tickets")]
    rename_dataset(store, "tickets", "support")
    rename_dataset(store, "support", "tickets")
    assert [v.content_hash for v in list_versions(store, "tickets")] == hashes
    assert get_version(store, "tickets").number == 2
    with pytest.raises(WorkbenchError, match="no dataset named 'support': it was renamed to 'tickets'"):
        get_version(store, "support")
    rename_dataset(store, "tickets", "faq")
    rename_dataset(store, "faq", "help-desk")
    with pytest.raises(WorkbenchError, match="no dataset named 'support': it was renamed to 'help-desk'"):
        get_version(store, "support@2")


def test_every_column_named_dataset_is_renamed(project):
    """A table added later with a `dataset` column must join DATASET_NAME_COLUMNS, or a rename would miss it."""
    found = set(project.cursor().execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_name LIKE 'wb\\_%' ESCAPE '\\' "
        "AND column_name = 'dataset' AND table_name NOT LIKE 'wb\\_v%' ESCAPE '\\'").fetchall())
    assert found and found <= set(DATASET_NAME_COLUMNS)


@pytest.mark.parametrize("new, message", [
    ("other", "a dataset named 'other' exists already"),
    ("OTHER", "a dataset named 'other' exists already"),  # views are found case-insensitively
    ("tickets", "already named 'tickets'"),
    ("9lives", "is not allowed"),
    ("two words", "is not allowed"),
    ("wb_runs", "is not allowed"),
    ("", "is not allowed"),
])
def test_a_rename_refuses_names_in_use_and_bad_names(project, new, message):
    store = project
    before = [(v.dataset, v.number, v.content_hash) for v in list_versions(store)]
    with pytest.raises(WorkbenchError, match=message):
        rename_dataset(store, "tickets", new)
    assert [(v.dataset, v.number, v.content_hash) for v in list_versions(store)] == before
    assert store.cursor().execute('SELECT count(*) FROM "tickets@1"').fetchall() == [(24,)]


def test_unknown_names_and_version_refs_are_refused(project):
    with pytest.raises(WorkbenchError, match="no dataset named 'nope'; datasets here: other, tickets"):
        rename_dataset(project, "nope", "fine")
    with pytest.raises(WorkbenchError, match="names one version"):
        rename_dataset(project, "tickets@1", "fine")
    with pytest.raises(WorkbenchError, match="no dataset named 'nope'"):
        archive_dataset(project, "nope")
    with pytest.raises(WorkbenchError, match="no dataset named 'nope'"):
        unarchive_dataset(project, "nope")


def test_an_archived_dataset_leaves_the_lists_but_stays_readable(project):
    store = project
    hashes = [v.content_hash for v in list_versions(store, "tickets")]
    out = archive_dataset(store, "tickets")
    assert out["dataset"] == "tickets" and out["archived"] is True and out["versions"] == 2
    assert [d["name"] for d in list_datasets(store)] == ["other"]
    archived = list_datasets(store, archived=True)
    assert [(d["name"], d["version"], d["archived_at"]) for d in archived] == [("tickets", 2, out["archived_at"])]
    assert [(d["name"], d["archived_at"] is None) for d in list_datasets(store, archived=None)] == [
        ("other", True), ("tickets", False)]
    assert "archived_at" not in list_datasets(store)[0]  # the plain list keeps its keys
    # readable by explicit ref, in SQL, and its versions listed
    assert get_version(store, "tickets@1").content_hash == hashes[0]
    assert get_version(store, "tickets").number == 2
    assert len(records_of(store, "tickets@1")) == 24
    assert store.cursor().execute('SELECT count(*) FROM "tickets@2"').fetchall() == [(16,)]
    assert [v.content_hash for v in list_versions(store, "tickets")] == hashes
    with pytest.raises(WorkbenchError, match="no dataset named 'gone'; datasets here: other$"):
        get_version(store, "gone")  # the hint lists the datasets in use
    with pytest.raises(WorkbenchError, match="archived already"):
        archive_dataset(store, "tickets")
    assert unarchive_dataset(store, "tickets") == {"dataset": "tickets", "archived": False, "versions": 2}
    assert [d["name"] for d in list_datasets(store)] == ["other", "tickets"]
    with pytest.raises(WorkbenchError, match="is not archived"):
        unarchive_dataset(store, "tickets")


def test_a_new_version_brings_an_archived_dataset_back(project, tmp_path):
    store = project
    archive_dataset(store, "other")
    result = import_file(store, write_jsonl(tmp_path / "more.jsonl", RECORDS[5:9]), "other")
    assert result.version.number == 2
    assert [d["name"] for d in list_datasets(store)] == ["other", "tickets"]
    assert list_datasets(store, archived=True) == []


def test_an_archived_dataset_can_be_renamed(project):
    store = project
    archive_dataset(store, "other")
    rename_dataset(store, "other", "old-tickets")
    assert [d["name"] for d in list_datasets(store, archived=True)] == ["old-tickets"]


def test_only_admins_rename_or_archive(project):
    store = project
    annotator, admin = auth.User("ann", "annotator"), auth.User("ada", "admin")
    for act in (lambda u: rename_dataset(store, "tickets", "support", user=u),
                lambda u: archive_dataset(store, "tickets", user=u),
                lambda u: unarchive_dataset(store, "tickets", user=u)):
        with pytest.raises(auth.PermissionDenied, match="ann is an annotator and may not manage datasets"):
            act(annotator)
    assert [d["name"] for d in list_datasets(store)] == ["other", "tickets"]
    archive_dataset(store, "tickets", user=admin)
    assert store.cursor().execute("SELECT archived_by FROM wb_datasets WHERE name = 'tickets'").fetchall() == [("ada",)]
    rename_dataset(store, "tickets", "support", user=admin)
    assert store.cursor().execute("SELECT old_name, new_name, renamed_by FROM wb_dataset_renames").fetchall() == [
        ("tickets", "support", "ada")]


def test_names_stored_before_a_rename_follow_it(project, tmp_path):
    """A sweep's settings (and a run's config) keep the name the dataset had when they were written; a resumed
    sweep and 'Train with the best settings' look it up under the name it has now."""
    from workbench.core.versions import current_name
    from workbench.models.sweeps import dataset_now

    store = project
    assert current_name(store, "tickets") == "tickets" and current_name(store, "never-was") == "never-was"
    rename_dataset(store, "tickets", "support")
    rename_dataset(store, "support", "help-desk")
    assert current_name(store, "tickets") == current_name(store, "support") == "help-desk"
    assert dataset_now(store, "tickets@1") == "help-desk@1" and dataset_now(store, "tickets") == "help-desk"
    assert get_version(store, dataset_now(store, "tickets@1")).content_hash == get_version(store, "help-desk@1").content_hash
    # a new dataset that takes an old name is that name's dataset from then on
    import_file(store, write_jsonl(tmp_path / "new.jsonl", [{"prompt": "p", "completion": "c"}]), "tickets")
    assert current_name(store, "tickets") == "tickets" and current_name(store, "support") == "help-desk"
