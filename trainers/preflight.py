"""Pre-flight: what a run will do before it spends compute.

The rendered chat template of one example with the trained (assistant) tokens marked, token
counts, how many examples the chosen max length cuts, supervised tokens per epoch, steps per
epoch, and a time per epoch measured from a few real optimizer steps on this machine.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from pathlib import Path

import torch

from trainers import data as D
from trainers.config import PREFERENCE_METHODS, TrainConfig

SAMPLE_RECORDS = 5000  # counts on bigger splits are measured on a sample and scaled up
READ_RECORDS = 50_000  # a bigger version is estimated from its first records (the page stays responsive)


def preflight(records_path: str | Path, cfg: TrainConfig, *, measure_steps: int = 3) -> dict:
    if cfg.method in PREFERENCE_METHODS:
        from trainers.preference import preflight as preference_preflight

        return preference_preflight(records_path, cfg, measure_steps=measure_steps)
    from trainers.train import loss_sum

    lines = _count_lines(records_path)
    records = D.read_records(records_path, limit=READ_RECORDS)
    train, val, how = D.split_records(records, val_fraction=cfg.val_fraction, max_val_records=cfg.max_val_records,
                                      seed=cfg.seed)
    notes = []
    if lines > READ_RECORDS:  # a big version: estimate from its first records, scaled to all of them
        grow = lines / READ_RECORDS
        n_val = min(round(len(val) * grow), cfg.max_val_records)
        notes.append(f"counts are estimated from the first {READ_RECORDS:,} of {lines:,} records")
        train_count, val_count = round(len(train) * grow), n_val
    else:
        train_count, val_count = len(train), len(val)
    sample = train if len(train) <= SAMPLE_RECORDS else random.Random(cfg.seed).sample(train, SAMPLE_RECORDS)
    scale = train_count / len(sample)
    tokenizer, model, device = base_and_adapter(cfg, D.plain_texts(sample), notes)
    plan = _plan(cfg, tokenizer, sample, model, device)
    notes.append("batch plan: " + "; ".join(plan.reasons))
    examples, counts = D.tokenize(tokenizer, sample, plan.max_seq_len)
    lengths = [len(e.input_ids) for e in examples] or [0]
    batches = D.epoch_batches(examples, batch_tokens=plan.batch_tokens, max_len=plan.row_len, packed=cfg.packing,
                              seed=cfg.seed, epoch=0, pad_id=tokenizer.pad_token_id)
    steps_per_epoch = max(1, math.floor(len(batches) * scale / cfg.grad_accum))

    # Time a few optimizer steps of the real model and adapter on real batches.
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    model.train()
    times = []
    for batch in (batches * (measure_steps + 1))[: measure_steps + 1]:
        t0 = time.monotonic()
        batch = {k: v.to(device) for k, v in batch.items()}
        (loss_sum(model, batch) / max(1, D.supervised_in(batch))).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.monotonic() - t0)
    per_micro = statistics.median(times[1:]) if len(times) > 1 else times[0]
    per_epoch = per_micro * len(batches) * scale
    planned_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    example = _segments(tokenizer, examples[0]) if examples else []
    return {
        "split": how, "train_records": train_count, "val_records": val_count,
        "sampled_records": len(sample), "estimated": scale > 1,
        "example": example, "example_text": "".join(s["text"] for s in example),
        "tokens_mean": round(statistics.fmean(lengths), 1), "tokens_median": statistics.median(lengths),
        "tokens_p95": sorted(lengths)[int(0.95 * (len(lengths) - 1))], "tokens_max": max(lengths),
        "truncated": round(counts["truncated"] * scale), "dropped": round(counts["dropped"] * scale),
        "max_seq_len": plan.max_seq_len, "batch_tokens": plan.batch_tokens, "row_len": plan.row_len,
        "batch_plan": plan.reasons,
        "supervised_tokens_per_epoch": round(counts["supervised_tokens"] * scale),
        "tokens_per_epoch": round(counts["kept_tokens"] * scale),
        "steps_per_epoch": steps_per_epoch, "planned_steps": planned_steps,
        "seconds_per_step": round(per_micro * cfg.grad_accum, 3),
        "seconds_per_epoch": round(per_epoch, 1),
        "seconds_planned": round(per_micro * cfg.grad_accum * planned_steps, 1),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "device": str(device), "notes": notes,
    }


def base_and_adapter(cfg: TrainConfig, texts, notes: list[str]):
    """(tokenizer, model with a fresh adapter, device) as the run will start from; when the tiny base is not
    built yet, a random one with a tokenizer trained the same way on texts (noted)."""
    from trainers import tiny
    from trainers.train import load_base, load_tokenizer, pick_device, wrap_peft

    tiny_ready = cfg.base_model == "tiny" and (Path(cfg.tiny_dir) / tiny.MANIFEST).exists()
    if cfg.base_model == "tiny" and not tiny_ready:
        tokenizer = tiny.train_tokenizer(texts, cfg.tiny_vocab)
        notes.append(f"the tiny base is not built yet: the run first pre-trains it for {cfg.tiny_pretrain_steps} "
                     "steps (counts use a tokenizer trained the same way)")
    else:
        tokenizer = load_tokenizer(cfg.tiny_dir if cfg.base_model == "tiny" else cfg.base_model)
    device, dtype = pick_device(cfg)
    if cfg.base_model == "tiny":
        model = (load_base(cfg.tiny_dir, cfg, device, dtype) if tiny_ready
                 else tiny.random_model(cfg, tokenizer).to(device))
    else:
        model = load_base(cfg.base_model, cfg, device, dtype)
    return tokenizer, wrap_peft(model, cfg), device


def _plan(cfg: TrainConfig, tokenizer, sample: list[dict], model, device):
    """The batch plan the run will start from (trainers.autobatch; the run's probe step may shrink it)."""
    from trainers import autobatch

    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    lengths = []
    if not cfg.max_seq_len and device.type == "cuda":
        limit = getattr(config, "max_position_embeddings", None) or 1 << 20
        lengths = [len(e.input_ids) for e in D.tokenize(tokenizer, sample, limit)[0]]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return autobatch.plan_training(cfg, lengths, device=device, config=config, weight_bytes=weights)


def _count_lines(path: str | Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _segments(tokenizer, example: D.Example) -> list[dict]:
    """The example's text as runs of {text, trained}: decoded token runs, marked when they carry labels."""
    runs: list[dict] = []
    ids, flags = example.input_ids, [lab != D.IGNORE for lab in example.labels]
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or flags[i] != flags[start]:
            runs.append({"text": tokenizer.decode(ids[start:i], skip_special_tokens=False), "trained": flags[start]})
            start = i
    return runs
