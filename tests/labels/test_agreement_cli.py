"""workbench.labels.agreement and `workbench agreement`: answers from a file or the store, the report's JSON, consensus
written as a new version. Expected numbers come from the `krippendorff` package, statsmodels and plain Python
over the same answers."""

import csv
import json
from collections import Counter, defaultdict

import krippendorff
import numpy as np
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from workbench.cli.main import main
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, iter_version
from workbench.data import demo
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.labels import adjudication, agreement, annotations, questions

KEYS = ("krippendorff_alpha", "fleiss_kappa", "cohen_kappa_mean", "percent_agreement", "n_items", "n_annotators")


@pytest.fixture(scope="module")
def demo_rows():
    tickets = list(demo.generate_tickets(200, seed=7))
    return demo.generate_annotations(tickets, n_items=200, seed=7)


@pytest.fixture
def annotations_csv(tmp_path, demo_rows):
    path = tmp_path / "annotations.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["item_id", "annotator", "question", "value"])
        w.writeheader()
        w.writerows(demo_rows)
    return path


def reliability(rows, question, values=None):
    """Plain Python: annotators x items matrix (NaN = missing) for the krippendorff package."""
    rows = [r for r in rows if r["question"] == question]
    items = list(dict.fromkeys(r["item_id"] for r in rows))
    people = sorted({r["annotator"] for r in rows})
    values = values or sorted({str(r["value"]) for r in rows})
    code = {v: k for k, v in enumerate(values)}
    data = np.full((len(people), len(items)), np.nan)
    for r in rows:
        data[people.index(r["annotator"]), items.index(r["item_id"])] = code[str(r["value"])]
    return data, items, people, values


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


# ---------------------------------------------------------------- long-format files

