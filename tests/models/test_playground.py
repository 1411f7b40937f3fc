"""The playground (workbench.models.playground) and `workbench chat` on a project with the tiny base and a
LoRA adapter with random weights: `chat --prompt` answers what `workbench eval` stored for the same prompt,
models resolve from base/run/folder keys and stay loaded, the terminal session keeps its history, and
a corrected answer (or a flagged one) becomes a record of a new dataset version with the playground in
its recipe."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from tests.trainers.test_trainer_fixtures import one_thread
from trainers import tiny
from trainers.config import TrainConfig
from workbench.core.canonical import canonical_to_messages
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, write_version
from workbench.data.demo import generate_tickets
from workbench.labels import flags
from workbench.models import playground

ROWS = 20


def make_project(root: Path, rows: int = ROWS) -> tuple[list[dict], Path]:
    """A project with `tickets` (prompt-completion: id, category, split), `labels` (classification), the tiny
    base built (5 pre-training steps) and, beside it, `myrun/adapter`: a LoRA adapter with random weights."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    records = list(generate_tickets(rows, seed=5))
    for i, r in enumerate(records):
        r["split"], r["id"] = ("test" if i % 5 == 0 else "train"), i + 1
    with Store.open(root) as store:
        cols = ["id", "prompt", "completion", "category", "split"]
        write_version(store, "tickets", [pa.table({c: [r[c] for r in records] for c in cols})], kind="import",
                      fmt="prompt-completion", recipe={})
        write_version(store, "labels", [pa.table({"prompt": ["a", "b"], "label": ["x", "y"]})], kind="import",
                      fmt="classification", recipe={})
        tiny_dir = store.project.models_dir / "tiny"
    cfg = TrainConfig(tiny_layers=1, tiny_width=32, tiny_heads=2, tiny_vocab=320, tiny_pretrain_steps=5,
                      batch_tokens=1024, tiny_dir=str(tiny_dir))
    tiny.ensure_tiny(cfg, [r["prompt"] + "\n" + r["completion"] for r in records])
    torch.manual_seed(4)  # a random, non-zero adapter: answers with varied words
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = root.parent / "myrun" / "adapter"
    lora.save_pretrained(adapter)
    return records, adapter


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import torch

    before = one_thread()
    root = tmp_path_factory.mktemp("playground") / "project"
    rows, adapter = make_project(root)
    yield root, rows, adapter
    torch.set_num_threads(before)


def cli(capsys, *argv) -> tuple[int, str, str]:
    from workbench.cli.main import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_chat_prompt_answers_what_workbench_eval_stored(project, capsys):
    root, rows, adapter = project
    code, out, err = cli(capsys, "eval", "--project", str(root), "--base-model", "tiny", "--adapter", str(adapter),
                         "--dataset", "tickets", "--split", "test", "--max-new-tokens", "12", "--json")
    assert code == 0, err
    eval_id = json.loads(out)["eval_id"]
    with Store.open(root) as store:
        stored = dict(store.cursor().execute("SELECT item, output FROM wb_eval_outputs WHERE eval_id = ?",
                                             [eval_id]).fetchall())
    tests = [r for r in rows if r["split"] == "test"]
    for item in (0, 2):
        code, out, err = cli(capsys, "chat", "--project", str(root), "--base-model", "tiny", "--adapter",
                             str(adapter), "--prompt", tests[item]["prompt"], "--max-new-tokens", "12", "--json")
        assert code == 0, err
        got = json.loads(out)
        assert set(got) == {"answer", "model", "new_tokens", "seconds"}
        assert got["answer"] == stored[item] and got["answer"].strip()
        assert got["new_tokens"] <= 12 and "myrun/adapter" in got["model"]


def test_models_resolve_from_keys_and_folders(project):
    root, _, adapter = project
    with Store.open(root) as store:
        tiny_dir = str((store.project.models_dir / "tiny").resolve())
        assert playground.resolve(store, "base:tiny").base_model == tiny_dir
        spec = playground.resolve(store, f"folder:{adapter}")
        assert (spec.base_model, spec.adapter) == (tiny_dir, str(adapter.resolve()))
        assert playground.resolve(store, f"folder:{adapter.parent}").adapter == str(adapter.resolve())  # run folder
        folder, named = playground.resolve(store, f"folder:{tiny_dir}"), playground.resolve(store, "base:tiny")
        assert (folder.base_model, folder.adapter, folder.label) == (named.base_model, None, "tiny")
        assert spec.label == "tiny + myrun/adapter"
        assert [c["key"] for c in playground.model_choices(store)] == ["base:tiny"]  # no finished runs here
        with pytest.raises(WorkbenchError, match="expected base:NAME"):
            playground.resolve(store, "tiny")
        with pytest.raises(WorkbenchError, match="neither a model .config.json. nor an adapter"):
            playground.resolve(store, f"folder:{root}")
        with pytest.raises(WorkbenchError, match="no run|not found|unknown|no such"):
            playground.resolve(store, "run:nope")


def test_models_load_once_show_their_memory_and_unload(project):
    root, _, adapter = project
    with Store.open(root) as store:
        models = playground.loaded_models(store)
        base, tuned = playground.resolve(store, "base:tiny"), playground.resolve(store, f"folder:{adapter}")
        first = models.get(base)
        assert models.get(base) is first and playground.loaded_models(store) is models
        models.get(tuned)
        listing = models.listing()
        assert [m["adapter"] for m in listing] == [None, str(adapter.resolve())]
        assert listing[0]["memory_bytes"] == first.model.get_memory_footprint() > 0
        assert models.unload(base) and not models.is_loaded(base) and not models.unload(base)
        small = playground.LoadedModels(limit=1)
        small.get(base)
        small.get(tuned)  # the least recently used one makes room
        assert [m["adapter"] for m in small.listing()] == [str(adapter.resolve())]


