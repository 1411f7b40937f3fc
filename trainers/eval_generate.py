"""Answers for an evaluation run, generated in batches and appended to its folder (never the store).

    python -m trainers.eval_generate runs/eval-7/eval.json

`eval.json` (written by `workbench.models.evaluate.create_eval`) names the base model, the optional
adapter, `items.jsonl` (one `{"item", "row", "messages"}` per test record) and the generation
settings. Each batch's answers are appended to `outputs.jsonl` as `{"item", "output"}` lines and
flushed (and fsynced) before the next batch starts, so a crash loses at most the batch in flight.
Started again, it skips the items already in `outputs.jsonl` (a torn last line is cut off first),
so a resumed run finishes the same set. `done.json` is written when every item has an answer.

The model is loaded by `trainers.generate.load_model` (the base, the adapter on top with peft).
Prompts are rendered with the tokenizer's chat template (`add_generation_prompt=True`), cut to
their last `max_prompt_tokens` tokens as `trainers.generate` does, left-padded, and batched in
order of length (less padding). This module exists beside `trainers.generate` because that one
decodes greedily only and numbers records by line; evaluations also sample (temperature, top-p,
seed) and key every answer by its test item.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

MAX_PROMPT_TOKENS = 1024  # as trainers.generate: longer prompts keep their last tokens


def done_items(path: Path) -> set[int]:
    """Items already answered; a torn last line (crash mid-write) is cut off so appends stay clean."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done = set()
    for line in data[:end].splitlines():
        try:
            done.add(int(json.loads(line)["item"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def prompt_text(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise SystemExit("the model's tokenizer has no chat template; use an instruction-tuned model or 'tiny'")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    settings = cfg["settings"]
    items_path, outputs_path, done_path = Path(cfg["items"]), Path(cfg["outputs"]), Path(cfg["done"])
    done = done_items(outputs_path)
    with open(items_path, encoding="utf-8") as f:
        todo = [rec for rec in map(json.loads, filter(str.strip, f)) if rec["item"] not in done]
    total = len(done) + len(todo)
    print(f"{len(done)} of {total} items already answered; {len(todo)} to go", flush=True)
    start = time.monotonic()
    if todo:
        from trainers.generate import _eos_ids, load_model

        model, tokenizer = load_model(cfg["base_model"], cfg.get("adapter"))
        device = next(model.parameters()).device
        keep = int(settings.get("max_prompt_tokens", MAX_PROMPT_TOKENS))
        texts = [prompt_text(tokenizer, rec["messages"]) for rec in todo]
        encoded = {rec["item"]: ids[-keep:]  # keep the end: it holds the question
                   for rec, ids in zip(todo, tokenizer(texts, add_special_tokens=False)["input_ids"])}
        todo.sort(key=lambda r: (len(encoded[r["item"]]), r["item"]))
        sample = settings.get("temperature", 0.0) > 0
        torch.manual_seed(int(settings.get("seed", 0)))
        eos = _eos_ids(model, tokenizer)
        kwargs = dict(max_new_tokens=int(settings["max_new_tokens"]), do_sample=sample,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        if sample:
            kwargs.update(temperature=float(settings["temperature"]), top_p=float(settings.get("top_p", 1.0)))
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)  # greedy: silence sampling defaults
        from trainers import fastgen

        kwargs.update(fastgen.generate_kwargs(device))  # a static, compiled KV cache on a GPU
        batch_size = int(settings.get("batch_size", 16))
        with open(outputs_path, "a", encoding="utf-8") as out:
            for lo in range(0, len(todo), batch_size):
                batch = todo[lo: lo + batch_size]
                width = fastgen.prompt_width(max(len(encoded[r["item"]]) for r in batch), device)
                enc = tokenizer.pad({"input_ids": [encoded[r["item"]] for r in batch]}, padding="max_length",
                                    max_length=width, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                with torch.inference_mode():
                    gen = model.generate(**enc, **kwargs)
                answers = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                out.write("".join(json.dumps({"item": r["item"], "output": a.strip()}, ensure_ascii=False) + "\n"
                                  for r, a in zip(batch, answers)))
                out.flush()
                os.fsync(out.fileno())
                print(f"{len(done) + lo + len(batch)}/{total} answered", flush=True)
    done_path.write_text(json.dumps({"items": total, "seconds": round(time.monotonic() - start, 2)}),
                         encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trainers.eval_generate EVAL_FOLDER/eval.json", file=sys.stderr)
        return 2
    from trainers.config import ConfigError

    try:
        return generate(argv[0])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