def test_file_report_matches_the_reference_libraries(capsys, annotations_csv, demo_rows):
    out = run_json(capsys, "agreement", "--file", str(annotations_csv), "--item-col", "item_id",
                   "--annotator-col", "annotator", "--value-col", "value", "--question", "category",
                   "--resamples", "200")
    data, items, people, _ = reliability(demo_rows, "category")
    assert all(k in out for k in KEYS)
    assert out["krippendorff_alpha"] == pytest.approx(krippendorff.alpha(data, level_of_measurement="nominal"),
                                                      abs=1e-9)
    counts = np.stack([np.bincount(col[~np.isnan(col)].astype(int), minlength=10) for col in data.T])
    assert out["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(counts), abs=1e-9)  # 3 answers on every item
    assert (out["n_items"], out["n_annotators"]) == (len(items), len(people))
    alpha = out["coefficients"]["krippendorff_alpha"]
    assert alpha["ci_low"] < alpha["value"] < alpha["ci_high"] and alpha["resamples"] == 200
    assert "0.667" in alpha["reading"]
    assert out["pairwise"]["annotators"] == people
    assert {r["label"] for r in out["per_label"]} == set(demo.CATEGORIES) & {r["value"] for r in demo_rows}
    assert out["disputed"] and out["disputed"][0]["pairs_disagreeing"] > 0
    assert [a["annotator"] for a in out["annotators"]] == people


def test_file_report_at_the_ordinal_level_has_weighted_kappas(capsys, annotations_csv, demo_rows):
    out = run_json(capsys, "agreement", "--file", str(annotations_csv), "--item-col", "item_id",
                   "--annotator-col", "annotator", "--value-col", "value", "--question", "urgency",
                   "--level", "ordinal", "--resamples", "0")
    data, *_ = reliability(demo_rows, "urgency", values=["1", "2", "3", "4", "5"])
    assert out["krippendorff_alpha"] == pytest.approx(krippendorff.alpha(data, level_of_measurement="ordinal"),
                                                      abs=1e-9)
    for level in ("nominal", "interval", "ratio"):
        assert out["alpha_by_level"][level]["value"] == pytest.approx(
            krippendorff.alpha(data + 1, level_of_measurement=level), abs=1e-9)  # codes 0-4 -> ratings 1-5
    assert out["coefficients"]["cohen_kappa_quadratic_mean"]["value"] is not None
    assert out["coefficients"]["krippendorff_alpha"]["ci_low"] is None  # --resamples 0


def test_file_holding_two_questions_needs_one_named(annotations_csv, capsys):
    assert main(["agreement", "--file", str(annotations_csv), "--item-col", "item_id", "--annotator-col",
                 "annotator", "--value-col", "value"]) == 1
    err = capsys.readouterr().err
    assert "holds answers to 2 questions (category, urgency)" in err and "--question category" in err


def test_missing_column_names_the_flag_and_the_columns(annotations_csv):
    with pytest.raises(WorkbenchError, match=r"no column 'rater' \(--annotator-col\); its columns: item_id, "):
        agreement.read_answers_file(annotations_csv, item_col="item_id", annotator_col="rater", value_col="value",
                                    question="category")


def test_jsonl_answers_duplicates_and_empty_values(tmp_path):
    rows = [{"item": 1, "who": "a", "v": 3}, {"item": 1, "who": "b", "v": 3.0}, {"item": 2, "who": "a", "v": 2},
            {"item": 2, "who": "b", "v": None}, {"item": 2, "who": "a", "v": 4}, {"item": 3, "who": "b", "v": ""}]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = agreement.read_answers_file(path, item_col="item", annotator_col="who", value_col="v")
    assert df.to_dict("records") == [{"item": "1", "annotator": "a", "value": "3"},
                                     {"item": "1", "annotator": "b", "value": "3"},
                                     {"item": "2", "annotator": "a", "value": "4"}]  # the later answer of a on 2
    assert df.attrs["duplicates"] == 1


def test_one_annotator_gives_null_and_a_reason_in_json(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("item,annotator,label\n1,ann,x\n2,ann,y\n")
    out = run_json(capsys, "agreement", "--file", str(path), "--item-col", "item", "--annotator-col", "annotator",
                   "--value-col", "label")
    assert out["krippendorff_alpha"] is None and out["fleiss_kappa"] is None
    assert "only one annotator" in out["reasons"]["krippendorff_alpha"]
    assert out["coefficients"]["krippendorff_alpha"]["reading"].startswith("Not computed: only one annotator")
    assert (out["n_items"], out["n_annotators"]) == (2, 1)


def test_identical_answers_are_explained_in_the_text_output(tmp_path, capsys):
    path = tmp_path / "same.csv"
    path.write_text("item,annotator,label\n1,a,ok\n1,b,ok\n2,a,ok\n2,b,ok\n")
    assert main(["agreement", "--file", str(path), "--item-col", "item", "--annotator-col", "annotator",
                 "--value-col", "label"]) == 0
    text = capsys.readouterr().out
    assert "every answer is the same value ('ok')" in text and "nan" not in text.lower()


def test_interval_level_on_text_answers_says_what_to_do(annotations_csv, capsys):
    assert main(["agreement", "--file", str(annotations_csv), "--item-col", "item_id", "--annotator-col",
                 "annotator", "--value-col", "value", "--question", "category", "--level", "interval"]) == 1
    err = capsys.readouterr().err
    assert "needs numeric answers" in err and "--level nominal" in err


def test_labels_give_the_order_and_list_unused_ones(tmp_path, capsys):
    path = tmp_path / "sizes.csv"
    path.write_text("item,annotator,label\n" + "".join(
        f"{i},{a},{v}\n" for i, pair in enumerate([("S", "M"), ("M", "M"), ("L", "L"), ("S", "S"), ("M", "L")])
        for a, v in zip("ab", pair)))
    args = ["agreement", "--file", str(path), "--item-col", "item", "--annotator-col", "annotator", "--value-col",
            "label", "--level", "ordinal"]
    assert main(args) == 1 and "--labels" in capsys.readouterr().err
    out = run_json(capsys, *args, "--labels", "S,M,L,XL")
    assert out["labels"] == ["S", "M", "L", "XL"]
    data = np.array([[0, 1, 2, 0, 1], [1, 1, 2, 0, 2]], dtype=float)
    assert out["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(data, level_of_measurement="ordinal", value_domain=[0, 1, 2, 3]), abs=1e-12)
    xl = next(r for r in out["per_label"] if r["label"] == "XL")
    assert xl["answers"] == 0 and xl["reason"] == "nobody used this label"


def test_gold_annotator_is_compared_not_counted(annotations_csv, demo_rows, capsys):
    gold = {}
    rows = [r for r in demo_rows if r["question"] == "category"]
    truth = {t["id"]: t["category"] for t in demo.generate_tickets(200, seed=7)}
    with open(annotations_csv, "a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        for item in list(dict.fromkeys(r["item_id"] for r in rows))[:100]:
            gold[item] = truth[item]
            w.writerow([item, "expert", "category", truth[item]])
    out = run_json(capsys, "agreement", "--file", str(annotations_csv), "--item-col", "item_id",
                   "--annotator-col", "annotator", "--value-col", "value", "--question", "category",
                   "--gold-annotator", "expert", "--resamples", "0")
    assert "expert" not in out["pairwise"]["annotators"]
    for row in out["annotators"]:
        mine = [r for r in rows if r["annotator"] == row["annotator"] and r["item_id"] in gold]
        assert row["gold_items"] == len(mine)
        assert row["gold_accuracy"] == pytest.approx(np.mean([r["value"] == gold[r["item_id"]] for r in mine]))


# ---------------------------------------------------------------- stored annotations

@pytest.fixture
def project(tmp_path):
    info = make_demo_project(tmp_path / "project", records=200)
    with Store.open(info["project"]) as store:
        for q in ("category", "urgency"):
            annotations.import_annotations(store, info["files"]["annotations"], dataset=DEMO_DATASET, question=q,
                                           item_col="item_id", annotator_col="annotator", value_col="value")
    return info


def file_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_stored_question_report_defaults_to_ordinal_for_ratings(project, capsys):
    out = run_json(capsys, "agreement", DEMO_DATASET, "--question", "urgency", "--project", project["project"],
                   "--resamples", "100")
    rows = file_rows(project["files"]["annotations"])
    data, *_ = reliability(rows, "urgency", values=["1", "2", "3", "4", "5"])
    assert out["level"] == "ordinal"
    assert out["krippendorff_alpha"] == pytest.approx(krippendorff.alpha(data, level_of_measurement="ordinal"),
                                                      abs=1e-9)
    assert out["source"]["dataset"] == DEMO_DATASET and out["source"]["kind"] == "rating"
    assert all(d["row"] is not None for d in out["disputed"])  # records can be found on the Label page


def test_write_consensus_majority_makes_a_new_version(project, capsys):
    out = run_json(capsys, "agreement", DEMO_DATASET, "--question", "category", "--project", project["project"],
                   "--resamples", "0", "--write-consensus", "majority")
    rows = [r for r in file_rows(project["files"]["annotations"]) if r["question"] == "category"]
    votes = defaultdict(Counter)
    for r in rows:
        votes[r["item_id"]][r["value"]] += 1
    expected = {}
    for item, c in votes.items():
        (top, n), *rest = c.most_common()
        if not rest or rest[0][1] < n:
            expected[item] = top
    assert out["consensus"]["version"] == f"{DEMO_DATASET}@2"
    assert out["consensus"]["labels"] == len(expected)
    with Store.open(project["project"]) as store:
        old = {r["id"]: r["category"] for b in iter_version(store, get_version(store, f"{DEMO_DATASET}@1"))
               for r in b.to_pylist()}
        new = {r["id"]: r["category"] for b in iter_version(store, get_version(store, f"{DEMO_DATASET}@2"))
               for r in b.to_pylist()}
        version = get_version(store, f"{DEMO_DATASET}@2")
    assert version.recipe["method"] == "majority"
    assert {k: new[k] for k in expected} == expected
    assert all(new[k] == old[k] for k in old if k not in expected)


def test_dawid_skene_consensus_and_gold_wins(project):
    with Store.open(project["project"]) as store:
        q = questions.get_question(store, DEMO_DATASET, "category")
        item = annotations.answers(store, q)["item"].iloc[0]
        adjudication.set_gold(store, q, item, "warranty")
        answers, info = agreement.stored_answers(store, DEMO_DATASET, "category")
        assert info["gold"] == {item: "warranty"}
        result = agreement.consensus(answers, method="dawid-skene", labels=info["labels"], gold=info["gold"])
        assert result["labels"][item] == "warranty" and not result["tied"]
        assert len(result["labels"]) == answers["item"].nunique()
        out = agreement.write_consensus(store, DEMO_DATASET, "category", method="dawid-skene")
        assert out["from_gold"] == 1
        report = agreement.question_report(store, DEMO_DATASET, "category", resamples=0)
    assert report["gold_items"] == 1


def test_free_text_questions_are_refused(project):
    with Store.open(project["project"]) as store:
        questions.add_question(store, DEMO_DATASET, "rewrite", "text")
        with pytest.raises(WorkbenchError, match="free text"):
            agreement.question_report(store, DEMO_DATASET, "rewrite")


def test_confusion_flag_prints_the_matrix(project, capsys):
    out = run_json(capsys, "agreement", DEMO_DATASET, "--question", "category", "--project", project["project"],
                   "--resamples", "0", "--confusion", "alice,bob")
    rows = [r for r in file_rows(project["files"]["annotations"]) if r["question"] == "category"]
    by = defaultdict(dict)
    for r in rows:
        by[r["item_id"]][r["annotator"]] = r["value"]
    pairs = Counter((v["alice"], v["bob"]) for v in by.values() if "alice" in v and "bob" in v)
    labels = out["confusion"]["labels"]
    for (x, y), n in pairs.items():
        assert out["confusion"]["counts"][labels.index(x)][labels.index(y)] == n
    assert sum(map(sum, out["confusion"]["counts"])) == sum(pairs.values())


def test_numbers_written_differently_are_one_answer(tmp_path, capsys):
    """'1.5' and '1.50' are one number, as '2' and '2.0' are; the krippendorff package, given the numbers,
    finds perfect agreement."""
    rows = [("i1", "a", "1.5"), ("i1", "b", "1.50"), ("i2", "a", "2"), ("i2", "b", "2.0"),
            ("i3", "a", "0.25"), ("i3", "b", ".25"), ("i4", "a", "3"), ("i4", "b", "3.000")]
    path = tmp_path / "numbers.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("item", "annotator", "value"), *rows])
    data = np.array([[float(v) for i, a, v in rows if a == who] for who in ("a", "b")])
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert expected == pytest.approx(1.0)
    out = run_json(capsys, "agreement", "--file", str(path), "--item-col", "item", "--annotator-col", "annotator",
                   "--value-col", "value", "--resamples", "0")
    assert out["krippendorff_alpha"] == pytest.approx(expected, abs=1e-12)
    assert agreement.answer_text("1.50") == agreement.answer_text(1.5) == "1.5"
    assert agreement.answer_text("2.0") == agreement.answer_text(2.0) == "2"


def test_ordinal_alpha_over_text_labels_needs_their_order():
    """The metrics API sorted text labels alphabetically ('high' < 'low' < 'mid') and called that ordinal."""
    from metrics import agreement as ag

    items = ["x", "x", "y", "y", "z", "z"]
    people = ["a", "b"] * 3
    values = ["low", "mid", "mid", "high", "low", "low"]
    with pytest.raises(ValueError, match="order of the labels"):
        ag.krippendorff_alpha(ag.Ratings.from_long(items, people, values), level="ordinal")
    with pytest.raises(ValueError, match="order of the labels"):
        ag.item_disagreement(ag.Ratings.from_long(items, people, values), level="ordinal")
    ordered = ag.Ratings.from_long(items, people, values, labels=["low", "mid", "high"])
    code = {"low": 0, "mid": 1, "high": 2}
    data = np.array([[code[v] for v, p in zip(values, people) if p == who] for who in ("a", "b")], dtype=float)
    assert ag.krippendorff_alpha(ordered, level="ordinal").value == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[0, 1, 2]), abs=1e-12)
    assert ag.krippendorff_alpha(ag.Ratings.from_long(items, people, values), level="nominal").value is not None
    numbers = ag.Ratings.from_long(items, people, [1, 2, 2, 3, 1, 1])  # numbers carry their own order
    assert ag.krippendorff_alpha(numbers, level="ordinal").value == pytest.approx(
        krippendorff.alpha(reliability_data=data + 1, level_of_measurement="ordinal", value_domain=[1, 2, 3]),
        abs=1e-12)
    with pytest.raises(WorkbenchError, match="order"):  # the workbench API, as the CLI
        agreement.build_report(agreement.answers_frame(items, people, values), level="ordinal")
