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


def test_a_loaded_model_runs_installed_code_not_kernels_from_the_hub(folders):
    """transformers 5.2x kernelizes a from_pretrained model with Hub kernels by default (offline on a GPU:
    "kernels-community/rotary ... not available in the local cache"); importing `trainers` turns that off."""
    import os

    assert os.environ.get("USE_HUB_KERNELS") == "0"
    root, _ = folders
    model, _ = G.load_model(str(root / "base"))
    assert getattr(model, "use_kernels", False) is False


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
    assert G.compile_mode(1 * 512, graphable=True) == "graphs"  # greedy on a supported model: no compiling at all
    assert G.compile_mode(10, "inductor") == "inductor"  # an explicit mode wins
    monkeypatch.setenv("WORKBENCH_GENERATE_COMPILE", "inductor")
    assert G.compile_mode(10) == "inductor"
    monkeypatch.setenv("WORKBENCH_GENERATE_COMPILE", "fastest")
    with pytest.raises(ConfigError, match="WORKBENCH_GENERATE_COMPILE is 'fastest'; expected one of auto, graphs"):
        G.compile_mode(10)
    monkeypatch.setenv("WORKBENCH_GENERATE_COMPILE", "graphs")
    assert G.compile_mode(10) == "eager"  # asked for, but sampling or a model the graph loop does not take



@pytest.fixture(scope="module")
def lively():
    """A small Qwen2 with large random weights (float32, SDPA): its greedy tokens vary from step to step and
    row to row (the tiny base above repeats one token), so stopping, padding and the penalty are exercised."""
    import random

    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=300, max_position_embeddings=512, initializer_range=0.3,
                         attn_implementation="sdpa")
    model = Qwen2ForCausalLM(config).eval()
    rng = random.Random(0)
    encoded = [[rng.randrange(3, 300) for _ in range(rng.randint(3, 12))] for _ in range(7)]
    return model, encoded


def _left_padded(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(encoded):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    return ids, mask


@pytest.mark.parametrize("penalty", [None, 1.3])
def test_the_graph_loop_gives_the_tokens_of_generate_and_stops_where_it_does(lively, penalty):
    """The GPU's default greedy decoding (trainers.graphdecode: the step a GPU records as a CUDA graph, run
    uncaptured on the CPU) against transformers' generate on the same left-padded batch, float32: rows that end
    at different steps, the output cut where the last row ended, finished rows padded, and a repetition penalty
    in the model's generation_config (Qwen's instruct models ship one; generate leaves the prompt's left padding
    out of it, but counts the padding of a finished row)."""
    from trainers import graphdecode

    model, encoded = lively
    model.generation_config.repetition_penalty = penalty
    ids, mask = _left_padded(encoded, 0)
    free = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0,
                          eos_token_id=None)[:, ids.shape[1]:]
    eos = sorted({row[2 + i % 6] for i, row in enumerate(free.tolist())})  # every row ends, by step 8
    liked = max(set(free.flatten().tolist()) - set(eos), key=free.flatten().tolist().count)
    # padding with a token the model likes: generate leaves the left padding out of the penalty, and so must we
    for pad in (0, liked):
        ids, mask = _left_padded(encoded, pad)
        for stop in (None, eos):
            for max_new in (1, 5, 24):
                ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                     pad_token_id=pad, eos_token_id=stop)[:, ids.shape[1]:]
                got = graphdecode.greedy(model, ids, mask, max_new_tokens=max_new, pad_id=pad, eos=stop)
                assert got.shape == ref.shape and torch.equal(got, ref), (pad, stop, max_new)
    ended = [next((k for k, t in enumerate(row) if t in eos), None) for row in ref.tolist()]
    assert len(set(ended)) > 2 and ref.shape[1] < 24  # rows ended at different steps; the output was cut
    assert ref[ended.index(min(ended))].tolist()[-1] == liked  # the row that ended first was padded


def test_generate_ids_on_the_graph_loop_equals_generate_one_prompt_at_a_time(lively):
    model, encoded = lively
    model.generation_config.repetition_penalty = None
    assert G.decode_mode(model, 12 * len(encoded), fast=True) == "graphs"  # what a GPU runs by default
    ours = {}
    for idx, new in G.generate_ids(model, encoded, pad_id=0, eos=[7], max_new_tokens=12, rows=3, fast=True):
        ours.update(zip(idx, new))
    assert sorted(ours) == list(range(len(encoded)))
    for i, ids in enumerate(encoded):
        ref = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0,
                             eos_token_id=[7])[0, len(ids):].tolist()
        assert ours[i][: len(ref)] == ref, i


