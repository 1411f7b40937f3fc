"""The one generator: batched generation from a base model, or a base model with an adapter.

    python -m trainers.generate --base-model tiny-or-path [--adapter DIR] --records FILE --out FILE

`generate_ids` is the core every caller uses (`generate` and `generate_file` here, the evaluation
runs' `trainers.eval_generate`, bench/generate_bench.py): prompts (token ids) sorted longest first
(an out-of-memory error shows at once), left-padded, batched through `model.generate`, greedy or
sampled. Its fast mode is the GPU's (`fast=None` picks it on a CUDA device; WORKBENCH_STATIC_CACHE=0
turns it off): a static KV cache, and for greedy decoding of a supported model the decoding step recorded
once as a CUDA graph and replayed (`trainers.graphdecode`: no compilation, none of the CPU's per-kernel
launching). Otherwise decoding is `generate`'s own loop (logits processors, stopping, padding), compiled by
transformers when the job is long enough to win back the compilation (`compile_mode`), every batch then
padded to one prompt width (the longest prompt, rounded up to `WIDTH_BUCKET`) and, when there are several
batches, to the same number of rows, so one compiled graph serves the whole run. Greedy tokens are greedy
`generate`'s: float32 on a CPU is checked token for token in tests/trainers/test_trainer_generate.py, the GPU
path in tests/trainers/test_trainer_gpu.py. Rows per batch come from the device (`autobatch.generation_rows`:
the KV cache a row needs against the free GPU memory; 16 on a CPU) unless given.

`load_model` merges a LoRA or DoRA adapter into the weights it has just loaded (a copy: the files
are not touched), so generation runs a plain model with no adapter layers in the way; prompt and
prefix tuning, and 4-bit bases, keep the adapter unmerged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from trainers.config import ConfigError
from trainers.supervision import require_template

WIDTH_BUCKET = 64


def load_model(base_model: str, adapter: str | None = None, *, device: str | None = None,
               dtype: torch.dtype | None = None, merge: bool = True):
    """(model, tokenizer) ready for generation; the adapter, when given, is applied with peft and merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base_model
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
        # straight onto the device (no copy of the weights in host memory first); a LoRA merge then runs there too
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, local_files_only=True, device_map=device)
    except OSError as exc:
        raise ConfigError(f"cannot load {base_model!r} offline ({str(exc).splitlines()[0][:160]}); give a model folder "
                          "or a model id in the local Hugging Face cache") from None
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if merge and mergeable(model):
            model = model.merge_and_unload()  # the adapter folded into this in-memory copy of the weights
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def mergeable(peft_model) -> bool:
    """LoRA and DoRA adapters on a base in ordinary precision can be merged; prompt/prefix tuning cannot."""
    config = peft_model.peft_config.get("default")
    quantized = getattr(peft_model.get_base_model(), "is_loaded_in_4bit", False)
    return config is not None and not config.is_prompt_learning and not quantized


def split_prompt(record: dict) -> tuple[list[dict], str | None]:
    """(prompt messages, reference): everything before the last assistant turn, and that turn."""
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in record["messages"]]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return messages, None
    return messages[:last], messages[last]["content"]


def eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


_eos_ids = eos_ids  # the older name


def encode_prompts(tokenizer, prompts: list[list[dict]], max_prompt_tokens: int = 1024) -> list[list[int]]:
    """Chat prompts rendered with the template (`add_generation_prompt=True`), keeping their last tokens."""
    require_template(tokenizer)
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [ids[-max_prompt_tokens:] for ids in encoded]  # keep the end: it holds the question


