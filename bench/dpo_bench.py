"""DPO throughput: `workbench train --method dpo` (trainers.train, default settings) against TRL's DPOTrainer
on the same model, LoRA and preference pairs, each in its own process.

    python bench/dpo_bench.py --out /tmp/dpo               # on a GPU: the Qwen2.5-0.5B shape
    python bench/dpo_bench.py --out /tmp/dpo --tiny        # a CPU dry run, small shapes

Pairs: the demo support tickets, `chosen` the ticket's own answer and `rejected` the answer of another
ticket (same prompt, so the pair differs only in the answer, as reviewed pairs do). The model folder is
bench/product_gpu.py's: random weights of the Qwen2.5-0.5B shape, a byte-level BPE tokenizer with a ChatML
template. Both recipes use LoRA r=16, alpha 32, dropout 0.05 on all linear layers, beta 0.1, sigmoid loss,
the reference being the base with the adapter off, bf16 on a GPU.

The figure is tokens per second: the non-padding tokens of the chosen and rejected sequences (prompt and
answer) that the policy processes per optimizer step, over the steps after the warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.product_gpu import QWEN05, TINY, build_model_folder, run, write_jsonl  # noqa: E402


def pairs(n: int) -> list[dict]:
    from workbench.data.demo import generate_tickets

    tickets = list(generate_tickets(n, seed=17))
    return [{"prompt": t["prompt"], "chosen": t["completion"], "rejected": tickets[(i + 7) % n]["completion"]}
            for i, t in enumerate(tickets)]


def ours(out: Path, model_dir: Path, rows: list[dict], steps: int, warmup: int, extra: dict) -> dict:
    from trainers.config import TrainConfig, save_config

    run_dir = out / "ours"
    write_jsonl(run_dir / "data" / "records.jsonl", rows)
    save_config(TrainConfig(base_model=str(model_dir), method="dpo", max_steps=warmup + steps, eval_every=10**6,
                            checkpoint_every=10**6, **extra), run_dir / "config.json")
    code, wall = run([sys.executable, "-m", "trainers.train", str(run_dir)], out / "ours.log")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    steps_ev = [e for e in events if e["type"] == "step"][warmup:]
    rates = [e["tokens_per_s"] for e in steps_ev if e.get("tokens_per_s")]
    end = events[-1]
    return {"run": "workbench train --method dpo (defaults)", "exit": code, "wall_s": round(wall, 1),
            "status": end.get("status"), "message": end.get("message"), "timed_steps": len(rates),
            "tokens_s_median": round(statistics.median(rates)) if rates else None,
            "steady_tokens_per_s": end.get("steady_tokens_per_s"), "peak_gb": end.get("peak_gpu_memory_gb"),
            "reward_accuracy_last": steps_ev[-1].get("reward_accuracy") if steps_ev else None,
            "loss_first_last": [events_loss(events, 0), events_loss(events, -1)]}


def events_loss(events: list[dict], i: int):
    steps = [e for e in events if e["type"] == "step"]
    return steps[i]["loss"] if steps else None


def trl(model_dir: str, rows: list[dict], steps: int, warmup: int, batch: int, checkpointing: bool) -> dict:
    """TRL's DPOTrainer, in this process (call it in a process of its own)."""
    import peft
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "chosen": [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    times, tokens = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOConfig(output_dir=tmp, per_device_train_batch_size=batch, max_length=2048, beta=0.1,
                        loss_type="sigmoid", max_steps=warmup + steps, learning_rate=5e-5, lr_scheduler_type="constant",
                        bf16=cuda, gradient_checkpointing=checkpointing, logging_steps=10**6, save_strategy="no",
                        report_to=[], dataloader_num_workers=0, disable_tqdm=True, use_cpu=not cuda, seed=0)
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[Clock()],
                             peft_config=peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                         target_modules="all-linear", task_type="CAUSAL_LM"))
        collate = trainer.data_collator

        def counting(examples):
            out = collate(examples)
            tokens.append(int(out["attention_mask"].sum()))
            return out

        trainer.data_collator = counting
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    elapsed = times[-1] - times[warmup - 1]
    timed = tokens[warmup: warmup + steps]
    return {"run": f"TRL DPOTrainer+peft, batch {batch} pairs, sdpa"
                   + ("" if checkpointing else ", no gradient checkpointing"),
            "tokens_s": round(sum(timed) / elapsed), "step_s": round(elapsed / steps, 4),
            "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--pairs", type=int, default=4000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--trl-batch", type=int, default=16, help="pairs per TRL step")
    p.add_argument("--trl-only", metavar="CHECKPOINTING", help="internal: run TRL here (0 or 1) and print a JSON line")
    p.add_argument("--trl-runs", default="1:16,0:16",
                   help="TRL runs as CHECKPOINTING:PAIRS_PER_STEP, comma-separated (gradient checkpointing is TRL's default)")
    p.add_argument("--skip-ours", action="store_true", help="only the TRL runs")
    args = p.parse_args(argv)
    out = Path(args.out)
    shape, extra, vocab = QWEN05, {}, 8000
    if args.tiny:
        shape, extra, vocab = TINY, {"cpu_threads": 1}, 600
        args.pairs, args.steps, args.warmup, args.trl_batch = 64, 3, 1, 4
    rows = pairs(args.pairs)
    if args.trl_only is not None:
        print(json.dumps(trl(str(out / "model"), rows, args.steps, args.warmup, args.trl_batch,
                             args.trl_only == "1")), flush=True)
        return 0
    import torch

    out.mkdir(parents=True, exist_ok=True)
    report(out, {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "pairs": len(rows)})
    build_model_folder(out / "model", shape, [t for r in rows for t in (r["prompt"], r["chosen"])], vocab)
    if not args.skip_ours:
        report(out, ours(out, out / "model", rows, args.steps, args.warmup, extra))
    for spec in args.trl_runs.split(","):
        checkpointing, batch = spec.split(":")
        cmd = [sys.executable, __file__, "--out", str(out), "--trl-only", checkpointing, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--trl-batch", batch, "--pairs", str(args.pairs)]
        done = subprocess.run(cmd + (["--tiny"] if args.tiny else []), capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        report(out, json.loads(lines[-1]) if lines else {"run": "TRL DPOTrainer", "exit": done.returncode,
                                                         "stderr_tail": done.stderr[-1500:]})
    return 0


def report(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / "dpo.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
