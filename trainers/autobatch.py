"""Batch sizes chosen from the device, the model and the data, when the settings leave them at 0 (auto).

Training (`plan_training`, then `probe`):

* On a CPU nothing changes: `max_seq_len` 512 and `batch_tokens` 2048 (the `tiny` demo's settings).
* On a GPU, `max_seq_len` covers the longest example of the training split, rounded up to a multiple of
  64 (or, when the longest is more than twice the 99.9th percentile, that percentile: the few longer
  examples are cut and counted), never beyond the model's position limit. Packed rows are `ROW_TOKENS`
  (4,096) wide, or `max_seq_len` when that is longer, so examples pack with little waste.
* `batch_tokens` on a GPU comes from a memory model: the frozen weights, one chunk of the chunked loss and,
  per token, the activations a LoRA step keeps for its backward pass, `layers x 2 bytes x (12 x hidden + 4 x
  intermediate)` (1,416 KB a token for Qwen2.5-0.5B, where bench/train_bench.py measured about 1,370 KB),
  `QLORA_ACTIVATION_FACTOR` times that for QLoRA (measured on an H100: its 4-bit layers keep 1.72x as much a
  token; cause not established), `DORA_ACTIVATION_FACTOR` for DoRA (2.25x, also an H100's). The budget
  fills `MEMORY_FRACTION` of the free memory, in whole rows, at most
  `MAX_BATCH_TOKENS` (throughput gains little beyond it) and at most a sixteenth of an epoch (an epoch keeps
  16 optimizer steps or more). `probe` then runs one forward and backward pass on the real first micro-batch
  (this also compiles the layers for the shape the run uses), reads the peak memory, and scales the rows down
  when the model was too optimistic (or halves them after an out-of-memory error).

An explicit setting always wins; the plan (what was chosen and why) goes into events.jsonl and the
run folder's `batch_plan.json`, which a resumed run reads back so it replays the same batches.

Generation (`generation_rows`): rows per batch from the KV cache a row needs (`2 x layers x kv heads x
head dim x 2 bytes` a token, for prompt width + new tokens), a quarter of the free memory, at most
`MAX_GENERATION_ROWS`; 16 on a CPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

CPU_MAX_SEQ_LEN = 512
CPU_BATCH_TOKENS = 2048
CPU_GENERATION_ROWS = 16
ROW_TOKENS = 4096
SEQ_MULTIPLE = 64
MEMORY_FRACTION = 0.6
MAX_BATCH_TOKENS = 32768
MIN_STEPS_PER_EPOCH = 16
MAX_GENERATION_ROWS = 1024  # H100, 1,000 x 256 tokens: 500 rows 15.7 s eager, 1,000 rows 14.0 s
GENERATION_FRACTION = 0.25
# QLoRA on the Qwen2.5-0.5B shape, H100, 2026-12-05 (bench/gpu_logs/run10_qlora_events.jsonl): probe steps of
# 16,384 and 20,480 tokens peaked at 43.17 and 52.66 GiB, 2.49 MB a token, 1.72x the LoRA model's 1.45 MB
QLORA_ACTIVATION_FACTOR = 1.75
# DoRA (peft's use_dora) keeps the base output and the LoRA output of every adapted layer for its magnitude
# rescaling: an H100 probe step of 2 x 4,096 tokens peaked at 28.68 GiB with 4.4 GiB fixed (2.25x LoRA a token;
# bench/gpu_logs/run15_dora_events.jsonl). One point: all of it counted per token, the cautious side.
DORA_ACTIVATION_FACTOR = 2.25
ACTIVATION_FACTORS = {"qlora": QLORA_ACTIVATION_FACTOR, "dora": DORA_ACTIVATION_FACTOR}
PLAN_FILE = "batch_plan.json"


@dataclass
class BatchPlan:
    """What a run trains with: truncation length, packed row width, tokens per micro-batch, and why."""

    max_seq_len: int
    row_len: int
    batch_tokens: int
    device: str = "cpu"
    reasons: list[str] = field(default_factory=list)
    predicted_peak_gb: float | None = None
    measured_peak_gb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, run_dir: Path) -> None:
        (Path(run_dir) / PLAN_FILE).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @staticmethod
    def load(run_dir: Path) -> BatchPlan | None:
        path = Path(run_dir) / PLAN_FILE
        return BatchPlan(**json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None


# ---------------------------------------------------------------- max_seq_len from the data

def seq_len_for(lengths: list[int], position_limit: int | None = None) -> tuple[int, int, str]:
    """(max_seq_len, examples it cuts, why) for these token lengths."""
    if not lengths:
        return CPU_MAX_SEQ_LEN, 0, "no examples: the CPU default"
    ordered = sorted(lengths)
    longest = ordered[-1]
    p999 = ordered[max(0, math.ceil(0.999 * len(ordered)) - 1)]
    if longest <= 2 * p999:
        target, why = longest, f"covers the longest example ({longest} tokens)"
    else:
        target, why = p999, f"the 99.9th percentile ({p999} tokens; the longest is {longest})"
    length = max(SEQ_MULTIPLE, -(-target // SEQ_MULTIPLE) * SEQ_MULTIPLE)
    if position_limit and length > position_limit:
        length, why = position_limit, f"the model's position limit ({position_limit}); the data needs {target}"
    cut = sum(1 for n in lengths if n > length)
    return length, cut, why + (f", cuts {cut} example(s)" if cut else "")


# ---------------------------------------------------------------- the memory model

def _shape(config) -> dict:
    text = getattr(config, "text_config", None) or config
    hidden = int(text.hidden_size)
    heads = int(getattr(text, "num_attention_heads", 1))
    return {"hidden": hidden, "layers": int(text.num_hidden_layers),
            "intermediate": int(getattr(text, "intermediate_size", None) or 4 * hidden),
            "vocab": int(text.vocab_size), "kv_heads": int(getattr(text, "num_key_value_heads", None) or heads),
            "head_dim": int(getattr(text, "head_dim", None) or hidden // heads)}


def activation_bytes_per_token(config) -> float:
    """Bytes a LoRA training step keeps per token for its backward pass (bf16 activations)."""
    s = _shape(config)
    return s["layers"] * 2.0 * (12 * s["hidden"] + 4 * s["intermediate"])


def fixed_bytes(config, weight_bytes: float, chunk_rows: int = 2048) -> float:
    """Memory that does not grow with the batch: the weights and one chunk of the chunked loss (x3)."""
    return weight_bytes + 3 * chunk_rows * _shape(config)["vocab"] * 4.0


def training_tokens(free_bytes: float, config, weight_bytes: float, *, row_len: int,
                    epoch_tokens: int | None = None, method: str = "lora") -> tuple[int, float, str]:
    """(batch tokens in whole rows, predicted peak bytes, why) for a GPU with free_bytes free."""
    per_token = activation_bytes_per_token(config) * ACTIVATION_FACTORS.get(method, 1.0)
    base = fixed_bytes(config, weight_bytes)
    fit = (free_bytes * MEMORY_FRACTION - base) / per_token
    rows = max(1, int(fit // row_len))
    why = (f"{rows} row(s) of {row_len} fit {MEMORY_FRACTION:.0%} of {free_bytes / 2**30:.1f} GiB free "
           f"(about {per_token / 1024:.0f} KB a token of activations, {base / 2**30:.1f} GiB fixed)")
    cap = max(1, MAX_BATCH_TOKENS // row_len)
    if rows > cap:
        rows, why = cap, why + f"; capped at {MAX_BATCH_TOKENS} tokens (little gain beyond)"
    if epoch_tokens:
        per_epoch = max(1, epoch_tokens // (MIN_STEPS_PER_EPOCH * row_len))
        if rows > per_epoch:
            rows, why = per_epoch, why + f"; {per_epoch} row(s) keep {MIN_STEPS_PER_EPOCH}+ steps an epoch"
    tokens = rows * row_len
    return tokens, base + tokens * per_token, why


def plan_training(cfg, lengths: list[int], *, device: torch.device, config=None, weight_bytes: float = 0.0,
                  free_bytes: float | None = None) -> BatchPlan:
    """The plan for cfg (0 = auto for max_seq_len and batch_tokens) on this device, given the training
    examples' token lengths (uncut) and, on a GPU, the model's config and its weights' size."""
    reasons = []
    if cfg.max_seq_len:
        max_len, row_len = cfg.max_seq_len, cfg.max_seq_len
        reasons.append(f"max_seq_len {max_len}: set")
    elif device.type != "cuda":
        max_len = row_len = CPU_MAX_SEQ_LEN
        reasons.append(f"max_seq_len {max_len}: the CPU default")
    else:
        limit = getattr(config, "max_position_embeddings", None) if config is not None else None
        max_len, _, why = seq_len_for(lengths, limit)
        row_len = max(ROW_TOKENS, max_len) if cfg.packing else max_len
        reasons.append(f"max_seq_len {max_len}: {why}; packed rows of {row_len}")
    plan = BatchPlan(max_len, row_len, cfg.batch_tokens, device=str(device), reasons=reasons)
    if cfg.batch_tokens:
        plan.row_len = max(max_len, min(row_len, cfg.batch_tokens))  # a row is never wider than the batch
        reasons.append(f"batch_tokens {cfg.batch_tokens}: set")
    elif device.type != "cuda" or config is None:
        plan.batch_tokens = max(CPU_BATCH_TOKENS, row_len)
        reasons.append(f"batch_tokens {plan.batch_tokens}: the CPU default")
    else:
        if free_bytes is None:
            free_bytes = float(torch.cuda.mem_get_info(device)[0]) + weight_bytes  # the weights are loaded
        epoch = sum(min(n, max_len) for n in lengths)
        plan.batch_tokens, peak, why = training_tokens(free_bytes, config, weight_bytes, row_len=row_len,
                                                       epoch_tokens=epoch, method=getattr(cfg, "method", "lora"))
        plan.predicted_peak_gb = round(peak / 2**30, 2)
        reasons.append(f"batch_tokens {plan.batch_tokens}: {why}")
    return plan


