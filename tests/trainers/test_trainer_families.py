"""Real model families through the product on a CPU: local folders of the Llama, Qwen2, Mistral, Gemma
and Phi-3 architectures (random weights, small shapes, `save_pretrained`, each with a chat template in
its family's style) go through pre-flight, training with default batch settings, merge, reload and
generation with the merged adapter."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, write_records
from trainers import generate as G
from trainers import tiny
from trainers.config import TrainConfig, save_config
from trainers.preflight import preflight
from trainers.train import main as train_main

pytestmark = pytest.mark.slow

LLAMA3 = ("{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + "
          "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
          "<|end_header_id|>\\n\\n' }}{% endif %}")
MISTRAL = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
           "{% else %}{{ m['content'] + '</s>' }}{% endif %}{% endfor %}")
GEMMA = ("{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + "
         "'\\n' + m['content'] + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
         "{{ '<start_of_turn>model\\n' }}{% endif %}")
PHI3 = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=1024)
FAMILIES = {  # config class, extra config, chat template (None: the tokenizer's ChatML)
    "llama": ("LlamaConfig", {}, LLAMA3),
    "qwen2": ("Qwen2Config", {}, None),
    "mistral": ("MistralConfig", {}, MISTRAL),
    "gemma": ("GemmaConfig", {"head_dim": 16}, GEMMA),
    "phi3": ("Phi3Config", {}, PHI3),
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    before = one_thread()
    yield chat_records(40, seed=21)
    torch.set_num_threads(before)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_model_family_trains_merges_reloads_and_generates(family, records, tmp_path):
    import transformers
    from transformers import AutoModelForCausalLM

    config_name, extra, template = FAMILIES[family]
    tok = tiny.train_tokenizer((m["content"] for r in records for m in r["messages"]), 500)
    if template:
        tok.chat_template = template
    ids = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    config = getattr(transformers, config_name)(**SMALL, **extra, **ids, vocab_size=len(tok))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")

    run = tmp_path / "run"
    write_records(run / "data" / "records.jsonl", records)
    cfg = TrainConfig(base_model=str(tmp_path / "base"), max_steps=2, eval_every=2, checkpoint_every=2, merge=True,
                      cpu_threads=1, warmup_steps=0)  # batch_tokens and max_seq_len: the defaults (auto)
    out = preflight(run / "data" / "records.jsonl", cfg, measure_steps=1)
    assert out["example"] and any(s["trained"] for s in out["example"]) and out["batch_tokens"] == 2048
    save_config(cfg, run / "config.json")
    assert train_main([str(run)]) == 0
    end = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    assert end["status"] == "completed" and end["step"] == 2, end

    prompts = [r["messages"][:1] for r in records[:3]]
    merged_in_memory, tok2 = G.load_model(str(tmp_path / "base"), str(run / "adapter"))
    reloaded, _ = G.load_model(str(run / "merged"))  # merge_and_unload saved by the trainer, plain transformers
    assert type(reloaded).__name__ == type(merged_in_memory).__name__
    expected = G.generate(merged_in_memory, tok2, prompts, max_new_tokens=6)
    assert G.generate(reloaded, tok2, prompts, max_new_tokens=6) == expected
