"""Tracking by default: a tiny run inside a project folder is read back with MLflow's own client (one MLflow
run, every setting and the dataset hash as params, the metric history point for point with events.jsonl, the
adapter as an artifact) and with TensorBoard's own EventAccumulator."""

import json

import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config, write_records
from trainers import tracking
from trainers.config import ConfigError, TrainConfig, save_config
from trainers.train import main as train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    before = one_thread()
    project = tmp_path_factory.mktemp("project")
    run_dir = project / "runs" / "r1"
    write_records(run_dir / "data" / "records.jsonl", chat_records(40))
    assert TrainConfig().report_to == "mlflow,tensorboard"  # the default: both, locally
    cfg = tiny_config(project, max_steps=6, eval_every=3, checkpoint_every=6, report_to=TrainConfig().report_to)
    save_config(cfg, run_dir / "config.json")
    (run_dir / "run.json").write_text(json.dumps({"dataset": "tickets", "version": 2, "version_id": 5,
                                                  "content_hash": "c0ffee"}))
    assert train_main([str(run_dir)]) == 0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    yield project, run_dir, cfg, events
    torch.set_num_threads(before)


def test_the_mlflow_store_holds_one_run_with_params_history_and_adapter(tracked_run):
    from mlflow.tracking import MlflowClient

    project, run_dir, cfg, events = tracked_run
    assert (project / "tracking" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'tracking' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("workbench")
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 1
    run = found[0]
    assert run.info.run_name == "r1" and run.info.status == "FINISHED"
    params = run.data.params
    for key, value in cfg.to_dict().items():  # every setting
        assert params[key] == str(value)
    assert params["dataset.content_hash"] == "c0ffee" and params["dataset.version"] == "2"

    evals = [e for e in events if e["type"] == "eval"]
    steps = [e for e in events if e["type"] == "step"]
    val = client.get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in sorted(val, key=lambda m: m.step)] == [e["step"] for e in evals]
    assert [m.value for m in sorted(val, key=lambda m: m.step)] == pytest.approx([e["val_loss"] for e in evals],
                                                                                  abs=1e-5)
    train = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in train) == [e["step"] for e in steps]
    end = events[-1]
    assert run.data.metrics["final/eval_loss"] == pytest.approx(end["eval_loss"])

    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "adapter")]
    assert "adapter/adapter_model.safetensors" in artifacts
    local = client.download_artifacts(run.info.run_id, "adapter/adapter_model.safetensors", str(project / "dl"))
    assert open(local, "rb").read() == (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()


def test_tensorboard_event_files_read_back(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _, events = tracked_run
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    evals = [e for e in events if e["type"] == "eval"]
    val = acc.Scalars("val/loss")
    assert [s.step for s in val] == [e["step"] for e in evals]
    assert [s.value for s in val] == pytest.approx([e["val_loss"] for e in evals], abs=1e-5)
    assert len(acc.Scalars("train/loss")) == len([e for e in events if e["type"] == "step"])


def test_report_to_accepts_sinks_uris_and_refuses_the_rest():
    assert tracking.sinks(TrainConfig().report_to) == ["mlflow", "tensorboard"]
    assert tracking.sinks(TrainConfig(report_to="none").report_to) == []
    assert tracking.sinks(TrainConfig(report_to="tensorboard,http://host:5000").report_to) == [
        "tensorboard", "http://host:5000"]
    for bad, word in (("mlfow", "not known"), ("none,mlflow", "none alone"), ("", "empty")):
        with pytest.raises(ConfigError, match=word):
            TrainConfig(report_to=bad)


def test_an_evaluation_adds_its_metrics_to_the_same_mlflow_run(tracked_run):
    from mlflow.tracking import MlflowClient

    project, run_dir, _, _ = tracked_run
    assert tracking.log_evaluation(run_dir, {"rougeL": 0.25, "bleu": 12.5, "note": "x"})
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'tracking' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    assert run.data.metrics["eval/rougeL"] == 0.25 and run.data.metrics["eval/bleu"] == 12.5
    assert not tracking.log_evaluation(project / "elsewhere", {"rougeL": 0.1})  # an untracked run


def test_a_scored_evaluation_of_the_run_lands_in_its_mlflow_run(tracked_run):
    """workbench eval on a tracked run: its scores appear in that run's MLflow run, equal to the stored ones."""
    import pyarrow as pa
    from mlflow.tracking import MlflowClient

    from tests.models.test_review import record_outputs
    from workbench.core.store import Store
    from workbench.core.versions import write_version
    from workbench.data.demo import generate_tickets
    from workbench.models import eval_setup, evaluation, generator

    project, run_dir, _, _ = tracked_run
    rows = list(generate_tickets(12, seed=3))
    with Store.open(project) as store:
        assert store.project.runs_dir == run_dir.parent
        write_version(store, "tickets", [pa.table({"prompt": [r["prompt"] for r in rows],
                                                   "completion": [r["completion"] for r in rows],
                                                   "split": ["test"] * len(rows)})],
                      kind="import", fmt="prompt-completion", recipe={})
        run = evaluation.create_eval(store, "tickets", model=eval_setup.ModelSpec(str(run_dir), label="r1",
                                                                                  run_id="r1"))
        record_outputs(store, run, {i: rows[i]["completion"][: 20 + 7 * i] for i in range(run.items)})
        scored = generator.refresh(store, run.eval_id)  # every answer in: scored, as the CLI's loop does
    assert scored.status == "finished"
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'tracking' / 'mlflow.db'}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    for key in ("bleu", "rougeL", "chrf"):
        assert mlrun.data.metrics[f"eval/test/{key}"] == pytest.approx(scored.metrics[key])


def test_a_missing_tracking_package_drops_a_default_sink_and_refuses_a_named_one(tmp_path, monkeypatch, capsys):
    """mlflow-skinny is a dependency, but a machine can lack it (a GPU box with only the trainer's packages): the
    default report_to then trains with TensorBoard alone and says so; report_to that names mlflow still refuses."""
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # import fails; find_spec says None
    default = TrainConfig()
    assert default.report_to == "mlflow,tensorboard"
    reporter = tracking.Reporter.create(default, tmp_path)
    assert reporter is not None
    reporter.close()
    assert "mlflow package is not installed; this run is not tracked in mlflow" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="report_to mlflow: the mlflow package is not installed; pip install mlflow"):
        tracking.Reporter.create(TrainConfig(report_to="mlflow"), tmp_path)
