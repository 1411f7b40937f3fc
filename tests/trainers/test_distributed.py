"""The distributed paths on a CPU: 2 processes under torchrun with gloo, the tiny model.

Why one process with grad_accum=2 is the same maths as 2 ranks with grad_accum=1: an optimizer step takes the
next grad_accum x world micro-batches of the epoch's one seeded order and rank r trains on every world-th of them
(TrainingRecipe.train), so both see the same 2 micro-batches a step. The loss is the sum over the step's supervised
tokens divided by their count across all ranks; one process backpropagates sum_i / n for each micro-batch, each
rank backpropagates sum_r x 2 / n and DDP (all-reduce) or FSDP2 (reduce-scatter) averages over the 2 ranks:
(sum_0 + sum_1) / n either way. Dropout is off (lora_dropout 0), the LoRA initialisation comes from the same seed
(the tiny base is cached before any run, so no run spends random numbers pre-training it), and validation
batches are shared out and summed. What is left is the order of float additions: equal to 1e-5.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config, write_records
from trainers import tiny
from trainers.config import save_config
from trainers.train import tiny_texts
from workbench.models.runs import trainer_command

STEPS = 12
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A cached tiny base and the settings every run here shares."""
    before = one_thread()
    root = tmp_path_factory.mktemp("distributed")
    cfg = tiny_config(root, max_steps=STEPS, eval_every=4, checkpoint_every=2, keep_checkpoints=2, lora_dropout=0.0,
                      learning_rate=5e-3, max_seq_len=256, batch_tokens=512, record_losses=False)
    records = chat_records(40)
    tiny.ensure_tiny(cfg, tiny_texts(records))
    yield root, cfg, records
    torch.set_num_threads(before)


def _prepare(project, name: str, **changes) -> Path:
    root, cfg, records = project
    run_dir = root / "runs" / name
    write_records(run_dir / "data" / "records.jsonl", records)
    save_config(cfg.replace(**changes), run_dir / "config.json")
    return run_dir


def _train(run_dir: Path, nproc: int) -> list[dict]:
    done = subprocess.run(trainer_command(run_dir, nproc), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return _events(run_dir)


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _curve(events: list[dict], kind: str = "step", key: str = "loss") -> dict[int, float]:
    return {e["step"]: e[key] for e in events if e["type"] == kind}


@pytest.fixture(scope="module")
def one_process(project):
    return _train(_prepare(project, "one", grad_accum=2), 1)


@pytest.fixture(scope="module")
def fsdp_run(project):
    run_dir = _prepare(project, "fsdp", fsdp="on")
    return run_dir, _train(run_dir, 2)


def _same_curve(got: dict, want: dict) -> None:
    assert list(got) == list(want) == list(range(1, STEPS + 1))
    assert got == pytest.approx(want, abs=2e-5), (got, want)  # events round losses to 5 decimals


@pytest.mark.slow
def test_ddp_trains_like_one_process_over_the_same_global_batches(project, one_process):
    run_dir = _prepare(project, "ddp", fsdp="auto")  # auto: DDP on a CPU
    events = _train(run_dir, 2)
    assert _manifest(run_dir)["parallel"] == "ddp" and events[0]["world_size"] == 2
    _same_curve(_curve(events), _curve(one_process))
    assert _curve(events, "eval", "val_loss") == pytest.approx(_curve(one_process, "eval", "val_loss"), abs=2e-5)
    # the comparison is sharp: one process with one micro-batch a step follows another curve
    other = _train(_prepare(project, "one-accum-1", max_steps=3), 1)
    assert abs(_curve(other)[2] - _curve(one_process)[2]) > 1e-3


@pytest.mark.slow
def test_fsdp2_trains_like_one_process_over_the_same_global_batches(fsdp_run, one_process):
    run_dir, events = fsdp_run
    assert _manifest(run_dir)["parallel"] == "fsdp" and events[-1]["status"] == "completed"
    _same_curve(_curve(events), _curve(one_process))
    assert _curve(events, "eval", "val_loss") == pytest.approx(_curve(one_process, "eval", "val_loss"), abs=2e-5)


@pytest.mark.slow
def test_the_fsdp_adapter_is_plain_peft_and_gives_the_trained_models_logits(project, fsdp_run, one_process):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root, cfg, _ = project
    fsdp_dir, _ = fsdp_run
    ours = load_file(fsdp_dir / "adapter" / "adapter_model.safetensors")
    reference = load_file(root / "runs" / "one" / "adapter" / "adapter_model.safetensors")
    assert sorted(ours) == sorted(reference) and all("lora_" in k for k in ours)
    in_checkpoint = load_file(sorted((fsdp_dir / "checkpoints").glob("step-*"))[-1] / "adapter"
                              / "adapter_model.safetensors")
    assert sorted(in_checkpoint) == sorted(ours)  # full tensors, not one rank's shards
    assert all(in_checkpoint[k].shape == reference[k].shape for k in reference)

    ids = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 11]])

    def logits(adapter: Path | None) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(cfg.tiny_dir, dtype=torch.float32)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter))
        with torch.no_grad():
            return model.eval()(input_ids=ids).logits

    base, got, want = logits(None), logits(fsdp_dir / "adapter"), logits(root / "runs" / "one" / "adapter")
    assert (got - base).abs().max() > 1e-2  # the adapter learnt something
    torch.testing.assert_close(got, want, atol=2e-4, rtol=0)


