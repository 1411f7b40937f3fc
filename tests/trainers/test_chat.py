"""trainers.chat.ChatModel on a tiny random base with a random LoRA adapter, float32 on a CPU: the streamed
pieces join into the answer of trainers.generate's own greedy path (and of transformers' `generate` called
directly), sampling with a seed repeats `generate_ids`' sampled tokens, the rendered prompt is the
tokenizer's chat template, memory is transformers' own footprint, and a stream closed early stops."""

from __future__ import annotations

import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config
from trainers import generate as G
from trainers import tiny
from trainers.chat import ChatModel
from trainers.config import ConfigError


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    import peft

    before = one_thread()
    root = tmp_path_factory.mktemp("chat")
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
    yield ChatModel.load(str(root / "base"), str(root / "adapter"), device="cpu"), records
    torch.set_num_threads(before)


@pytest.fixture(params=["generate", "graphs"])
def path(request, monkeypatch):
    """How a greedy answer is decoded: transformers' generate with its streamer (a CPU; sampling anywhere), or
    a GPU's default, trainers.graphdecode, here on the CPU without capturing the step."""
    if request.param == "graphs":
        monkeypatch.setattr(G, "fast_mode", lambda device: True)
    return request.param


def test_greedy_stream_joins_into_the_generators_answer(chat, path):
    model, records = chat
    assert G.decode_mode(model.model, 12) == ("graphs" if path == "graphs" else "eager")
    prompts = [r["messages"][:1] for r in records[:4]]
    expected = G.generate(model.model, model.tokenizer, prompts, max_new_tokens=12, batch_size=1)
    for messages, want in zip(prompts, expected):
        totals: dict = {}
        pieces = list(model.stream(messages, max_new_tokens=12, totals=totals))
        assert len(pieces) > 1 and "".join(pieces) == want  # streamed, and the same text
        assert model.last["answer"] == want and totals == model.last
        # transformers' generate called directly, no padding: the same new tokens
        ids = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                  return_tensors="pt")["input_ids"]
        ref = model.model.generate(input_ids=ids, max_new_tokens=12, do_sample=False,
                                   pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.eos)[0, ids.shape[1]:]
        assert model.tokenizer.decode(ref, skip_special_tokens=True).strip() == want
        assert model.last["new_tokens"] == G.new_token_count(ref.tolist(), model.eos)
    again = model.answer(prompts[0], max_new_tokens=12)
    assert again["answer"] == expected[0] and again["new_tokens"] == 12 and again["seconds"] >= 0


def test_sampling_with_a_seed_repeats_the_generators_sampled_tokens(chat):
    model, records = chat
    messages = records[5]["messages"][:1]
    encoded = G.encode_prompts(model.tokenizer, [messages])
    torch.manual_seed(7)
    (_, new), = G.generate_ids(model.model, encoded, pad_id=model.tokenizer.pad_token_id, eos=model.eos,
                               max_new_tokens=10, rows=1, sampling={"temperature": 1.3, "top_p": 0.9})
    want = model.tokenizer.decode(new[0], skip_special_tokens=True).strip()
    first = model.answer(messages, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=7)
    assert first["answer"] == want
    second = model.answer(messages, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=7)
    assert (second["answer"], second["new_tokens"]) == (first["answer"], first["new_tokens"])


def test_render_is_the_chat_template_with_a_generation_prompt(chat):
    model, _ = chat
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my card?"},
                {"role": "assistant", "content": "On its way."}, {"role": "user", "content": "When?"}]
    assert model.render(messages) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhere is my card?"
                                      "<|im_end|>\n<|im_start|>assistant\nOn its way.<|im_end|>\n<|im_start|>user\n"
                                      "When?<|im_end|>\n<|im_start|>assistant\n")
    assert model.encode(messages) == G.encode_prompts(model.tokenizer, [messages])[0]


def test_memory_is_transformers_footprint_and_the_name_says_base_and_adapter(chat):
    model, _ = chat
    assert model.memory_bytes() == model.model.get_memory_footprint()
    assert model.name.startswith("base + ") and model.name.endswith("/adapter")


def test_a_stream_closed_early_stops_and_the_model_answers_again(chat, path):
    model, records = chat
    messages = records[0]["messages"][:1]
    stream = model.stream(messages, max_new_tokens=4000)
    next(stream)
    stream.close()  # the generation thread stops at the next token; the lock is free again
    assert model.answer(messages, max_new_tokens=3)["new_tokens"] == 3


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty list"),
    ([{"role": "bot", "content": "hi"}], r"messages\[0\].role is 'bot'; expected one of system, user, assistant"),
    ([{"role": "user", "content": 3}], r"messages\[0\].content: expected text"),
])
def test_bad_messages_and_settings_are_explained(chat, messages, match):
    model, _ = chat
    with pytest.raises(ConfigError, match=match):
        model.answer(messages)
    with pytest.raises(ConfigError, match="top_p"):
        model.answer([{"role": "user", "content": "hi"}], temperature=1.0, top_p=0)


def test_an_unloaded_model_says_so(chat):
    model, records = chat
    other = ChatModel(model.model, model.tokenizer, name="copy", base_model=model.base_model)
    other.close()
    with pytest.raises(ConfigError, match="copy was unloaded"):
        other.answer(records[0]["messages"][:1])
    assert model.answer(records[0]["messages"][:1], max_new_tokens=2)["new_tokens"] == 2  # the original still answers


def test_a_conversation_longer_than_a_sliding_window_is_answered_through_generate(chat, monkeypatch):
    """On a GPU a greedy answer takes the graph loop only when prompt + answer fit the model's sliding window
    (Gemma 3's is 512 tokens); beyond it the answer comes from generate, as the evaluation's does."""
    from transformers import MistralConfig, MistralForCausalLM

    from trainers import graphdecode

    base, records = chat
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=128,
                                             vocab_size=len(base.tokenizer), max_position_embeddings=512,
                                             sliding_window=16, attn_implementation="sdpa")).eval()
    windowed = ChatModel(model, base.tokenizer, name="m", base_model="m")
    monkeypatch.setattr(G, "fast_mode", lambda device: True)  # as on a GPU
    messages = records[0]["messages"][:1]
    assert not graphdecode.fits(model, len(windowed.encode(messages)) + 8)
    answer = windowed.answer(messages, max_new_tokens=8)
    assert answer["answer"] == G.generate(model, base.tokenizer, [messages], max_new_tokens=8)[0]
