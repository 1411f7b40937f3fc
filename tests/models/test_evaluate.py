"""Evaluation runs (workbench.models: evaluation, generator, eval_scores, slices, compare, neighbours): test
items, crash-safe ingestion, scores checked against sacreBLEU, rouge-score and scikit-learn, slices,
leaderboard, paired comparison, training neighbours and flags.

Answers are written into `outputs.jsonl` here exactly as the generator writes them (one
`{"item", "output"}` line per answer), so these tests need no model; tests/models/test_evaluate_generate.py
runs the real generator subprocess with the tiny model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from trainers.eval_generate import done_items
from workbench.core import auth
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, write_version
from workbench.data.demo import generate_tickets
from workbench.labels import flags
from workbench.models import compare, eval_items, eval_scores, eval_setup, evaluation, generator, neighbours, slices

N_RECORDS = 48


def tickets() -> list[dict]:
    rows = list(generate_tickets(N_RECORDS, seed=3))
    for i, r in enumerate(rows):
        r["split"] = "test" if i % 3 == 0 else "train"
    return rows


def write(store: Store, name: str, rows: list[dict], columns: list[str], fmt: str = "prompt-completion",
          info: dict | None = None):
    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    return write_version(store, name, [table], kind="import", fmt=fmt, recipe={}, info=info or {})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("evaluate") / "project")
    rows = tickets()
    write(store, "tickets", rows, ["prompt", "completion", "category", "channel", "split"])
    write(store, "nosplit", rows, ["prompt", "completion", "category"])
    yield store, rows
    store.close()


def answer(store: Store, run, outputs: dict[int, str]) -> None:
    """Append answers to the run's outputs.jsonl as the generator does (one JSON line each)."""
    with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "a", encoding="utf-8") as f:
        for item, text in outputs.items():
            f.write(json.dumps({"item": item, "output": text}) + "\n")


def references(store: Store, run) -> dict[int, str]:
    items = [json.loads(line) for line in open(Path(run.folder) / evaluation.ITEMS_FILE, encoding="utf-8")]
    rows = {r["row"]: r for r in items}
    version = get_version(store, run.ref)
    by_row = {r["_row"]: r for r in eval_items.records(store, version, list(rows))}
    return {it["item"]: by_row[it["row"]]["completion"] for it in items}


def finished_run(store: Store, make_output, ref: str = "tickets", label: str = "m",
                 split: str = "test") -> evaluation.EvalRun:
    run = evaluation.create_eval(store, ref, model=eval_setup.ModelSpec("base", label=label), split=split)
    refs = references(store, run)
    answer(store, run, {i: make_output(i, refs[i]) for i in range(run.items)})
    return generator.refresh(store, run.eval_id)


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


def drop_every_third_word(text: str) -> str:
    return " ".join(w for j, w in enumerate(text.split(" ")) if j % 3 != 2)


@pytest.fixture(scope="module")
def two_runs(project):
    store, _ = project
    a = finished_run(store, lambda i, r: r if i % 2 else first_sentence(r), label="half right")
    b = finished_run(store, lambda i, r: r if i % 4 else drop_every_third_word(r), label="mostly right")
    return a, b


# ---------------------------------------------------------------- test items

