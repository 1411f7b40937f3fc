"""workbench.labels (questions, kinds, annotations, adjudication, assignment): questions, answers, history, queues
with overlap and leases, final values, labels into a new version, import/export, role checks and durability.
Expected values come from plain-Python recomputation over the input rows, never from our own output."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_jsonl
from workbench.core.auth import PermissionDenied, User, now_utc
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, iter_version
from workbench.data.demo import generate_annotations, generate_tickets
from workbench.data.importer import import_file
from workbench.labels import adjudication as J
from workbench.labels import annotations as A
from workbench.labels import assignment, kinds
from workbench.labels import questions as Q

ADMIN = User("ada", "admin")
ANN = User("ann", "annotator")
BOB = User("bob", "annotator")
REVIEWER = User("rita", "reviewer")
CATEGORIES = ["billing", "refund", "shipping"]


@pytest.fixture
def tickets(store, tmp_path):
    """30 prompt-completion tickets with a unique `id` and a category."""
    rows = [{"id": f"T{i:03d}", "prompt": f"ticket {i} <b>bold</b>", "completion": f"answer {i}",
             "category": CATEGORIES[i % 3]} for i in range(30)]
    import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets")
    return rows


@pytest.fixture
def category(store, tickets):
    return Q.add_question(store, "tickets", "category", "single-choice", choices_from="category", overlap=3)


def read_records(store, version) -> list[dict]:
    return [r for t in iter_version(store, version) for r in t.to_pylist()]


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("kind, choices, given, stored", [
    ("single-choice", ("a", "b"), " a ", "a"),
    ("multi-label", ("x", "y", "z"), ["z", "x", "x"], '["x", "z"]'),
    ("multi-label", ("x", "y", "z"), "y, x", '["x", "y"]'),
    ("multi-label", ("x", "y", "z"), '["y"]', '["y"]'),
    ("multi-label", ("x", "y", "z"), [], "[]"),
    ("rating", ("1", "2", "3", "4", "5"), 4, "4"),
    ("rating", ("1", "2", "3", "4", "5"), "5.0", "5"),
    ("accept-reject", ("accept", "reject"), "Yes", "accept"),
    ("accept-reject", ("accept", "reject"), False, "reject"),
    ("text", (), "  keep my spaces ", "  keep my spaces "),
])
def test_values_are_normalized(kind, choices, given, stored):
    assert kinds.normalize_value(kind, choices, given) == stored


@pytest.mark.parametrize("kind, choices, given, message", [
    ("single-choice", ("a", "b"), "c", "expected one of a, b"),
    ("multi-label", ("x",), ["q"], "not a tag"),
    ("rating", ("1", "2", "3", "4", "5"), 6, "from 1 to 5"),
    ("rating", ("1", "2", "3", "4", "5"), "2.5", "whole number"),
    ("accept-reject", ("accept", "reject"), "maybe", "accept or reject"),
    ("text", (), "   ", "empty"),
    ("single-choice", ("a",), None, "empty"),
])
def test_bad_values_say_what_was_expected(kind, choices, given, message):
    with pytest.raises(WorkbenchError, match=message):
        kinds.normalize_value(kind, choices, given)


@pytest.mark.parametrize("kind, given, stored", [
    ("single-choice", [" b", "a", "b", ""], ("b", "a")),  # as typed, without blanks or repeats
    ("multi-label", ["x", "y"], ("x", "y")),
    ("rating", None, ("1", "2", "3", "4", "5")),  # the default scale
    ("rating", ["10", "2", "7"], ("2", "7", "10")),  # numbers in numeric order
    ("accept-reject", ["whatever"], ("accept", "reject")),
    ("text", ["a"], ()),
])
def test_each_kind_checks_its_choices(kind, given, stored):
    assert kinds.of(kind).check_choices(given) == stored


def test_the_kind_table_says_how_each_kind_is_answered_and_where_its_labels_go():
    assert kinds.NAMES == ("single-choice", "multi-label", "rating", "accept-reject", "text")
    with pytest.raises(WorkbenchError, match="not known; expected one of single-choice, multi-label"):
        kinds.of("yes-no")
    with pytest.raises(WorkbenchError, match="needs its tags"):
        kinds.of("multi-label").check_choices([])
    assert [kinds.of(k).widget for k in kinds.NAMES] == ["buttons", "tags", "buttons", "buttons", "text"]
    assert [kinds.of(k).default_column("q") for k in kinds.NAMES] == ["q", "q", "q", "q", "completion"]
    assert kinds.of("accept-reject").button_options(("accept", "reject"), {}) == [
        ("accept", "Accept", "a"), ("reject", "Reject", "x")]
    scale = tuple(str(n) for n in range(1, 11))
    assert kinds.of("rating").button_options(scale, {"1": "bad"})[:2] == [("1", "1 · bad", "1"), ("2", "2", "2")]
    assert kinds.of("rating").button_options(scale, {})[-1] == ("10", "10", None)  # no one-key shortcut
    many = tuple(f"intent_{i}" for i in range(40))  # beyond 9: 0, then letters but c and r (Streamlit's own)
    keys = [s for _, _, s in kinds.of("single-choice").button_options(many, {})]
    assert keys[:11] == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "a"] and keys[11] == "b" and keys[12] == "d"
    assert len(set(keys[:34])) == 34 and "c" not in keys and "r" not in keys and keys[34:] == [None] * 6
    assert kinds.display_value("multi-label", '["a", "b"]') == "a, b"
    assert kinds.display_value("multi-label", "[]") == "(no tags)"


def test_anchors_are_read_from_value_equals_text_pairs():
    # the one reader behind `questions add --anchors` and the Label page's Anchors field
    assert Q.parse_anchors("1=useless, 3 = usable ,5=perfect, ") == {"1": "useless", "3": "usable", "5": "perfect"}
    assert Q.parse_anchors("") == {} and Q.parse_anchors(None) == {}
    with pytest.raises(WorkbenchError, match="'5' is not VALUE=TEXT"):
        Q.parse_anchors("1=useless, 5")


# ---------------------------------------------------------------- questions and record keys

def test_question_takes_choices_from_the_data_and_keys_records_by_id(store, category, tickets):
    assert category.kind == "single-choice" and set(category.choices) == set(CATEGORIES)
    assert category.key_column == "id" and category.column == "category"
    assert Q.record(store, category, "T007")["prompt"] == tickets[7]["prompt"]
    with pytest.raises(WorkbenchError, match="already has a question"):
        Q.add_question(store, "tickets", "category", "rating")


def test_without_a_unique_id_records_are_keyed_by_number(store, tmp_path):
    rows = [{"id": "same", "prompt": f"p{i}", "completion": "c"} for i in range(5)]
    import_file(store, write_jsonl(tmp_path / "dup.jsonl", rows), "dup")
    q = Q.add_question(store, "dup", "ok", "accept-reject")
    assert q.key_column is None
    A.submit(store, q, "3", "accept", user=ANN)
    assert A.answers(store, "dup", "ok").to_dict("records") == [
        {"item": "3", "annotator": "ann", "value": "accept", "row": 2}]
    with pytest.raises(WorkbenchError, match="not a record key"):
        A.submit(store, q, "6", "accept", user=ANN)


def test_import_takes_record_numbers_written_as_floats(store, tmp_path):
    # A JSON file (or a Parquet float column) gives record number 3 as 3.0: it is record 3 (row 2).
    import_file(store, write_jsonl(tmp_path / "dup.jsonl", [{"prompt": f"p{i}", "completion": "c"}
                                                            for i in range(5)]), "dup")
    path = write_jsonl(tmp_path / "ann.jsonl", [{"item": 3.0, "who": "ann", "value": "accept"},
                                                {"item": 5, "who": "bob", "value": "reject"}])
    result = A.import_annotations(store, path, dataset="dup", question="ok", item_col="item", annotator_col="who",
                                  value_col="value", kind="accept-reject")
    assert (result["imported"], result["error_count"]) == (2, 0)
    assert A.answers(store, "dup", "ok").to_dict("records") == [
        {"item": "3", "annotator": "ann", "value": "accept", "row": 2},
        {"item": "5", "annotator": "bob", "value": "reject", "row": 4}]


def test_answers_keep_every_change_and_show_the_latest(store, category):
    A.submit(store, category, "T001", "billing", user=ANN)
    A.submit(store, category, "T001", "refund", user=ANN)
    A.submit(store, category, "T001", "shipping", user=BOB)
    df = A.answers(store, "tickets", "category")
    assert list(df.columns) == ["item", "annotator", "value", "row"] and str(df["row"].dtype) == "Int64"
    assert sorted(df.itertuples(index=False, name=None)) == [("T001", "ann", "refund", 1), ("T001", "bob", "shipping", 1)]
    hist = A.history(store, category, "T001")
    assert list(hist["value"]) == ["billing", "refund", "shipping"] and list(hist["who"]) == ["ann", "ann", "bob"]
    assert (hist["created_at"].diff().dropna() >= pd.Timedelta(0)).all()


# ---------------------------------------------------------------- queue with overlap and leases

def brute_force_next(items, answered, claims, me, overlap, exclude=()):
    """The first item (in order) I have not answered whose answers + others' live claims < overlap."""
    for item in items:
        if item in exclude or (item, me) in answered:
            continue
        n = len({a for (i, a) in answered if i == item}) + len({a for (i, a) in claims if i == item and a != me})
        if n < overlap:
            return item
    return None


