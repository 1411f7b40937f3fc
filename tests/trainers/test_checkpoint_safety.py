"""Checkpoints load without running code: the training state is safetensors + JSON, a pickle that
needs code is refused with a message, and a real run still resumes from its checkpoint."""

import json
import shutil

import pytest
import torch
from transformers import get_scheduler

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config, write_records
from trainers import checkpoint
from trainers.config import save_config
from trainers.train import main as train_main


class RunsCode:
    """What a crafted checkpoint holds: unpickling it calls exec, which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def optimizer_after_steps(steps: int, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    sched = get_scheduler("cosine", opt, num_warmup_steps=1, num_training_steps=10)
    for _ in range(steps):
        model(torch.randn(5, 4)).square().sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_the_training_state_round_trips_without_pickle(tmp_path):
    _, opt, sched = optimizer_after_steps(3)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng_cpu": torch.get_rng_state(),
             "rng_cuda": None}
    checkpoint.save_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_state.json", "training_state.safetensors"]
    back = checkpoint.load_state(tmp_path)
    assert back["scheduler"] == state["scheduler"] and back["rng_cuda"] is None
    assert torch.equal(back["rng_cpu"], state["rng_cpu"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # int keys, tuple betas
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)
    for i, entry in state["optimizer"]["state"].items():
        assert all(torch.equal(back["optimizer"]["state"][i][k], v) for k, v in entry.items())
    model, opt2, sched2 = optimizer_after_steps(0)  # a fresh optimizer takes the state back
    opt2.load_state_dict(back["optimizer"])
    sched2.load_state_dict(back["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"optimizer": RunsCode(marker)}, tmp_path / "training_state.pt")
    with pytest.raises(checkpoint.CheckpointError, match="refused to load .*could run code"):
        checkpoint.load_state(tmp_path)
    assert not marker.exists()


def test_a_checkpoint_of_plain_tensors_in_the_old_format_still_loads(tmp_path):
    _, opt, sched = optimizer_after_steps(2)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng_cpu": torch.get_rng_state()},
               tmp_path / "training_state.pt")
    assert checkpoint.load_state(tmp_path)["scheduler"] == sched.state_dict()


def events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_a_run_resumes_from_its_checkpoint_and_refuses_a_crafted_one(tmp_path):
    before = one_thread()
    try:
        run_dir = tmp_path / "runs" / "r1"
        write_records(run_dir / "data" / "records.jsonl", chat_records(40))
        cfg = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
        save_config(cfg, run_dir / "config.json")
        assert train_main([str(run_dir)]) == 0
        saved = run_dir / "checkpoints" / "step-0000002"
        assert not list(saved.rglob("*.pt")) and not list(saved.rglob("*.bin"))  # nothing to unpickle
        save_config(cfg.replace(max_steps=4, checkpoint_every=4), run_dir / "config.json")
        assert train_main([str(run_dir)]) == 0
        resumed = [e for e in events(run_dir) if e["type"] == "resume"]
        assert [e["step"] for e in resumed] == [2] and events(run_dir)[-1]["step"] == 4

        crafted = run_dir / "checkpoints" / "step-0000009"  # someone drops a newer checkpoint in the folder
        shutil.copytree(run_dir / "checkpoints" / "step-0000004", crafted)
        for name in ("training_state.json", "training_state.safetensors"):
            (crafted / name).unlink()
        marker = tmp_path / "ran"
        torch.save({"optimizer": RunsCode(marker)}, crafted / "training_state.pt")
        assert train_main([str(run_dir)]) == 1
        end = events(run_dir)[-1]
        assert end["type"] == "end" and end["status"] == "failed" and "refused to load" in end["message"]
        assert not marker.exists()
    finally:
        torch.set_num_threads(before)
