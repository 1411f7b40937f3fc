"""Batched greedy generation from a base model, or a base model with a LoRA adapter.

    python -m trainers.generate --base-model tiny-or-path [--adapter DIR] --records FILE --out FILE

Records are chat JSONL (as `workbench export --format chat` writes); each record's prompt is its
conversation up to the last assistant turn, and that turn is the reference. Prompts are sorted
by length (longest first, so an out-of-memory error shows at once), left-padded and batched
through `model.generate` with greedy decoding. Each finished batch is appended to the output
JSONL at once, so a killed job keeps its work and a rerun skips the records already written.
On a GPU, generation uses a static KV cache compiled with CUDA graphs (trainers.fastgen).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from trainers.config import ConfigError


def load_model(base_model: str, adapter: str | None = None, *, device: str | None = None,
               dtype: torch.dtype | None = None):
    """(model, tokenizer) ready for generation; the adapter, when given, is applied with peft."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base_model
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, local_files_only=True)
    except OSError as exc:
        raise ConfigError(f"cannot load {base_model!r} offline ({str(exc).splitlines()[0][:160]}); give a model folder "
                          "or a model id in the local Hugging Face cache") from None
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def split_prompt(record: dict) -> tuple[list[dict], str | None]:
    """(prompt messages, reference): everything before the last assistant turn, and that turn."""
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in record["messages"]]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return messages, None
    return messages[:last], messages[last]["content"]


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int = 256, batch_size: int = 16,
             max_prompt_tokens: int = 1024,
             on_batch: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
    """Greedy completions for chat prompts, in the order given; on_batch(indices, texts) after each batch."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    encoded = [ids[-max_prompt_tokens:] for ids in encoded]  # keep the end: it holds the question
    out: list[str | None] = [None] * len(prompts)
    for idx, new in greedy_ids(model, encoded, pad_id=tokenizer.pad_token_id, eos=_eos_ids(model, tokenizer),
                               max_new_tokens=max_new_tokens, batch_size=batch_size):
        decoded = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        for i, text in zip(idx, decoded):
            out[i] = text
        if on_batch is not None:
            on_batch(idx, decoded)
    return [t or "" for t in out]


@torch.no_grad()
def greedy_ids(model, encoded: list[list[int]], *, pad_id: int, eos: list[int] | None, max_new_tokens: int,
               batch_size: int):
    """Greedy continuations of token-id prompts: yields (indices, new token ids per row) batch by batch.

    Prompts go longest first, left-padded, through `model.generate`. On a GPU (trainers.fastgen) the
    prompt width is rounded up to a bucket and generate uses a static KV cache, which transformers
    compiles with CUDA graphs; the tokens are greedy `generate`'s (checked in bench/generate_bench.py).
    """
    from trainers import fastgen

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        width = fastgen.prompt_width(max(len(encoded[i]) for i in idx), device)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            if encoded[i]:
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
                                   eos_token_id=eos, **fastgen.generate_kwargs(device))
        yield idx, generated[:, width:].tolist()


def generate_file(records_path: str | Path, out_path: str | Path, *, base_model: str, adapter: str | None = None,
                  max_new_tokens: int = 256, batch_size: int = 16, limit: int | None = None,
                  keep: tuple[str, ...] = ("id", "category", "split"),
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate for every record of a chat JSONL file into out_path (JSONL, appended batch by batch).

    Each output line: {"index", "prompt" (the last user message), "reference", "prediction", and the
    record's id/category/split when present}. Records already in out_path are skipped (resume).
    """
    with open(records_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if limit is not None:
        records = records[:limit]
    out_path = Path(out_path)
    done = set()
    if out_path.exists():
        with open(out_path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    done.add(json.loads(line)["index"])
    todo = [i for i in range(len(records)) if i not in done]
    start = time.monotonic()
    if todo:
        model, tokenizer = load_model(base_model, adapter)
        pairs = [split_prompt(records[i]) for i in todo]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        written = len(done)
        with open(out_path, "a", encoding="utf-8") as out:
            def write(batch_idx: list[int], texts: list[str]) -> None:
                nonlocal written
                for j, text in zip(batch_idx, texts):
                    i = todo[j]
                    prompt, reference = pairs[j]
                    user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
                    row = {"index": i, "prompt": user, "reference": reference, "prediction": text}
                    row.update({k: records[i][k] for k in keep if k in records[i]})
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                written += len(batch_idx)
                if progress is not None:
                    progress(written, len(records))

            generate(model, tokenizer, [p for p, _ in pairs], max_new_tokens=max_new_tokens, batch_size=batch_size,
                     on_batch=write)
    return {"records": len(records), "generated": len(todo), "skipped": len(done), "out": str(out_path),
            "seconds": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.generate", description=__doc__.splitlines()[0])
    p.add_argument("--base-model", required=True, help="a model folder (the tiny base: <project>/models/tiny) or a "
                   "Hugging Face id in the local cache")
    p.add_argument("--adapter", help="a peft adapter folder (a run's adapter/)")
    p.add_argument("--records", required=True, help="chat JSONL with the prompts (and references)")
    p.add_argument("--out", required=True, help="output JSONL (appended; existing records are skipped)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, help="only the first N records")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        result = generate_file(args.records, args.out, base_model=args.base_model, adapter=args.adapter,
                               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