def test_next_record_follows_overlap_and_claims(store, tickets):
    q = Q.add_question(store, "tickets", "ok", "accept-reject", overlap=2)
    items = [t["id"] for t in tickets]
    answered, claims = set(), set()
    people = [User(f"p{i}", "annotator") for i in range(5)]
    for step in range(40):  # a deterministic interleaving of claims and answers
        person = people[(step * 3) % 5]
        others = {c for c in claims if c[1] != person.name}
        expected = brute_force_next(items, answered, others, person.name, 2)
        mine = next((c for c in claims if c[1] == person.name), None)
        got = A.next_item(store, q, person)
        assert got == (mine[0] if mine else expected)
        claims = {c for c in claims if c[1] != person.name} | ({(got, person.name)} if got else set())
        if step % 2 and got:
            A.submit(store, q, got, "accept", user=person)
            answered.add((got, person.name))
            claims.discard((got, person.name))
    df = A.answers(store, q)
    assert df.groupby("item")["annotator"].nunique().max() <= 2


def test_last_place_is_never_handed_to_two_people_at_once(store, tickets):
    q = Q.add_question(store, "tickets", "ok", "accept-reject", overlap=2)
    A.submit(store, q, "T000", "accept", user=ADMIN)  # T000 needs one more answer
    first = A.next_item(store, q, ANN)
    second = A.next_item(store, q, BOB)
    assert first == "T000" and second == "T001"
    # An expired claim frees the place again.
    late = now_utc() + timedelta(seconds=assignment.LEASE_SECONDS + 1)
    assert assignment.claim_next(store, q.task, "carl", now=late) == "T000"


