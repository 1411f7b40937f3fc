"""Model FLOPs for MFU (trainers.flops), checked against PyTorch's own FLOP counter on a real LoRA step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainers import data as D
from trainers import flops


def _lora_model(layers: int):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512, tie_word_embeddings=True,
                         attn_implementation="eager")
    model = Qwen2ForCausalLM(config)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))


def test_counts_split_frozen_trained_and_output_weights():
    model = _lora_model(layers=2)
    c = flops.count(model)
    per_layer = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 160  # q k v o, gate up down
    lora = sum(8 * (i + o) for i, o in [(64, 64), (64, 32), (64, 32), (64, 64), (64, 160), (64, 160), (160, 64)])
    assert (c.frozen, c.trained, c.output, c.attention) == (2 * per_layer, 2 * lora, 1000 * 64, 2 * 4 * 16)
    assert c.trained == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("lengths", [[40], [30, 50, 20]])
def test_a_lora_steps_flops_match_torchs_flop_counter(lengths):
    """Forward and backward of one packed row through the plain path, every position supervised: our count
    equals FlopCounterMode's within 2% (it does not skip the first layer's input gradients, which autograd
    never needs; eager attention also computes the masked half of the scores, so it is counted as full here)."""
    model = _lora_model(layers=8)
    ids = [t for n in lengths for t in range(1, n + 1)]
    row = D.Row(ids, list(ids), [p for n in lengths for p in range(n)])  # one packed row of the examples
    batch = D.collate([row], 0, packed=True)
    width = batch["input_ids"].shape[1]
    # eager attention on a packed row computes every (query, key) pair of the row: width^2 per row
    full_pairs = width * width * batch["input_ids"].shape[0]
    tokens = int(batch["n_tokens"])
    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        out.logits.float().sum().backward()  # logits at every position: all of them "supervised"
    measured = counter.get_total_flops()
    ours = flops.count(model).step_flops(tokens, tokens, full_pairs)
    assert measured == pytest.approx(ours, rel=0.02), (measured, ours)
    # and the causal count is what a packed row of these examples needs
    assert int(batch["attended_pairs"]) == sum(n * (n + 1) // 2 for n in lengths)


def test_peak_is_known_for_data_centre_gpus_only(monkeypatch):
    monkeypatch.delenv("WORKBENCH_PEAK_TFLOPS", raising=False)
    assert flops.peak_flops(torch.device("cpu"), torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert flops.peak_flops(torch.device("cuda", 0), torch.bfloat16) == 989e12
    assert flops.peak_flops(torch.device("cuda", 0), torch.float32) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert flops.peak_flops(torch.device("cuda", 0), torch.bfloat16) == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3060")
    assert flops.peak_flops(torch.device("cuda", 0), torch.bfloat16) is None
    monkeypatch.setenv("WORKBENCH_PEAK_TFLOPS", "100")
    assert flops.peak_flops(torch.device("cpu"), torch.float32) == 100e12