def test_test_items_are_the_test_split_in_record_order(project):
    store, rows = project
    run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"),
                               settings={"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "seed": 5})
    expected = [i for i, r in enumerate(rows) if r["split"] == "test"]
    items = [json.loads(line) for line in open(Path(run.folder) / evaluation.ITEMS_FILE, encoding="utf-8")]
    assert [it["row"] for it in items] == expected and [it["item"] for it in items] == list(range(len(expected)))
    assert [it["messages"] for it in items] == [[{"role": "user", "content": rows[i]["prompt"]}] for i in expected]
    assert references(store, run) == {k: rows[i]["completion"] for k, i in enumerate(expected)}
    saved = json.loads((Path(run.folder) / evaluation.CONFIG_FILE).read_text())
    assert saved["settings"] == {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "batch_size": 0, "seed": 5}
    assert run.status == "created" and run.items == len(expected) and run.generated == 0


def test_answer_length_defaults_to_what_the_references_need(project, tmp_path):
    """max_new_tokens 0 (the default): the references' 99th percentile in the model's own tokens, plus 8;
    recomputed here with the tokenizer loaded by transformers directly."""
    from transformers import AutoTokenizer

    from trainers import tiny

    store, rows = project
    folder = tmp_path / "model"
    tiny.train_tokenizer([r["prompt"] + " " + r["completion"] for r in rows], 400).save_pretrained(folder)
    run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec(str(folder)))
    tok = AutoTokenizer.from_pretrained(folder)
    refs = [rows[i]["completion"] for i, r in enumerate(rows) if r["split"] == "test"]
    p99 = int(np.ceil(np.percentile([len(tok(t, add_special_tokens=False)["input_ids"]) for t in refs], 99)))
    saved = json.loads((Path(run.folder) / evaluation.CONFIG_FILE).read_text())["settings"]
    assert p99 > 64 and saved["max_new_tokens"] == p99 + 8 == run.settings["max_new_tokens"]
    assert f"99th percentile of the {len(refs)} reference answers is {p99} tokens" in saved["max_new_tokens_rule"]
    # a model whose tokenizer cannot be loaded still gets a budget (approximate counts), said so
    other = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"))
    assert "approximate counts" in other.settings["max_new_tokens_rule"] and other.settings["max_new_tokens"] >= 16


def test_a_version_without_splits_says_so_and_offers_all(project):
    store, rows = project
    with pytest.raises(WorkbenchError, match="no split column.*--split all"):
        evaluation.create_eval(store, "nosplit", model=eval_setup.ModelSpec("base"))
    with pytest.raises(WorkbenchError, match="no records in split 'dev'; its splits: test, train"):
        evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"), split="dev")
    run = evaluation.create_eval(store, "nosplit", model=eval_setup.ModelSpec("base"), split="all")
    assert run.items == len(rows)


@pytest.mark.parametrize("settings, message", [
    ({"max_new_tokens": -1}, "max_new_tokens"), ({"max_new_tokens": 9000}, "max_new_tokens"),
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"batch_size": -1}, "batch_size"), ({"beams": 4}, "unknown generation setting"),
])
def test_bad_generation_settings_are_refused(settings, message):
    with pytest.raises(WorkbenchError, match=message):
        eval_setup.GenerationSettings.from_dict(settings)


def test_annotators_may_not_start_evaluations(project):
    store, _ = project
    with pytest.raises(auth.PermissionDenied, match="may not evaluate"):
        evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"), user=auth.User("ann", "annotator"))
    run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"), user=auth.User("boss", "admin"))
    assert run.created_by == "boss"


# ---------------------------------------------------------------- ingestion

def test_ingest_is_idempotent_and_a_torn_line_loses_nothing(project):
    store, _ = project
    run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"))
    path = Path(run.folder) / evaluation.OUTPUTS_FILE
    answer(store, run, {i: f"answer {i}" for i in range(5)})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"item": 5, "output": "half writ')  # the generator was killed mid-line
    assert evaluation.ingest(store, run.eval_id) == 5
    assert evaluation.ingest(store, run.eval_id) == 0
    # A resumed generator cuts the torn line and answers the rest.
    assert done_items(path) == set(range(5))
    assert path.read_text(encoding="utf-8").endswith("\n")
    answer(store, run, {i: f"answer {i}" for i in range(5, run.items)})
    assert evaluation.ingest(store, run.eval_id) == run.items - 5
    # The app restarted: re-reading the whole file inserts nothing twice.
    assert evaluation.ingest(store, run.eval_id, from_start=True) == 0
    rows = store.cursor().execute("SELECT item, output FROM wb_eval_outputs WHERE eval_id = ? ORDER BY item",
                                  [run.eval_id]).fetchall()
    assert rows == [(i, f"answer {i}") for i in range(run.items)]


