"""The one generator (trainers.generate) on a tiny random model in float32 on a CPU: batched, sorted and
left-padded greedy output equals `model.generate` one prompt at a time; a LoRA adapter merged into the
loaded weights gives the tokens of the unmerged peft model; a tokenizer without a chat template gets a
clear message with a template to start from."""

from __future__ import annotations

import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config
from trainers import generate as G
from trainers import tiny
from trainers.config import ConfigError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny base (random weights, save_pretrained) and a LoRA adapter with random, non-zero weights."""
    import peft

    before = one_thread()
    root = tmp_path_factory.mktemp("gen")
    records = chat_records(40, seed=3)
    cfg = tiny_config(root)
    tok = tiny.train_tokenizer((m["content"] for r in records for m in r["messages"]), cfg.tiny_vocab)
    model = tiny.random_model(cfg, tok, seed=1)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    torch.manual_seed(2)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    lora.save_pretrained(root / "adapter")
    prompts = [r["messages"][:1] for r in records[:7]]
    yield root, prompts
    torch.set_num_threads(before)


def test_batched_greedy_equals_generate_one_prompt_at_a_time(folders):
    root, prompts = folders
    model, tok = G.load_model(str(root / "base"))
    encoded = G.encode_prompts(tok, prompts)
    assert len({len(e) for e in encoded}) > 1  # the padding is really exercised
    ours = {}
    for idx, new in G.generate_ids(model, encoded, pad_id=tok.pad_token_id, eos=G.eos_ids(model, tok),
                                   max_new_tokens=10, rows=3):
        ours.update(zip(idx, new))
    for i, ids in enumerate(encoded):  # the reference: transformers' greedy generate, no padding, no batching
        ref = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=G.eos_ids(model, tok))[0, len(ids):].tolist()
        assert ours[i][: len(ref)] == ref, i
        assert all(t == tok.pad_token_id for t in ours[i][len(ref):])  # a finished row is padded


def test_a_merged_adapter_generates_what_the_unmerged_one_does(folders):
    root, prompts = folders
    merged, tok = G.load_model(str(root / "base"), str(root / "adapter"))
    unmerged, _ = G.load_model(str(root / "base"), str(root / "adapter"), merge=False)
    base, _ = G.load_model(str(root / "base"))
    assert not hasattr(merged, "peft_config") and hasattr(unmerged, "peft_config")  # plain weights: no adapter layers
    expected = G.generate(unmerged, tok, prompts, max_new_tokens=10, batch_size=4)
    assert G.generate(merged, tok, prompts, max_new_tokens=10, batch_size=4) == expected
    assert G.generate(base, tok, prompts, max_new_tokens=10, batch_size=4) != expected  # the adapter matters


def test_a_tokenizer_without_a_chat_template_is_told_what_to_add(folders):
    root, prompts = folders
    model, tok = G.load_model(str(root / "base"))
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template.*chat_template.*im_start"):
        G.generate(model, tok, prompts, max_new_tokens=4)


@pytest.mark.parametrize("mode", ["eager", "inductor"])
def test_the_static_cache_path_gives_the_tokens_of_generate_in_float32(folders, mode, monkeypatch):
    """The GPU's fast path (a static KV cache; compiled only for a long job) run on the CPU: uncompiled for a short
    job (what `auto` picks for 1,000 x 256 tokens), padded to one width and one row count when compiled. Greedy
    tokens equal transformers' generate one prompt at a time, no padding, dynamic cache."""
    root, prompts = folders
    model, tok = G.load_model(str(root / "base"))
    encoded = G.encode_prompts(tok, prompts)
    if mode == "inductor":  # the padding a compiled job gets, without compiling on a CPU (transformers would not)
        monkeypatch.setattr(G, "compile_kwargs", lambda mode: {"disable_compile": True})
    ours = {}
    for idx, new in G.generate_ids(model, encoded, pad_id=tok.pad_token_id, eos=G.eos_ids(model, tok),
                                   max_new_tokens=10, rows=3, fast=True, compile=mode):
        assert len(new) == len(idx)  # the filler rows of a compiled job never come back
        ours.update(zip(idx, new))
    assert sorted(ours) == list(range(len(encoded)))
    for i, ids in enumerate(encoded):
        ref = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=G.eos_ids(model, tok))[0, len(ids):].tolist()
        assert ours[i][: len(ref)] == ref, i


def test_auto_compiles_only_a_job_long_enough_to_win_the_compilation_back(monkeypatch):
    monkeypatch.delenv("WORKBENCH_GENERATE_COMPILE", raising=False)
    assert G.compile_mode(1000 * 256) == "eager"  # the eval target: 14.0 s eager against 27.4 s compiled (H100)
    assert G.compile_mode(1 * 512) == "eager"  # a chat reply: no 20 s wait for the first answer
    assert G.compile_mode(G.COMPILE_FROM_NEW_TOKENS) == "inductor"
    assert G.compile_mode(10, "inductor") == "inductor"  # an explicit mode wins
    monkeypatch.setenv("WORKBENCH_GENERATE_COMPILE", "inductor")
    assert G.compile_mode(10) == "inductor"
    monkeypatch.setenv("WORKBENCH_GENERATE_COMPILE", "fastest")
    with pytest.raises(ConfigError, match="WORKBENCH_GENERATE_COMPILE is 'fastest'; expected one of auto, inductor"):
        G.compile_mode(10)
