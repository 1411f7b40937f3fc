"""Sweeps: the search space, and a real 6-trial Optuna sweep on the tiny base that prunes, is killed, resumes and
reports the best trial exactly as Optuna's own study object read from the storage does."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from tests.trainers.test_trainer_fixtures import TINY, chat_records, write_records
from workbench.cli import main as cli
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.data.importer import import_file
from workbench.models import runs, sweeps


def test_default_space_fixed_settings_and_alpha_multiple():
    fixed = {"max_steps": 50, "lora_rank": 8}
    space = sweeps.effective_space(sweeps.load_space(None), fixed)
    assert "lora_rank" not in space and "epochs" not in space and "learning_rate" in space
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    trial = study.ask()
    params = sweeps.suggest(trial, space)
    assert 1e-5 <= params["learning_rate"] <= 1e-3
    settings = sweeps.trial_settings(params, fixed)
    assert settings["lora_alpha"] == 8 * params[sweeps.ALPHA_MULTIPLE] and settings["max_steps"] == 50
    assert isinstance(params["warmup_steps"], int)  # integer bounds: an integer setting


def test_a_user_space_is_checked(tmp_path):
    good = tmp_path / "space.yaml"
    good.write_text("learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\nlora_rank: [4, 8]\n")
    assert sweeps.load_space(good)["lora_rank"] == {"choices": [4, 8]}
    for text, word in (("lora_rnak: [4, 8]\n", "not a training setting"), ("lora_rank: []\n", "empty"),
                       ("learning_rate: {low: 0, high: 1, log: true}\n", "above 0"),
                       ("lora_dropout: {low: 0.3, high: 0.1}\n", "above high")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(WorkbenchError, match=word):
            sweeps.load_space(bad)


@pytest.mark.slow
def test_six_trials_prune_survive_a_kill_and_report_optunas_best(tmp_path, capsys):
    project = tmp_path / "project"
    with Store.open(project) as store:
        import_file(store, write_records(tmp_path / "t.jsonl", chat_records(30)), "tickets")
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {low: 1.0e-5, high: 5.0e-2, log: true}\nlora_rank: [4, 8]\n")
    fixed = {**TINY, "max_steps": 6, "eval_every": 2, "checkpoint_every": 2, "report_to": "none"}
    args = ["--project", str(project), "sweep", "--dataset", "tickets", "--base-model", "tiny", "--trials", "6",
            "--space", str(space), "--name", "s1", "--seed", "1",
            *[f"--set={k}={json.dumps(v)}" for k, v in fixed.items()]]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *args, "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = project / "sweeps" / "s1.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # kill the sweep while its third trial trains
        if db.exists() and proc.poll() is None:
            study = optuna.load_study(study_name="s1", storage=f"sqlite:///{db}")
            if sum(t.state.name != "RUNNING" for t in study.trials) >= 2 and any(
                    t.state.name == "RUNNING" and t.user_attrs.get("run_id") for t in study.trials):
                break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = optuna.load_study(study_name="s1", storage=f"sqlite:///{db}")
    assert any(t.state.name == "RUNNING" for t in killed.trials)

    capsys.readouterr()
    assert cli.main(["--project", str(project), "sweep", "--resume", "--name", "s1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)

    stored = optuna.load_study(study_name="s1", storage=f"sqlite:///{db}")  # Optuna's own reading
    states = [t.state.name for t in stored.trials]
    assert len(stored.trials) == 6 and "RUNNING" not in states, states
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 2, states
    assert out["best"]["number"] == stored.best_trial.number
    assert out["best"]["value"] == pytest.approx(stored.best_value)
    assert out["best"]["params"] == stored.best_trial.params
    assert [t["state"] for t in out["trials"]] == states
    with Store.open(project) as store:
        for t in stored.trials:  # every trial is an ordinary run, with its own folder and events
            run_dir = store.project.runs_dir / t.user_attrs["run_id"]
            evals = [e for e in runs.read_events(run_dir) if e["type"] == "eval" and e["step"] > 0]
            assert sorted(t.intermediate_values) == sorted({e["step"] for e in evals})
            if t.state.name == "PRUNED":  # cancelled, unless its last steps finished before the sweep looked
                assert runs.run_status(run_dir)["status"] in ("cancelled", "completed")
            if t.state.name == "COMPLETE":
                assert t.value == pytest.approx(runs.run_status(run_dir)["eval_loss"])


def test_tracking_ui_names_the_project_store_or_what_to_install(tmp_path, capsys):
    assert cli.main(["--project", str(tmp_path / "p"), "tracking", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "--host 127.0.0.1" in out["mlflow_ui"]
    assert out["store"] == f"sqlite:///{(tmp_path / 'p' / 'tracking' / 'mlflow.db').resolve()}"  # in the project
    if not out["ui_available"]:
        assert cli.main(["--project", str(tmp_path / "p"), "tracking", "--ui"]) == 1
        assert "pip install mlflow" in capsys.readouterr().err


@pytest.mark.slow
def test_two_trials_at_once_overlap_and_still_report_optunas_best(tmp_path):
    """--parallel 2: two runs train at the same time (their event times overlap), every trial is told to Optuna
    once, and the best is Optuna's own. Without a GPU both share the CPU (no device is pinned)."""
    from contextlib import nullcontext

    assert sweeps.device_slots(2) == [None, None] or all(s is not None for s in sweeps.device_slots(2))
    project = tmp_path / "project"
    store = Store.open(project)
    try:
        import_file(store, write_records(tmp_path / "t.jsonl", chat_records(30)), "tickets")
        fixed = {**TINY, "max_steps": 6, "eval_every": 2, "checkpoint_every": 6, "report_to": "none"}
        settings = sweeps.new_settings(dataset="tickets", base_model="tiny", trials=4,
                                       space=sweeps.load_space(None), fixed=fixed, pruner="none", parallel=2)
        out = sweeps.run_sweep(lambda: nullcontext(store), project, name="p2", settings=settings, poll_s=0.1)
    finally:
        store.close()
    stored = optuna.load_study(study_name="p2", storage=sweeps.storage_url(project, "p2"))
    assert [t.state.name for t in stored.trials] == ["COMPLETE"] * 4
    assert out["best"]["number"] == stored.best_trial.number and out["best"]["value"] == pytest.approx(
        stored.best_value)
    spans = []
    for t in stored.trials:
        events = runs.read_events(project / "runs" / t.user_attrs["run_id"])
        spans.append((events[0]["time"], events[-1]["time"]))
    overlapping = sum(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])
    assert overlapping >= 1, spans
    with pytest.raises(WorkbenchError, match="at least 1"):
        sweeps.new_settings(dataset="tickets", base_model="tiny", trials=2, space={}, fixed={}, parallel=0)


