"""Crash safety: SIGKILL the process while it writes, then open the project again.

- An import killed at any point leaves either the whole new version or no trace of it: every
  version listed has all its records (checked against the file), no half-written folder survives,
  the versions written before are untouched, and the import then runs again cleanly.
- An annotation stream killed mid-flight keeps every answer the annotators were told was saved,
  each exactly once; at most the answers in flight at the kill (one per annotator) are stored
  without having been acknowledged.
- The same through the real app: answers acknowledged on screen ("Saved ...") survive a SIGKILL of
  `workbench serve`.
- A training run whose trainer is SIGKILLed resumes from its last whole checkpoint: no step redone
  or skipped, and it completes.
- An evaluation outlives a SIGKILLed app (the generator runs in its own session), and when the
  generator itself is SIGKILLed, Resume generates only the missing answers: each item once, the
  answers made before the kill unchanged.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.e2e_helpers import ROOT, UI, chromium, run_cli, serve
from workbench.core.store import Store
from workbench.core.versions import list_versions
from workbench.data.demo import write_jsonl
from workbench.labels import annotations as A
from workbench.labels import questions as Q

pytestmark = pytest.mark.slow

BIG = 100_000


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def check_versions_whole(project) -> dict:
    """Every committed version has its folder and all its rows; nothing else lies in data/."""
    with Store.open(project) as store:
        versions = list_versions(store)
        owned = {f"v{v.version_id}" for v in versions}
        assert {p.name for p in store.project.data_dir.iterdir()} == owned  # no .partial, no orphan
        for v in versions:
            n, distinct, top = store.cursor().execute(
                f"SELECT count(*), count(DISTINCT _row), max(_row) FROM {v.table_name}").fetchall()[0]
            assert n == distinct == top + 1 == v.row_count, v  # rows 0..n-1, each once
            if v.dataset == "big":  # the whole file, in order: ids run T000001, T000002, ...
                wrong = store.cursor().execute(
                    f"SELECT count(*) FILTER (WHERE id <> printf('T%06d', _row + 1)) FROM {v.table_name}"
                ).fetchall()[0][0]
                assert n == BIG and wrong == 0
        return {v.ref: (v.row_count, v.content_hash) for v in versions}


def test_an_import_killed_at_any_point_leaves_whole_versions_or_none(tmp_path):
    project = tmp_path / "project"
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    write_jsonl(small, 50, seed=3)
    write_jsonl(big, BIG, seed=4)
    run_cli("import", str(small), "--dataset", "base", project=project)
    before = state = check_versions_whole(project)
    rng = random.Random(10)
    outcomes = []
    # Kill while the Parquet parts are being written (a .partial folder exists), at the end of that, and
    # at a random moment from the start.
    for extra in [0.0, 0.2, 0.5, None, None]:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "import", str(big), "--dataset", "big",
                                 "--project", str(project)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        if extra is None:
            time.sleep(rng.uniform(0.3, 2.2))
        else:
            while time.monotonic() < deadline and proc.poll() is None and not any(
                    p.name.endswith(".partial") for p in (project / "data").iterdir()):
                time.sleep(0.005)
            time.sleep(extra)
        finished = proc.poll() is not None
        had = sum(k.startswith("big@") for k in state)
        kill_group(proc)
        state = check_versions_whole(project)
        assert {k: v for k, v in state.items() if k.startswith("base@")} == before
        added = sum(k.startswith("big@") for k in state) - had
        outcomes.append("finished" if finished else "whole" if added else "none")
    # The app runs on: the import goes through after all those kills.
    run_cli("import", str(big), "--dataset", "big", project=project)
    state = check_versions_whole(project)
    assert any(k.startswith("big@") for k in state)
    assert "none" in outcomes, outcomes  # at least one kill landed mid-write (and left nothing behind)


CHILD = r"""
import json, sys, threading
from workbench.labels import annotations as A
from workbench.labels import questions as Q
from workbench.core.auth import User
from workbench.core.store import Store
store = Store.open(sys.argv[1])
question = Q.get_question(store, "tickets", "category")
lock = threading.Lock()
def work(name):
    user = User(name, "annotator")
    while True:
        item = A.next_item(store, question, user)
        if item is None:
            return
        value = A.submit(store, question, item, ["billing", "refund", "shipping"][hash(item + name) % 3], user=user)
        with lock:  # acknowledged: the answer is committed when submit returns
            print(json.dumps([item, name, value]), flush=True)