def test_skip_gives_the_record_back_and_excluded_records_are_passed_over(store, tickets):
    q = Q.add_question(store, "tickets", "ok", "accept-reject", overlap=1)
    assert A.next_item(store, q, ANN) == "T000"
    assert A.next_item(store, q, BOB) == "T001"  # T000 is claimed by ann
    A.skip(store, q, ANN)
    assert A.next_item(store, q, ANN, exclude=["T000"]) == "T002"
    assert A.next_item(store, q, REVIEWER) == "T000"


def test_progress_counts_match_a_recount(store, tickets):
    q = Q.add_question(store, "tickets", "ok", "accept-reject", overlap=2)
    given = [("T000", ANN), ("T000", BOB), ("T001", ANN), ("T002", BOB), ("T002", ANN), ("T002", ANN)]
    for item, who in given:
        A.submit(store, q, item, "accept", user=who)
    per_item = defaultdict(set)
    for item, who in given:
        per_item[item].add(who.name)
    for who in (ANN, BOB, REVIEWER):
        p = A.progress(store, q, who)
        assert p["done"] == sum(who.name in s for s in per_item.values())
        assert p["remaining"] == sum(who.name not in per_item[t["id"]] and len(per_item[t["id"]]) < 2 for t in tickets)
        assert p["complete"] == sum(len(s) >= 2 for s in per_item.values()) and p["total"] == 30


# ---------------------------------------------------------------- final values and adjudication

def brute_force_final(rows, overlap, majority):
    """item -> (status, final) from (item, annotator, value) rows, latest per annotator = last row."""
    latest = {}
    for item, who, value in rows:
        latest[(item, who)] = value
    per_item = defaultdict(list)
    for (item, _), value in latest.items():
        per_item[item].append(value)
    out = {}
    for item, values in per_item.items():
        top, top_n = Counter(values).most_common(1)[0]
        n = len(values)
        if n >= overlap and len(set(values)) == 1:
            out[item] = ("agreed", top)
        elif majority and n >= overlap and 2 * top_n > n:
            out[item] = ("majority", top)
        elif n >= overlap:
            out[item] = ("disputed", None)
        else:
            out[item] = ("open", None)
    return out