def test_the_terminal_session_keeps_the_history(project, capsys, monkeypatch):
    root, rows, adapter = project
    monkeypatch.setattr("sys.stdin", io.StringIO("Where is my parcel?\nAnd my refund?\n/exit\nnever read\n"))
    code, out, err = cli(capsys, "chat", "--project", str(root), "--base-model", "tiny", "--adapter", str(adapter),
                         "--max-new-tokens", "8", "--system", "Be brief.")
    assert code == 0, err
    first, second = out.splitlines()
    with Store.open(root) as store:
        model = playground.loaded_models(store).get(playground.resolve(store, f"folder:{adapter}"))
        settings = playground.ChatSettings(system="Be brief.", max_new_tokens=8)
        turn1 = playground.conversation(settings, [], "Where is my parcel?")
        assert model.answer(turn1, max_new_tokens=8)["answer"] == first
        turn2 = turn1 + [{"role": "assistant", "content": first}, {"role": "user", "content": "And my refund?"}]
        assert model.answer(turn2, max_new_tokens=8)["answer"] == second
        assert playground.conversation(settings, turn2[1:-1], "And my refund?") == turn2


def test_a_corrected_answer_becomes_a_record_of_a_new_version(project):
    root, rows, adapter = project
    with Store.open(root) as store:
        spec = playground.resolve(store, f"folder:{adapter}")
        settings = playground.ChatSettings(system="Be kind.", max_new_tokens=8)
        messages = playground.conversation(settings, [{"role": "user", "content": "Hi"},
                                                      {"role": "assistant", "content": "Hello!"}], "My card broke")
        before = get_version(store, "tickets")
        new = playground.save_correction(store, "tickets", messages, "  We will send a new card today.  ",
                                         model=spec, answer="eee", category="card", settings=settings)
        assert (new.dataset, new.number, new.parent_id, new.kind) == ("tickets", before.number + 1,
                                                                      before.version_id, "playground")
        assert new.row_count == before.row_count + 1 == ROWS + 1
        assert new.recipe["op"] == "playground" and new.recipe["from"] == before.ref
        assert new.recipe["model"] == spec.label and new.recipe["adapter"] == spec.adapter
        assert new.recipe["model_answer"] == "eee" and new.recipe["settings"]["system"] == "Be kind."
        cols = "id, prompt, completion, system, messages, category, split"
        last = store.cursor().execute(f'SELECT {cols} FROM "tickets@{new.number}" ORDER BY id DESC LIMIT 1'
                                      ).fetchall()[0]
        assert last[:4] == (ROWS + 1, "My card broke", "We will send a new card today.", "Be kind.")
        assert canonical_to_messages(*last[1:5]) == messages + [
            {"role": "assistant", "content": "We will send a new card today."}]
        assert last[5:] == ("card", "train")
        old = store.cursor().execute(f'SELECT count(*) FROM "tickets@{before.number}"').fetchall()[0][0]
        assert old == before.row_count  # the parent is untouched
        assert "card" in playground.categories(store, "tickets")
        assert playground.datasets(store) == ["tickets"]  # classification data takes no answers


def test_a_flagged_answer_goes_to_the_label_queue(project):
    root, _, _ = project
    with Store.open(root) as store:
        messages = [{"role": "user", "content": "Is my account locked?"}]
        out = playground.flag_answer(store, "tickets", messages, "eeee", "nonsense answer", model="base:tiny")
        version = get_version(store, out["version"])
        assert out["row"] == version.row_count - 1 and version.recipe["action"] == "flag"
        (flag,) = flags.flags(store, version)
        assert flag["row"] == out["row"] and "nonsense answer" in flag["reason"]


@pytest.mark.parametrize("call, match", [
    (lambda s: playground.save_correction(s, "tickets", [{"role": "user", "content": "q"}], " ", model="m"),
     "corrected answer is empty"),
    (lambda s: playground.save_correction(s, "labels", [{"role": "user", "content": "q"}], "a", model="m"),
     "classification data"),
    (lambda s: playground.save_correction(s, "nope", [{"role": "user", "content": "q"}], "a", model="m"),
     "no dataset named 'nope'"),
    (lambda s: playground.flag_answer(s, "tickets", [{"role": "user", "content": "q"}], "a", "", model="m"),
     "reason is required"),
    (lambda s: playground.conversation(playground.ChatSettings(), [], "  "), "message is empty"),
    (lambda s: playground.ChatSettings(top_p=0), "top_p"),
    (lambda s: playground.ChatSettings(max_new_tokens=0), "max_new_tokens"),
])
def test_mistakes_are_explained(project, call, match):
    root, _, _ = project
    with Store.open(root) as store:
        with pytest.raises(WorkbenchError, match=match):
            call(store)


def test_chat_without_a_model_says_which_flags(project, capsys):
    code, out, err = cli(capsys, "chat", "--project", str(project[0]), "--prompt", "hi")
    assert code == 1 and err.startswith("error: say which model to talk to: --run RUN_ID, or --base-model") and not out


def test_settings_have_help_lines():
    assert set(playground.settings_help()) == {"system", "max_new_tokens", "temperature", "top_p", "seed"}
