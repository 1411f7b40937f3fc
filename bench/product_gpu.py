"""The product as a user runs it, on one GPU: default `workbench train`, then `workbench eval`.

    python bench/product_gpu.py --out /tmp/product          # on a GPU (issue 15's workload)
    python bench/product_gpu.py --tiny --out /tmp/product   # a CPU dry run, small shapes

It builds what a new user would have: a local model folder of the Qwen2.5-0.5B shape (hidden 896,
24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151,936; random weights, `save_pretrained`) with a
byte-level BPE tokenizer and a ChatML chat template, and the demo support tickets as chat records
(`--records` with a train split, `--test` more with a test split). Then it runs the two processes that
`workbench train` and `workbench eval` start, on the folders those commands write:

* `python -m trainers.train RUN_DIR`: config.json is `TrainConfig(base_model=FOLDER, max_steps=N)`,
  every other setting its default (batch and max_seq_len auto), exactly what
  `workbench train --dataset D --base-model FOLDER --max-steps N` saves;
* `python -m trainers.eval_generate eval.json`: the test items with the run's adapter, greedy,
  `--max-new-tokens` new tokens, `batch_size` 0 (the default of `workbench eval`).

(The CLI itself also opens the project's DuckDB store, whose wheels do not fit the device's carry
limit; the trainer and the generator are the processes it starts, with the same files.)
It prints one JSON line per phase: the batch plan, the steady-state supervised tokens/s and peak
memory of training (from events.jsonl), and the wall time and new tokens/s of the evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN05 = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
              intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
              rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=3000, max_position_embeddings=4096, tie_word_embeddings=True)


def records(n_train: int, n_test: int) -> list[dict]:
    from workbench.data.demo import generate_tickets

    out = []
    for i, t in enumerate(generate_tickets(n_train + n_test, seed=15)):
        out.append({"messages": [{"role": "user", "content": t["prompt"]},
                                 {"role": "assistant", "content": t["completion"]}],
                    "id": t["id"], "category": t["category"], "split": "test" if i >= n_train else "train"})
    return out


def build_model_folder(folder: Path, shape: dict, texts: list[str], vocab: int, *, config_name: str = "Qwen2Config",
                       template: str | None = None) -> None:
    """A model of the given transformers config class (Qwen2 by default) with random weights and a BPE tokenizer
    with a chat template (ChatML unless `template`), saved with `save_pretrained` as a user has it."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from trainers import tiny

    tok = tiny.train_tokenizer(texts, vocab)
    if template:
        tok.chat_template = template
    eos, pad = tok.convert_tokens_to_ids(tiny.IM_END), tok.convert_tokens_to_ids(tiny.PAD)
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**shape, bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def run(cmd: list[str], log: Path) -> tuple[int, float]:
    t0 = time.monotonic()
    with open(log, "w", encoding="utf-8") as f:
        code = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    return code, time.monotonic() - t0


def train(out: Path, model_dir: Path, rows: list[dict], max_steps: int, extra: dict, name: str = "run") -> dict:
    from trainers.config import TrainConfig, save_config

    run_dir = out / name
    write_jsonl(run_dir / "data" / "records.jsonl", rows)
    save_config(TrainConfig(base_model=str(model_dir), max_steps=max_steps, tiny_dir=str(out / "tiny"), **extra),
                run_dir / "config.json")
    code, wall = run([sys.executable, "-m", "trainers.train", str(run_dir)], out / f"{name}.log")
    result = {"phase": "workbench train (trainers.train)", "exit": code, "wall_s": round(wall, 1),
              **summarise_events(run_dir)}
    return result


def cli(out: Path, model_dir: Path, rows: list[dict], max_steps: int, max_new: int, extra: dict) -> list[dict]:
    """The commands themselves, as a user types them: import, train (defaults), eval (defaults)."""
    project = out / "project"
    write_jsonl(out / "tickets.jsonl", rows)
    wb = [sys.executable, "-m", "workbench", "--project", str(project)]
    sets = [a for k, v in extra.items() for a in ("--set", f"{k}={v}")]
    results = []
    code, wall = run(wb + ["import", str(out / "tickets.jsonl"), "--dataset", "support", "--json"], out / "cli_import.log")
    results.append({"phase": "workbench import", "exit": code, "wall_s": round(wall, 1)})
    code, wall = run(wb + ["train", "--dataset", "support", "--base-model", str(model_dir), "--max-steps",
                           str(max_steps), "--json", *sets], out / "cli_train.log")
    lines = [line for line in (out / "cli_train.log").read_text().splitlines() if line.startswith("{")]
    payload = json.loads(lines[-1]) if lines else {}
    run_dir = Path(payload["run_dir"]) if payload.get("run_dir") else None
    result = {"phase": "workbench train (the command)", "exit": code, "wall_s": round(wall, 1),
              "run_id": payload.get("run_id"), "status": payload.get("status")}
    if run_dir is not None and (run_dir / "events.jsonl").exists():
        result.update(summarise_events(run_dir))
    results.append(result)
    if payload.get("run_id"):
        argv = wb + ["eval", "--run", payload["run_id"], "--dataset", "support", "--split", "test", "--json"]
        if max_new:
            argv += ["--max-new-tokens", str(max_new)]
        code, wall = run(argv, out / "cli_eval.log")
        lines = [line for line in (out / "cli_eval.log").read_text().splitlines() if line.startswith("{")]
        done = json.loads(lines[-1]) if lines else {}
        folder = Path(done["folder"]) if done.get("folder") else None
        gen = json.loads((folder / "done.json").read_text()) if folder and (folder / "done.json").exists() else {}
        glog = folder / "generate.log" if folder else None
        progress = [ln for ln in glog.read_text().splitlines() if "answered" in ln] if glog and glog.exists() else []
        results.append({"phase": "workbench eval (the command)", "exit": code, "wall_s": round(wall, 1),
                        **{k: done.get(k) for k in ("eval_id", "status", "items", "generated", "settings", "bleu",
                                                    "rougeL", "chrf")},
                        "generator": gen, "progress_last": progress[-1] if progress else None})
    return results


