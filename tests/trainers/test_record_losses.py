"""Per-record training loss: a real tiny run started the app's way records each training record's loss,
which equals transformers' own causal-LM loss (`labels=`, -100 outside the answer) of the saved adapter;
the rows are the version's rows; the hardest can be flagged and join the label-error ranking; a record
whose answer contradicts the others ranks first."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.trainers.test_trainer_fixtures import TINY, chat_records, one_thread, tiny_config, write_records
from trainers import train as train_module
from trainers.config import save_config
from trainers.train import RECORD_LOSSES
from trainers.train import main as train_main
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo_project import make_demo_project
from workbench.inspect.label_errors import find_label_errors
from workbench.labels import flags
from workbench.models import record_losses, runs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A demo project and one finished tiny run on it, started as the Train page starts one."""
    info = make_demo_project(tmp_path_factory.mktemp("record_losses") / "project", records=60)
    store = Store.open(info["project"])
    cfg = runs.default_config(store, **{**TINY, "max_steps": 12, "learning_rate": 5e-3, "eval_every": 6,
                                        "checkpoint_every": 6, "tiny_pretrain_steps": 20})
    run_id = runs.launch(store, "support-tickets", cfg)
    final = runs.wait_run(store.project.runs_dir, run_id, poll_s=0.2, timeout_s=300)
    assert final["status"] == "completed", final
    runs.sync_runs(store)
    yield store, run_id, store.project.runs_dir / run_id, cfg
    store.close()


def _lines(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "data" / "records.jsonl").read_text(encoding="utf-8").splitlines()]


def _hf_loss(model, tok, messages: list[dict]) -> float:
    """transformers' own loss: the chat template's prompt part labelled -100, the answer part its tokens."""
    prompt = tok(tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    full = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert full[:len(prompt)] == prompt  # the answer starts on a token boundary
    labels = [-100] * len(prompt) + full[len(prompt):]
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([full]), labels=torch.tensor([labels])).loss)