@pytest.mark.parametrize("majority", [False, True])
def test_statuses_and_gold_match_a_recount(store, tickets, majority):
    q = Q.add_question(store, "tickets", "category", "single-choice", choices=CATEGORIES, overlap=3, majority=majority)
    people = [User(n, "annotator") for n in ("a", "b", "c", "d")]
    rows = []
    for i, t in enumerate(tickets[:24]):
        for k, who in enumerate(people[: 1 + i % 4]):
            value = CATEGORIES[(i * (k + 1) + (k == 2)) % 3]
            rows.append((t["id"], who.name, value))
            A.submit(store, q, t["id"], value, user=who)
    expected = brute_force_final(rows, 3, majority)
    status = J.item_status(store, q)
    assert {r.item: (r.status, None if pd.isna(r.final) else r.final) for r in status.itertuples()} == expected
    assert J.gold(store, "tickets", "category") == {k: v for k, (s, v) in expected.items() if v is not None}
    disputed = [k for k, (s, _) in expected.items() if s == "disputed"]
    assert list(J.disputed(store, q)["item"]) == sorted(disputed)
    assert disputed
    J.set_gold(store, q, disputed[0], "refund", user=ADMIN)
    assert J.gold(store, q)[disputed[0]] == "refund"
    assert disputed[0] not in set(J.disputed(store, q)["item"])
    assert list(A.history(store, q, disputed[0])["entry"])[-1] == "final (adjudicated)"


def test_final_labels_make_a_new_version_with_only_those_records_changed(store, tickets, category):
    base = get_version(store, "tickets")
    labels = {"T001": "shipping", "T004": "billing"}
    v = J.write_labels_version(store, "tickets", "category", labels, recipe={"why": "test"}, created_by="ada")
    assert v.number == 2 and v.parent_id == base.version_id and v.recipe["why"] == "test" and v.created_by == "ada"
    got = read_records(store, v)
    expected = [dict(t, category=labels.get(t["id"], t["category"])) for t in tickets]
    assert [{k: r[k] for k in ("id", "prompt", "completion", "category")} for r in got] == expected
    assert read_records(store, base) == [dict(r, category=t["category"]) for r, t in zip(got, tickets)]


def test_corrected_responses_replace_the_completion_and_the_last_chat_turn(store, tmp_path):
    chats = [{"id": f"c{i}", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                          {"role": "user", "content": f"q{i}"},
                                          {"role": "assistant", "content": f"old {i}"}]} for i in range(3)]
    import_file(store, write_jsonl(tmp_path / "chat.jsonl", chats), "chats")
    q = Q.add_question(store, "chats", "fix", "text", overlap=1)
    A.submit(store, q, "c1", "new answer", user=ANN)
    assert J.gold(store, q) == {"c1": "new answer"}
    v = J.apply_final_labels(store, q, user=ADMIN)
    got = read_records(store, v)
    assert [r["completion"] for r in got] == ["old 0", "new answer", "old 2"]
    turns = json.loads(got[1]["messages"])
    assert turns[-1] == {"role": "assistant", "content": "new answer"} and turns[:3] == chats[1]["messages"][:3]
    assert json.loads(got[0]["messages"]) == chats[0]["messages"]


def test_labels_into_a_numeric_column_are_cast_or_refused(store, tmp_path):
    rows = [{"id": i, "prompt": f"p{i}", "completion": "c", "urgency": 1} for i in range(4)]
    import_file(store, write_jsonl(tmp_path / "u.jsonl", rows), "urg")
    q = Q.add_question(store, "urg", "urgency", "rating")
    v = J.write_labels_version(store, q, None, {"2": "5"}, recipe={})
    assert [r["urgency"] for r in read_records(store, v)] == [1, 1, 5, 1]


# ---------------------------------------------------------------- roles, checked in the library