def test_greedy_decoding_takes_the_graph_loop_only_where_it_is_exact(folders, monkeypatch):
    from trainers import graphdecode

    monkeypatch.delenv("WORKBENCH_GENERATE_COMPILE", raising=False)
    root, _ = folders
    model, _ = G.load_model(str(root / "base"))
    assert G.decode_mode(model, 1000 * 256, fast=True) == "graphs"
    assert G.decode_mode(model, 1000 * 256, fast=False) == "eager"  # a CPU: generate as it is
    assert G.decode_mode(model, 1000 * 256, fast=True, sampling={"temperature": 0.7}) == "eager"  # playground
    assert G.decode_mode(model, 1000 * 256, fast=True, mode="inductor") == "inductor"  # an explicit mode wins
    from trainers.chat import _Stop, _Streamer, _StreamingView

    view = _StreamingView(model, _Streamer(None), _Stop())  # the Playground streams through generate
    assert G.decode_mode(view, 256, fast=True) == "eager"
    model.generation_config.no_repeat_ngram_size = 3  # a logits processor the loop does not apply
    assert not graphdecode.supported(model) and G.decode_mode(model, 1000 * 256, fast=True) == "eager"
    assert G.decode_mode(model, G.COMPILE_FROM_NEW_TOKENS, fast=True) == "inductor"
    model.generation_config.no_repeat_ngram_size = None
    model.config._attn_implementation = "eager"  # eager attention adds a float mask, not SDPA's boolean one
    assert not graphdecode.supported(model)


@pytest.mark.parametrize("max_new", [4, 20])
def test_a_sliding_window_model_takes_the_graph_loop_only_within_its_window(lively, max_new):
    """Mistral with a 16-token window: prompts of up to 12 tokens + 4 new fit the loop's one causal mask; + 20 new
    do not, and that batch decodes through generate. Both give generate's tokens one prompt at a time."""
    from transformers import MistralConfig, MistralForCausalLM

    from trainers import graphdecode

    _, encoded = lively
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=128, vocab_size=300,
                                             max_position_embeddings=512, initializer_range=0.3, sliding_window=16,
                                             attn_implementation="sdpa")).eval()
    width = max(len(e) for e in encoded)
    assert graphdecode.fits(model, width + max_new) == (max_new == 4)
    ours = {}
    for idx, new in G.generate_ids(model, encoded, pad_id=0, eos=None, max_new_tokens=max_new, rows=7, fast=True):
        ours.update(zip(idx, new))
    for i, ids in enumerate(encoded):
        ref = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[0, len(ids):].tolist()
        assert ours[i] == ref, i


def _family(name: str):
    import transformers as T

    common = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=300, initializer_range=0.3, attn_implementation="sdpa")
    makers = {
        "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(head_dim=16, sliding_window=512)),
        "qwen3_5": ("Qwen3_5ForCausalLM", "Qwen3_5TextConfig", dict(
            head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
            linear_value_head_dim=16)),
        "lfm2": ("Lfm2ForCausalLM", "Lfm2Config", dict(full_attn_idxs=[1, 3])),
        "llama4": ("Llama4ForCausalLM", "Llama4TextConfig", dict(head_dim=16, attention_chunk_size=8,
                                                                 intermediate_size_mlp=128, num_local_experts=2)),
    }
    model_cls, config_cls, extra = makers[name]
    if not hasattr(T, model_cls):
        pytest.skip(f"{model_cls} is not in this transformers")
    torch.manual_seed(0)
    return getattr(T, model_cls)(getattr(T, config_cls)(**common, **extra)).eval()


@pytest.mark.parametrize("name, takes_it", [("gemma3", True), ("qwen3_5", False), ("lfm2", False),
                                            ("llama4", False)])
def test_the_graph_loop_takes_only_models_whose_cache_it_manages(lively, name, takes_it):
    """Hybrids (linear-attention or convolution layers keep state a replayed step would not restore) and chunked
    attention (Llama 4: its own mask) keep generate; Gemma 3 (sliding and full layers) takes the loop, exactly."""
    from trainers import graphdecode

    model = _family(name)
    _, encoded = lively
    assert graphdecode.supported(model) is takes_it
    assert G.decode_mode(model, 12 * len(encoded), fast=True) == ("graphs" if takes_it else "eager")
    if takes_it:
        ids, mask = _left_padded(encoded, 0)
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[:, ids.shape[1]:]
        assert torch.equal(graphdecode.greedy(model, ids, mask, max_new_tokens=12, pad_id=0, eos=None), ref)
