"""Exports of a trained adapter that serving tools load: base + adapter merged into a plain transformers
folder, one GGUF file (llama.cpp, Ollama, LM Studio), and an Ollama Modelfile.

The GGUF file is written with the `gguf` package (llama.cpp's own Python writer) following what llama.cpp's
`convert_hf_to_gguf.py` writes for the same model: its tensor names (gguf's TensorNameMap), the Q/K row
permutation of the Llama architecture, 1-D tensors kept in f32, the vocabulary as llama.cpp expects it for
the tokenizer's type (byte-level BPE as `gpt2`, byte-fallback BPE as `llama`) and the chat template.
Never opens the project's database: it reads model folders and writes into the folder it is given.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.config import ConfigError

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Arch:
    gguf_arch: str        # general.architecture
    permute_qk: bool      # llama.cpp stores Llama's q/k rows interleaved for its rope


ARCHITECTURES = {
    "LlamaForCausalLM": Arch("llama", True),
    "MistralForCausalLM": Arch("llama", True),  # llama.cpp runs Mistral as a Llama
    "Qwen2ForCausalLM": Arch("qwen2", False),
}
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
MERGED_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------- merging

def merged_model(base_path: str, adapter_dir: str | Path, progress: Progress | None = None):
    """Base + adapter with the adapter folded into the weights (peft merge_and_unload), in float32."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _say(progress, 0.02, "loading the base model")
    with _quiet():
        try:
            base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, local_files_only=True)
        except OSError as exc:
            raise ConfigError(f"cannot load the base model {base_path!r}: {str(exc).splitlines()[0][:200]}") from None
        _say(progress, 0.15, "merging the adapter")
        model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    model.eval()
    return model


@contextmanager
def _quiet():
    """No library progress bars or FutureWarnings over our own progress line."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def saved_dtype(base_path: str) -> str:
    """The dtype the base model's weights are saved in (its config), as f32, f16 or bf16."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_path, local_files_only=True)
    saved = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return {"float16": "f16", "bfloat16": "bf16"}.get(saved.removeprefix("torch."), "f32")


def write_merged(model, tokenizer, folder: Path, dtype: str | None = None) -> None:
    """A plain transformers folder: safetensors weights, config, generation config, tokenizer, chat template."""
    if dtype is not None:
        if dtype not in MERGED_DTYPES:
            raise ConfigError(f"dtype {dtype!r} for a merged folder; expected one of {', '.join(MERGED_DTYPES)}")
        model = model.to(MERGED_DTYPES[dtype])
    folder.mkdir(parents=True, exist_ok=True)
    with _quiet():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------- GGUF

