"""`workbench export-model` on a real (tiny, CPU) training run, checked by outside readers: the merged folder
loaded with plain transformers answers as base + adapter through peft; the GGUF file read with the gguf
package holds the merged weights (exactly at f32, to their precision at f16/bf16/q8_0) and transformers'
own GGUF loader answers as the merged model; the Modelfile's TEMPLATE, run by a Go-template interpreter
for the subset it uses, writes what the tokenizer's chat template writes. Exports refuse to overwrite and
leave nothing behind when they fail."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainers.test_trainer_fixtures import TINY, chat_records, one_thread, write_records
from trainers import export
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.data.importer import import_file
from workbench.models import export_model, runs

pytestmark = pytest.mark.slow
CONVERSATION = [{"role": "system", "content": "You answer support tickets."},
                {"role": "user", "content": "Where is my order?"},
                {"role": "assistant", "content": "It ships today."},
                {"role": "user", "content": "Thanks!\nAnd the refund for #1234?"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project with one finished LoRA run on the tiny base (trained in this process, a few steps at a high
    learning rate so the adapter changes the answers)."""
    from trainers import train

    before = one_thread()
    root = tmp_path_factory.mktemp("export")
    records = write_records(root / "tickets.jsonl", chat_records(40))
    with Store.open(root / "project") as store:
        import_file(store, records, "tickets")
        cfg = runs.default_config(store, **{**TINY, "tiny_layers": 1, "max_steps": 6, "learning_rate": 0.005,
                                            "eval_every": 100, "checkpoint_every": 100, "report_to": "none"})
        run_id = runs.prepare_run(store, "tickets", cfg)
        assert train.main([str(store.project.runs_dir / run_id)]) == 0
        runs.sync_runs(store)
        plan = export_model.plan_export(store, run_id, "merged", root / "unused")
    yield root, run_id, plan
    torch.set_num_threads(before)


def cli(capsys, *argv) -> dict:
    from workbench.cli.main import main

    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@torch.no_grad()