def summarise_events(run_dir: Path) -> dict:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    end = events[-1]
    plan = next((e for e in events if e["type"] == "batch_plan"), {})
    steps = [e for e in events if e["type"] == "step"]
    setup = next((e for e in events if e["type"] == "setup"), {})
    result = {"before_first_step_s": setup.get("seconds"), "before_first_step_parts": setup.get("parts"),
              "status": end.get("status"), "message": end.get("message"), "steps": len(steps),
              "batch_tokens": plan.get("batch_tokens"), "max_seq_len": plan.get("max_seq_len"),
              "row_len": plan.get("row_len"), "plan": plan.get("reasons"),
              "predicted_peak_gb": plan.get("predicted_peak_gb"), "probe_peak_gb": plan.get("measured_peak_gb"),
              **{k: end.get(k) for k in ("steady_supervised_tokens_per_s", "steady_tokens_per_s", "steady_steps",
                                         "peak_gpu_memory_gb", "mfu", "model_tflops_per_s", "train_loss",
                                         "eval_loss")}}
    if steps:
        result["loss_first_last"] = [steps[0]["loss"], steps[-1]["loss"]]
        result["last_step_supervised_tok_s"] = steps[-1].get("supervised_tokens_per_s")
    return result


def evaluate(out: Path, model_dir: Path, test_rows: list[dict], max_new: int, run_name: str = "run") -> dict:
    folder = out / f"eval-{run_name}"
    items = [{"item": i, "row": i, "messages": r["messages"][:-1]} for i, r in enumerate(test_rows)]
    write_jsonl(folder / "items.jsonl", items)
    config = {"eval_id": 1, "base_model": str(model_dir), "adapter": str(out / run_name / "adapter"),
              "items": str(folder / "items.jsonl"), "outputs": str(folder / "outputs.jsonl"),
              "done": str(folder / "done.json"), "task": "generation",
              "settings": {"max_new_tokens": max_new, "temperature": 0.0, "top_p": 1.0, "batch_size": 0, "seed": 0}}
    (folder / "eval.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    log = out / f"eval-{run_name}.log"
    code, wall = run([sys.executable, "-m", "trainers.eval_generate", str(folder / "eval.json")], log)
    done = json.loads((folder / "done.json").read_text()) if (folder / "done.json").exists() else {}
    progress = [line for line in log.read_text().splitlines() if "answered" in line]
    return {"phase": "workbench eval (trainers.eval_generate)", "exit": code, "wall_s": round(wall, 1),
            "items": len(items), **done, "progress_last": progress[-1] if progress else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="small shapes and counts: a CPU dry run")
    p.add_argument("--records", type=int, help="training records (default 4,514; 80 with --tiny)")
    p.add_argument("--test", type=int, help="test records (default 1,000; 12 with --tiny)")
    p.add_argument("--max-steps", type=int, help="training steps (default 150; 6 with --tiny)")
    p.add_argument("--max-new-tokens", type=int, help="new tokens an answer (default 256; 16 with --tiny)")
    p.add_argument("--cli", action="store_true", help="run the commands themselves (workbench import, train, eval) "
                   "in a project under --out, instead of the processes they start")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --cli: a training setting passed as --set (default: none)")
    p.add_argument("--vocab", type=int, help="BPE vocabulary trained on the data (default 8,000; the model keeps "
                   "151,936)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape, extra = (TINY, {"cpu_threads": 1}) if args.tiny else (QWEN05, {})
    defaults = dict(records=80, test=12, max_steps=6, max_new_tokens=16, vocab=600) if args.tiny else \
        dict(records=4514, test=1000, max_steps=150, max_new_tokens=256, vocab=8000)
    for key, value in defaults.items():  # a count given on the command line wins, with --tiny too
        if getattr(args, key) is None:
            setattr(args, key, value)
    import torch
    import transformers

    rows = records(args.records, args.test)
    report(out, {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 "torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
                 "train_records": args.records, "test_records": args.test, "max_steps": args.max_steps})
    t0 = time.monotonic()
    model_dir = out / "model"
    build_model_folder(model_dir, shape, [m["content"] for r in rows for m in r["messages"]], args.vocab)
    report(out, {"phase": "model folder", "seconds": round(time.monotonic() - t0, 1)})
    if args.cli:
        extra.update(dict(kv.split("=", 1) for kv in args.set))
        for row in cli(out, model_dir, rows, args.max_steps, args.max_new_tokens, extra):
            report(out, row)
        return 0
    report(out, train(out, model_dir, rows, args.max_steps, extra))
    report(out, evaluate(out, model_dir, [r for r in rows if r["split"] == "test"], args.max_new_tokens))
    return 0


def report(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / "product.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