def _arch(model) -> Arch:
    names = list(getattr(model.config, "architectures", None) or [type(model).__name__])
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ConfigError(f"GGUF export knows {', '.join(ARCHITECTURES)}; this model is {', '.join(names)}. Export "
                      "--format merged and convert it with llama.cpp's convert_hf_to_gguf.py")


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for Llama's q/k projections (convert_hf_to_gguf.py LlamaModel.permute)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def unpermute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_qk (what a reader does to get the transformers layout back)."""
    return (weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _qtype(dtype: str, array: np.ndarray):
    """The GGML type a tensor is stored as: 1-D tensors (norms, biases) stay f32, as llama.cpp keeps them."""
    from gguf import GGMLQuantizationType as Q

    if array.ndim <= 1 or dtype == "f32":
        return Q.F32
    if dtype == "q8_0" and array.shape[-1] % 32:  # Q8_0 works on blocks of 32; llama.cpp falls back to f16
        return Q.F16
    return {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[dtype]


def _hparams(config) -> dict:
    heads = config.num_attention_heads
    rope = {**(getattr(config, "rope_scaling", None) or {}), **(getattr(config, "rope_parameters", None) or {})}
    scaling = rope.get("rope_type") or rope.get("type") or "default"
    if scaling not in ("default", "linear", "llama3"):
        raise ConfigError(f"rope scaling {scaling!r} is not written by this GGUF export yet; export --format merged "
                          "and convert it with llama.cpp's convert_hf_to_gguf.py")
    return {
        "heads": heads, "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "theta": rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)),
        "scaling": scaling, "factor": rope.get("factor"),
    }


def rope_factors(model, hp: dict) -> np.ndarray:
    """Llama 3.1-style rope scaling as llama.cpp stores it: per frequency, the divisor of the plain rope
    frequency (`rope_freqs.weight`), here read off the scaled frequencies the model itself uses."""
    dim = hp["head_dim"]
    plain = 1.0 / (float(hp["theta"]) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaled = model.model.rotary_emb.inv_freq.detach().float().cpu()
    return (plain / scaled).numpy().astype(np.float32)


def write_gguf(model, tokenizer, path: Path, *, dtype: str = "f16", name: str = "model",
               progress: Progress | None = None) -> dict:
    """One GGUF file with the merged weights, the tokenizer and the chat template; returns what it wrote."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ConfigError(f"dtype {dtype!r} for GGUF; expected one of {', '.join(GGUF_DTYPES)}")
    arch = _arch(model)
    config = model.config
    hp = _hparams(config)
    writer = gguf.GGUFWriter(str(path), arch.gguf_arch)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(hp["heads"])
    writer.add_head_count_kv(hp["kv_heads"])
    writer.add_rope_dimension_count(hp["head_dim"])
    writer.add_rope_freq_base(float(hp["theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    if hp["scaling"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(hp["factor"]))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    vocab = add_tokenizer(writer, tokenizer, config.vocab_size)
    tensors = _add_tensors(writer, model, arch, hp, dtype, progress)
    if hp["scaling"] == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_factors(model, hp))
        tensors += 1
    _say(progress, 0.9, f"writing {path.name}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch.gguf_arch, "tensors": tensors, "tokenizer": vocab}


def _add_tensors(writer, model, arch: Arch, hp: dict, dtype: str, progress: Progress | None) -> int:
    import gguf

    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    names = [n for n in state if not (tied and n == "lm_head.weight") and not n.endswith("rotary_emb.inv_freq")]
    arch_enum = next(a for a, s in gguf.MODEL_ARCH_NAMES.items() if s == arch.gguf_arch)
    mapping = gguf.get_tensor_name_map(arch_enum, model.config.num_hidden_layers)
    for i, hf_name in enumerate(names):
        new_name = mapping.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ConfigError(f"no GGUF name for tensor {hf_name!r} of a {arch.gguf_arch} model")
        data = state[hf_name].detach().to(torch.float32).cpu().numpy()
        if arch.permute_qk and new_name.endswith("attn_q.weight"):
            data = permute_qk(data, hp["heads"])
        elif arch.permute_qk and new_name.endswith("attn_k.weight"):
            data = permute_qk(data, hp["kv_heads"])
        qtype = _qtype(dtype, data)
        stored = gguf.quants.quantize(data, qtype)
        writer.add_tensor(new_name, stored, raw_dtype=qtype)
        _say(progress, 0.3 + 0.6 * (i + 1) / len(names), f"converting {new_name}")
    return len(names)


# ---------------------------------------------------------------- the tokenizer in GGUF

# llama.cpp names the pre-tokenizer (how text is split before BPE) by hashing the ids of one test text
# (convert_hf_to_gguf.py get_vocab_base_pre); these are the known tokenizers of the supported families.
CHECK_TEXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 '
              '33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
              '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s '
              'there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
KNOWN_PRE = {
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
}
# The split rules llama.cpp implements under those names, to recognise a tokenizer trained from scratch.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def pre_tokenizer_name(tokenizer, spec: dict) -> str:
    ids = tokenizer.encode(CHECK_TEXT)
    found = KNOWN_PRE.get(hashlib.sha256(str(ids).encode()).hexdigest())
    if found:
        return found
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"  # the ByteLevel pre-tokenizer's own regex is GPT-2's
    splits = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if len(splits) == 1 and kinds[-1] == "ByteLevel" and not parts[-1].get("use_regex", True):
        named = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}.get(splits[0])
        if named:
            return named
    raise ConfigError(f"the tokenizer's pre-tokenizer ({', '.join(map(str, kinds))}) is not one llama.cpp knows by "
                      "name; export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py")


def add_tokenizer(writer, tokenizer, n_vocab: int) -> str:
    """The vocabulary under llama.cpp's keys: `gpt2` for byte-level BPE, `llama` for byte-fallback BPE."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ConfigError(f"GGUF export handles BPE tokenizers; this one is {model.get('type')!r}")
    if model.get("byte_fallback"):
        _add_llama_vocab(writer, tokenizer, n_vocab)
        kind = "llama"
    else:
        _add_gpt2_vocab(writer, tokenizer, spec, n_vocab)
        kind = "gpt2"
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{role}_token_id")(int(token_id))
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(adds_bos(tokenizer))
    writer.add_add_eos_token(bool(tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id]))
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)
    return kind


def adds_bos(tokenizer) -> bool:
    """Whether encoding puts the BOS token first (then llama.cpp and Ollama add it; a template must not)."""
    return tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def _token_list(tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    """Every id's token text and llama.cpp token type (get_vocab_base): special added tokens are CONTROL."""
    from gguf import TokenType

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            looks_special = reverse[i].startswith("<|") and reverse[i].endswith("|>")
            types.append(TokenType.CONTROL if added[i].special or looks_special else TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(TokenType.NORMAL)
    return tokens, types


def _add_gpt2_vocab(writer, tokenizer, spec: dict, n_vocab: int) -> None:
    tokens, types = _token_list(tokenizer, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer, spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = spec["model"].get("merges") or []
    # tokenizer.json writes a merge as "a b" or, since 2024, as ["a", "b"]; llama.cpp wants "a b" with a
    # space inside a part written as U+0120 (as gguf.SpecialVocab does)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(p.replace(" ", "\u0120") for p in m)
                             for m in merges])


def _add_llama_vocab(writer, tokenizer, n_vocab: int) -> None:
    """Byte-fallback BPE (Llama 2, Mistral): tokens with scores; a merge's score is minus its rank."""
    from gguf import TokenType

    tokens, types = _token_list(tokenizer, n_vocab)
    types = [TokenType.BYTE if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t) else k for t, k in zip(tokens, types)]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) if k == TokenType.NORMAL else -1000.0 for i, k in enumerate(types)])
    writer.add_token_types(types)


