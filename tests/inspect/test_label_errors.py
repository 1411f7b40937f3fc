"""Label-error detection (workbench/inspect/label_errors.py) and `workbench label-errors`."""

import csv
import json
from collections import Counter

import numpy as np
import pytest

from tests.conftest import write_jsonl
from workbench.cli.main import main
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, iter_version
from workbench.data.importer import import_file
from workbench.inspect import label_errors
from workbench.labels import flags
from workbench.labels.annotations import import_annotations

CATEGORIES = ("billing", "shipping", "refund", "login")
PER_CATEGORY = 30


def _vocabulary(rng) -> dict[str, list[str]]:
    """Each category its own made-up words (no letters in common with the other categories' words)."""
    letters = {"billing": "abcdef", "shipping": "ghijkl", "refund": "mnopqr", "login": "stuvwx"}
    return {c: ["".join(rng.choice(list(letters[c]), 7)) for _ in range(25)] for c in CATEGORIES}


def separable_rows(seed: int = 0, flips: int = 8) -> tuple[list[dict], list[int]]:
    """Records of four clearly separable categories; `flips` of them (seeded) carry another category."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng)
    rows = [{"id": f"t{i:03d}", "text": " ".join(rng.choice(vocab[c], 6)), "category": c}
            for i, c in enumerate(c for c in CATEGORIES for _ in range(PER_CATEGORY))]
    flipped = sorted(rng.choice(len(rows), flips, replace=False).tolist())
    for r in flipped:
        others = [c for c in CATEGORIES if c != rows[r]["category"]]
        rows[r]["category"] = others[int(rng.integers(len(others)))]
    return rows, flipped


@pytest.fixture
def flipped_project(tmp_path):
    rows, flipped = separable_rows()
    root = tmp_path / "project"
    with Store.open(root) as store:
        import_file(store, write_jsonl(tmp_path / "tickets.jsonl", rows), "tickets")
    return root, rows, flipped


def test_the_flipped_labels_rank_first_with_the_true_label_suggested(flipped_project):
    root, rows, flipped = flipped_project
    truth = separable_rows(flips=0)[0]
    with Store.open(root) as store:
        result = label_errors.find_label_errors(store, get_version(store, "tickets"), "category")
    top = result.suspects(len(flipped))
    assert sorted(s["row"] for s in top) == flipped
    assert all(s["suggested"] == truth[s["row"]]["category"] and s["given"] == rows[s["row"]]["category"]
               for s in top)
    assert all(s["id"] == rows[s["row"]]["id"] for s in top)
    # cleanlab's own quality score of the same probabilities orders them: the lowest quality first
    assert [s["quality"] for s in top] == sorted(s["quality"] for s in top)
    assert max(s["quality"] for s in top) < min(result.quality[r] for r in range(len(rows)) if r not in flipped)


def test_no_record_is_scored_by_a_model_that_was_trained_on_it():
    labels = np.repeat(np.arange(3), 20)
    ids = np.arange(len(labels)).reshape(-1, 1)  # the features are the records' own numbers
    seen: list[tuple[set, list]] = []

    def recording_model(x_train, y_train, x_test, n_classes):
        seen.append((set(x_train[:, 0].tolist()), x_test[:, 0].tolist()))
        return np.full((len(x_test), n_classes), 1.0 / n_classes)

    _, fold_of = label_errors.oof_probabilities(ids, labels, 3, folds=5, seed=3, model=recording_model)
    assert len(seen) == 5
    for f, (trained, tested) in enumerate(seen):
        assert trained.isdisjoint(tested)  # no record scored by a model that saw it
        assert sorted(np.flatnonzero(fold_of == f).tolist()) == sorted(tested)
        assert trained == set(range(len(labels))) - set(tested)  # ... and every other record trained it
    assert sorted(r for _, tested in seen for r in tested) == list(range(len(labels)))
    for f in range(5):  # stratified: each fold holds 4 of every label's 20 records
        assert Counter(labels[fold_of == f].tolist()) == {0: 4, 1: 4, 2: 4}


def test_the_default_model_cannot_recognise_its_own_training_records():
    """Texts that are nothing but a unique token, labels at random: a model that saw a record fits
    its label (in-sample); out of fold it can only guess."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 90)
    x = label_errors.text_features([f"record{i:04d}x" for i in range(90)])
    in_sample = label_errors.fit_predict(x, labels, x, 3)[np.arange(90), labels]
    oof, _ = label_errors.oof_probabilities(x, labels, 3)
    assert in_sample.mean() > 0.9
    assert oof[np.arange(90), labels].mean() < 0.5


