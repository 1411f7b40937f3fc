"""The training recipe end to end on a tiny CPU model: the loss falls, the adapter reloads with plain
transformers + peft and changes the output, the merged model matches it, generation is batched
correctly and resumable."""

import json
import math

import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config, write_records
from trainers import generate as G
from trainers.config import save_config
from trainers.train import main as train_main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    before = one_thread()
    root = tmp_path_factory.mktemp("trainer")
    run_dir = root / "runs" / "r1"
    write_records(run_dir / "data" / "records.jsonl", chat_records(60))
    cfg = tiny_config(root, max_steps=12, learning_rate=5e-3, eval_every=6, checkpoint_every=6, merge=True,
                      tiny_pretrain_steps=20)
    save_config(cfg, run_dir / "config.json")
    (run_dir / "run.json").write_text(json.dumps({"dataset": "tickets", "version": 1, "version_id": 1,
                                                  "content_hash": "abc"}))
    assert train_main([str(run_dir)]) == 0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    yield run_dir, cfg, events
    torch.set_num_threads(before)


def test_a_short_run_lowers_the_loss(finished_run):
    run_dir, cfg, events = finished_run
    steps = [e for e in events if e["type"] == "step"]
    evals = [e for e in events if e["type"] == "eval"]
    end = events[-1]
    assert [e["step"] for e in steps] == list(range(1, 13))
    assert end["type"] == "end" and end["status"] == "completed" and end["step"] == 12
    first, last = [e["loss"] for e in steps[:3]], [e["loss"] for e in steps[-3:]]
    assert sum(last) / 3 < sum(first) / 3 - 0.05, (first, last)
    assert [e["step"] for e in evals] == [0, 6, 12] and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert math.isclose(end["eval_loss"], min(e["val_loss"] for e in evals), abs_tol=1e-5)
    assert steps[0]["lr"] == cfg.learning_rate and steps[-1]["lr"] < steps[1]["lr"]  # cosine, no warmup
    assert all(e["tokens_per_s"] > 0 and e["remaining_s"] >= 0 for e in steps)
    # supervised tokens/s beside total tokens/s; the end event the steady state (after 3 warm-up steps)
    assert all(0 < e["supervised_tokens_per_s"] < e["tokens_per_s"] for e in steps)
    assert end["steady_steps"] == 9 and 0 < end["steady_supervised_tokens_per_s"] < end["steady_tokens_per_s"]
    # where the time before the first step went: parts that add up to it, timed against the events' own clock
    setup = next(e for e in events if e["type"] == "setup")
    start = next(e for e in events if e["type"] == "start")
    assert events.index(setup) < events.index(steps[0]) and {"load", "tokenize", "first_eval", "other"} <= set(setup["parts"])
    assert math.isclose(sum(setup["parts"].values()), setup["seconds"], abs_tol=0.05)
    assert setup["time"] - start["time"] <= setup["seconds"] + 0.05 <= steps[0]["elapsed_s"] + 0.2
    assert end["setup_s"] == setup["parts"]
    plan = next(e for e in events if e["type"] == "batch_plan")
    assert (plan["batch_tokens"], plan["max_seq_len"]) == (cfg.batch_tokens, cfg.max_seq_len)  # set: they win
    assert any("set" in r for r in plan["reasons"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == cfg.seed and manifest["dataset"]["content_hash"] == "abc"
    assert manifest["template"] and manifest["base_model"]["revision"].startswith("sha256:")
    assert {"torch", "transformers", "peft", "tokenizers"} <= set(manifest["libraries"])
    assert manifest["config"]["max_steps"] == 12


def test_the_adapter_reloads_and_changes_the_output(finished_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, cfg, _ = finished_run
    tok = AutoTokenizer.from_pretrained(run_dir / "adapter")
    ids = tok(tok.apply_chat_template([{"role": "user", "content": "My parcel is late."}], tokenize=False,
                                      add_generation_prompt=True), return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(cfg.tiny_dir).eval()
    with torch.no_grad():
        base_logits = base(**ids).logits
        tuned = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
        tuned_logits = tuned(**ids).logits
        merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged").eval()
        merged_logits = merged(**ids).logits
    assert (tuned_logits - base_logits).abs().max() > 1e-2
    assert torch.allclose(merged_logits, tuned_logits, atol=1e-4)


def test_batched_generation_matches_one_by_one_and_resumes(finished_run, tmp_path):
    run_dir, cfg, _ = finished_run
    records = tmp_path / "prompts.jsonl"
    write_records(records, chat_records(5, seed=99))
    out = tmp_path / "gen" / "predictions.jsonl"
    first = G.generate_file(records, out, base_model=cfg.tiny_dir, adapter=str(run_dir / "adapter"),
                            max_new_tokens=12, batch_size=4, limit=3)
    assert (first["generated"], first["skipped"]) == (3, 0)
    again = G.generate_file(records, out, base_model=cfg.tiny_dir, adapter=str(run_dir / "adapter"),
                            max_new_tokens=12, batch_size=4)
    assert (again["generated"], again["skipped"]) == (2, 3)  # only the records not written yet
    rows = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["index"])
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["reference"] and r["id"] and isinstance(r["prediction"], str) for r in rows)
    # Left padding must not change greedy outputs: each prompt alone gives the same text.
    model, tok = G.load_model(cfg.tiny_dir, str(run_dir / "adapter"))
    prompts = [G.split_prompt(json.loads(line))[0] for line in records.read_text().splitlines()]
    alone = [G.generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert alone == [r["prediction"] for r in rows]
    assert len({len(tok.apply_chat_template(p, tokenize=False)) for p in prompts}) > 1  # lengths really differ


@pytest.mark.parametrize("method", ["dora", "prompt-tuning", "prefix-tuning"])
def test_other_peft_methods_train_and_save(finished_run, tmp_path, method):
    _, cfg, _ = finished_run  # reuses its tiny base
    run_dir = tmp_path / method
    write_records(run_dir / "data" / "records.jsonl", chat_records(20))
    save_config(cfg.replace(method=method, max_steps=2, eval_every=2, merge=False), run_dir / "config.json")
    assert train_main([str(run_dir)]) == 0
    end = json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])
    assert end["status"] == "completed" and end["step"] == 2
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == {"dora": "LORA", "prompt-tuning": "PROMPT_TUNING",
                                   "prefix-tuning": "PREFIX_TUNING"}[method]
    assert config.get("use_dora", False) == (method == "dora")


def test_qlora_without_a_gpu_fails_with_a_clear_message(finished_run, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _, cfg, _ = finished_run
    run_dir = tmp_path / "qlora"
    write_records(run_dir / "data" / "records.jsonl", chat_records(10))
    save_config(cfg.replace(method="qlora", max_steps=2), run_dir / "config.json")
    assert train_main([str(run_dir)]) == 1
    end = json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])
    assert end["status"] == "failed" and "qlora needs a CUDA GPU" in end["message"]


