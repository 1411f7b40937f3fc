"""Generation throughput: HF generate one prompt at a time, HF generate batched, and ours (trainers.generate).

Workload (issue 8): a Qwen2.5-0.5B-shaped model with random weights (bf16, SDPA), 256 prompts of 40-80
random tokens, 128 new tokens each, greedy. EOS is off so every row makes all 128 tokens.

    python bench/generate_bench.py                 # on a GPU
    python bench/generate_bench.py --tiny --prompts 16 --new 8 --one-at-a-time 2 --check 4   # CPU dry run
    python bench/generate_bench.py --compile cudagraphs --prompts 1000 --new 256 --batch-size 0  # one compile mode

"ours" is `trainers.generate.generate_ids` (length-sorted batches, left padding, and on a GPU a static
KV cache, compiled with CUDA graphs for a long job or as WORKBENCH_GENERATE_COMPILE says); it is timed on
a second pass, after the compilation of the first (reported apart); `--compile MODE` times one mode alone.
Equality: ours against `model.generate(do_sample=False)`
batched the same way (all prompts, bf16), token for token, and on a float32 copy of the model for
the first `--check` prompts (where bf16 rounding cannot flip a near tie).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_bench import QWEN05, TINY, build_model, sync  # noqa: E402
from trainers.generate import COMPILE_MODES, generate_ids, resolved_mode  # noqa: E402


def prompts(n: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab) for _ in range(rng.randint(40, 80))] for _ in range(n)]


def left_padded(encoded, idx, width, pad_id):
    """(input ids, attention mask) of the prompts encoded[i] for i in idx, left-padded to width."""
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, i in enumerate(idx):
        ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
        mask[r, width - len(encoded[i]):] = 1
    return ids, mask


def hf_batched(model, encoded, new, pad_id, batch_size):
    """Plain HF greedy generate: longest-first batches, left-padded to the longest, dynamic cache."""
    out = {}
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids, mask = left_padded(encoded, idx, width, pad_id)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                             do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=None)
        out.update(zip(idx, gen[:, width:].tolist()))
    return [out[i] for i in range(len(encoded))]


def hf_batched_static_eager(model, encoded, new, pad_id, batch_size):
    """HF greedy generate with a static cache but no compilation, on our padded batches."""
    from trainers.generate import WIDTH_BUCKET

    device = next(model.parameters()).device
    out = {}
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    width = -(-max(len(e) for e in encoded) // WIDTH_BUCKET) * WIDTH_BUCKET  # as ours: one width for the run
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        ids, mask = left_padded(encoded, idx, width, pad_id)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                             do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=None,
                             cache_implementation="static", disable_compile=True)
        out.update(zip(idx, gen[:, width:].tolist()))
    return [out[i] for i in range(len(encoded))]


def ours(model, encoded, new, pad_id, batch_size, compile=None):
    out = {}
    for idx, toks in generate_ids(model, encoded, pad_id=pad_id, eos=None, max_new_tokens=new, rows=batch_size or None,
                                  compile=compile):
        out.update(zip(idx, toks))
    return [out[i] for i in range(len(encoded))]


def compile_mode_run(args) -> int:
    """One compile mode in this (fresh) process: the first call with its compilation, then a steady call."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    shape = TINY if args.tiny else QWEN05
    model = build_model(shape, "sdpa", device, torch.bfloat16 if cuda else torch.float32).eval()
    model.generation_config.eos_token_id = None
    encoded = prompts(args.prompts, shape["vocab_size"], seed=0)
    first, t_first = timed(lambda: ours(model, encoded, args.new, 0, args.batch_size, args.compile), device)
    got, t = timed(lambda: ours(model, encoded, args.new, 0, args.batch_size, args.compile), device)
    n_new = args.prompts * args.new
    emit({"compile": args.compile, "device": torch.cuda.get_device_name() if cuda else "cpu",
          "prompts": args.prompts, "new_tokens": args.new, "rows": args.batch_size or "device",
          "first_call_s": round(t_first, 2), "steady_s": round(t, 2), "steady_new_tok_s": round(n_new / t),
          "first_call_new_tok_s": round(n_new / t_first), "same_tokens_both_calls": first == got}, args.jsonl)
    return 0