@pytest.mark.slow
def test_each_records_loss_is_transformers_loss_of_the_saved_adapter(finished):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store, run_id, run_dir, cfg = finished
    events = runs.read_events(run_dir)
    data = next(e for e in events if e["type"] == "data")
    done = next(e for e in events if e["type"] == "record_losses")
    assert events[-1]["type"] == "end" and events.index(done) < len(events) - 1
    recorded = [json.loads(x) for x in (run_dir / RECORD_LOSSES).read_text().splitlines()]
    assert done["records"] == len(recorded) == data["train_records"] - data["dropped"]
    lines = _lines(run_dir)
    assert sorted(r["line"] for r in recorded) == [r["line"] for r in recorded]
    assert {r["line"] for r in recorded} < set(range(len(lines)))  # the validation records are not scored

    before = one_thread()
    try:
        tok = AutoTokenizer.from_pretrained(run_dir / "adapter")
        base = AutoModelForCausalLM.from_pretrained(cfg.tiny_dir).eval()
        model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
        by_loss = sorted((r for r in recorded if not r["truncated"]), key=lambda r: r["loss"])
        for r in [by_loss[0], by_loss[len(by_loss) // 2], by_loss[-1]]:
            expected = _hf_loss(model, tok, lines[r["line"]]["messages"])
            assert math.isclose(r["loss"], expected, rel_tol=1e-4), (r, expected)
    finally:
        torch.set_num_threads(before)
    assert by_loss[-1]["loss"] > by_loss[0]["loss"] + 0.1  # the records differ: a ranking means something


@pytest.mark.slow
def test_hardest_records_are_the_versions_rows_highest_first(finished):
    store, run_id, run_dir, _ = finished
    lines = _lines(run_dir)
    table = record_losses.hardest_records(store, run_id, chars=50)
    assert list(table["loss"]) == sorted(table["loss"], reverse=True)
    version = get_version(store, "support-tickets@1")
    rows = store.cursor().execute('SELECT prompt, completion FROM "support-tickets@1"').fetchall()
    assert len(rows) == version.row_count == len(lines)
    for row, prompt, answer in zip(table["row"], table["prompt"], table["answer"]):
        messages = lines[row]["messages"]
        assert (prompt, answer) == (messages[-2]["content"][:50], messages[-1]["content"][:50])
        assert (prompt, answer) == (rows[row][0][:50], rows[row][1][:50])  # line N of the export is row N


@pytest.mark.slow
def test_flagging_the_hardest_and_the_label_error_signal(finished):
    store, run_id, _, _ = finished
    version = get_version(store, "support-tickets@1")
    table = record_losses.hardest_records(store, run_id)
    assert record_losses.flag_hardest(store, run_id, 3) == 3
    got = {f["row"]: f["reason"] for f in flags.flags(store, version)}
    assert got == {int(r): f"training loss {loss:.3f} after run {run_id}" for r, loss in
                   zip(table["row"][:3], table["loss"][:3])}

    signal = record_losses.loss_signal(store, version)
    n_top = math.ceil(len(table) * record_losses.TOP_FRACTION)
    assert set(signal) == set(table["row"][:n_top].astype(int)) and n_top >= 2
    result = find_label_errors(store, version, "priority", near=False)
    for row in signal:
        assert result.suspect[row]
        assert any(f"the adapter of run {run_id} could not fit it" in why and "top 5%" in why
                   for why in result.reasons[row])
    assert not any("could not fit" in why for r, whys in result.reasons.items() if r not in signal for why in whys)


def test_a_record_that_contradicts_the_others_ranks_first(tmp_path):
    """40 questions answered alike and one answered otherwise: after a short run the odd one is the hardest."""
    before = one_thread()
    try:
        records = chat_records(41, seed=3)
        same = "Thanks for writing in. Your request is with our team and you will hear from us within a day."
        odd = "Refund denied. Contact your bank about the card charge and close this account today."
        for r in records:
            r["messages"][-1]["content"] = same
        records[17]["messages"][-1]["content"] = odd
        run_dir = tmp_path / "runs" / "odd"
        write_records(run_dir / "data" / "records.jsonl",  # two validation records; every other one trains
                      [dict(r, split="val" if i in (0, 1) else "train") for i, r in enumerate(records)])
        save_config(tiny_config(tmp_path, max_steps=8, learning_rate=5e-3, tiny_pretrain_steps=10, eval_every=8,
                                checkpoint_every=8), run_dir / "config.json")
        assert train_main([str(run_dir)]) == 0
    finally:
        torch.set_num_threads(before)
    recorded = [json.loads(x) for x in (run_dir / RECORD_LOSSES).read_text().splitlines()]
    ranked = sorted(recorded, key=lambda r: -r["loss"])
    assert len(recorded) == 39 and ranked[0]["line"] == 17, ranked[:3]
    gap, spread = ranked[0]["loss"] - ranked[1]["loss"], ranked[1]["loss"] - ranked[-1]["loss"]
    assert gap > 0.3 and gap > 3 * spread, (ranked[:3], ranked[-1])  # measured: gap 0.4-0.8, spread under 0.1


def _tiny_run(tmp_path, name: str, **cfg) -> Path:
    before = one_thread()
    try:
        run_dir = tmp_path / "runs" / name
        write_records(run_dir / "data" / "records.jsonl", chat_records(12))
        save_config(tiny_config(tmp_path, max_steps=1, tiny_pretrain_steps=2, **cfg), run_dir / "config.json")
        assert train_main([str(run_dir)]) == 0
    finally:
        torch.set_num_threads(before)
    return run_dir


def test_switched_off_no_file_no_event(tmp_path):
    run_dir = _tiny_run(tmp_path, "off", record_losses=False)
    assert not (run_dir / RECORD_LOSSES).exists()
    assert not any(e["type"] == "record_losses" for e in runs.read_events(run_dir))
    assert record_losses.read_losses(run_dir) is None and record_losses.note(run_dir) is None


def test_too_many_records_are_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "RECORD_LOSSES_MAX", 5)
    run_dir = _tiny_run(tmp_path, "big")
    assert not (run_dir / RECORD_LOSSES).exists() and runs.read_events(run_dir)[-1]["status"] == "completed"
    assert record_losses.note(run_dir) == "11 training records, more than 5; per-record losses are not recorded"


def test_one_fixed_shape_scores_the_same_as_growing_groups(tmp_path):
    """On a GPU the scoring pass pads every group to one shape (one compilation); the losses are those of the
    CPU's groups of growing widths. Run here on the CPU by turning the GPU's fixed shape on."""
    import shutil

    run_dir = _tiny_run(tmp_path, "shape")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)

    class Fixed(train_module.TrainingRecipe):
        @property
        def _fixed_shape(self) -> bool:
            return True

    before = one_thread()
    try:
        recipes = [train_module.TrainingRecipe(copy), Fixed(copy)]
        scores = []
        for recipe in recipes:
            recipe.setup()
            recipe._load_adapter(copy / "adapter")
            scores.append(recipe._score(recipe.peft_model.eval(), recipe.train_examples))
    finally:
        torch.set_num_threads(before)
    grown, fixed = scores
    assert [r[0] for r in grown] == [r[0] for r in fixed] and len(grown) == len(recipes[0].train_examples)
    assert [r[2] for r in grown] == [r[2] for r in fixed]  # supervised tokens per record
    for a, b in zip(grown, fixed):
        assert math.isclose(a[1], b[1], rel_tol=1e-5), (a, b)