def test_refresh_scores_once_every_answer_is_in(project):
    store, _ = project
    run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("base"))
    refs = references(store, run)
    answer(store, run, {i: refs[i] for i in range(run.items - 1)})
    run = generator.refresh(store, run.eval_id)
    assert run.status == "created" and run.generated == run.items - 1 and run.metrics is None
    with pytest.raises(WorkbenchError, match="resume it"):
        eval_scores.score(store, run.eval_id)
    answer(store, run, {run.items - 1: refs[run.items - 1]})
    run = generator.refresh(store, run.eval_id)
    assert run.status == "finished" and run.metrics["bleu"] == pytest.approx(100.0)
    assert run.metrics["exact_match"] == 1.0 and run.metrics["rougeLsum"] == pytest.approx(1.0)


# ---------------------------------------------------------------- scores against the reference libraries

def texts(store, run):
    _, outputs, refs = evaluation.texts(store, run.eval_id)
    return outputs, refs


def test_corpus_scores_equal_sacrebleu_and_rouge_score(project, two_runs):
    store, _ = project
    run, _ = two_runs
    outputs, refs = texts(store, run)
    m = run.metrics
    bleu = sacrebleu.BLEU()
    assert m["bleu"] == pytest.approx(bleu.corpus_score(outputs, [refs]).score, abs=1e-9)
    assert 0 < m["bleu"] < 100
    assert m["signature"] == str(bleu.get_signature())
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [refs]).score, abs=1e-9)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    pairs = [scorer.score(r, o) for o, r in zip(outputs, refs)]
    for t in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert m[t] == pytest.approx(np.mean([p[t].fmeasure for p in pairs]), abs=1e-12)
        assert m["rouge"][t]["precision"] == pytest.approx(np.mean([p[t].precision for p in pairs]), abs=1e-12)
        assert m["rouge"][t]["recall"] == pytest.approx(np.mean([p[t].recall for p in pairs]), abs=1e-12)
    assert m["exact_match"] == pytest.approx(np.mean([o.strip() == r.strip() for o, r in zip(outputs, refs)]))
    ref_tokens = sum(len(sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(r).split()) for r in refs)
    out_tokens = sum(len(sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(o).split()) for o in outputs)
    assert m["length_ratio"] == pytest.approx(out_tokens / ref_tokens)


