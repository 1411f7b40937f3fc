"""The Train page driven with streamlit.testing.v1.AppTest on a small demo project: pre-flight, start a
real run, follow it to the end, see it recorded."""

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.trainers.test_trainer_fixtures import TINY
from workbench.data.demo_project import make_demo_project
from workbench.models import runs

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_demo_project(tmp_path / "project", records=60)
    # This project's own defaults for new runs: the [train] table of workbench.toml.
    toml = Path(info["project"]) / "workbench.toml"
    toml.write_text(toml.read_text() + "\n[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in
                                                            {**TINY, "max_steps": 6, "eval_every": 3}.items()))
    monkeypatch.setenv("WORKBENCH_PROJECT", info["project"])
    yield Path(info["project"])
    st.cache_data.clear()
    st.cache_resource.clear()


def train_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.switch_page("page_train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_preflight_start_and_follow_a_run(project):
    at = train_page()
    assert at.title[0].value == "Train"
    assert any("No runs yet" in i.value for i in at.info)
    assert at.text_input(key="train_base_model").value == "tiny"
    assert at.number_input(key="train_max_steps").value == 6  # from the project's [train] table
    assert all(w.help for w in [*at.number_input, *at.selectbox, *at.text_input, *at.checkbox, *at.button])

    at.button(key="train_preflight").click().run()
    assert not at.exception, [e.value for e in at.exception]
    out = at.session_state["train_preflight_result"]
    assert out["ref"] == "support-tickets@1" and out["train_records"] + out["val_records"] == 60
    page_html = "".join(h.proto.body for h in at.get("html"))
    assert "<mark>" in page_html and "&lt;|im_start|&gt;user" in page_html  # escaped text, highlighted answer

    import torch  # the GPU count offered is the machine's, read here from torch itself

    gpus = at.number_input(key="train_gpus")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert gpus.value == 1 and gpus.disabled == (have < 2) and gpus.max == max(have, 1)
    assert ("no GPU" in gpus.help) == (have == 0)
    assert at.selectbox(key="train_fsdp").options == ["auto", "on", "off"] and at.selectbox(key="train_fsdp").label == "FSDP"

    at.number_input(key="train_lora_rank").set_value(4)
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = at.session_state["train_run_select"]
    final = runs.wait_run(project / "runs", run_id, poll_s=0.2, timeout_s=240)
    assert final["status"] == "completed", final

    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "run_id" in d.value.columns)
    assert list(table["status"]) == ["completed"] and list(table["step"]) == [6]
    assert any(m.label == "Status" and m.value == "completed" for m in at.metric)
    # the end event's steady state, as the trainer wrote it, is what the page shows
    end = json.loads((project / "runs" / run_id / "events.jsonl").read_text().splitlines()[-1])
    speed = next(m for m in at.metric if m.label == "Supervised tok/s")
    assert speed.value == f"{end['steady_supervised_tokens_per_s']:,.0f}" and "All tokens" in speed.proto.help
    assert any(f"{end['steady_tokens_per_s']:,.0f} in all" in c.value for c in at.caption)
    assert ("mfu" in end) == any("model FLOPs utilisation" in c.value for c in at.caption)  # none on a CPU
    plan = json.loads((project / "runs" / run_id / "batch_plan.json").read_text())  # the trainer's own plan file
    assert any(f"Batch plan, {plan['batch_tokens']:,} tokens a step: " in c.value and plan["reasons"][-1][3:] in c.value
               for c in at.caption), [c.value for c in at.caption]
    setup = next(json.loads(line) for line in (project / "runs" / run_id / "events.jsonl").read_text().splitlines()
                 if '"setup"' in line)
    assert any(c.value.startswith(f"Before the first step: {setup['seconds']:.1f} s (") and "loading the model" in c.value
               for c in at.caption), [c.value for c in at.caption]
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")  # the loss curves
    assert any(c.value.endswith("adapter") for c in at.code)
    download = [d for d in at.get("download_button") if "Download the adapter" in d.proto.label]
    assert download and download[0].proto.help  # the adapter as a zip, once the run has one
    manifest = json.loads((project / "runs" / run_id / "manifest.json").read_text())
    assert manifest["config"]["lora_rank"] == 4 and manifest["config"]["fsdp"] == "auto"
    assert json.loads((project / "runs" / run_id / "run.json").read_text())["nproc_per_node"] == 1  # a resume's count


def test_a_bad_setting_is_one_red_line(project):
    at = train_page()
    at.text_input(key="train_target_modules").set_value(" ")
    at.button(key="train_start").click().run()
    assert not at.exception
    assert any("target_modules is empty" in e.value for e in at.error)
    assert not any((project / "runs").iterdir())  # nothing was prepared


@pytest.mark.slow
def test_a_dpo_run_shows_its_reward_accuracy_and_margin(project, tmp_path):
    """A preference run started through the product: the run view adds the reward charts, read from its events."""
    from tests.conftest import write_jsonl
    from tests.data.test_preference_formats import PAIRS
    from workbench.core.store import Store
    from workbench.data.importer import import_file

    with Store.open(project) as store:
        import_file(store, write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 8), "pairs")
        cfg = runs.default_config(store, method="dpo", max_steps=4, eval_every=2, checkpoint_every=4)
        run_id = runs.launch(store, "pairs", cfg)
    final = runs.wait_run(project / "runs", run_id, poll_s=0.2, timeout_s=240)
    assert final["status"] == "completed", final
    events = runs.read_events(project / "runs" / run_id)
    at = train_page()
    at.selectbox(key="train_run_select").set_value(run_id).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = [c for c in at.get("vega_lite_chart")
              if json.loads(c.proto.spec).get("facet", {}).get("column", {}).get("field") == "figure"]
    assert charts, "no reward chart"
    import pyarrow as pa

    shown = pa.ipc.open_stream(charts[0].proto.datasets[0].data.data).read_all().to_pylist()
    want = [e["reward_accuracy"] for e in events if e["type"] == "step"]
    got = [p["value"] for p in shown if p["figure"] == "reward accuracy" and p["kind"] == "train"]
    assert got == pytest.approx(want) and len(got) == 4
    assert {p["kind"] for p in shown} == {"train", "validation"}