# ---------------------------------------------------------------- Ollama

GO_SPECIAL = re.compile(r"\{\{|\}\}")
MARK = {"system": "\x01SYSTEM\x01", "user": "\x01USER{}\x01", "assistant": "\x01ASSISTANT{}\x01"}


@dataclass
class ChatShape:
    """A chat template seen as text around each message: start, per role prefix/suffix, generation prompt."""
    start: str            # before the first message when the conversation has no system message
    start_system: str     # before the system message
    prefix: dict
    suffix: dict
    generation: str

    def render(self, messages: list[dict]) -> str:
        out = self.start_system if messages and messages[0]["role"] == "system" else self.start
        for m in messages:
            out += self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]]
        return out + self.generation


def chat_shape(tokenizer) -> ChatShape | None:
    """The template's text around messages, found by rendering marked conversations; None when the
    template is not that simple (it rewrites contents, or depends on position), checked on several."""
    def render(messages, gen=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    u1, u2, a1, s = MARK["user"].format(1), MARK["user"].format(2), MARK["assistant"].format(1), MARK["system"]
    user, pair = [{"role": "user", "content": u1}], [{"role": "user", "content": u1},
                                                      {"role": "assistant", "content": a1}]
    try:
        r1, r2 = render(user), render(pair)
        r3 = render(pair + [{"role": "user", "content": u2}])
        gen = render(user, True)
        rs = render([{"role": "system", "content": s}] + user)
        head, tail_u = r1.split(u1)
        pa, sa = r2[len(r1):].split(a1)
        pu = r3[len(r2):].split(u2)[0]
        before_s, after_s = rs.split(s)
        between = after_s.split(u1)[0]
    except Exception:  # a template that refuses a role or an order, or rewrites the marks
        return None
    if not (r2.startswith(r1) and r3.startswith(r2) and head.endswith(pu) and between.endswith(pu)
            and gen.startswith(r1)):
        return None
    ss = between[: len(between) - len(pu)]
    start = head[: len(head) - len(pu)]
    start_s, ps = (start, before_s[len(start):]) if before_s.startswith(start) else ("", before_s)
    shape = ChatShape(start, start_s, {"system": ps, "user": pu, "assistant": pa},
                      {"system": ss, "user": tail_u, "assistant": sa}, gen[len(r1):])
    return shape if _shape_holds(shape, render) else None


def _shape_holds(shape: ChatShape, render) -> bool:
    convs = [
        [{"role": "user", "content": "Hi there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"},
         {"role": "assistant", "content": "It ships today."}, {"role": "user", "content": "Thanks!\nAnd the refund?"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ]
    try:
        return all(shape.render(c) == render(c, True) for c in convs)
    except Exception:
        return False


def go_template(shape: ChatShape) -> str:
    """The same text as an Ollama (Go text/template) TEMPLATE over .Messages."""
    def lit(text: str) -> str:
        if GO_SPECIAL.search(text) or '"""' in text:
            raise ConfigError("the chat template's text contains '{{', '}}' or '\"\"\"', which a Modelfile "
                              "TEMPLATE cannot hold as plain text")
        return text

    out = ""
    if shape.start != shape.start_system:
        out += (f'{{{{ if and .Messages (eq (index .Messages 0).Role "system") }}}}{lit(shape.start_system)}'
                f"{{{{ else }}}}{lit(shape.start)}{{{{ end }}}}")
    else:
        out += lit(shape.start)
    out += "{{ range .Messages }}"
    for i, role in enumerate(("system", "user", "assistant")):
        out += f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}'
        out += f"{lit(shape.prefix[role])}{{{{ .Content }}}}{lit(shape.suffix[role])}"
    return out + "{{ end }}{{ end }}" + lit(shape.generation)


def stop_tokens(tokenizer, generation_config, shape: ChatShape | None) -> list[str]:
    ids = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids = ids if isinstance(ids, list) else [ids]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    stops = [tokenizer.convert_ids_to_tokens(int(i)) for i in ids]
    if shape is not None and shape.suffix["assistant"].strip():
        stops.append(shape.suffix["assistant"].strip())
    return list(dict.fromkeys(s for s in stops if s))


def modelfile(gguf_name: str, tokenizer, generation_config, *, context: int) -> tuple[str, bool]:
    """The Modelfile text and whether it carries a TEMPLATE (else Ollama reads the GGUF's chat template)."""
    shape = chat_shape(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    if shape is not None and adds_bos(tokenizer):  # the runtime adds BOS itself: not twice
        shape.start = shape.start.removeprefix(tokenizer.bos_token)
        shape.start_system = shape.start_system.removeprefix(tokenizer.bos_token)
    lines = [f"FROM ./{gguf_name}", ""]
    if shape is not None:
        lines += [f'TEMPLATE """{go_template(shape)}"""', ""]
    for stop in stop_tokens(tokenizer, generation_config, shape):
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    sample = bool(getattr(generation_config, "do_sample", False))
    temperature = getattr(generation_config, "temperature", None) if sample else 0
    lines.append(f"PARAMETER temperature {temperature if temperature is not None else 0}")
    if sample and getattr(generation_config, "top_p", None) is not None:
        lines.append(f"PARAMETER top_p {generation_config.top_p}")
    lines.append(f"PARAMETER num_ctx {min(int(context), 4096)}")
    return "\n".join(lines) + "\n", shape is not None


def _say(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)