def test_nan_loss_stops_the_run_with_advice(finished_run, tmp_path):
    _, cfg, _ = finished_run
    run_dir = tmp_path / "nan"
    write_records(run_dir / "data" / "records.jsonl", chat_records(10))
    save_config(cfg.replace(max_steps=3, learning_rate=1.0, max_grad_norm=0.0, lora_alpha=1e30), run_dir / "config.json")
    assert train_main([str(run_dir)]) == 1
    end = json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])
    assert end["status"] == "failed" and "lower the learning rate" in end["message"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_uses_bf16(finished_run, tmp_path):
    _, cfg, _ = finished_run
    run_dir = tmp_path / "gpu"
    write_records(run_dir / "data" / "records.jsonl", chat_records(20))
    save_config(cfg.replace(max_steps=2), run_dir / "config.json")
    assert train_main([str(run_dir)]) == 0
    start = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])
    assert start["device"].startswith("cuda") and start["dtype"] == "bfloat16"


@pytest.mark.slow
def test_torchrun_ddp_on_cpu_trains_like_one_process(finished_run, tmp_path):
    """The same entry point under torchrun (2 CPU processes, gloo): rank 0 writes, steps are shared."""
    import os
    import subprocess
    import sys

    _, cfg, _ = finished_run
    run_dir = tmp_path / "ddp"
    write_records(run_dir / "data" / "records.jsonl", chat_records(30))
    save_config(cfg.replace(max_steps=3, eval_every=3, checkpoint_every=3), run_dir / "config.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a free port for the rendezvous, not the fixed 29500 another job may hold
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                           "trainers.train", str(run_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["world_size"] == 2
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3]  # one writer, no duplicate lines
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [3]
    assert events[-1]["status"] == "completed" and (run_dir / "adapter" / "adapter_model.safetensors").exists()
