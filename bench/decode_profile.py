"""Where the time of one uncompiled decoding step goes (issue 15): per-step milliseconds by rows and cache
kind, and with the step recorded as a CUDA graph (trainers.graphdecode); the torch profiler's top CUDA
kernels and CPU operators for the eager static-cache step.

    python bench/decode_profile.py --out /tmp/prof          # on a GPU (Qwen2.5-0.5B shape, random bf16 weights)
    python bench/decode_profile.py --tiny --rows 4,8 --new 4,8 --out /tmp/prof   # CPU dry run

A step's time is (t(new=B) - t(new=A)) / (B - A) for the same prompts, so the prefill cancels out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate_bench import emit, left_padded, prompts  # noqa: E402
from bench.train_bench import QWEN05, TINY, build_model, sync  # noqa: E402


def run(model, encoded, new, *, static: bool, graphs: bool = False):
    device = next(model.parameters()).device
    width = max(len(e) for e in encoded)
    ids, mask = left_padded(encoded, range(len(encoded)), width, 0)
    if graphs:  # trainers.graphdecode: the step recorded as a CUDA graph (the default greedy path on a GPU)
        from trainers import graphdecode

        sync(device)
        t = time.perf_counter()
        graphdecode.greedy(model, ids.to(device), mask.to(device), max_new_tokens=new, pad_id=0, eos=None)
        sync(device)
        return time.perf_counter() - t
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
    if static:
        kw.update(cache_implementation="static", disable_compile=True)
    sync(device)
    t = time.perf_counter()
    model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
    sync(device)
    return time.perf_counter() - t


def step_ms(model, encoded, a, b, **kw) -> float:
    run(model, encoded, a, **kw)  # warm-up
    ta = run(model, encoded, a, **kw)
    tb = run(model, encoded, b, **kw)
    return round(1000 * (tb - ta) / (b - a), 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--rows", default="125,250,500,1000")
    p.add_argument("--new", default="16,48", help="A,B: the two lengths whose difference gives a step's time")
    p.add_argument("--out", required=True)
    p.add_argument("--regional", action="store_true", help="also time the step with each decoder layer compiled")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = str(out / "decode_profile.jsonl")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shape = TINY if args.tiny else QWEN05
    model = build_model(shape, "sdpa", device, torch.bfloat16 if cuda else torch.float32).eval()
    model.generation_config.eos_token_id = None
    a, b = (int(x) for x in args.new.split(","))
    rows = [int(r) for r in args.rows.split(",")]
    emit({"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}, jsonl)
    for n in rows:
        enc = prompts(n, shape["vocab_size"], seed=0)
        for static, graphs in ((True, False), (False, False), (True, True)):
            ms = step_ms(model, enc, a, b, static=static, graphs=graphs)
            emit({"rows": n, "cache": "static" if static else "dynamic",
                  "compile": "CUDA graph of the eager step (graphdecode)" if graphs else "none", "step_ms": ms,
                  "new_tok_s": round(n / ms * 1000)}, jsonl)
    enc = prompts(max(rows), shape["vocab_size"], seed=0)
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        run(model, enc, 4, static=True)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            run(model, enc, 16, static=True)
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    (out / "profile_cuda.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=70))
    (out / "profile_cpu.txt").write_text(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40,
                                                                   max_name_column_width=70))
    print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60), flush=True)
    if args.regional:
        t = time.perf_counter()
        for layer in model.model.layers:
            layer.compile()
        ms = step_ms(model, enc, a, b, static=True)
        emit({"rows": max(rows), "cache": "static", "compile": "decoder layers (regional, no CUDA graphs)",
              "step_ms": ms, "new_tok_s": round(max(rows) / ms * 1000),
              "with_compile_s": round(time.perf_counter() - t, 1)}, jsonl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