@pytest.mark.slow
def test_fsdp_resumes_after_one_rank_is_killed(project, fsdp_run):
    """SIGKILL the rank that does not write after the first checkpoint; torchrun ends the other; the product's
    command, run again, resumes from the checkpoint and follows the uninterrupted run's curve."""
    run_dir = _prepare(project, "killed", fsdp="on")
    cmd = trainer_command(run_dir, 2)
    job = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(e["type"] == "checkpoint" for e in _events_if_any(run_dir)):
            assert job.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.01)
        writer = next(e["pid"] for e in _events(run_dir) if e["type"] == "start")
        ranks = [p for p in psutil.Process(job.pid).children() if "trainers.train" in " ".join(p.cmdline())]
        other = [p for p in ranks if p.pid != writer]
        assert len(other) == 1
        os.kill(other[0].pid, signal.SIGKILL)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    killed = _events(run_dir)
    assert not any(e["type"] == "end" and e.get("status") == "completed" for e in killed)
    checkpoints = [e["step"] for e in killed if e["type"] == "checkpoint"]
    assert checkpoints and checkpoints[-1] < STEPS

    events = _train(run_dir, 2)[len(killed):]  # the same command again
    resumed = next(e for e in events if e["type"] == "resume")
    assert resumed["step"] == checkpoints[-1]
    after = _curve(events)
    assert list(after) == list(range(resumed["step"] + 1, STEPS + 1))
    want = {k: v for k, v in _curve(fsdp_run[1]).items() if k > resumed["step"]}
    assert after == pytest.approx(want, abs=2e-5), (after, want)
    assert events[-1]["status"] == "completed"


def _events_if_any(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_workbench_train_fsdp_runs_fsdp2_under_torchrun_and_merges(tmp_path, capsys, monkeypatch):
    """The product's way in: `workbench train --nproc-per-node 2 --fsdp`; the merged model comes from the plain adapter."""
    from tests.trainers.test_trainer_fixtures import TINY
    from workbench.cli import main as cli
    from workbench.core.store import Store
    from workbench.data.importer import import_file

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    project = tmp_path / "project"
    with Store.open(project) as store:
        import_file(store, write_records(tmp_path / "tickets.jsonl", chat_records(40)), "tickets")
    settings = {**TINY, "record_losses": False, "merge": True}
    code = cli.main(["train", "--project", str(project), "--dataset", "tickets", "--nproc-per-node", "2", "--fsdp",
                     "--max-steps", "2", "--json", *[f"--set={k}={json.dumps(v)}" for k, v in settings.items()]])
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = project / "runs" / json.loads(out)["run_id"]
    manifest = _manifest(run_dir)
    assert manifest["parallel"] == "fsdp" and manifest["world_size"] == 2 and manifest["config"]["fsdp"] == "on"
    assert json.loads((run_dir / "run.json").read_text())["nproc_per_node"] == 2  # what --resume starts again
    assert (run_dir / "merged" / "config.json").exists() and (run_dir / "adapter" / "adapter_config.json").exists()


def test_auto_shards_only_what_does_not_fit_one_gpu(project, monkeypatch):
    """The memory rule of fsdp auto, its count checked against the loaded model and peft's own adapter."""
    from trainers import distributed
    from trainers.config import ConfigError
    from trainers.train import load_base, wrap_peft

    _, cfg, _ = project
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    model = wrap_peft(load_base(cfg.tiny_dir, cfg, cpu, torch.float32), cfg)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    need = distributed.training_bytes(cfg.tiny_dir, cfg, torch.bfloat16)
    assert need == frozen * 2 + trainable * distributed.ADAM_BYTES

    assert distributed.choose(cfg, cfg.tiny_dir, gpu, torch.bfloat16, 1) == "single"
    assert distributed.choose(cfg, cfg.tiny_dir, cpu, torch.float32, 2) == "ddp"  # gloo: auto is DDP
    assert distributed.choose(cfg.replace(fsdp="on"), cfg.tiny_dir, cpu, torch.float32, 2) == "fsdp"
    monkeypatch.setattr(distributed, "gpu_bytes", lambda device: need)  # a GPU this model fills
    assert distributed.choose(cfg, cfg.tiny_dir, gpu, torch.bfloat16, 2) == "fsdp"
    assert distributed.choose(cfg.replace(fsdp="off"), cfg.tiny_dir, gpu, torch.bfloat16, 2) == "ddp"
    monkeypatch.setattr(distributed, "gpu_bytes", lambda device: 2 * need)  # room to spare
    assert distributed.choose(cfg, cfg.tiny_dir, gpu, torch.bfloat16, 2) == "ddp"
    with pytest.raises(ConfigError, match="fsdp: method prompt-tuning"):
        distributed.choose(cfg.replace(fsdp="on", method="prompt-tuning"), cfg.tiny_dir, cpu, torch.float32, 2)
    with pytest.raises(ConfigError, match="fsdp: 'yes' is not known"):
        cfg.replace(fsdp="yes")