def test_duplicates_and_annotators_that_disagree_join_the_ranking(tmp_path):
    rows, _ = separable_rows(flips=0)
    rows.append({"id": "dup", "text": rows[0]["text"], "category": "login"})  # copy of a billing record
    root = tmp_path / "project"
    answers = tmp_path / "answers.csv"
    with open(answers, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "annotator", "label"])
        for who, value in (("ann", "refund"), ("bob", "refund"), ("cid", rows[5]["category"])):
            w.writerow(["t005", who, value])
    with Store.open(root) as store:
        import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets")
        import_annotations(store, answers, dataset="tickets", question="category", item_col="id",
                           annotator_col="annotator", value_col="label")
        result = label_errors.find_label_errors(store, get_version(store, "tickets"), "category")
    by_row = {s["row"]: s for s in result.suspects()}
    dup = len(rows) - 1
    assert any("exact duplicate of row 1, which is labelled 'billing'" in r for r in by_row[dup]["reasons"])
    assert 0 not in by_row  # a tie of one each: the record whose label the classifier agrees with is left out
    assert any("annotators answered 'refund' (2 of 3)" in r for r in by_row[5]["reasons"])


def test_clear_errors_for_a_missing_column_and_rare_labels(tmp_path):
    rows, _ = separable_rows(flips=0)
    rows.append({"id": "rare", "text": "lonely words here", "category": "other"})
    with Store.open(tmp_path / "p") as store:
        version = import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "t").version
        with pytest.raises(WorkbenchError, match="no column 'label'"):
            label_errors.find_label_errors(store, version, "label")
        with pytest.raises(WorkbenchError, match=r"at least 5 records.*'other' \(1\)"):
            label_errors.find_label_errors(store, version, "category")


def _cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_flags_and_relabelled_version(capsys, flipped_project):
    root, rows, flipped = flipped_project
    code, out, err = _cli(capsys, "label-errors", "tickets", "--label-col", "category", "--json",
                          "--flag-top", "3", "--relabel-top", str(len(flipped)), "--out", "tickets-fixed",
                          "--project", str(root))
    assert code == 0, err
    got = json.loads(out)
    assert {"records", "suspects", "seconds"} <= set(got) and got["records"] == len(rows)
    assert all({"row", "id", "given", "suggested", "quality"} <= set(s) for s in got["suspects"])
    top = got["suspects"][:len(flipped)]
    assert sorted(s["row"] for s in top) == flipped
    truth = separable_rows(flips=0)[0]
    with Store.open(root) as store:
        source = get_version(store, "tickets")
        marks = flags.flags(store, source)
        assert sorted(m["row"] for m in marks) == sorted(s["row"] for s in top[:3])
        assert all("suspected label error" in m["reason"] and "suggested" in m["reason"] for m in marks)
        new = get_version(store, "tickets-fixed")
        fixed = [r for b in iter_version(store, new) for r in b.to_pylist()]
    assert new.parent_id == source.version_id and new.recipe["op"] == "relabel"
    assert sorted(c["row"] for c in new.recipe["changes"]) == flipped
    assert [r["category"] for r in fixed] == [r["category"] for r in truth]  # every flip undone, nothing else
    assert [r["prompt"] for r in fixed] == [r["text"] for r in rows]


def test_cli_text_output_and_errors(capsys, flipped_project):
    root, rows, flipped = flipped_project
    code, out, err = _cli(capsys, "label-errors", "tickets", "--project", str(root), "--show", "2")
    assert code == 0, err
    assert "suspected label errors" in out and " -> " in out and "more (--show N" in out
    code, out, err = _cli(capsys, "label-errors", "tickets", "--label-col", "nope", "--project", str(root))
    assert code == 1 and "no column 'nope'" in err and "Traceback" not in err
    code, out, err = _cli(capsys, "label-errors", "tickets", "--relabel-top", "2", "--project", str(root))
    assert code == 1 and "--out" in err


def test_annotators_may_flag_but_only_admins_write_a_relabelled_version(flipped_project):
    from workbench.core import auth

    root, rows, flipped = flipped_project
    with Store.open(root) as store:
        auth.add_user(store, "ada", "admin", "long-enough-password")
        ann = auth.add_user(store, "bea", "annotator", "long-enough-password", actor=auth.get_user(store, "ada"))
        result = label_errors.find_label_errors(store, get_version(store, "tickets"), "category")
        assert label_errors.flag_suspects(store, result, 2, user=ann) == 2
        assert {f["who"] for f in flags.flags(store, result.version)} == {"bea"}
        with pytest.raises(auth.PermissionDenied, match="may not write version"):
            label_errors.relabel_suspects(store, result, 2, out="fixed", user=ann)
        new, info = label_errors.relabel_suspects(store, result, 2, out="fixed", user=auth.get_user(store, "ada"))
        assert info["changed"] == 2 and new.created_by == "ada"
