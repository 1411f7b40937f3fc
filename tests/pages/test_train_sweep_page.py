"""The Train page's Sweep and Compare sections driven with AppTest on a small demo project: start a real
two-trial Optuna sweep of the tiny base, see its best trial equal Optuna's own, then compare its two runs."""

import json
import sys
import time
from pathlib import Path

import optuna
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.trainers.test_trainer_fixtures import TINY
from workbench.data.demo_project import make_demo_project
from workbench.models import sweeps

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=40)
    toml = Path(info["project"]) / "workbench.toml"
    defaults = {**TINY, "eval_every": 2, "checkpoint_every": 2, "report_to": "none"}
    toml.write_text(toml.read_text() + "\n[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in defaults.items()))
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield Path(info["project"])
    st.cache_data.clear()
    st.cache_resource.clear()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_start_a_sweep_read_its_best_trial_and_compare_its_runs(project):
    at = ok(AppTest.from_file(str(APP), default_timeout=120).run())
    ok(at.switch_page("page_train.py").run())
    assert at.number_input(key="sweep_trials").help and at.selectbox(key="sweep_pruner").help
    at.number_input(key="sweep_trials").set_value(2)
    at.number_input(key="sweep_steps").set_value(4)
    at.selectbox(key="sweep_pruner").set_value("none")
    ok(at.button(key="sweep_start").click().run())
    name = at.session_state["sweep_select"]
    thread = sys.modules["train_sweep"]._THREADS[name]
    deadline = time.time() + 400
    while thread.is_alive() and time.time() < deadline:
        time.sleep(1)
    assert not thread.is_alive(), "the sweep did not finish"
    assert not sys.modules["train_sweep"]._ERRORS.get(name)
    ok(at.run())

    # the best trial shown is the one Optuna's own study object, read from the sweep's storage, calls best
    study = optuna.load_study(study_name=name, storage=sweeps.storage_url(project, name))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    best = next(m for m in at.metric if m.label.startswith("Best: trial"))
    assert best.label == f"Best: trial {study.best_trial.number}"
    assert best.value == f"{study.best_value:.4f}"
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns and "state" in d.value.columns)
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]

    run_ids = [t.user_attrs["run_id"] for t in study.trials]
    ok(at.multiselect(key="compare_runs").set_value(run_ids).run())
    settings = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    differ = set(settings["setting"])
    assert "learning_rate" in differ and "max_steps" not in differ  # searched settings differ, fixed ones do not
    lr = settings.set_index("setting").loc["learning_rate"]
    for t in study.trials:
        assert lr[t.user_attrs["run_id"]] == pytest.approx(t.params["learning_rate"])
    assert any(c.value.startswith("None yet: evaluate the runs") for c in at.caption)

    # both runs evaluated on the same items (answers recorded, as the generator writes them): the paired comparison
    from tests.models.test_review import record_outputs
    from workbench.core.store import Store
    from workbench.models import compare, eval_setup, evaluation, generator

    with Store.open(project) as store:
        for k, run_id in enumerate(run_ids):
            run = evaluation.create_eval(store, "support-tickets", split="all",
                                         model=eval_setup.ModelSpec(f"/models/m{k}", label=f"m{k}", run_id=run_id))
            record_outputs(store, run, {i: "Thanks, we will look into it." if (i + k) % 3 else "Sorry."
                                        for i in range(run.items)})
            generator.refresh(store, run.eval_id)
        (pair,) = compare.pairs_for_runs(store, run_ids)
        want = compare.compare(store, pair["a"], pair["b"])
    ok(at.run())
    assert at.selectbox(key="compare_eval_pair").help
    shown = [m.value for m in [*at.success, *at.error, *at.info]]
    assert [r["statement"] for r in want] == [s for s in shown if s in {r["statement"] for r in want}]
