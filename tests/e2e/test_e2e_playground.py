"""The Playground journey in a real browser: a tiny run is trained (`workbench train`, a 20-step tiny base and
a few LoRA steps), then on the Playground page the tiny base and the run answer the same question side by
side, the run's answer is corrected and saved, and the corrected record is found in the new version on the
Datasets page (and in the store, with the playground named in the version's recipe)."""

import json
import re

import pytest

from tests.e2e.e2e_helpers import UI, chromium, run_cli, serve
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo_project import DEMO_DATASET, make_demo_project

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "My parcel has not arrived yet, where is it?"
CORRECTED = "Sorry for the wait: your parcel left our warehouse yesterday and arrives tomorrow."
TRAIN_DEFAULTS = """
[train]
tiny_pretrain_steps = 20
max_steps = 4
eval_every = 2
checkpoint_every = 4
max_seq_len = 128
"""


def test_ask_two_models_then_save_a_corrected_answer_as_a_new_version(tmp_path):
    project = make_demo_project(tmp_path / "project", records=200)["project"]
    config = tmp_path / "project" / "workbench.toml"
    config.write_text(config.read_text() + TRAIN_DEFAULTS)
    run_id = json.loads(run_cli("train", "--dataset", DEMO_DATASET, "--json", project=project).stdout)["run_id"]
    with Store.open(project) as store:
        before = get_version(store, DEMO_DATASET)
    with serve(project, tmp_path / "server.log") as server, chromium() as browser:
        ui = UI(browser, server.url, "journey_playground").open()
        ui.nav("Playground")
        ui.multiselect("Models", re.compile(rf"^run {re.escape(run_id)} "))  # beside the tiny base, picked first
        ui.fill("Max answer length (tokens)", "24")
        box = ui.page.get_by_test_id("stChatInputTextArea")
        box.fill(QUESTION)
        box.press("Enter")
        ui.settle()
        answers = ui.page.get_by_text(re.compile(r"^\d+ new tokens in \d+\.\d\d s"))
        answers.nth(1).wait_for()
        assert answers.count() == 2  # both models answered
        assert ui.page.get_by_role("heading", name=f"run {run_id}").count() == 1
        assert ui.page.get_by_text(QUESTION, exact=True).count() == 2  # the same question went to both
        ui.shot("two-models-answered")

        ui.select("Answer to correct", f"run {run_id}")
        area = ui.page.get_by_label("Corrected answer", exact=True).first
        area.fill(CORRECTED)
        area.blur()  # a text area sends its value when it loses focus
        ui.settle()
        ui.select("Dataset", DEMO_DATASET)
        ui.click("Save as a training record")
        saved = ui.wait_text(re.compile(r"^Saved as record [\d,]+ of "))
        assert f"{DEMO_DATASET}@{before.number + 1}" in saved.inner_text()
        ui.shot("correction-saved")

        ui.nav("Datasets")
        ui.select("Version", f"v{before.number + 1} (newest)")
        ui.fill("Search text", "left our warehouse yesterday")
        ui.wait_text(re.compile(r"Showing rows 1–1 of 1 matching the filters"))
        ui.shot("record-in-the-new-version")
        ui.check()
        ui.close()
    with Store.open(project) as store:
        new = get_version(store, DEMO_DATASET)
        assert new.number == before.number + 1 and new.row_count == before.row_count + 1
        assert new.recipe["op"] == "playground" and new.recipe["run_id"] == run_id
        row = store.cursor().execute(f'SELECT prompt, completion FROM "{new.ref}" WHERE completion = ?',
                                     [CORRECTED]).fetchall()
        assert row == [(QUESTION, CORRECTED)]
