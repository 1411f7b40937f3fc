"""The Playground page with streamlit.testing.v1.AppTest on the tiny base and a local adapter folder: two
models answer the same question side by side (the answers trainers.chat gives), the history grows per
model, the rendered prompt is the chat template's text, a model unloads, and a corrected answer is saved
as a record of a new dataset version (a flagged one goes to the Label queue)."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.models.test_playground import make_project
from tests.trainers.test_trainer_fixtures import one_thread
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.labels import flags
from workbench.models import playground

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
TIMEOUT = 60
QUESTION = "Where is my parcel?"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import torch

    before = one_thread()
    root = tmp_path_factory.mktemp("pgpage") / "project"
    _, adapter = make_project(root, rows=10)
    yield root, adapter
    torch.set_num_threads(before)


@pytest.fixture
def page(project, monkeypatch):
    root, adapter = project
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("page_playground.py").run()
    assert not at.exception, [e.value for e in at.exception]
    yield at
    st.cache_data.clear()
    st.cache_resource.clear()  # closes the app's store


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def two_models(at: AppTest, adapter: Path) -> AppTest:
    at.multiselect(key="pg_models").set_value(["base:tiny", "folder"]).run()
    at.text_input(key="pg_folder").set_value(str(adapter.parent)).run()  # a run-shaped folder: adapter/ inside
    return ok(at)


def expected_answer(root: Path, key: str, messages: list[dict]) -> str:
    """The same question through the library, outside the page (the loaded model is a fresh one)."""
    from trainers.chat import ChatModel

    with Store.open(root) as store:
        spec = playground.resolve(store, key)
    return ChatModel.load(spec.base_model, spec.adapter, device="cpu").answer(messages)["answer"]


def test_every_control_has_a_help_line(page, project):
    two_models(page, project[1])
    controls = [*page.multiselect, *page.text_input, *page.text_area, *page.slider, *page.number_input,
                *page.toggle]
    assert len(controls) >= 7 and not [w.label for w in controls if not w.help]
    assert [s.value for s in page.subheader][:2] == ["tiny", "tiny + myrun/adapter"]


def test_two_models_answer_the_same_question_side_by_side(page, project):
    root, adapter = project
    at = two_models(page, adapter)
    at.chat_input(key="pg_question").set_value(QUESTION).run()
    ok(at)
    tuned = expected_answer(root, f"folder:{adapter.parent}", [{"role": "user", "content": QUESTION}])
    assert tuned.strip()  # the random adapter says something
    history = at.session_state["pg_history"]
    assert history[f"folder:{adapter.parent}"] == [{"role": "user", "content": QUESTION},
                                                   {"role": "assistant", "content": tuned}]
    assert [m["content"] for m in history["base:tiny"]][0] == QUESTION
    shown = "".join(m.value for m in at.markdown)
    assert tuned.split()[0].replace("\\", "") in shown.replace("\\", "").replace("\u00a0", " ")
    assert sum("new tokens in" in c.value for c in at.caption) == 2
    assert sum(c.value.startswith("Loaded ·") for c in at.caption) == 2  # memory shown per model

    # a second turn keeps each model's history; the rendered prompt holds both turns
    at.toggle(key="pg_rendered").set_value(True).run()
    at.chat_input(key="pg_question").set_value("And my refund?").run()
    ok(at)
    assert len(at.session_state["pg_history"][f"folder:{adapter.parent}"]) == 4
    prompts = [c.value for c in at.code if "<|im_start|>" in c.value]  # (the sidebar shows the folder)
    assert len(prompts) == 2 and prompts[1] == (f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
                                                f"{tuned}<|im_end|>\n<|im_start|>user\nAnd my refund?<|im_end|>\n"
                                                "<|im_start|>assistant")  # (st.code drops the last newline)

    # unload one model: its memory is freed, the other stays
    at.button(key="pg_unload::base:tiny").click().run()
    ok(at)
    assert sum(c.value.startswith("Not loaded") for c in at.caption) == 1


def test_correct_an_answer_and_save_it_as_a_record_then_flag_one(page, project):
    root, adapter = project
    at = two_models(page, adapter)
    at.chat_input(key="pg_question").set_value(QUESTION).run()
    key = f"folder:{adapter.parent}"
    at.selectbox(key="pg_which").set_value(key).run()
    area = next(a for a in at.text_area if a.key.startswith(f"pg_corrected::{key}"))
    area.set_value("It left our warehouse today; you will get a tracking link by email.").run()
    at.selectbox(key="pg_dataset").set_value("tickets").run()
    category = at.selectbox(key="pg_category::tickets")
    category.set_value(category.options[1]).run()
    at.button(key="pg_save").click().run()
    ok(at)
    assert any("Saved as record" in s.value for s in at.success)
    with Store.open(root) as store:
        version = get_version(store, "tickets")
        row = store.cursor().execute(f'SELECT prompt, completion, category, split FROM "{version.ref}" '
                                     "ORDER BY id DESC LIMIT 1").fetchall()[0]
        assert row[:2] == (QUESTION, "It left our warehouse today; you will get a tracking link by email.")
        assert row[2] == category.options[1] and row[3] == "train"
        assert version.recipe["op"] == "playground" and version.recipe["model"] == "tiny + myrun/adapter"

    at.chat_input(key="pg_question").set_value("And my refund?").run()
    at.selectbox(key="pg_which").set_value(key).run()
    at.text_input(key="pg_reason").set_value("it rambles").run()
    at.button(key="pg_flag").click().run()
    ok(at)
    assert any("Flagged record" in s.value for s in at.success)
    with Store.open(root) as store:
        version = get_version(store, "tickets")
        assert [f["row"] for f in flags.flags(store, version)] == [version.row_count - 1]
        assert version.recipe["action"] == "flag" and version.row_count == 12  # 10 imported, saved, flagged
