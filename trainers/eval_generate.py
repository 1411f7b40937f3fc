"""Answers for an evaluation run, generated in batches and appended to its folder (never the store).

    python -m trainers.eval_generate runs/eval-7/eval.json

`eval.json` (written by `workbench.models.evaluate.create_eval`) names the base model, the optional
adapter, `items.jsonl` (one `{"item", "row", "messages"}` per test record) and the generation
settings. Each batch's answers are appended to `outputs.jsonl` as `{"item", "output"}` lines and
flushed (and fsynced) before the next batch starts, so a crash loses at most the batch in flight.
Started again, it skips the items already in `outputs.jsonl` (a torn last line is cut off first),
so a resumed run finishes the same set. `done.json` is written when every item has an answer.

The model is loaded by `trainers.generate.load_model` (the base, a LoRA adapter merged into the
loaded weights). Prompts are rendered with the tokenizer's chat template (`add_generation_prompt=True`),
cut to their last `max_prompt_tokens` tokens, and answered by `trainers.generate.generate_ids`, the
one generator (length-sorted batches, rows sized from the device when `batch_size` is 0, the static
cache on a GPU, compiled when the job is long enough to win the compilation back), greedy or sampled
(temperature, top-p, seed). This module only keys every answer by its test item and keeps the folder
resumable. Progress lines give the items answered and the new tokens per second; done.json the totals
(new tokens; seconds to load the model, to render and tokenize the prompts, to generate, of which the
first batch with its compilation if any; whether it compiled; the steady-state rate: after the first
batch when it compiled, else the whole rate).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from trainers import quiet
from trainers.config import ConfigError
from trainers.generate import new_token_count
from trainers.supervision import require_template

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
    try:
        require_template(tokenizer)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
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
    stats = {"new_tokens": 0}
    if todo:
        stats = _answer(cfg, settings, todo, outputs_path, len(done), total)
    seconds = time.monotonic() - start
    done_path.write_text(json.dumps({"items": total, "seconds": round(seconds, 2), **stats}), encoding="utf-8")
    return 0


def _answer(cfg: dict, settings: dict, todo: list[dict], outputs_path: Path, already: int, total: int) -> dict:
    """Generate every item of todo (trainers.generate.generate_ids), appending answers batch by batch."""
    from trainers.generate import decode_mode, eos_ids, generate_ids, load_model

    loaded = time.monotonic()
    model, tokenizer = load_model(cfg["base_model"], cfg.get("adapter"))  # a LoRA adapter merged in
    prompts_from = time.monotonic()
    keep = int(settings.get("max_prompt_tokens", MAX_PROMPT_TOKENS))
    texts = [prompt_text(tokenizer, rec["messages"]) for rec in todo]
    encoded = [ids[-keep:] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # keep the end
    sample = settings.get("temperature", 0.0) > 0
    torch.manual_seed(int(settings.get("seed", 0)))
    eos = eos_ids(model, tokenizer)
    rows = int(settings.get("batch_size") or 0) or None  # 0 or absent: sized from the device
    sampling = {"temperature": settings["temperature"], "top_p": settings.get("top_p", 1.0)} if sample else None
    max_new = int(settings["max_new_tokens"])
    decoding = decode_mode(model, len(encoded) * max_new, sampling=sampling)
    compiled = decoding in ("inductor", "cudagraphs")
    answered, new_tokens, first = already, 0, None
    started = time.monotonic()
    with open(outputs_path, "a", encoding="utf-8") as out:
        for idx, new in generate_ids(model, encoded, pad_id=tokenizer.pad_token_id, eos=eos, rows=rows,
                                     max_new_tokens=max_new, sampling=sampling):
            answers = tokenizer.batch_decode(new, skip_special_tokens=True)
            out.write("".join(json.dumps({"item": todo[i]["item"], "output": a.strip()}, ensure_ascii=False) + "\n"
                              for i, a in zip(idx, answers)))
            out.flush()
            os.fsync(out.fileno())
            answered += len(idx)
            made = sum(new_token_count(row, eos) for row in new)
            new_tokens += made
            now = time.monotonic()
            first = first if first is not None else (now - started, made)
            print(f"{answered}/{total} answered, {new_tokens / max(now - started, 1e-9):,.0f} new tokens/s "
                  f"({len(idx)} in the batch)", flush=True)
    seconds = time.monotonic() - started
    out = {"new_tokens": new_tokens, "generate_seconds": round(seconds, 2),
           "load_seconds": round(prompts_from - loaded, 2), "prompt_seconds": round(started - prompts_from, 2),
           "new_tokens_per_s": round(new_tokens / max(seconds, 1e-9), 1),
           "compiled": compiled,  # the decoding step compiled (a long job on a GPU: trainers.generate.compile_mode)
           "decoding": decoding}  # graphs | inductor | cudagraphs | eager
    if first is not None:  # the first batch carries the compilation when there is one
        out["first_batch_seconds"] = round(first[0], 2)
    if not compiled:  # nothing to warm up: every batch is steady
        out["steady_new_tokens_per_s"] = out["new_tokens_per_s"]
    elif first is not None and new_tokens > first[1]:  # after the first batch, which compiled
        out["steady_new_tokens_per_s"] = round((new_tokens - first[1]) / (seconds - first[0]), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trainers.eval_generate EVAL_FOLDER/eval.json", file=sys.stderr)
        return 2
    quiet.child_process_setup()
    try:
        return generate(argv[0])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