@pytest.mark.slow
def test_a_generation_metric_objective_is_each_trials_rouge_on_the_validation_split(tmp_path):
    """--metric rougeL: after training, each trial's adapter answers the validation split as an ordinary evaluation;
    its ROUGE-L (rouge-score's, through the evaluation) is the trial's value; the test split is never touched."""
    from contextlib import nullcontext

    from workbench.models import evaluation

    project = tmp_path / "project"
    records = [{**r, "split": "validation" if i % 5 == 0 else "train"} for i, r in enumerate(chat_records(40))]
    store = Store.open(project)
    try:
        import_file(store, write_records(tmp_path / "t.jsonl", records), "tickets")
        with pytest.raises(WorkbenchError, match="'validation' split"):
            import_file(store, write_records(tmp_path / "u.jsonl", chat_records(10)), "nosplit")
            sweeps.check_metric(store, "nosplit", "rougeL")
        sweeps.check_metric(store, "tickets", "rougeL")
        fixed = {**TINY, "max_steps": 4, "eval_every": 2, "checkpoint_every": 4, "report_to": "none"}
        settings = sweeps.new_settings(dataset="tickets", base_model="tiny", trials=2, space=sweeps.load_space(None),
                                       fixed=fixed, metric="rougeL", pruner="none",
                                       eval_settings={"max_new_tokens": 8})
        out = sweeps.run_sweep(lambda: nullcontext(store), project, name="g1", settings=settings, poll_s=0.1)
        stored = optuna.load_study(study_name="g1", storage=sweeps.storage_url(project, "g1"))
        assert stored.direction.name == "MAXIMIZE" and [t.state.name for t in stored.trials] == ["COMPLETE"] * 2
        for t in stored.trials:
            run = evaluation.get_eval(store, t.user_attrs["eval_id"])
            assert run.split == "validation" and run.run_id == t.user_attrs["run_id"] and run.items == 8
            assert t.value == pytest.approx(run.metrics["rougeL"])
            assert all(v < 0 for v in t.intermediate_values.values())  # the loss, negated: higher is better
        assert out["best"]["number"] == stored.best_trial.number and out["metric"] == "rougeL"
    finally:
        store.close()


def test_a_reader_never_finds_a_half_made_sweep(tmp_path):
    """The Train page (or the test above) opens `<name>.db` the moment it appears, while `workbench sweep` is
    still making it: it must find Optuna's whole schema, the study and its settings, never a part."""
    import threading

    settings = sweeps.new_settings(dataset="tickets", base_model="tiny", trials=2, space={}, fixed={})
    names = [f"s{i}" for i in range(12)]
    seen, errors = {}, []

    def read():
        for name in names:
            db = sweeps.sweeps_dir(tmp_path) / f"{name}.db"
            deadline = time.monotonic() + 60
            while not db.exists() and time.monotonic() < deadline:
                pass
            try:
                study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
                seen[name] = study.user_attrs.get("settings")
            except Exception as e:  # noqa: BLE001 - any failure to read is the defect
                errors.append(f"{name}: {e!r}")

    reader = threading.Thread(target=read)
    reader.start()
    for name in names:
        sweeps.create_or_resume(tmp_path, name, settings)
    reader.join()
    assert not errors, errors
    assert seen == {name: settings for name in names}
    assert not [p.name for p in sweeps.sweeps_dir(tmp_path).iterdir() if not p.name.endswith(".db")]
    with pytest.raises(WorkbenchError, match="exists"):
        sweeps.create_or_resume(tmp_path, "s0", settings)