def greedy(model, tokenizer, n: int = 16) -> list[int]:
    """n argmax steps with a plain forward pass (no stop tokens, so both sides always make n tokens)."""
    ids = torch.tensor([tokenizer.apply_chat_template(CONVERSATION[:2], add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"]])
    for _ in range(n):
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, -n:].tolist()


def test_merged_folder_answers_like_base_plus_adapter(trained, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, run_id, plan = trained
    out = root / "merged"
    payload = cli(capsys, "export-model", run_id, "--format", "merged", "--out", str(out),
                  "--project", str(root / "project"), "--json")
    assert {"format", "path", "files", "bytes", "run", "seconds"} <= set(payload)
    assert payload["format"] == "merged" and payload["run"] == run_id and Path(payload["path"]) == out
    assert payload["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= set(payload["files"])

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(plan.base_model, dtype=torch.float32)
    ids = torch.tensor([tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base, plan.adapter).eval()
        peft_logits, merged_logits = peft_model(input_ids=ids).logits, merged(input_ids=ids).logits
    assert greedy(merged, tokenizer) == greedy(peft_model, tokenizer)
    torch.testing.assert_close(merged_logits, peft_logits, rtol=1e-4, atol=1e-4)
    assert (peft_logits - base_logits).abs().max() > 0.1  # the adapter matters, so the merge is tested
    base_tok = AutoTokenizer.from_pretrained(plan.base_model)
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == \
        base_tok.apply_chat_template(CONVERSATION, tokenize=False)

    project = str(root / "project")  # `workbench chat` answers alike from the run and from the merged folder
    ask = ["--prompt", CONVERSATION[1]["content"], "--max-new-tokens", "12", "--json", "--project", project]
    from_run = cli(capsys, "chat", "--run", run_id, *ask)
    from_folder = cli(capsys, "chat", "--base-model", str(out), *ask)
    assert (from_run["answer"], from_run["new_tokens"]) == (from_folder["answer"], from_folder["new_tokens"])

    readme = (out / "README.md").read_text()
    assert run_id in readme and plan.dataset["content_hash"] in readme and "tickets" in readme
    for tool in ("from_pretrained", "vllm serve", "convert_hf_to_gguf"):
        assert tool in readme


def _gguf_tensors(path: Path) -> dict:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dimensions innermost first
        out[t.name] = (dequantize(t.data, t.tensor_type).reshape(shape), t.tensor_type.name)
    return out


def _expected(merged, n_layers: int, heads: int, kv_heads: int) -> dict:
    """The merged weights under llama.cpp's names (the name table typed out from its llama converter)."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for i in range(n_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    state = merged.state_dict()
    return {gg: state[hf].detach().numpy() for hf, gg in names.items()}


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    # transformers' own reverse of llama.cpp's permutation (modeling_gguf_pytorch_utils)
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    return LlamaTensorProcessor()._reverse_permute_weights(w, n_head, n_head)


def test_gguf_f32_holds_the_merged_weights_and_answers_like_them(trained, capsys):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, run_id, plan = trained
    out = root / "gguf32"
    payload = cli(capsys, "export-model", run_id, "--format", "gguf", "--dtype", "f32", "--out", str(out),
                  "--project", str(root / "project"), "--json")
    gguf_file = out / payload["gguf"]
    assert gguf_file.exists() and {payload["gguf"], "README.md", "export.json"} == set(payload["files"])
    merged = export.merged_model(plan.base_model, plan.adapter)
    cfg = merged.config
    got = _gguf_tensors(gguf_file)
    want = _expected(merged, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    assert set(got) == set(want)  # tied embeddings: no output.weight, as llama.cpp writes it
    for name, value in want.items():
        data, kind = got[name]
        assert kind == "F32"
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            data = _unpermute(data, cfg.num_attention_heads)
        np.testing.assert_array_equal(data, value, err_msg=name)

    reader = GGUFReader(str(gguf_file))
    field = reader.fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == AutoTokenizer.from_pretrained(plan.base_model).chat_template

    tokenizer = AutoTokenizer.from_pretrained(plan.base_model)
    from_gguf = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=payload["gguf"], dtype=torch.float32)
    assert greedy(from_gguf, tokenizer, 24) == greedy(merged, tokenizer, 24)
    gguf_tok = AutoTokenizer.from_pretrained(str(out), gguf_file=payload["gguf"])
    text = export.CHECK_TEXT + tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert gguf_tok(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_gguf_smaller_types_hold_the_weights_to_their_precision(trained, dtype):
    root, run_id, plan = trained
    plan = export_model.ExportPlan(**{**plan.__dict__, "format": "gguf", "dtype": dtype, "out": root / f"g-{dtype}"})
    payload = export_model.run_export(plan)
    merged = export.merged_model(plan.base_model, plan.adapter)
    cfg = merged.config
    got = _gguf_tensors(plan.out / payload["gguf"])
    for name, value in _expected(merged, cfg.num_hidden_layers, cfg.num_attention_heads, 0).items():
        data, kind = got[name]
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            data = _unpermute(data, cfg.num_attention_heads)
        if value.ndim == 1:
            assert kind == "F32"
            np.testing.assert_array_equal(data, value)
        elif dtype == "f16":
            assert kind == "F16"
            np.testing.assert_array_equal(data, value.astype(np.float16).astype(np.float32))
        elif dtype == "bf16":
            assert kind == "BF16"
            np.testing.assert_array_equal(data, torch.from_numpy(value).bfloat16().float().numpy())
        else:  # Q8_0: blocks of 32, one f16 scale d = max |x| / 127: error <= d/2 + 127 * (d rounded to f16)
            assert kind == "Q8_0"
            step = np.abs(value.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            bound = step * (0.5 + 127 * 2.0 ** -11) + 1e-8
            assert (np.abs(data.reshape(-1, 32) - value.reshape(-1, 32)) <= bound).all(), name


# ---------------------------------------------------------------- a Go text/template interpreter (the subset)

def go_render(template: str, messages: list[dict]) -> str:
    """Go text/template semantics for what a Modelfile TEMPLATE of ours uses: text, {{ .Content }}, {{ .Role }},
    range .Messages, if / else if / else / end with eq, and, index and parentheses."""
    parts = re.split(r"(\{\{-?\s*.*?\s*-?\}\})", template, flags=re.S)
    tokens = []
    for p in parts:
        if p.startswith("{{"):
            tokens.append(("action", p.strip("{}-").strip()))
        elif p:
            tokens.append(("text", p))
    pos, tree = _parse(tokens, 0)
    assert pos == len(tokens)
    return _run(tree, {"Messages": messages}, {"Messages": messages})


def _parse(tokens, pos, stop=("end",)):
    nodes = []
    while pos < len(tokens):
        kind, value = tokens[pos]
        if kind == "text":
            nodes.append(("text", value))
            pos += 1
        elif value in ("end", "else") or value.startswith("else if "):
            return pos, nodes
        elif value.startswith("range "):
            pos, body = _parse(tokens, pos + 1)
            assert tokens[pos][1] == "end"
            nodes.append(("range", value[6:], body))
            pos += 1
        elif value.startswith("if "):
            branches, cond = [], value[3:]
            while True:
                pos, body = _parse(tokens, pos + 1)
                branches.append((cond, body))
                action = tokens[pos][1]
                if action == "end":
                    break
                cond = action[8:] if action.startswith("else if ") else "true"
            nodes.append(("if", branches))
            pos += 1
        else:
            nodes.append(("expr", value))
            pos += 1
    return pos, nodes


def _run(nodes, dot, root) -> str:
    out = ""
    for node in nodes:
        if node[0] == "text":
            out += node[1]
        elif node[0] == "expr":
            out += str(_eval(node[1], dot, root))
        elif node[0] == "range":
            for item in _eval(node[1], dot, root):
                out += _run(node[2], item, root)
        else:
            for cond, body in node[1]:
                if cond == "true" or _eval(cond, dot, root):
                    out += _run(body, dot, root)
                    break
    return out


def _eval(expr: str, dot, root):
    words = re.findall(r'\((?:[^()]|\([^()]*\))*\)(?:\.\w+)*|"[^"]*"|\S+', expr.strip())
    if len(words) == 1:
        w = words[0]
        if w.startswith('"'):
            return w[1:-1]
        if w.isdigit():
            return int(w)
        if w.startswith("("):
            inner, _, rest = w[1:].rpartition(")")
            value = _eval(inner, dot, root)
            for key in filter(None, rest.split(".")):
                value = value[key.lower()] if isinstance(value, dict) and key.lower() in value else value[key]
            return value
        value = dot
        for key in filter(None, w.split(".")):
            value = value[key] if key in value else value[key.lower()]
        return value
    fn, args = words[0], [_eval(a, dot, root) for a in words[1:]]
    if fn == "eq":
        return args[0] == args[1]
    if fn == "and":
        return all(args)
    if fn == "index":
        return args[0][args[1]]
    raise AssertionError(f"not in the subset: {expr}")


def test_ollama_modelfile_template_renders_the_chat_template(trained, capsys):
    from transformers import AutoTokenizer

    root, run_id, plan = trained
    out = root / "ollama"
    payload = cli(capsys, "export-model", run_id, "--format", "ollama", "--dtype", "q8_0", "--out", str(out),
                  "--project", str(root / "project"), "--json")
    text = (out / "Modelfile").read_text()
    assert text.startswith(f"FROM ./{payload['gguf']}\n") and (out / payload["gguf"]).exists()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, flags=re.S | re.M).group(1)
    tokenizer = AutoTokenizer.from_pretrained(plan.base_model)
    for conv in (CONVERSATION, CONVERSATION[1:]):  # two turns, with and without a system message
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert go_render(template, [{"Role": m["role"], "Content": m["content"]} for m in conv]) == want
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text
    assert payload["ollama_create"] == f"ollama create {export_model.model_name(plan)} -f {out / 'Modelfile'}"
    assert "ollama create" in (out / "README.md").read_text()


def test_go_interpreter_handles_a_default_system_prompt():
    """The interpreter itself, on the branch our template uses when a template adds a default system prompt."""
    template = ('{{ if and .Messages (eq (index .Messages 0).Role "system") }}{{ else }}<s>DEFAULT</s>{{ end }}'
                '{{ range .Messages }}{{ if eq .Role "system" }}<s>{{ .Content }}</s>{{ else if eq .Role "user" }}'
                '<u>{{ .Content }}</u>{{ end }}{{ end }}<a>')
    assert go_render(template, [{"Role": "user", "Content": "hi"}]) == "<s>DEFAULT</s><u>hi</u><a>"
    assert go_render(template, [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "hi"}]) == \
        "<s>S</s><u>hi</u><a>"


QWEN_LIKE = ("{%- if messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
             "{%- else %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{%- endif %}"
             "{%- for message in messages %}{%- if message.role != 'system' %}<|im_start|>{{ message.role }}\n"
             "{{ message.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
             "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")


def test_modelfile_template_keeps_a_default_system_prompt(trained):
    """A Qwen2.5-style template writes a default system prompt when the conversation has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained[2].base_model)
    tokenizer.chat_template = QWEN_LIKE
    text, templated = export.modelfile("m.gguf", tokenizer, None, context=32768)
    assert templated and "PARAMETER num_ctx 4096" in text
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, flags=re.S | re.M).group(1)
    for conv in (CONVERSATION, CONVERSATION[1:]):
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert go_render(template, [{"Role": m["role"], "Content": m["content"]} for m in conv]) == want
    assert "helpful assistant" in want


# ---------------------------------------------------------------- overwriting and atomicity

def test_refuses_to_overwrite_without_force_and_only_replaces_an_export(trained):
    root, run_id, plan = trained
    target = root / "twice"
    first = export_model.ExportPlan(**{**plan.__dict__, "out": target})
    export_model.run_export(first)
    with Store.open(root / "project") as store:
        with pytest.raises(WorkbenchError, match="already exists.*--force"):
            export_model.plan_export(store, run_id, "merged", target)
        again = export_model.plan_export(store, run_id, "gguf", target, force=True)
        other = root / "not-an-export"
        other.mkdir()
        (other / "precious.txt").write_text("keep me")
        with pytest.raises(WorkbenchError, match="not an earlier export"):
            export_model.plan_export(store, run_id, "merged", other, force=True)
        with pytest.raises(WorkbenchError, match="q8_0 is a GGUF type"):
            export_model.plan_export(store, run_id, "merged", root / "x", dtype="q8_0")
        with pytest.raises(WorkbenchError, match="no run named"):
            export_model.plan_export(store, "nope", "merged", root / "x")
    assert (other / "precious.txt").read_text() == "keep me"
    export_model.run_export(again)
    assert export_model.MANIFEST in {p.name for p in target.iterdir()}
    assert any(p.suffix == ".gguf" for p in target.iterdir()) and not (target / "model.safetensors").exists()


def test_a_failed_export_leaves_nothing_behind(trained):
    """A base whose chat template writes '{{' cannot become a Modelfile TEMPLATE: the export fails after the GGUF
    file was written, and neither the folder nor a side folder remains."""
    root, run_id, plan = trained
    base = root / "odd-base"
    shutil.copytree(plan.base_model, base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    odd = "{{ '{{' }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    (base / "chat_template.jinja").unlink(missing_ok=True)
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": odd}))
    target = root / "failed"
    failing = export_model.ExportPlan(**{**plan.__dict__, "format": "ollama", "dtype": "f32", "out": target,
                                         "base_model": str(base)})
    with pytest.raises(WorkbenchError, match="TEMPLATE"):
        export_model.run_export(failing)
    assert not target.exists()
    assert [p.name for p in root.iterdir() if p.name.startswith("failed")] == []


# ---------------------------------------------------------------- the Export section of the Train page

def test_export_section_writes_the_chosen_format(trained, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root, run_id, _ = trained
    pages = Path(__file__).resolve().parents[2] / "pages"
    monkeypatch.setenv("WORKBENCH_PROJECT", str(root / "project"))
    script = (f"import sys\nsys.path.insert(0, {str(pages)!r})\nimport wb_ui, train_export\n"
              f"train_export.render_export(wb_ui.get_store(), {run_id!r})\n")
    at = AppTest.from_string(script, default_timeout=60).run()
    try:
        assert not at.exception, [e.value for e in at.exception]
        assert all(w.help for w in [*at.selectbox, *at.text_input, *at.checkbox, *at.button])
        at.selectbox(key=f"export_fmt_{run_id}").set_value("ollama").run()
        at.selectbox(key=f"export_dtype_{run_id}").set_value("q8_0").run()
        out = root / "from-page"
        at.text_input(key=f"export_out_{run_id}_ollama").set_value(str(out)).run()
        at.button(key=f"export_go_{run_id}").click().run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        assert "ollama create" in at.code[0].value and (out / "Modelfile").exists()
        assert export_model.MANIFEST in at.code[1].value
        at.button(key=f"export_go_{run_id}").click().run()  # the same folder again: refused, shown as an error
        assert "already exists" in at.error[0].value
    finally:
        st.cache_resource.clear()  # closes the app's store
