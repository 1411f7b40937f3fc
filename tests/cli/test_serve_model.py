"""`workbench serve-model` on a free local port, exercised with the official `openai` client: the model list,
a plain answer (the one trainers.generate gives for the same prompt, with its token counts), the same
answer streamed in pieces, and OpenAI-shaped errors for an unknown model and a bad message."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "My card was charged twice for one order"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_base(folder: Path) -> None:
    """A tiny random model saved as a base folder; a random LoRA merged in, so greedy answers are not blank."""
    import peft
    import torch

    from tests.trainers.test_trainer_fixtures import chat_records, tiny_config
    from trainers import tiny

    cfg = tiny_config(folder.parent)
    tok = tiny.train_tokenizer((m["content"] for r in chat_records(40, seed=3) for m in r["messages"]), cfg.tiny_vocab)
    model = tiny.random_model(cfg, tok, seed=1)
    torch.manual_seed(1)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                       init_lora_weights=False, task_type="CAUSAL_LM"))
    model = model.merge_and_unload()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.trainers.test_trainer_fixtures import one_thread
    from trainers import generate as G

    before = one_thread()
    root = tmp_path_factory.mktemp("serve")
    random_base(root / "base")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", "serve-model", "--base-model",
                               str(root / "base"), "--name", "tiny-test", "--port", str(port), "--device", "cpu",
                               "--project", str(root / "p"), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = server.stdout.readline()
        assert line, server.stderr.read()
        info = json.loads(line)
        loaded, tokenizer = G.load_model(str(root / "base"), device="cpu")
        client = openai.OpenAI(base_url=info["url"], api_key="unused", max_retries=0, timeout=120)
        yield client, info, loaded, tokenizer
    finally:
        server.terminate()
        server.wait(timeout=30)
        import torch

        torch.set_num_threads(before)


def test_models_are_listed(served):
    client, info, _, _ = served
    assert info["url"].startswith("http://127.0.0.1:")
    assert [m.id for m in client.models.list().data] == ["tiny-test"]


def test_plain_and_streamed_answers_are_the_generators(served):
    from trainers import generate as G

    client, _, model, tokenizer = served
    want = G.generate(model, tokenizer, [MESSAGES], max_new_tokens=10, batch_size=1)[0]
    done = client.chat.completions.create(model="tiny-test", messages=MESSAGES, max_tokens=10, temperature=0)
    assert done.object == "chat.completion" and done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content == want
    prompt_tokens = len(G.encode_prompts(tokenizer, [MESSAGES])[0])
    assert done.usage.prompt_tokens == prompt_tokens
    assert done.usage.total_tokens == prompt_tokens + done.usage.completion_tokens
    assert done.choices[0].finish_reason == ("length" if done.usage.completion_tokens == 10 else "stop")
    chunks = list(client.chat.completions.create(model="tiny-test", messages=MESSAGES, max_tokens=10, stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert want and len(pieces) > 1 and "".join(pieces) == want, (want, chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == done.choices[0].finish_reason


def test_errors_come_back_in_openais_shape(served):
    client, _, _, _ = served
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES, max_tokens=4)
    assert err.value.status_code == 404 and "gpt-9" in err.value.message and "tiny-test" in err.value.message
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-test", messages=[{"role": "bot", "content": "hi"}], max_tokens=4)
    assert "role" in bad.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=MESSAGES, max_tokens=4, stream=True)
