"""Journeys 4 and 5 in a real browser, with accounts on: the admin starts a tiny training run on the
Train page, watches its step count and loss chart move, sees it complete; evaluates its adapter on the
test split on the Evaluate page; sets up a blind rating review of the answers; a reviewer signs in,
rates every item without ever seeing which run wrote the answers, and the admin reads the results.

The project's `[train]` defaults keep the run tiny: a 20-step pre-trained tiny base and 12 LoRA steps."""

import re

import pytest

from tests.e2e.e2e_helpers import UI, chromium, run_cli, serve
from workbench.core.store import Store
from workbench.data.demo_project import DEMO_DATASET, make_demo_project
from workbench.models import evaluation, runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 12
PASSWORDS = {"ada": "ada-train-pass-5521", "rob": "rob-review-pass-9043"}
REVIEWED = 3
TRAIN_DEFAULTS = f"""
[train]
tiny_pretrain_steps = 20
max_steps = {STEPS}
eval_every = 3
checkpoint_every = 4
max_seq_len = 128
"""


def metric(ui: UI, title: str) -> str:
    box = ui.page.locator('[data-testid="stMetric"]').filter(has_text=title).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_train_a_tiny_run_watch_it_then_evaluate_it(tmp_path):
    project = make_demo_project(tmp_path / "project", records=300)["project"]
    run_cli("split", DEMO_DATASET, "--ratios", "0.8,0.1,0.1", "--seed", "1", project=project)
    config = tmp_path / "project" / "workbench.toml"
    config.write_text(config.read_text() + TRAIN_DEFAULTS)
    run_cli("users", "add", "ada", "--role", "admin", "--password-stdin", project=project,
            stdin=PASSWORDS["ada"] + "\n")
    run_cli("users", "add", "rob", "--role", "reviewer", "--password-stdin", project=project,
            stdin=PASSWORDS["rob"] + "\n")
    with serve(project, tmp_path / "server.log") as server, chromium() as browser:
        ui = UI(browser, server.url, "journey4_train").open()
        ui.login("ada", PASSWORDS["ada"])
        ui.nav("Train")
        ui.wait_text("No runs yet")
        assert ui.page.get_by_role("combobox", name="Version").first.input_value() == "v2 (newest)"  # the split version
        ui.click("Start training")
        ui.wait_text("Runs")
        # Follow it live: the step count moves and the loss chart appears while it runs.
        seen_steps = set()
        ui.page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=240_000)
        shot_taken = False
        for _ in range(240):
            status = metric(ui, "Status")
            step = metric(ui, "Step")
            seen_steps.add(step)
            if status == "running" and not shot_taken and int(step.split()[0]) >= STEPS // 2:  # a curve to see
                # the runs table refreshes too while the run trains: its step column leaves 0
                grid = ui.page.locator('[data-testid="stDataFrame"]').first
                for _ in range(20):
                    row = ui.cells(grid)
                    if len(row) > 6 and row[6] not in ("0", ""):
                        break
                    ui.page.wait_for_timeout(500)
                assert len(row) > 6 and row[1] in ("running", "completed") and row[6] not in ("0", ""), row
                ui.shot("training-live")
                shot_taken = True
            if status not in ("running", "prepared"):
                break
            ui.page.wait_for_timeout(1000)
        assert status == "completed", (status, ui.body()[-2000:])
        assert len(seen_steps) >= 2, seen_steps  # it was seen to move
        ui.wait_text(re.compile(r"Adapter \(peft format"))
        ui.wait_text(re.compile(r"Steady state \(after the first steps\): [\d,]+ supervised tokens/s"))  # the end event
        ui.wait_text(re.compile(r"Batch plan, [\d,]+ tokens a step: max_seq_len"))  # the trainer's batch plan, in words
        run_id = ui.page.get_by_role("combobox", name="Run").first.input_value()
        ui.shot("training-completed")

        ui.nav("Evaluate")
        ui.wait_text("Start evaluation")
        assert ui.page.get_by_role("combobox", name="Split").first.input_value() == "test"
        ui.fill("Max new tokens", "12")
        ui.click("Start evaluation")
        ui.wait_text(re.compile(r"Evaluation #1 .*answers|scoring"))  # the progress bar while it generates
        ui.shot("evaluation-running")
        weak = ui.page.get_by_text("Where the model is weak").first
        ui.tab("Results")  # chosen while the run generates: it must stay open when the run ends and the page redraws
        weak.wait_for(timeout=240_000)
        assert ui.page.locator('[role="tab"][aria-selected="true"]').first.inner_text() == "Results"
        bleu = metric(ui, "BLEU")
        assert re.fullmatch(r"\d+\.\d\d", bleu), bleu
        ui.shot("evaluation-results")

        # Journey 5: a blind rating review of the answers, for the reviewer rob.
        ui.nav("Review")
        ui.page.get_by_role("radio", name="Set up").click()
        ui.settle()
        ui.radio("Kind", "Rating: 1-5 on questions you write")
        ui.multiselect("Evaluation runs (the baseline A first)", re.compile(r"^#1 · "))
        ui.fill("Test items to review", str(REVIEWED))
        ui.fill("Reviewers per item", "1")
        ui.fill("Seed (blank: random)", "7")
        ui.fill("Name reviewers see", "Support answers")
        ui.click("Create review")
        ui.wait_text(f"Created Support answers: {REVIEWED} test items, seed 7.")
        ui.logout()

        ui.login("rob", PASSWORDS["rob"])
        side = ui.page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert set(side.split()) >= {"Label", "Review"} and not {"Train", "Evaluate", "Datasets"} & set(side.split())
        ui.nav("Review")
        assert ui.page.get_by_role("radio", name="Set up").count() == 0  # a reviewer only judges
        for n in range(REVIEWED):
            heading = ui.page.get_by_role("heading", name=re.compile(r"^Item \d+")).first
            heading.wait_for()
            item = re.search(r"\d+", heading.inner_text()).group(0)
            text = ui.page.inner_text("body")
            assert run_id not in text and "#1 ·" not in text  # blind: nothing names the run or the model
            if n == 0:
                ui.shot("review-blind-rating")
            form = ui.page.locator('[data-testid="stForm"]').first
            for k in range(3):  # the default questions: follows policy, tone, resolves the issue
                form.locator('[data-testid="stRadio"]').nth(k).get_by_text(re.compile(rf"^{2 + k}( ·.*)?$")).click()
            ui.click(re.compile(r"^Submit"))  # its name also carries the shortcut
            ui.wait_text(f"Saved your judgement of item {item}.")
            ui.settle()  # the next item's heading comes later in the same run
        ui.wait_text("Nothing left for you in this review")
        ui.logout()

        ui.login("ada", PASSWORDS["ada"])
        ui.nav("Review")
        ui.page.get_by_role("radio", name="Results").click()
        ui.settle()
        assert metric(ui, "Judgements") == str(REVIEWED)
        ui.shot("review-results")
        ui.check()
        ui.close()
    with Store.open(project) as store:
        run = runs.list_runs(store)[0]
        assert run["status"] == "completed" and run["step"] == STEPS
        (ev,) = evaluation.list_evals(store)
        assert ev.status == "finished" and ev.items == 30  # the test split: 10 % of 300
        assert f"{ev.metrics['bleu']:.2f}" == bleu