def emit(record: dict, jsonl: str | None) -> None:
    """One result line: printed, and appended to the --jsonl file when given."""
    print(json.dumps(record), flush=True)
    if jsonl:
        with open(jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - t


def compare(a: list[list[int]], b: list[list[int]]) -> dict:
    same = sum(x == y for x, y in zip(a, b))
    first = [next((k for k, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
             for x, y in zip(a, b) if x != y]
    tokens = sum(len(x) for x in a)
    agree = sum(sum(u == v for u, v in zip(x, y)) for x, y in zip(a, b))
    return {"identical_rows": same, "rows": len(a), "token_agreement": round(agree / max(tokens, 1), 4),
            "first_divergence_positions": sorted(first)[:20]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--one-at-a-time", type=int, default=4, help="prompts for the one-at-a-time reference")
    p.add_argument("--check", type=int, default=32, help="prompts for the float32 equality check (0: none)")
    p.add_argument("--jsonl")
    p.add_argument("--compile", choices=COMPILE_MODES,
                   help="time only ours with this compile mode (first call with its compilation, then a steady one); "
                   "run each mode in a fresh process: compilation caches live in the process. --batch-size 0: rows "
                   "from the device, as `workbench eval` sizes them")
    args = p.parse_args(argv)
    if args.compile:
        return compile_mode_run(args)
    shape = TINY if args.tiny else QWEN05
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_model(shape, "sdpa", device, dtype).eval()
    model.generation_config.eos_token_id = None
    encoded = prompts(args.prompts, shape["vocab_size"], seed=0)
    pad_id = 0
    n_new = args.prompts * args.new
    results = []

    def record(r):
        results.append(r)
        emit(r, args.jsonl)

    record({"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
          "prompts": args.prompts, "new_tokens": args.new, "dtype": str(dtype)})
    k = args.one_at_a_time
    _, t = timed(lambda: hf_batched(model, encoded[:1], args.new, pad_id, 1), device)  # warm-up
    single, t = timed(lambda: hf_batched(model, encoded[:k], args.new, pad_id, 1), device)
    record({"run": f"HF generate, one prompt at a time ({k} prompts)", "new_tok_s": round(k * args.new / t)})
    ref, t = timed(lambda: hf_batched(model, encoded, args.new, pad_id, args.batch_size), device)
    record({"run": f"HF generate, batched {args.batch_size}, dynamic cache", "new_tok_s": round(n_new / t),
          "seconds": round(t, 2)})
    _, t_first = timed(lambda: ours(model, encoded, args.new, pad_id, args.batch_size), device)
    got, t = timed(lambda: ours(model, encoded, args.new, pad_id, args.batch_size), device)
    mode = resolved_mode(device, args.prompts * args.new)  # what generate_ids ran: "eager" on a CPU
    record({"run": f"ours: trainers.generate.generate_ids, batch {args.batch_size}" + (
              f", static cache, compile {mode}" if cuda else ""),
          "new_tok_s": round(n_new / t), "seconds": round(t, 3), "first_call_s_with_compile": round(t_first, 1),
          "new_tokens_made": sum(len(x) for x in got)})
    record({"check": "bf16, ours vs HF batched greedy generate, all prompts", **compare(got, ref)})
    record({"check": f"bf16, ours vs HF generate one prompt at a time, first {k} prompts", **compare(got[:k], single)})
    record({"check": f"bf16 noise floor: HF batched vs HF one prompt at a time, first {k} prompts",
          **compare(ref[:k], single)})
    static_eager = hf_batched_static_eager(model, encoded, args.new, pad_id, args.batch_size) if cuda else ref
    record({"check": "bf16 noise floor: HF static cache without compile vs HF dynamic cache, all prompts",
          **compare(static_eager, ref)})
    record({"check": "bf16: ours vs HF static cache without compile, all prompts", **compare(got, static_eager)})
    if args.check:
        model32 = model.float()
        sub = encoded[: args.check]
        ref32 = hf_batched(model32, sub, args.new, pad_id, args.batch_size)
        got32 = ours(model32, sub, args.new, pad_id, args.batch_size)
        record({"check": f"float32, ours vs HF batched greedy generate, first {args.check} prompts",
              **compare(got32, ref32)})
        one32 = [hf_batched(model32, [q], args.new, pad_id, 1)[0] for q in sub[:8]]
        record({"check": "float32, ours vs HF generate one prompt at a time, first 8 prompts",
              **compare(got32[:8], one32)})
    base = next(r["new_tok_s"] for r in results if r.get("run", "").startswith("HF generate, batched"))
    print(f"\n{'run':70s} {'new tok/s':>10s} {'vs HF batched':>13s}")
    for r in results:
        if "run" in r:
            print(f"{r['run'][:70]:70s} {r['new_tok_s']:10d} {r['new_tok_s'] / base:12.2f}x")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