def rows_after_probe(rows: int, peak_bytes: float, limit_bytes: float, fixed: float) -> int:
    """Rows that keep the peak under limit_bytes, from a probe of `rows` rows that peaked at peak_bytes."""
    if peak_bytes <= limit_bytes or rows <= 1:
        return rows
    per_row = max(1.0, (peak_bytes - fixed) / rows)
    return max(1, int((limit_bytes - fixed) // per_row))


def probe(plan: BatchPlan, step, make_batch, device: torch.device, fixed: float) -> BatchPlan:
    """Measure one forward+backward pass (`step(batch)`) on `make_batch(batch_tokens)`; shrink the plan
    when the peak passes MEMORY_FRACTION of the device (or the pass runs out of memory)."""
    total = torch.cuda.get_device_properties(device).total_memory
    limit = total * MEMORY_FRACTION + fixed * (1 - MEMORY_FRACTION)
    for _ in range(6):
        rows = plan.batch_tokens // plan.row_len
        torch.cuda.reset_peak_memory_stats(device)
        try:
            step(make_batch(plan.batch_tokens))
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if rows <= 1:
                raise
            plan.batch_tokens = (rows // 2) * plan.row_len
            plan.reasons.append(f"probe: out of memory at {rows} rows; halved")
            continue
        peak = float(torch.cuda.max_memory_allocated(device))
        plan.measured_peak_gb = round(peak / 2**30, 2)
        fit = rows_after_probe(rows, peak, limit, fixed)
        if fit >= rows:
            plan.reasons.append(f"probe: one step at {plan.batch_tokens} tokens peaked at "
                                f"{plan.measured_peak_gb} GiB of {total / 2**30:.0f}")
            return plan
        plan.batch_tokens = fit * plan.row_len
        plan.reasons.append(f"probe: {rows} rows peaked at {plan.measured_peak_gb} GiB; {fit} row(s) kept")
    return plan


# ---------------------------------------------------------------- generation

def kv_bytes_per_token(config, dtype_bytes: int = 2) -> float:
    s = _shape(config)
    return 2.0 * s["layers"] * s["kv_heads"] * s["head_dim"] * dtype_bytes


def generation_rows(config, tokens_per_row: int, *, device: torch.device, free_bytes: float | None = None,
                    prompts: int | None = None) -> int:
    """Prompts generated together: on a GPU as many as a quarter of the free memory holds the KV cache
    of (at most MAX_GENERATION_ROWS), balanced so every batch has the same rows; 16 on a CPU."""
    if device.type != "cuda" or config is None:
        rows = CPU_GENERATION_ROWS
    else:
        if free_bytes is None:
            free_bytes = float(torch.cuda.mem_get_info(device)[0])
        per_row = kv_bytes_per_token(config) * tokens_per_row + 2 * _shape(config)["vocab"] * 4.0
        rows = int(min(MAX_GENERATION_ROWS, max(1, free_bytes * GENERATION_FRACTION // per_row)))
    if prompts:
        batches = -(-prompts // rows)
        rows = -(-prompts // batches)  # equal batches: one compiled shape on a GPU
    return max(1, rows)