def test_annotators_cannot_do_admin_actions(store, category, tmp_path):
    A.submit(store, category, "T001", "billing", user=ANN)  # allowed: their own answer
    path = tmp_path / "a.csv"
    path.write_text("item,annotator,value\nT001,zed,billing\n")
    attempts = [
        lambda: Q.add_question(store, "tickets", "other", "rating", user=ANN),
        lambda: Q.update_question(store, "tickets", "category", overlap=1, user=ANN),
        lambda: J.set_gold(store, category, "T001", "refund", user=ANN),
        lambda: J.write_labels_version(store, category, None, {"T001": "refund"}, recipe={}, user=ANN),
        lambda: J.apply_final_labels(store, category, user=REVIEWER),
        lambda: A.import_annotations(store, path, dataset="tickets", question="category", item_col="item",
                                     annotator_col="annotator", value_col="value", user=ANN),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied, match="ann is an annotator|rita is a reviewer"):
            attempt()
    assert get_version(store, "tickets").number == 1
    assert Q.get_question(store, "tickets", "category").overlap == 3
    assert set(A.answers(store, category)["annotator"]) == {"ann"}  # an annotator writes only as themselves


# ---------------------------------------------------------------- import / export

def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_import_reports_every_bad_line_and_imports_nothing(store, category, tmp_path):
    path = write_csv(tmp_path / "a.csv", ["item", "who", "label"], [
        ["T001", "x", "billing"], ["T999", "y", "refund"], ["T002", "", "refund"], ["T003", "z", "nonsense"],
        ["T004", "z", "refund"]])
    with pytest.raises(A.AnnotationsRejected) as info:
        A.import_annotations(store, path, dataset="tickets", question="category", item_col="item",
                             annotator_col="who", value_col="label")
    errors = info.value.result["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(3, "item"), (4, "who"), (5, "label")]
    assert "'T999' is not a record of tickets@1; expected a value of its `id` column" in errors[0]["error"]
    assert "expected one of" in errors[2]["error"]
    assert A.answers(store, category).empty
    result = A.import_annotations(store, path, dataset="tickets", question="category", item_col="item",
                                  annotator_col="who", value_col="label", on_error="skip")
    assert (result["imported"], result["skipped"]) == (2, 3)


def test_import_of_the_demo_file_matches_the_generator_and_is_idempotent(store, tmp_path):
    tickets = list(generate_tickets(60, seed=3))
    import_file(store, write_jsonl(tmp_path / "t.jsonl", tickets), "demo")
    rows = generate_annotations(tickets, n_items=60, seed=3)
    path = write_csv(tmp_path / "ann.csv", ["item_id", "annotator", "question", "value"],
                     [[r["item_id"], r["annotator"], r["question"], r["value"]] for r in rows])
    for question in ("category", "urgency"):
        args = dict(dataset="demo", question=question, item_col="item_id", annotator_col="annotator", value_col="value")
        first = A.import_annotations(store, path, **args)
        expected = sorted((r["item_id"], r["annotator"], str(r["value"])) for r in rows if r["question"] == question)
        assert first["imported"] == len(expected) and not first["errors"]
        got = A.answers(store, "demo", question)
        assert sorted(got[["item", "annotator", "value"]].itertuples(index=False, name=None)) == expected
        again = A.import_annotations(store, path, **args)
        assert (again["imported"], again["unchanged"]) == (0, len(expected))
    assert Q.get_question(store, "demo", "urgency").kind == "rating"
    assert Q.get_question(store, "demo", "category").kind == "single-choice"


def test_export_then_import_round_trips_with_times(store, category, tmp_path):
    A.submit(store, category, "T001", "billing", user=ANN)
    A.submit(store, category, "T001", "refund", user=ANN)
    A.submit(store, category, "T002", "shipping", user=BOB)
    out = A.export_annotations(store, tmp_path / "all.csv", dataset="tickets", history_rows=True)
    assert out["records"] == 3
    with open(tmp_path / "all.csv", newline="") as f:
        exported = list(csv.DictReader(f))
    assert [(r["item"], r["annotator"], r["value"], r["row"]) for r in exported] == [
        ("T001", "ann", "billing", "2"), ("T001", "ann", "refund", "2"), ("T002", "bob", "shipping", "3")]
    other = Store.open(tmp_path / "other")
    try:
        import_file(other, write_jsonl(tmp_path / "t2.jsonl", [
            {"id": f"T{i:03d}", "prompt": "p", "completion": "c", "category": CATEGORIES[i % 3]} for i in range(5)]),
            "tickets")
        result = A.import_annotations(other, tmp_path / "all.csv", dataset="tickets", question="category",
                                      item_col="item", annotator_col="annotator", value_col="value", time_col="time")
        assert result["imported"] == 3
        assert A.answers(other, "tickets", "category").to_dict("records") == \
            A.answers(store, "tickets", "category").to_dict("records")
        again = A.import_annotations(other, tmp_path / "all.csv", dataset="tickets", question="category",
                                     item_col="item", annotator_col="annotator", value_col="value", time_col="time")
        assert again["imported"] == 0
    finally:
        other.close()


def test_jsonl_import_with_bad_times_and_json(store, category, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"i": "T001", "a": "x", "v": "billing", "t": "2024-05-01T10:00:00Z"}\n'
                    '{"i": "T002", "a": "x", "v": "billing", "t": "yesterday-ish"}\n'
                    'not json\n')
    with pytest.raises(A.AnnotationsRejected) as info:
        A.import_annotations(store, path, dataset="tickets", question="category", item_col="i", annotator_col="a",
                             value_col="v", time_col="t")
    assert [(e["line"], e["field"]) for e in info.value.result["errors"]] == [(2, "t"), (3, None)]


