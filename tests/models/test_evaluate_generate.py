"""The generator subprocess (trainers.eval_generate) with the tiny model on CPU: answers equal those of
trainers.generate's greedy loop, a resumed run only generates what is missing, `workbench eval` prints
the contract's JSON keys. Slow (each run starts a Python with torch); a handful of items, 8 new tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from trainers import tiny
from trainers.config import TrainConfig
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import write_version
from workbench.data.demo import generate_tickets
from workbench.models import eval_setup, evaluation, generator

pytestmark = pytest.mark.slow
SETTINGS = {"max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalgen") / "project"
    rows = list(generate_tickets(30, seed=11))
    for i, r in enumerate(rows):
        r["split"] = "test" if i % 5 == 0 else "train"
    store = Store.open(root)
    cols = ["prompt", "completion", "category", "split"]
    write_version(store, "tickets", [pa.table({c: [r[c] for r in rows] for c in cols})], kind="import",
                  fmt="prompt-completion", recipe={})
    cfg = TrainConfig(tiny_layers=1, tiny_width=32, tiny_heads=2, tiny_vocab=320, tiny_pretrain_steps=5,
                      batch_tokens=1024, tiny_dir=str(store.project.models_dir / "tiny"))
    tiny.ensure_tiny(cfg, [r["prompt"] + "\n" + r["completion"] for r in rows])
    store.close()
    return root, rows


def outputs_file(run) -> list[dict]:
    return [json.loads(line) for line in open(Path(run.folder) / evaluation.OUTPUTS_FILE, encoding="utf-8")]


def test_workbench_eval_generates_scores_and_matches_the_trainers_greedy_loop(project, capsys):
    from trainers.generate import generate, load_model
    from workbench.cli.main import main

    root, rows = project
    code = main(["eval", "--project", str(root), "--base-model", "tiny", "--dataset", "tickets", "--split", "test",
                 "--max-new-tokens", "8", "--batch-size", "4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    for key in ("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "run_id", "eval_id", "chrf", "exact_match"):
        assert key in out
    assert out["status"] == "finished" and out["generated"] == out["items"] == 6 and out["run_id"] is None
    assert out["settings"]["temperature"] == 0.0 and out["settings"]["max_new_tokens"] == 8

    with Store.open(root) as store:
        run = evaluation.get_eval(store, out["eval_id"])
        stored = dict(store.cursor().execute("SELECT item, output FROM wb_eval_outputs WHERE eval_id = ?",
                                             [run.eval_id]).fetchall())
    test_rows = [r for r in rows if r["split"] == "test"]
    model, tokenizer = load_model(run.base_model)
    expected = generate(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in test_rows],
                        max_new_tokens=8, batch_size=4)
    assert [stored[i] for i in range(len(test_rows))] == expected
    assert sorted(o["item"] for o in outputs_file(run)) == list(range(6))  # each answer once
    # done.json: where the generator's time went, parts within the whole; 6 items in batches of 4: 2 batches
    done = json.loads((Path(run.folder) / "done.json").read_text())
    assert done["items"] == 6 and 0 < done["new_tokens"] <= 6 * 8
    assert 0 < done["first_batch_seconds"] < done["generate_seconds"]
    assert done["compiled"] is False and done["steady_new_tokens_per_s"] == done["new_tokens_per_s"]  # a CPU
    assert done["decoding"] == "eager"  # generate, as it is: the CPU has no CUDA graphs
    assert done["load_seconds"] + done["prompt_seconds"] + done["generate_seconds"] <= done["seconds"] + 0.02


def test_a_resumed_generator_answers_only_the_missing_items(project, capsys):
    from trainers.eval_generate import generate

    root, _ = project
    with Store.open(root) as store:
        model = eval_setup.resolve_model(store, base_model="tiny")
        run = evaluation.create_eval(store, "tickets", model=model,
                                   settings={**SETTINGS, "temperature": 0.8, "top_p": 0.9, "seed": 3})
        with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "w", encoding="utf-8") as f:
            for i in range(3):  # what a crashed generator had written, and a torn last line
                f.write(json.dumps({"item": i, "output": f"kept {i}"}) + "\n")
            f.write('{"item": 3, "outp')
        # The generator itself, in this process (the subprocess launch is covered above).
        assert generate(str(Path(run.folder) / evaluation.CONFIG_FILE)) == 0
        assert "3 of 6 items already answered" in capsys.readouterr().out
        run = generator.refresh(store, run.eval_id)
        assert run.status == "finished" and run.generated == run.items == 6
        stored = dict(store.cursor().execute("SELECT item, output FROM wb_eval_outputs WHERE eval_id = ?",
                                             [run.eval_id]).fetchall())
    assert [stored[i] for i in range(3)] == ["kept 0", "kept 1", "kept 2"]
    assert sorted(o["item"] for o in outputs_file(run)) == list(range(6))  # each item once, the torn line gone
    assert (Path(run.folder) / evaluation.DONE_FILE).exists()


def test_an_adapter_folder_must_hold_an_adapter(project):
    root, _ = project
    with Store.open(root) as store:
        with pytest.raises(WorkbenchError, match="not an adapter folder"):
            eval_setup.resolve_model(store, base_model="tiny", adapter=str(root))


def test_workbench_eval_leaves_the_project_free_while_it_generates(project):
    """The CLI holds the database only to set the run up and to score it: while the generator runs, another
    process (the app) opens the project, and the CLI still finishes and scores."""
    import subprocess
    import sys
    import time

    root, _ = project
    cli = subprocess.Popen([sys.executable, "-m", "workbench.cli", "eval", "--project", str(root), "--base-model",
                            "tiny", "--dataset", "tickets", "--split", "test", "--max-new-tokens", "48", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[2])
    seen = []
    try:
        while cli.poll() is None and not seen:
            try:
                store = Store.open(root)
            except WorkbenchError:  # the CLI holds it while it sets up or scores
                time.sleep(0.05)
                continue
            with store:
                seen = [r.status for r in evaluation.list_evals(store) if r.status == "running"]
    finally:
        out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    assert seen == ["running"]  # opened while the evaluation was generating
    got = json.loads(out)
    assert got["status"] == "finished" and got["generated"] == got["items"] == 6
    with Store.open(root) as store:  # the progress line's speed, read from the real generator's log
        assert generator.generation_speed(evaluation.get_eval(store, got["eval_id"])) > 0


def test_answers_scored_as_they_land_give_the_scores_of_scoring_at_the_end(project):
    """The CLI's way: the store closed while the generator runs, each batch's statistics computed as it lands
    (eval_scores.answers_ahead, fed by follow_job), then the scores; every item is taken from what was computed
    ahead, and the corpus scores equal sacreBLEU on the stored answers."""
    import sacrebleu

    from workbench.models import eval_scores

    root, _ = project
    with Store.open(root) as store:
        model = eval_setup.resolve_model(store, base_model="tiny")
        run = evaluation.create_eval(store, "tickets", model=model, settings={**SETTINGS, "batch_size": 2})
        run = generator.launch(store, run.eval_id)
        ahead = eval_scores.answers_ahead(store, run)
    generator.follow_job(run, ahead=ahead, poll_s=0.05)
    assert len(ahead.stats) == run.items == 6  # every answer scored before the store is opened again
    with Store.open(root) as store:
        run = generator.wait(store, run.eval_id, ahead=ahead)
        items, outputs, refs = evaluation.texts(store, run.eval_id)
    assert run.status == "finished" and ahead.stats.reused == 6
    assert run.metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs]).score, abs=1e-9)
    assert run.metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [refs]).score, abs=1e-9)


def test_the_generators_speed_is_read_from_its_log(tmp_path):
    from types import SimpleNamespace

    run = SimpleNamespace(path=tmp_path)
    assert generator.generation_speed(run) is None  # no log yet
    (tmp_path / evaluation.LOG_FILE).write_text("3 of 6 items already answered; 3 to go\n")
    assert generator.generation_speed(run) is None  # no batch yet
    with open(tmp_path / evaluation.LOG_FILE, "a") as f:
        f.write("4/6 answered, 1,234 new tokens/s (1 in the batch)\n6/6 answered, 20,480 new tokens/s (2 in the batch)\n")
    assert generator.generation_speed(run) == 20480.0
