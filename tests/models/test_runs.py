"""Runs from the app's side (workbench.models.runs) and the CLI: a real trainer subprocess, killed with SIGKILL
and resumed from its checkpoint; results recorded in wb_runs; `workbench train --json`."""

import json
import os
import signal
import time

import pytest
import yaml

from tests.trainers.test_trainer_fixtures import TINY, chat_records, write_records
from trainers.config import TrainConfig
from workbench.cli import main as cli
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.data.importer import import_file
from workbench.models import runs

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path):
    records = write_records(tmp_path / "tickets.jsonl", chat_records(40))
    with Store.open(tmp_path / "project") as store:
        import_file(store, records, "tickets")
    return tmp_path / "project"


def wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_resume_after_sigkill_continues_from_the_checkpoint(project):
    with Store.open(project) as store:
        cfg = runs.default_config(store, **{**TINY, "max_steps": 30, "checkpoint_every": 3, "eval_every": 100})
        run_id = runs.launch(store, "tickets", cfg)
        run_dir = store.project.runs_dir / run_id
        assert runs.run_status(run_dir)["status"] == "running"
        ckpt = wait_for(lambda: [e for e in runs.read_events(run_dir) if e["type"] == "checkpoint"])[0]["step"]
        pid = json.loads((run_dir / "run.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        status = wait_for(lambda: (s := runs.run_status(run_dir))["status"] == "interrupted" and s)
        assert "start it again to resume" in status["message"]
        killed_at = status["step"]
        assert killed_at >= ckpt
        assert not (run_dir / "adapter").exists()

        runs.start_run(store, run_id)  # resume
        final = runs.wait_run(store.project.runs_dir, run_id, poll_s=0.2, timeout_s=180)
        assert final["status"] == "completed" and final["step"] == 30
        events = runs.read_events(run_dir)
        resume = next(e for e in events if e["type"] == "resume")
        last_ckpt = max(e["step"] for e in events[: events.index(resume)] if e["type"] == "checkpoint")
        assert resume["step"] == last_ckpt
        after = [e["step"] for e in events[events.index(resume):] if e["type"] == "step"]
        assert after == list(range(last_ckpt + 1, 31))
        assert [p["step"] for p in final["losses"] if p["kind"] == "train"] == list(range(1, 31))
        assert (run_dir / "adapter" / "adapter_model.safetensors").exists()

        rows = {r["run_id"]: r for r in runs.list_runs(store)}
        assert rows[run_id]["status"] == "completed" and rows[run_id]["eval_loss"] == pytest.approx(final["eval_loss"])
        db = store.cursor().execute("SELECT status, steps, dataset, version, base_model, method FROM wb_runs "
                                    "WHERE run_id = ?", [run_id]).fetchall()
        assert db == [("completed", 30, "tickets", 1, "tiny", "lora")]
        with pytest.raises(WorkbenchError, match="has finished"):
            runs.start_run(store, run_id)


def test_cancel_saves_a_checkpoint_and_the_adapter(project):
    with Store.open(project) as store:
        cfg = runs.default_config(store, **{**TINY, "max_steps": 500, "checkpoint_every": 1000, "eval_every": 1000})
        run_id = runs.launch(store, "tickets", cfg)
        run_dir = store.project.runs_dir / run_id
        wait_for(lambda: any(e["type"] == "step" for e in runs.read_events(run_dir)))
        runs.cancel_run(store, run_id)
        final = runs.wait_run(store.project.runs_dir, run_id, poll_s=0.2, timeout_s=120)
        assert final["status"] == "cancelled" and 0 < final["step"] < 500
        assert final["checkpoint_step"] == final["step"]
        assert (run_dir / "adapter" / "adapter_config.json").exists()


def test_cli_train_prints_the_run_as_json(project, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval_every": 2}))
    code = cli.main(["train", "--project", str(project), "--dataset", "tickets@1", "--config", str(config),
                     "--max-steps", "4", "--set", "lora_rank=4", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    payload = json.loads(out)
    assert {"run_id", "train_loss", "eval_loss"} <= set(payload) and payload["status"] == "completed"
    assert payload["steps"] == 4 and payload["eval_loss"] > 0
    manifest = json.loads((project / "runs" / payload["run_id"] / "manifest.json").read_text())
    assert manifest["config"]["lora_rank"] == 4 and manifest["dataset"]["dataset"] == "tickets"
    log = (project / "runs" / payload["run_id"] / "trainer.log").read_text()  # what users read when it fails
    assert "FutureWarning" not in log and "it/s]" not in log and "Loading weights" not in log, log[-800:]
    assert cli.main(["runs", "--project", str(project), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [r["status"] for r in listed if r["run_id"] == payload["run_id"]] == ["completed"]


def test_cli_refuses_a_bad_setting_with_one_line(project, capsys):
    code = cli.main(["train", "--project", str(project), "--dataset", "tickets", "--set", "lora_rank=0"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == "error: lora_rank: 0 must be at least 1"
    code = cli.main(["train", "--project", str(project), "--dataset", "nope"])
    assert code == 1 and "no dataset named 'nope'" in capsys.readouterr().err


def test_preflight_reports_counts_and_the_trained_text(project, capsys):
    code = cli.main(["train", "--project", str(project), "--dataset", "tickets", "--preflight", "--json",
                     *[f"--set={k}={v}" for k, v in TINY.items()]])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["train_records"] + out["val_records"] == 40 and out["truncated"] >= 0
    trained = "".join(s["text"] for s in out["example"] if s["trained"])
    assert trained.endswith("<|im_end|>\n") and "<|im_start|>" not in trained
    assert out["example_text"].startswith("<|im_start|>user\n")
    assert out["seconds_per_epoch"] > 0 and out["steps_per_epoch"] >= 1 and out["supervised_tokens_per_epoch"] > 0


def test_a_runs_listing_between_a_run_folder_and_its_row_does_not_collide(project, monkeypatch):
    """prepare_run writes run.json, then records the row; the app's runs table (another session, the same moment)
    may record the folder first. Both inserts used to be plain INSERTs: 'Duplicate key ... violates primary key'."""
    write_info = runs._write_info
    with Store.open(project) as store:
        def write_then_list(run_dir, info):
            write_info(run_dir, info)
            listed = runs.list_runs(store)  # what a page rendering now would do
            assert run_dir.name in [r["run_id"] for r in listed]

        monkeypatch.setattr(runs, "_write_info", write_then_list)
        run_id = runs.prepare_run(store, "tickets", TrainConfig(base_model=str(TINY), max_steps=1), created_by="ana")
        row = store.cursor().execute("SELECT status, created_by, base_model FROM wb_runs WHERE run_id = ?",
                                     [run_id]).fetchall()
        assert row == [("prepared", "ana", str(TINY))]

        # and the other order: the row is there but a listing that read wb_runs before it came inserts the folder too
        run_dir = store.project.runs_dir / run_id
        runs._record(store, run_dir, runs.run_status(run_dir), runs._read_config(run_dir), exists=False)
        assert [r["run_id"] for r in runs.list_runs(store)].count(run_id) == 1


def test_a_runs_listing_whose_transaction_began_before_prepare_run_committed_does_not_fail(project, monkeypatch):
    """The CI flake behind 'Duplicate key ... violates primary key' even with ON CONFLICT: the listing's transaction
    INSERT takes its snapshot, prepare_run's row commits, then the upsert checks the key. DuckDB cannot update a row
    its snapshot does not see and raises a ConstraintException; a fresh transaction sees the row and updates it."""
    with Store.open(project) as store:
        run_id = runs.prepare_run(store, "tickets", TrainConfig(base_model=str(TINY), max_steps=1), created_by="ana")
        run_dir = store.project.runs_dir / run_id
        row = store.cursor().execute("SELECT * FROM wb_runs WHERE run_id = ?", [run_id]).fetchall()
        cols = [d[0] for d in store.cursor().description]
        store.cursor().execute("DELETE FROM wb_runs WHERE run_id = ?", [run_id])  # the moment before prepare_run's row
        transaction, begun = store.transaction, []

        def transaction_then_prepare_run_commits(*args, **kwargs):
            cm = transaction(*args, **kwargs)
            cur = cm.__enter__()
            if not begun:  # only the first attempt: prepare_run's INSERT commits on another cursor right now
                begun.append(True)
                # the snapshot the listing's INSERT takes as it starts (under load the other commit lands inside it)
                cur.execute("SELECT count(*) FROM wb_runs").fetchall()
                other = store.con.cursor()
                other.execute(f"INSERT INTO wb_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row[0])
                other.close()

            class Entered:
                def __enter__(self):
                    return cur

                def __exit__(self, *exc):
                    return cm.__exit__(*exc)
            return Entered()

        monkeypatch.setattr(store, "transaction", transaction_then_prepare_run_commits)
        runs._record(store, run_dir, runs.run_status(run_dir), runs._read_config(run_dir), exists=False)
        monkeypatch.undo()
        assert begun
        rows = store.cursor().execute("SELECT status, created_by FROM wb_runs WHERE run_id = ?", [run_id]).fetchall()
        assert rows == [("prepared", "ana")]
