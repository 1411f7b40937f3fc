"""Batch sizes from the device: the memory model with given memory figures (no GPU needed), max_seq_len
from token lengths, the probe's correction, generation rows; on a CPU the tiny demo's settings stay."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainers import autobatch as A
from trainers.config import ConfigError, TrainConfig

# Qwen2.5-0.5B's published config.json (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151,936)
QWEN05 = SimpleNamespace(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768)
GPU = torch.device("cuda", 0)  # a device object only: nothing runs on it here
GiB = 2**30


def test_auto_is_the_default_and_an_explicit_setting_still_checks():
    cfg = TrainConfig()
    assert (cfg.batch_tokens, cfg.max_seq_len) == (0, 0)
    with pytest.raises(ConfigError, match="batch_tokens: 256 is smaller than max_seq_len"):
        TrainConfig(batch_tokens=256, max_seq_len=512)
    with pytest.raises(ConfigError, match="max_seq_len: 8 is too short"):
        TrainConfig(max_seq_len=8)


def test_on_a_cpu_nothing_changes_for_tiny():
    plan = A.plan_training(TrainConfig(), [100, 900, 3000], device=torch.device("cpu"))
    assert (plan.max_seq_len, plan.row_len, plan.batch_tokens) == (512, 512, 2048)  # the settings before issue 15


def test_max_seq_len_covers_the_longest_example_or_the_999th_percentile():
    lengths = list(range(100, 600))  # longest 599: rounded up to a multiple of 64
    assert A.seq_len_for(lengths)[:2] == (640, 0)
    outlier = [200] * 5000 + [9000]  # one example 45x the 99.9th percentile: cut, and counted
    length, cut, why = A.seq_len_for(outlier)
    assert (length, cut) == (256, 1) and "99.9th percentile" in why and "cuts 1" in why
    assert A.seq_len_for([50_000], position_limit=32768)[0] == 32768


def test_the_memory_model_per_token_matches_the_formula_by_hand():
    # 24 layers x 2 bytes x (12 x 896 + 4 x 4864) = 24 x 2 x 30,208 = 1,449,984 bytes a token
    assert A.activation_bytes_per_token(QWEN05) == 1_449_984
    # bench/train_bench.py on an H200: 27.6 GB at 16,384 tokens, 50.1 GB at 32,768 -> 1.37 MB a token
    measured = (50.1 - 27.6) * 1e9 / 16384
    assert 0.9 < A.activation_bytes_per_token(QWEN05) / measured < 1.2


def test_training_batch_from_a_given_memory_figure():
    weights = 494_032_768 * 2  # Qwen2.5-0.5B's parameters in bf16
    cfg = TrainConfig()
    lengths = [180] * 20_000  # 3.6M tokens an epoch: the epoch cap does not bind
    big = A.plan_training(cfg, lengths, device=GPU, config=QWEN05, weight_bytes=weights, free_bytes=139 * GiB)
    assert (big.max_seq_len, big.row_len, big.batch_tokens) == (192, 4096, A.MAX_BATCH_TOKENS)  # capped
    # 12 GiB free: 0.6 x 12 GiB = 7.73e9 bytes; fixed = weights 0.99e9 + 3 x 2048 x 151,936 x 4 = 3.73e9 -> 4.72e9;
    # (7.73e9 - 4.72e9) / 1,449,984 = 2,075 tokens: less than one 4096 row, so one row
    small = A.plan_training(cfg, lengths, device=GPU, config=QWEN05, weight_bytes=weights, free_bytes=12 * GiB)
    assert small.batch_tokens == 4096
    # 40 GiB free: (0.6 x 42.95e9 - 4.72e9) / 1,449,984 = 14,517 tokens -> 3 rows
    mid = A.plan_training(cfg, lengths, device=GPU, config=QWEN05, weight_bytes=weights, free_bytes=40 * GiB)
    assert mid.batch_tokens == 3 * 4096 and mid.predicted_peak_gb < 0.6 * 40
    few = A.plan_training(cfg, [180] * 1000, device=GPU, config=QWEN05, weight_bytes=weights, free_bytes=139 * GiB)
    assert few.batch_tokens == 2 * 4096  # 180,000 tokens an epoch / (16 steps x 4096) = 2 rows
    explicit = A.plan_training(TrainConfig(batch_tokens=8192, max_seq_len=1024), lengths, device=GPU, config=QWEN05,
                               weight_bytes=weights, free_bytes=139 * GiB)
    assert (explicit.batch_tokens, explicit.max_seq_len, explicit.row_len) == (8192, 1024, 1024)


def test_a_qlora_plan_predicts_the_peak_an_h100_measured():
    """QLoRA on an H100 (bench/gpu_logs/run10_qlora_events.jsonl): 78.3 GiB free, the 4-bit model's weights
    0.45 GB; the LoRA model planned 5 rows, the probe measured 52.66 GiB there and kept 4 rows at 43.17 GiB.
    The QLoRA model plans those 4 rows at once (one probe step, one compilation fewer)."""
    weights = 0.45e9
    lengths = [180] * 20_000
    lora = A.plan_training(TrainConfig(), lengths, device=GPU, config=QWEN05, weight_bytes=weights,
                           free_bytes=78.3 * GiB + weights)
    qlora = A.plan_training(TrainConfig(method="qlora"), lengths, device=GPU, config=QWEN05, weight_bytes=weights,
                            free_bytes=78.3 * GiB + weights)
    assert lora.batch_tokens > 4 * 4096 and qlora.batch_tokens == 4 * 4096
    assert qlora.predicted_peak_gb == pytest.approx(43.17, rel=0.05)  # measured at 4 rows


def test_a_dora_plan_predicts_the_peak_an_h100_measured():
    """DoRA on an H100 (bench/gpu_logs/run15_dora_events.jsonl): 1,000 records of the Qwen2.5-0.5B shape, 78.4 GiB
    free; the plan kept 2 rows (16 steps an epoch) and predicted 15.49 GiB as if it were LoRA; the probe step
    peaked at 28.68 GiB."""
    weights = 0.99e9
    lengths = [150] * 1000  # 150,000 tokens: an epoch of 16 steps holds 2 rows of 4,096
    dora = A.plan_training(TrainConfig(method="dora"), lengths, device=GPU, config=QWEN05, weight_bytes=weights,
                           free_bytes=78.4 * GiB)
    assert dora.batch_tokens == 2 * 4096
    assert "; 2 row(s) keep 16+ steps an epoch" in dora.reasons[-1]  # the rows kept (the H100's plan said 7)
    assert dora.predicted_peak_gb == pytest.approx(28.68, rel=0.05)
    lora = A.plan_training(TrainConfig(), [180] * 20_000, device=GPU, config=QWEN05, weight_bytes=weights,
                           free_bytes=78.4 * GiB)
    roomy = A.plan_training(TrainConfig(method="dora"), [180] * 20_000, device=GPU, config=QWEN05,
                            weight_bytes=weights, free_bytes=78.4 * GiB)
    assert roomy.batch_tokens < lora.batch_tokens  # where memory decides, DoRA plans fewer rows


def test_the_probe_shrinks_an_optimistic_plan():
    # 8 rows peaked at 90 GB with 10 GB fixed: 10 GB a row; a 60 GB limit keeps (60 - 10) / 10 = 5 rows
    assert A.rows_after_probe(8, 90e9, 60e9, 10e9) == 5
    assert A.rows_after_probe(8, 50e9, 60e9, 10e9) == 8
    assert A.rows_after_probe(1, 90e9, 60e9, 10e9) == 1


def test_generation_rows_from_the_kv_cache():
    # KV cache: 2 x 24 layers x 2 heads x 64 dims x 2 bytes = 12,288 bytes a token
    assert A.kv_bytes_per_token(QWEN05) == 12288
    assert A.generation_rows(QWEN05, 320, device=torch.device("cpu")) == 16
    # 1 GiB free: a quarter / (12,288 x 320 + 2 x 151,936 x 4) = 268,435,456 / 5,147,648 = 52 rows
    assert A.generation_rows(QWEN05, 320, device=GPU, free_bytes=GiB) == 52
    assert A.generation_rows(QWEN05, 320, device=GPU, free_bytes=100 * GiB) == A.MAX_GENERATION_ROWS
    assert A.generation_rows(QWEN05, 320, device=GPU, free_bytes=100 * GiB, prompts=1000) == 1000  # one batch
    assert A.generation_rows(QWEN05, 320, device=GPU, free_bytes=100 * GiB, prompts=1500) == 750  # 2 equal batches