def test_run_scores_are_those_of_workbench_score(project, two_runs):
    from workbench.models.scoring import score_texts

    store, _ = project
    run, _ = two_runs
    outputs, refs = texts(store, run)
    expected = score_texts(outputs, refs)
    expected.pop("n")
    for key, value in expected.items():
        if key != "rouge":
            assert run.metrics[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    for t, values in expected["rouge"].items():
        assert run.metrics["rouge"][t] == pytest.approx(values)


def test_per_example_scores_equal_sentence_bleu(project, two_runs):
    store, _ = project
    run, _ = two_runs
    outputs, refs = texts(store, run)
    worst = compare.examples(store, run.eval_id, metric="bleu", limit=1000)
    expected = {i: sacrebleu.sentence_bleu(o, [r]).score for i, (o, r) in enumerate(zip(outputs, refs))}
    assert {e["item"]: e["score"] for e in worst} == pytest.approx(expected)
    assert [e["score"] for e in worst] == sorted(e["score"] for e in worst)
    assert evaluation.example_metrics(store, run.eval_id)[:1] == ["bleu"]


def test_slices_recompute_each_category_from_its_own_items(project, two_runs):
    store, rows = project
    run, _ = two_runs
    outputs, refs = texts(store, run)
    test_rows = [r for r in rows if r["split"] == "test"]
    assert slices.slice_columns(store, run.eval_id)[0] == "category"
    got = slices.slices(store, run.eval_id, "category")
    assert sum(g["n"] for g in got) == run.items
    for g in got:
        idx = [i for i, r in enumerate(test_rows) if r["category"] == g["value"]]
        assert g["n"] == len(idx)
        sub_o, sub_r = [outputs[i] for i in idx], [refs[i] for i in idx]
        assert g["bleu"] == pytest.approx(sacrebleu.corpus_bleu(sub_o, [sub_r]).score, abs=1e-9)
        assert g["chrf"] == pytest.approx(sacrebleu.corpus_chrf(sub_o, [sub_r]).score, abs=1e-9)
    with pytest.raises(WorkbenchError, match="no column 'colour'"):
        slices.slices(store, run.eval_id, "colour")


def test_leaderboard_ranks_runs_on_the_same_items_by_bleu(project, two_runs):
    store, _ = project
    a, b = two_runs
    board = slices.leaderboard(store, a.eval_id)
    assert {a.eval_id, b.eval_id} <= {r["eval_id"] for r in board}
    assert [r["bleu"] for r in board] == sorted((r["bleu"] for r in board), reverse=True)
    assert all(r["items"] == a.items for r in board)


# ---------------------------------------------------------------- comparing runs

def test_compare_reports_the_true_differences_and_bootstrap_intervals(project, two_runs):
    store, _ = project
    a, b = two_runs
    rows = {r["metric"]: r for r in compare.compare(store, a.eval_id, b.eval_id, n_resamples=1000, seed=1)}
    (oa, refs), (ob, _) = texts(store, a), texts(store, b)
    assert rows["bleu"]["a"] == pytest.approx(sacrebleu.corpus_bleu(oa, [refs]).score)
    assert rows["bleu"]["diff"] == pytest.approx(sacrebleu.corpus_bleu(ob, [refs]).score
                                                 - sacrebleu.corpus_bleu(oa, [refs]).score)
    for r in rows.values():
        assert r["n_resamples"] == 1000 and r["ci_low"] <= r["ci_high"]
        assert r["significant"] == (r["ci_low"] > 0 or r["ci_high"] < 0)
        assert ("is significant" in r["statement"]) == r["significant"]
    # Against itself every difference is zero and nothing is significant.
    same = compare.compare(store, a.eval_id, a.eval_id, n_resamples=200)
    assert all(r["diff"] == 0 and not r["significant"] and r["p_value"] == 1.0 for r in same)


def test_a_perfect_run_is_significantly_better(project, two_runs):
    store, _ = project
    a, _ = two_runs
    perfect = finished_run(store, lambda i, r: r, label="oracle")
    rows = {r["metric"]: r for r in compare.compare(store, a.eval_id, perfect.eval_id, n_resamples=1000)}
    assert rows["bleu"]["significant"] and rows["bleu"]["diff"] > 0
    assert f"eval {perfect.eval_id} (oracle)" in rows["bleu"]["statement"]


def test_runs_on_different_items_cannot_be_paired(project, two_runs):
    store, _ = project
    a, _ = two_runs
    other = finished_run(store, lambda i, r: r, ref="nosplit", split="all")
    with pytest.raises(WorkbenchError, match="not run on the same test items"):
        compare.compare(store, a.eval_id, other.eval_id)
    assert other.eval_id not in [r["eval_id"] for r in slices.leaderboard(store, a.eval_id)]


def test_example_diff_sorts_by_largest_loss_and_gain(project, two_runs):
    store, _ = project
    a, b = two_runs
    (oa, refs), (ob, _) = texts(store, a), texts(store, b)
    diffs = {i: sacrebleu.sentence_bleu(ob[i], [refs[i]]).score - sacrebleu.sentence_bleu(oa[i], [refs[i]]).score
             for i in range(len(refs))}
    losses = compare.example_diff(store, a.eval_id, b.eval_id, order="losses", limit=5)
    gains = compare.example_diff(store, a.eval_id, b.eval_id, order="gains", limit=5)
    assert [r["diff"] for r in losses] == pytest.approx(sorted(diffs.values())[:5])
    assert [r["diff"] for r in gains] == pytest.approx(sorted(diffs.values(), reverse=True)[:5])
    top = gains[0]
    assert (top["output_a"], top["output_b"], top["reference"]) == (oa[top["item"]], ob[top["item"]], refs[top["item"]])


# ---------------------------------------------------------------- neighbours and flags

def test_neighbours_rank_a_copy_first_and_respect_the_category(project):
    store, rows = project
    version = get_version(store, "tickets")
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    target = train[4]
    found = neighbours.neighbours(store, version, rows[target]["prompt"], k=5, category=rows[target]["category"])
    assert found[0]["row"] == target and found[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert all(f["row"] in train for f in found)  # only training records
    assert [f["similarity"] for f in found] == sorted((f["similarity"] for f in found), reverse=True)
    other = next(r["category"] for r in rows if r["category"] != rows[target]["category"])
    same = neighbours.neighbours(store, version, rows[target]["prompt"], k=50, category=other, only_category=True)
    assert same and all(rows[f["row"]]["category"] == other and f["same_category"] for f in same)
    assert len(same) == sum(rows[i]["category"] == other for i in train)


def test_neighbour_similarity_is_tfidf_cosine(project):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    store, rows = project
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    query = "my parcel never arrived and the tracking number does not work"
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit([rows[i]["prompt"] for i in train])
    sims = cosine_similarity(vec.transform([query]), vec.transform([rows[i]["prompt"] for i in train]))[0]
    best = sorted(range(len(train)), key=lambda j: (-sims[j], train[j]))[:3]
    found = neighbours.neighbours(store, "tickets", query, k=3)
    assert [f["row"] for f in found] == [train[j] for j in best]
    assert [f["similarity"] for f in found] == pytest.approx([sims[j] for j in best], abs=1e-5)


def test_the_neighbour_index_lives_and_dies_with_its_store(tmp_path):
    import gc
    import weakref

    store = Store.open(tmp_path / "project")
    write(store, "tickets", tickets(), ["prompt", "completion", "category", "channel", "split"])
    neighbours.neighbours(store, "tickets", "my parcel never arrived", k=1)
    neighbours.neighbours(store, "tickets", "the tracking number does not work", k=1)
    (index,) = neighbours.index_cache(store).values()  # built once, kept with the store
    vectorizer = weakref.ref(index[2])
    store.close()
    del store, index
    gc.collect()
    assert vectorizer() is None  # nothing outside the store holds it


def test_flags_are_append_only_with_who_and_why(project, two_runs):
    store, _ = project
    a, _ = two_runs
    version = get_version(store, "tickets")
    before = len(flags.flags(store, version))
    assert flags.flag_records(store, version, [3, 1, 3], "label looks wrong", auth.User("ann", "annotator"),
                                 eval_id=a.eval_id) == 2
    assert flags.flag_records(store, "tickets", [1], "still wrong") == 1
    got = flags.flags(store, version)[before:]
    assert [(f["row"], f["reason"], f["who"]) for f in got] == [(1, "label looks wrong", "ann"),
                                                                (3, "label looks wrong", "ann"),
                                                                (1, "still wrong", "local")]
    assert got[0]["eval_id"] == a.eval_id and got[0]["created_at"] is not None
    with pytest.raises(WorkbenchError, match="row 999"):
        flags.flag_records(store, version, [999], "x")
    with pytest.raises(WorkbenchError, match="reason is required"):
        flags.flag_records(store, version, [1], "  ")


# ---------------------------------------------------------------- classification

@pytest.fixture(scope="module")
def classification_runs(project):
    store, rows = project
    write(store, "intents", [{"prompt": r["prompt"], "category": r["category"], "split": r["split"]} for r in rows],
          ["prompt", "category", "split"], fmt="classification", info={"label_column": "category"})
    labels = sorted({r["category"] for r in rows})
    test = [r for r in rows if r["split"] == "test"]

    def wrong(label):
        return labels[(labels.index(label) + 1) % len(labels)]

    # What each run "says" and the label it means (parsing: case, '_' and punctuation do not matter).
    said_a = {i: (r["category"].replace("_", " ").title() + ".", r["category"]) if i % 3 else ("no idea", "unparsed")
              for i, r in enumerate(test)}
    said_b = {i: (f"The answer is {r['category']}", r["category"]) if i % 4 else (wrong(r["category"]),
                                                                                    wrong(r["category"]))
              for i, r in enumerate(test)}
    runs = []
    for said in (said_a, said_b):
        run = evaluation.create_eval(store, "intents", model=eval_setup.ModelSpec("base"))
        answer(store, run, {i: text for i, (text, _) in said.items()})
        runs.append(generator.refresh(store, run.eval_id))
    return runs, test, labels, [[said[i][1] for i in range(len(test))] for said in (said_a, said_b)]


def test_classification_scores_equal_scikit_learn(project, classification_runs):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score

    store, _ = project
    (run, _), test, labels, (meant, _) = classification_runs
    truth = [r["category"] for r in test]
    assert run.task == "classification" and run.status == "finished"
    m = run.metrics
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, meant))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, meant, labels=labels, average="macro", zero_division=0))
    assert m["micro_precision"] == pytest.approx(precision_score(truth, meant, labels=labels, average="micro",
                                                                 zero_division=0))
    assert m["unparsed"] == meant.count("unparsed") > 0
    cells = {(c["reference"], c["predicted"]): c["count"] for c in slices.confusion(store, run.eval_id)}
    cols = labels + ["unparsed"]
    matrix = confusion_matrix(truth, meant, labels=cols)
    assert cells == {(labels[i], cols[j]): int(matrix[i, j]) for i in range(len(labels)) for j in range(len(cols))
                     if matrix[i, j]}


