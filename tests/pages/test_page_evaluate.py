"""The Evaluate page, driven with streamlit.testing.v1.AppTest on a project with two finished evaluations
(answers written into outputs.jsonl as the generator writes them; no model is run here)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import sacrebleu
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.pages.test_pages import empty_cells_for_missing, encodings, shows_every_label
from workbench.core import auth
from workbench.core.store import Store
from workbench.core.versions import get_version, write_version
from workbench.data.demo import generate_tickets
from workbench.labels import flags
from workbench.models import eval_items, eval_setup, evaluation, generator

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
TIMEOUT = 60


def answers(store: Store, run, make) -> None:
    items = [json.loads(line) for line in open(Path(run.folder) / evaluation.ITEMS_FILE, encoding="utf-8")]
    version = get_version(store, run.ref)
    refs = {r["_row"]: r["completion"] for r in eval_items.records(store, version, [it["row"] for it in items])}
    with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps({"item": it["item"], "output": make(it["item"], refs[it["row"]])}) + "\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    rows = list(generate_tickets(36, seed=5))
    cols = ["prompt", "completion", "category", "split"]
    for i, r in enumerate(rows):
        r["split"] = "test" if i % 3 == 0 else "train"
    store = Store.open(tmp_path / "project")
    write_version(store, "tickets", [pa.table({c: [r.get(c) for r in rows] for c in cols})], kind="import",
                  fmt="prompt-completion", recipe={})
    write_version(store, "plain", [pa.table({c: [r.get(c) for r in rows] for c in cols[:3]})], kind="import",
                  fmt="prompt-completion", recipe={})
    runs = []
    for label, make in (("base", lambda i, r: r.split(".")[0]), ("tuned", lambda i, r: r if i % 2 else r[:40])):
        run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("m", label=label))
        answers(store, run, make)
        runs.append(generator.refresh(store, run.eval_id))
    store.close()
    monkeypatch.setenv("WORKBENCH_PROJECT", str(tmp_path / "project"))
    yield {"root": tmp_path / "project", "runs": runs, "rows": rows}
    st.cache_data.clear()
    st.cache_resource.clear()


def evaluate_page(session: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for k, v in (session or {}).items():
        at.session_state[k] = v
    at.run()
    at.switch_page("page_evaluate.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_results_show_metric_cards_signature_and_slices(project):
    base, tuned = project["runs"]
    at = evaluate_page()
    assert at.title[0].value == "Evaluate"
    assert at.selectbox(key="ev_pick").value == tuned.eval_id  # newest first
    cards = {m.label: m.value for m in at.metric}
    assert cards["BLEU"] == f"{tuned.metrics['bleu']:.2f}"
    assert cards["ROUGE-L"] == f"{tuned.metrics['rougeL']:.3f}"
    bleu = sacrebleu.BLEU()
    bleu.corpus_score(["a cat"], [["a cat"]])  # sacreBLEU knows its signature after scoring
    assert any(str(bleu.get_signature()) in c.value for c in at.code)
    slice_frames = [d.value for d in at.dataframe if "value" in d.value.columns and "bleu" in d.value.columns]
    assert slice_frames and slice_frames[0]["n"].sum() == tuned.items
    assert at.get("vega_lite_chart")  # the per-category chart (and the comparison chart)
    board = next(d.value for d in at.dataframe if "eval_id" in d.value.columns and "model" in d.value.columns)
    assert list(board["eval_id"])[0] == max((base, tuned), key=lambda r: r.metrics["bleu"]).eval_id


def test_every_control_has_help(project):
    at = evaluate_page()
    widgets = [*at.text_input, *at.selectbox, *at.multiselect, *at.radio, *at.number_input, *at.button,
               *at.checkbox]
    assert widgets
    assert not [w.label for w in widgets if not w.help]


def test_compare_states_significance_for_every_metric(project):
    base, tuned = project["runs"]
    at = evaluate_page()
    assert at.selectbox(key="ev_cmp_a").value == base.eval_id and at.selectbox(key="ev_cmp_b").value == tuned.eval_id
    statements = [e.value for e in (*at.success, *at.error, *at.info) if "significant" in e.value]
    assert len(statements) == 8  # bleu, length ratio, 4 ROUGE, chrF, exact match
    assert any(f"eval {tuned.eval_id} (tuned)" in s for s in statements)
    diff = next(d.value for d in at.dataframe if "output_a" in d.value.columns)
    assert list(diff["diff"]) == sorted(diff["diff"])  # largest losses first
    at.radio(key="ev_diff_order").set_value("gains").run()
    diff = next(d.value for d in at.dataframe if "output_a" in d.value.columns)
    assert list(diff["diff"]) == sorted(diff["diff"], reverse=True)


def test_flag_the_neighbours_of_a_bad_example(project):
    at = evaluate_page()
    tuned = project["runs"][1]
    key = f"ev_nb_{tuned.eval_id}"
    assert at.multiselect(key=f"{key}_rows").value  # the neighbours are preselected
    chosen = list(at.multiselect(key=f"{key}_rows").value)
    at.text_input(key=f"{key}_reason").set_value("category looks wrong")
    at.button(key=f"{key}_flag").click().run()
    assert not at.exception
    assert any("Flagged" in s.value for s in at.success)
    with Store.open(project["root"]) as store:
        got = flags.flags(store, "tickets")
    assert sorted(f["row"] for f in got) == sorted(chosen)
    assert {f["reason"] for f in got} == {"category looks wrong"} and {f["who"] for f in got} == {"local"}


def test_new_evaluation_explains_a_missing_split_and_a_missing_model(project):
    at = evaluate_page()
    at.radio(key="ev_source").set_value("A base model (optionally with an adapter)").run()
    at.selectbox(key="ev_dataset").set_value("plain").run()
    assert any("no split column" in w.value for w in at.warning)
    assert at.selectbox(key="ev_split").options == ["all"]
    at.button(key="ev_start").click().run()
    assert not at.exception
    assert at.error and "tiny base is not built yet" in at.error[0].value
    assert "`workbench train" not in at.error[0].value and "**Train** page" in at.error[0].value


def test_annotators_do_not_get_the_evaluate_page(project):
    with Store.open(project["root"]) as store:
        auth.add_user(store, "boss", "admin", "password-123")
        auth.add_user(store, "ann", "annotator", "password-123")
        token = auth.start_session(store, auth.get_user(store, "ann"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["wb_session_token"] = token
    at.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("page_evaluate.py")


def test_a_generating_run_shows_progress_and_a_dead_one_can_be_resumed(project):
    import os

    with Store.open(project["root"]) as store:
        run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("m", label="live"))
        answers(store, run, lambda i, r: r)
        lines = (Path(run.folder) / evaluation.OUTPUTS_FILE).read_text().splitlines(keepends=True)
        (Path(run.folder) / evaluation.OUTPUTS_FILE).write_text("".join(lines[:3]))
        dead = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec("m", label="dead"))
        # Generating: this test's own (living) process stands in for the generator; the other one died.
        store.retry(lambda cur: cur.execute("UPDATE wb_evals SET status = 'running', pid = ? WHERE eval_id = ?",
                                            [os.getpid(), run.eval_id]))
        store.retry(lambda cur: cur.execute("UPDATE wb_evals SET status = 'running', pid = 999999999 "
                                            "WHERE eval_id = ?", [dead.eval_id]))
    at = evaluate_page()
    bars = [p.proto.text for p in at.get("progress")]
    assert any(f"Evaluation #{run.eval_id} (live): 3 of {run.items} answers" in t for t in bars), bars
    assert at.button(key=f"ev_resume_{dead.eval_id}")  # the dead generator's run is offered for resuming
    with Store.open(project["root"]) as store:
        assert evaluation.get_eval(store, dead.eval_id).status == "stopped"


def test_classification_results_show_accuracy_and_the_confusion_matrix(project):
    rows = project["rows"]
    with Store.open(project["root"]) as store:
        table = pa.table({"prompt": [r["prompt"] for r in rows], "category": [r["category"] for r in rows],
                          "split": [r["split"] for r in rows]})
        write_version(store, "intents", [table], kind="import", fmt="classification", recipe={},
                      info={"label_column": "category"})
        run = evaluation.create_eval(store, "intents", model=eval_setup.ModelSpec("m", label="classifier"))
        items = [json.loads(line) for line in open(Path(run.folder) / evaluation.ITEMS_FILE, encoding="utf-8")]
        with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "w", encoding="utf-8") as f:
            for it in items:
                said = rows[it["row"]]["category"] if it["item"] % 2 else "billing"
                f.write(json.dumps({"item": it["item"], "output": said}) + "\n")
        run = generator.refresh(store, run.eval_id)
    at = evaluate_page()
    assert at.selectbox(key="ev_pick").value == run.eval_id
    cards = {m.label: m.value for m in at.metric}
    assert cards["accuracy"] == f"{run.metrics['accuracy']:.3f}" and "BLEU" not in cards
    assert any(s.value == "Confusion matrix" for s in at.subheader)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    matrix = next(s for s in specs if any(part.get("mark", {}).get("type") == "rect" for part in s.get("layer", [])))
    assert shows_every_label(matrix, "x", "predicted") and shows_every_label(matrix, "y", "reference")
    legend = next(e["color"]["legend"] for e in encodings(matrix) if "color" in e)
    assert legend["format"] == ",d" and legend["tickMinStep"] == 1  # counts: whole numbers


def test_slice_chart_shows_every_value_in_the_order_of_its_table(project):
    at = evaluate_page()
    (chart,) = [c for c in at.get("vega_lite_chart") if '"value"' in c.proto.spec]
    spec = json.loads(chart.proto.spec)
    assert shows_every_label(spec, "y", "value") and spec["height"]["step"] >= 20
    table = next(d.value for d in at.dataframe if "value" in d.value.columns and "bleu" in d.value.columns)
    assert spec["encoding"]["y"]["sort"] == list(table["value"])  # chart and table in one order
    assert list(table["bleu"]) == sorted(table["bleu"])  # weakest first
    assert empty_cells_for_missing(at)


def test_the_new_evaluation_tab_shows_the_run_it_started_once_finished(project):
    """The tab an evaluation was started from shows its figures when it ends (it used to fall back to an
    empty form), until the user asks for another run."""
    base, _ = project["runs"]
    at = evaluate_page({"ev_result": base.eval_id})
    done = [s.value for s in at.success if f"Evaluation #{base.eval_id} finished" in s.value]
    assert done and "base on tickets@1, split test" in done[0] and f"{base.items} answers" in done[0]
    cards = [m.value for m in at.metric if m.label == "BLEU"]
    assert cards[0] == f"{base.metrics['bleu']:.2f}"  # the first BLEU card on the page is this run's
    at.button(key="ev_new_again").click().run()
    assert not [s for s in at.success if "finished:" in s.value]
