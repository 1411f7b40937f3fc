"""trainers.export.write_gguf on the other supported architectures and tokenizer types, read back by outside
readers: small random Qwen2 (q/k/v biases, untied output, grouped KV heads) and Mistral (grouped KV heads, so
K is permuted with the KV head count) models come back from transformers' own GGUF loader with the same
logits, and a byte-fallback BPE vocabulary (Llama 2 / Mistral style, written as llama.cpp's `llama` type) is
rebuilt by transformers' GGUF tokenizer code into a tokenizer that gives the same ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainers.test_trainer_fixtures import one_thread
from trainers import export
from trainers.tiny import train_tokenizer
from workbench.data.demo import generate_tickets

TEXTS = [t["prompt"] + "\n" + t["completion"] for t in generate_tickets(30, seed=3)]
SAMPLE = "Hello, where is my order #4521? It was due on 3 March. Thanks!\n  Åsa 🚀"


@pytest.fixture(scope="module")
def tokenizer():
    before = one_thread()
    yield train_tokenizer(TEXTS, 300)
    torch.set_num_threads(before)


def small(kind: str, vocab: int):
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False)).eval()
    return MistralForCausalLM(MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)).eval()


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_gguf_round_trips_through_transformers(kind, tokenizer, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    model = small(kind, len(tokenizer))
    with torch.no_grad():  # random q/k/v biases, so a lost bias shows
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                if proj.bias is not None:
                    proj.bias.normal_(0, 0.5)
    info = export.write_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="f32", name=f"{kind}-small")
    assert info["architecture"] == {"qwen2": "qwen2", "mistral": "llama"}[kind]
    names = {t.name for t in GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert "output.weight" in names and ("blk.0.attn_q.bias" in names) == (kind == "qwen2")

    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32).eval()
    # llama.cpp runs Mistral as a Llama; transformers reads the file as a Llama too (the same computation)
    assert back.config.model_type == {"qwen2": "qwen2", "mistral": "llama"}[kind]
    ids = torch.tensor([tokenizer(SAMPLE)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_llama_permutation_uses_the_kv_head_count_for_k():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(32 * 3, dtype=np.float32).reshape(32, 3)  # 4 heads of 8 rows; 2 KV heads of 8 rows for K
    for heads in (4, 2):
        permuted = export.permute_qk(w[: heads * 8], heads)
        undone = LlamaTensorProcessor()._reverse_permute_weights(permuted, heads, heads)
        np.testing.assert_array_equal(undone, w[: heads * 8])
        np.testing.assert_array_equal(export.unpermute_qk(permuted, heads), w[: heads * 8])
    # the rotary pairs (i, i + d/2) of one head end up next to each other, as llama.cpp's rope expects
    np.testing.assert_array_equal(export.permute_qk(w[:8], 1)[:2], w[[0, 4]])


def byte_fallback_tokenizer():
    """A Llama-2-style tokenizer: BPE with byte fallback, '▁' for spaces, <0xNN> byte tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from tokenizers import trainers as bpe
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = bpe.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=[],
                             show_progress=False)
    tok.train_from_iterator(TEXTS, trainer)
    vocab = tok.get_vocab()
    model_json = tok.model.__getstate__()
    import json

    state = json.loads(model_json)
    merged = {**{t: i for t, i in vocab.items() if i < 3},
              **{b: 3 + k for k, b in enumerate(byte_tokens)},
              **{t: i + 256 for t, i in vocab.items() if i >= 3}}
    new = models.BPE(vocab=merged, merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                           for m in state["merges"]],
                     byte_fallback=True, unk_token="<unk>", fuse_unk=True)
    tok.model = new
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_byte_fallback_vocabulary_is_written_as_llama_type(tmp_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tokenizer = byte_fallback_tokenizer()
    model = small("mistral", len(tokenizer))
    info = export.write_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="f16", name="mistral-small")
    assert info["tokenizer"] == "llama"
    fields = GGUFReader(str(tmp_path / "m.gguf")).fields
    types = fields["tokenizer.ggml.token_type"]
    kinds = [int(types.parts[i][0]) for i in types.data]
    assert kinds[3:259] == [6] * 256 and kinds[1] == 3  # BYTE tokens, <s> is CONTROL
    back = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in (SAMPLE, *TEXTS[:5]):
        assert back(text, add_special_tokens=False)["input_ids"] == \
            tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_llama3_rope_scaling_is_written_as_llama_cpp_rope_freqs(tokenizer, tmp_path):
    import math

    from gguf import GGUFReader
    from transformers import LlamaConfig, LlamaForCausalLM

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         rope_parameters=rope, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    export.write_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="f32", name="llama3-small")
    got = next(t for t in GGUFReader(str(tmp_path / "m.gguf")).tensors if t.name == "rope_freqs.weight")
    # llama.cpp's LlamaModel.generate_extra_tensors, typed out
    dim, old = 32, rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / rope["low_freq_factor"], old / rope["high_freq_factor"]
    want = []
    for freq in 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            want.append(1.0)
        elif wavelen > low_wavelen:
            want.append(rope["factor"])
        else:
            smooth = (old / wavelen - rope["low_freq_factor"]) / (rope["high_freq_factor"] - rope["low_freq_factor"])
            want.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    assert sorted(set(np.round(want, 3))) != [1.0]  # the three regimes all occur
    np.testing.assert_allclose(np.asarray(got.data, dtype=np.float64), want, rtol=1e-5)