def test_classification_slices_and_comparison(project, classification_runs):
    from sklearn.metrics import accuracy_score

    store, _ = project
    (a, b), test, labels, (meant_a, meant_b) = classification_runs
    truth = [r["category"] for r in test]
    for g in slices.slices(store, a.eval_id, "category"):
        idx = [i for i, t in enumerate(truth) if t == g["value"]]
        assert g["n"] == len(idx)
        assert g["accuracy"] == pytest.approx(accuracy_score([truth[i] for i in idx], [meant_a[i] for i in idx]))
    rows = {r["metric"]: r for r in compare.compare(store, a.eval_id, b.eval_id, n_resamples=300)}
    assert "accuracy" in set(rows) <= {"accuracy", "macro_f1"}
    assert rows["accuracy"]["diff"] == pytest.approx(accuracy_score(truth, meant_b) - accuracy_score(truth, meant_a))
    right_a = [float(m == t) for m, t in zip(meant_a, truth)]
    right_b = [float(m == t) for m, t in zip(meant_b, truth)]
    losses = compare.example_diff(store, a.eval_id, b.eval_id, order="losses", limit=5)
    assert [r["diff"] for r in losses] == sorted(b - a for a, b in zip(right_a, right_b))[:5]
    worst = compare.examples(store, a.eval_id, limit=100)
    assert {w["predicted"] for w in worst if w["score"] == 0} == {"unparsed"}


def test_a_model_that_is_not_on_this_machine_is_refused_before_anything_starts(project):
    store, _ = project
    before = len(evaluation.list_evals(store))
    for name in ("nobody/no-such-model", "not a model id!"):
        with pytest.raises(WorkbenchError, match="neither a model folder nor in the local Hugging Face cache"):
            eval_setup.resolve_model(store, base_model=name)
    with pytest.raises(WorkbenchError, match="tiny base is not built yet"):
        eval_setup.resolve_model(store, base_model="tiny")
    with pytest.raises(WorkbenchError, match="either --run or --base-model"):
        eval_setup.resolve_model(store, run_id="x", base_model="tiny")
    with pytest.raises(WorkbenchError, match="no run named 'nope'"):
        eval_setup.resolve_model(store, run_id="nope")
    assert len(evaluation.list_evals(store)) == before