def fast_mode(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("WORKBENCH_STATIC_CACHE", "1") not in ("0", "false", "no")


# How the static-cache decoding step runs (WORKBENCH_GENERATE_COMPILE, default "auto"): "graphs" records the
# uncompiled step once as a CUDA graph and replays it (trainers.graphdecode: greedy only, no compilation),
# "inductor" is transformers' own choice (Inductor kernels + CUDA graphs, 20-45 s of compilation on a cold
# H100), "eager" runs the step kernel by kernel from Python, "cudagraphs" is torch.compile's CUDA-graph backend
# (measured slower than eager: kept for comparison). On an H100, 1,000 prompts x 256 new tokens took 4.1 s with
# graphs (97,983 new tok/s steady), 9.2 s eager (34,384) and 48.0 s with Inductor (31,446 steady; bench/RESULTS.md).
# "auto" takes "graphs" for greedy decoding of a model graphdecode supports; otherwise (sampling, other models)
# it compiles only a job long enough to win the compilation back, from COMPILE_FROM_NEW_TOKENS planned new tokens.
COMPILE_MODES = ("auto", "graphs", "inductor", "cudagraphs", "eager")
COMPILE_FROM_NEW_TOKENS = 1_000_000


def compile_mode(planned_new_tokens: int, mode: str | None = None, graphable: bool = False) -> str:
    """The mode a job of planned_new_tokens (prompts x max_new_tokens) runs with: `mode`, else
    WORKBENCH_GENERATE_COMPILE, else "auto": CUDA graphs where the job can have them (`graphable`: greedy,
    a supported model), else compiled only from COMPILE_FROM_NEW_TOKENS on."""
    mode = mode or os.environ.get("WORKBENCH_GENERATE_COMPILE") or "auto"
    if mode not in COMPILE_MODES:
        raise ConfigError(f"WORKBENCH_GENERATE_COMPILE is {mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        if graphable:
            return "graphs"
        return "inductor" if planned_new_tokens >= COMPILE_FROM_NEW_TOKENS else "eager"
    if mode == "graphs" and not graphable:
        return "eager"  # sampling, or a model the graph loop does not take: the same step, uncaptured
    return mode


def resolved_mode(device: torch.device, planned_new_tokens: int, mode: str | None = None,
                  fast: bool | None = None, graphable: bool = False) -> str:
    """The mode generate_ids runs a job with on this device: "eager" off the fast path (a CPU)."""
    fast = fast_mode(device) if fast is None else fast
    return compile_mode(planned_new_tokens, mode, graphable) if fast else "eager"


def decode_mode(model, planned_new_tokens: int, *, sampling: dict | None = None, mode: str | None = None,
                fast: bool | None = None) -> str:
    """resolved_mode for this model and job: what generate_ids runs (and the evaluation reports)."""
    from trainers import graphdecode

    device = next(model.parameters()).device
    fast = fast_mode(device) if fast is None else fast
    graphable = bool(fast and not sampling and graphdecode.supported(model))
    return resolved_mode(device, planned_new_tokens, mode, fast, graphable)


def compile_kwargs(mode: str) -> dict:
    """generate()'s keyword arguments for a resolved compile mode (not "auto" or "graphs")."""
    if mode == "eager":
        return {"disable_compile": True}
    if mode == "cudagraphs":
        from transformers import CompileConfig

        return {"compile_config": CompileConfig(backend="cudagraphs", mode="default")}
    return {}


def new_token_count(ids: list[int], eos: list[int] | None) -> int:
    """Tokens a row really generated: up to and including its first end-of-sequence token."""
    for k, t in enumerate(ids):
        if eos and t in eos:
            return k + 1
    return len(ids)


@torch.no_grad()
def generate_ids(model, encoded: list[list[int]], *, pad_id: int, eos: list[int] | None, max_new_tokens: int,
                 rows: int | None = None, fast: bool | None = None, sampling: dict | None = None,
                 compile: str | None = None) -> Iterator[tuple[list[int], list[list[int]]]]:
    """Continuations of token-id prompts: yields (indices, new token ids per row) batch by batch.

    Greedy unless `sampling` gives {temperature, top_p}. `rows`: prompts per batch (None: from the device).
    `compile`: how the fast mode compiles its decoding step (COMPILE_MODES; None: the environment's, else auto).
    """
    from trainers import autobatch, graphdecode

    device = next(model.parameters()).device
    fast = fast_mode(device) if fast is None else fast
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    if not order:
        return
    mode = decode_mode(model, len(order) * max_new_tokens, sampling=sampling, mode=compile, fast=fast)
    compiled = mode in ("inductor", "cudagraphs")
    longest = len(encoded[order[0]])
    one_width = max(WIDTH_BUCKET, -(-longest // WIDTH_BUCKET) * WIDTH_BUCKET) if compiled else None
    if rows is None:
        rows = autobatch.generation_rows(model.config, (one_width or longest) + max_new_tokens, device=device,
                                         prompts=len(order))
    kwargs = dict(max_new_tokens=max_new_tokens, num_beams=1, pad_token_id=pad_id, eos_token_id=eos)
    if sampling:
        kwargs.update(do_sample=True, temperature=float(sampling["temperature"]),
                      top_p=float(sampling.get("top_p", 1.0)))
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)  # silence sampling defaults
    if fast:
        kwargs.update(cache_implementation="static", **compile_kwargs("eager" if mode == "graphs" else mode))
    for start in range(0, len(order), rows):
        idx = order[start: start + rows]
        prompts = [encoded[i] for i in idx]
        if compiled and len(order) > rows:
            prompts += [prompts[-1]] * (rows - len(idx))  # the same rows in every batch: one compiled graph
        width = one_width or max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            if p:
                ids[row, width - len(p):] = torch.tensor(p)
                mask[row, width - len(p):] = 1
        if mode == "graphs" and graphdecode.fits(model, width + max_new_tokens):
            new = graphdecode.greedy(model, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens,
                                     pad_id=pad_id, eos=eos)
            yield idx, new[: len(idx)].tolist()
            continue
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        yield idx, generated[: len(idx), width:].tolist()


def greedy_ids(model, encoded: list[list[int]], *, pad_id: int, eos: list[int] | None, max_new_tokens: int,
               batch_size: int | None = None):
    """Greedy `generate_ids` (kept for the GPU tests)."""
    return generate_ids(model, encoded, pad_id=pad_id, eos=eos, max_new_tokens=max_new_tokens, rows=batch_size)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int = 256,
             batch_size: int | None = None, max_prompt_tokens: int = 1024,
             on_batch: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
    """Greedy completions for chat prompts, in the order given; on_batch(indices, texts) after each batch."""
    encoded = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    out: list[str | None] = [None] * len(prompts)
    for idx, new in generate_ids(model, encoded, pad_id=tokenizer.pad_token_id, eos=eos_ids(model, tokenizer),
                                 max_new_tokens=max_new_tokens, rows=batch_size):
        decoded = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        for i, text in zip(idx, decoded):
            out[i] = text
        if on_batch is not None:
            on_batch(idx, decoded)
    return [t or "" for t in out]


def generate_file(records_path: str | Path, out_path: str | Path, *, base_model: str, adapter: str | None = None,
                  max_new_tokens: int = 256, batch_size: int | None = None, limit: int | None = None,
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
    p.add_argument("--batch-size", type=int, help="prompts generated together (default: sized from the device; "
                   "16 on a CPU)")
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