# ---------------------------------------------------------------- reliability

def test_twenty_annotators_at_once_lose_nothing(store, tickets):
    q = Q.add_question(store, "tickets", "category", "single-choice", choices=CATEGORIES, overlap=3)
    acked, errors = [], []

    def work(k):
        who = User(f"a{k:02d}", "annotator")
        try:
            for n in range(4):
                item = A.next_item(store, q, who)
                if item is None:
                    return
                value = CATEGORIES[(k + n) % 3]
                A.submit(store, q, item, value, user=who)
                acked.append((item, who.name, value))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(acked) == 80
    got = A.answers(store, q)
    assert sorted(got[["item", "annotator", "value"]].itertuples(index=False, name=None)) == sorted(acked)
    assert got.groupby("item")["annotator"].nunique().max() <= 3  # the claims kept the overlap


KILL_SCRIPT = """
import sys
from workbench.labels import annotations as A
from workbench.labels import questions as Q
from workbench.core.auth import User
from workbench.core.store import Store

store = Store.open(sys.argv[1])
q = Q.get_question(store, "tickets", "ok")
n = 0
while True:
    who = User(f"w{n % 7}", "annotator")
    item = f"T{n % 30:03d}"
    A.submit(store, q, item, "accept" if n % 2 else "reject", user=who)
    print(f"ack {item} {who.name} {n}", flush=True)
    n += 1
"""


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_acknowledged_answer(tmp_path):
    project = tmp_path / "p"
    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "t.jsonl", [
            {"id": f"T{i:03d}", "prompt": f"p{i}", "completion": "c"} for i in range(30)]), "tickets")
        Q.add_question(store, "tickets", "ok", "accept-reject", overlap=7)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(project)], stdout=subprocess.PIPE, text=True,
                            env=env)
    acks = []
    try:
        deadline = time.monotonic() + 60
        while len(acks) < 60 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acks.append(line.split()[1:4])
        assert len(acks) >= 60, "the writer did not get going"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store.open(project) as store:
        hist = A.history(store, Q.get_question(store, "tickets", "ok"))
        stored = Counter(zip(hist["item"], hist["who"]))
        n_rows = len(hist)
    assert n_rows >= len(acks)
    needed = Counter((item, who) for item, who, _ in acks)
    assert all(stored[k] >= n for k, n in needed.items())


def test_majority_is_final_by_default_for_single_choice_and_metadata_can_be_chosen(store, tickets, tmp_path, capsys):
    from workbench.cli.main import main

    one = Q.add_question(store, "tickets", "topic", "single-choice", choices_from="category")
    stars = Q.add_question(store, "tickets", "stars", "rating")
    assert one.majority and not stars.majority and one.choices_from == "category"
    record = {"prompt": "p", "completion": "c", "category": "billing", "_row": 3, "id": "T1"}
    assert one.metadata(record) == {"id": "T1"}  # never the answer's column, nor the texts
    chosen = Q.update_question(store, "tickets", "topic", shown_columns=["category"])
    assert chosen.metadata(record) == {}  # even when chosen, the source column stays hidden
    with pytest.raises(WorkbenchError, match="has no column 'nope' to show"):
        Q.update_question(store, "tickets", "topic", shown_columns=["nope"])
    store.close()
    project = str(store.project.root)
    assert main(["questions", "add", "agree", "--dataset", "tickets", "--kind", "single-choice",
                 "--choices", "a,b", "--no-majority", "--show-columns", "id", "--project", project,
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["majority"] is False and got["shown_columns"] == ["id"]