threads = [threading.Thread(target=work, args=(f"ann{i}",)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("done", flush=True)
"""


def test_an_annotation_stream_killed_mid_flight_keeps_every_acknowledged_answer(tmp_path):
    project = tmp_path / "project"
    write_jsonl(tmp_path / "t.jsonl", 2000, seed=5)
    run_cli("import", str(tmp_path / "t.jsonl"), "--dataset", "tickets", project=project)
    run_cli("questions", "add", "category", "--dataset", "tickets", "--kind", "single-choice",
            "--choices", "billing,refund,shipping", "--overlap", "2", project=project)
    acked = []
    rng = random.Random(3)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(project)], stdout=subprocess.PIPE, text=True,
                                start_new_session=True, cwd=ROOT)
        want = len(acked) + rng.randint(40, 120)
        for line in proc.stdout:
            acked.append(tuple(json.loads(line)))
            if len(acked) >= want:
                break
        kill_group(proc)  # the other threads are mid-submit right now
        # Lines printed before the kill but not yet read here (in our read buffer or the pipe) were
        # acknowledged too; without them a slow reader would see them as unacknowledged extras.
        acked += [tuple(json.loads(line)) for line in proc.stdout if line.startswith("[") and line.endswith("\n")]
        with Store.open(project) as store:  # replays the write-ahead log
            stored = Counter(tuple(r) for r in store.cursor().execute(
                "SELECT item, annotator, value FROM wb_annotations").fetchall())
            question = Q.get_question(store, "tickets", "category")
            assert A.progress(store, question)["total"] == 2000
        missing = [a for a in acked if stored[a] != 1]
        assert missing == [], missing[:5]
        extra = sum(stored.values()) - len(acked)
        assert 0 <= extra <= 4  # in flight at this kill: at most one per annotator
        per_item = Counter(item for item, _ in {(i, a) for i, a, _ in stored})
        assert max(per_item.values()) <= 2
        acked = [a for a in stored]  # what survived is what the next round builds on


@pytest.mark.browser
def test_answers_acknowledged_in_the_browser_survive_a_sigkill_of_the_app(tmp_path):
    project = tmp_path / "project"
    write_jsonl(tmp_path / "t.jsonl", 20, seed=6)
    run_cli("import", str(tmp_path / "t.jsonl"), "--dataset", "tickets", project=project)
    run_cli("questions", "add", "category", "--dataset", "tickets", "--kind", "single-choice",
            "--choices", "billing,refund,shipping", project=project)
    saved = []
    with chromium() as browser:
        with serve(project, tmp_path / "server.log") as server:
            ui = UI(browser, server.url, "crash_label").open()
            ui.nav("Label")
            for _ in range(3):
                heading = ui.page.get_by_role("heading", name=re.compile(r"^Record T\d{6}")).first
                item = re.search(r"T\d{6}", heading.inner_text()).group(0)
                ui.click(re.compile(r"^refund( Shortcut \w+)?$"))
                ui.wait_text(f"Saved refund for record {item}.")
                ui.settle()  # the next record's heading comes later in the same run
                saved.append(item)
            server.kill()  # no shutdown, no checkpoint: the answers live only in the write-ahead log
            ui.close()
        with serve(project, tmp_path / "server2.log") as server:  # the app starts again on the same project
            ui = UI(browser, server.url, "crash_label").open()
            ui.nav("Label")
            ui.wait_text("You: 3 done, 17 remaining")
            ui.close()
    with Store.open(project) as store:
        got = A.answers(store, "tickets", "category")
    assert sorted(got["item"]) == sorted(saved) and set(got["value"]) == {"refund"}


# ---------------------------------------------------------------- training and evaluation

TRAIN_STEPS = 16


@pytest.fixture(scope="module")
def killed_and_resumed_run(tmp_path_factory):
    """A tiny training run SIGKILLed after its first checkpoints, then resumed to the end."""
    from workbench.data.demo_project import DEMO_DATASET, make_demo_project
    from workbench.models import runs

    project = make_demo_project(tmp_path_factory.mktemp("train") / "project", records=200)["project"]
    with Store.open(project) as store:
        cfg = runs.default_config(store, tiny_pretrain_steps=20, max_steps=TRAIN_STEPS, checkpoint_every=4,
                                  eval_every=8, max_seq_len=128)
        run_id = runs.launch(store, DEMO_DATASET, cfg)
        run_dir = runs.run_path(store, run_id)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            checkpoints = [e["step"] for e in runs.read_events(run_dir) if e["type"] == "checkpoint"]
            if checkpoints and checkpoints[-1] >= 4:
                break
            time.sleep(0.1)
        pid = json.loads((run_dir / "run.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)  # mid-run: no cancel file, no final checkpoint, no end event
        runs.wait_exit(run_dir, timeout=30)
        killed_at = runs.run_status(run_dir)
        before = runs.read_events(run_dir)
        runs.start_run(store, run_id)  # what the Train page's Resume button does
        deadline = time.monotonic() + 300
        while runs.run_status(run_dir)["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
        runs.sync_runs(store)
        return {"project": project, "run_id": run_id, "run_dir": run_dir, "killed_at": killed_at,
                "checkpoints_before": [e["step"] for e in before if e["type"] == "checkpoint"],
                "steps_before": [e["step"] for e in before if e["type"] == "step"],
                "after": runs.read_events(run_dir)[len(before):], "final": runs.run_status(run_dir)}


def test_a_killed_training_run_resumes_from_its_checkpoint(killed_and_resumed_run):
    r = killed_and_resumed_run
    assert r["killed_at"]["status"] not in ("running", "completed"), r["killed_at"]["status"]
    assert max(r["steps_before"]) < TRAIN_STEPS  # it really was killed mid-run
    resume = [e for e in r["after"] if e["type"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == r["checkpoints_before"][-1]  # the last whole checkpoint
    steps_after = [e["step"] for e in r["after"] if e["type"] == "step"]
    assert steps_after == list(range(resume[0]["step"] + 1, TRAIN_STEPS + 1))  # nothing redone, nothing skipped
    assert r["final"]["status"] == "completed" and r["final"]["step"] == TRAIN_STEPS
    assert (Path(r["run_dir"]) / "adapter" / "adapter_config.json").exists()


APP_FOLLOWING_AN_EVAL = r"""
import sys, time
from workbench.models import eval_setup, evaluation, generator
from workbench.core.store import Store
store = Store.open(sys.argv[1])
model = eval_setup.resolve_model(store, run_id=sys.argv[2])
run = evaluation.create_eval(store, "support-tickets", model=model, split="all",
                           settings={"max_new_tokens": 24, "batch_size": 4})
generator.launch(store, run.eval_id)
print(run.eval_id, flush=True)
while True:  # what the Evaluate page's fragment does every second
    generator.refresh(store, run.eval_id)
    time.sleep(0.2)
"""


def test_an_evaluation_survives_a_killed_app_and_a_killed_generator(killed_and_resumed_run, tmp_path):
    from workbench.models import evaluation, generator

    project, run_id = killed_and_resumed_run["project"], killed_and_resumed_run["run_id"]
    app = subprocess.Popen([sys.executable, "-c", APP_FOLLOWING_AN_EVAL, project, run_id], stdout=subprocess.PIPE,
                           text=True, start_new_session=True, cwd=ROOT)
    eval_id = int(app.stdout.readline())
    outputs = Path(project) / "runs" / f"eval-{eval_id}" / "outputs.jsonl"

    def lines() -> int:
        return sum(1 for _ in open(outputs)) if outputs.exists() else 0

    deadline = time.monotonic() + 120
    while lines() < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_group(app)  # the app dies; the generator runs in its own session and goes on
    with Store.open(project) as store:
        run = evaluation.get_eval(store, eval_id)
        assert run.status == "running" and run.pid
        os.kill(run.pid, signal.SIGKILL)  # now the generator dies too, mid-way
        time.sleep(0.5)
        kept = [json.loads(line) for line in open(outputs)]
        run = generator.refresh(store, eval_id)
        assert run.status in ("failed", "stopped") and 0 < run.generated < run.items
        generator.launch(store, eval_id)  # the Resume button
        run = generator.wait(store, eval_id)
        assert run.status == "finished", run.error
        final = [json.loads(line) for line in open(outputs)]
        assert final[:len(kept)] == kept  # what was generated before the kills is kept as it was
        items = [o["item"] for o in final]
        assert sorted(items) == list(range(run.items)) and len(items) == len(set(items))  # each once
        assert run.metrics and "bleu" in run.metrics
