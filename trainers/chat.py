"""A loaded model to talk to: one conversation at a time, answers streamed as they are generated.

    chat = ChatModel.load("runs/3/../models/tiny", adapter="runs/3/adapter")
    for piece in chat.stream([{"role": "user", "content": "My card was charged twice"}]):
        print(piece, end="")

Built on the one generator (`trainers.generate`): the model is loaded by `load_model` (a LoRA adapter
merged in), the prompt rendered by `encode_prompts` (the chat template with `add_generation_prompt`,
its last 1,024 tokens kept) and answered by `generate_ids` with `eos_ids`, exactly as an evaluation
run answers a test item. So a greedy answer (temperature 0) is the answer `workbench eval` stores for
the same prompt, token for token. Streaming hands transformers' `generate` a streamer through a thin
view of the model, so `generate_ids` keeps deciding every generation setting. Used by the Playground
page, `workbench chat` and `workbench serve-model`; never opens the store.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from trainers import generate as G
from trainers import graphdecode
from trainers.config import ConfigError
from trainers.supervision import require_template

ROLES = ("system", "user", "assistant")
_DONE = object()


def check_messages(messages: list[dict]) -> list[dict]:
    """Plain {role, content} messages; a clear message for anything else."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError("messages: expected a non-empty list of {role, content} objects")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise ConfigError(f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ConfigError(f"messages[{i}].content: expected text, got {type(content).__name__}")
        clean.append({"role": m["role"], "content": content})
    return clean


class _Streamer:
    """transformers' streamer protocol: collects the new token ids of one row and hands them to a queue."""

    def __init__(self, out: queue.Queue):
        self.out, self.prompt_seen = out, False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate's first put is the prompt itself
            self.prompt_seen = True
            return
        self.out.put([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.out.put(_DONE)


class _Stop:
    """A stopping criterion that ends generation once the reader has gone away (closed the stream)."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _StreamingView:
    """The model as generate_ids sees it, with a streamer and a stop flag added to every `generate` call."""

    def __init__(self, model, streamer: _Streamer, stop: _Stop):
        self._model, self._streamer, self._stop = model, streamer, stop
        self.config = model.config

    def parameters(self):
        return self._model.parameters()

    def generate(self, **kwargs):
        from transformers import StoppingCriteriaList

        return self._model.generate(streamer=self._streamer, stopping_criteria=StoppingCriteriaList([self._stop]),
                                    **kwargs)


def _sampling(temperature: float, top_p: float) -> dict | None:
    if not 0 <= float(temperature) <= 10:
        raise ConfigError(f"temperature: {temperature!r}; expected 0 (greedy) up to 10")
    if not 0 < float(top_p) <= 1:
        raise ConfigError(f"top_p: {top_p!r}; expected a number above 0 and at most 1")
    return {"temperature": float(temperature), "top_p": float(top_p)} if float(temperature) > 0 else None


class ChatModel:
    """A base model (and adapter) loaded once, answering conversations; one generation at a time."""

    def __init__(self, model, tokenizer, *, name: str, base_model: str, adapter: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.name, self.base_model, self.adapter = name, base_model, adapter
        self.eos = G.eos_ids(model, tokenizer)
        self._lock = threading.Lock()
        self.last: dict = {}

    @classmethod
    def load(cls, base_model: str, adapter: str | None = None, device: str | None = None) -> ChatModel:
        """Loaded by trainers.generate.load_model (offline; a LoRA adapter merged into the weights)."""
        model, tokenizer = G.load_model(str(base_model), str(adapter) if adapter else None, device=device)
        require_template(tokenizer)
        name = Path(base_model).name or str(base_model)
        if adapter:
            name += f" + {Path(adapter).parent.name}/{Path(adapter).name}"
        return cls(model, tokenizer, name=name, base_model=str(base_model), adapter=str(adapter) if adapter else None)

    def render(self, messages: list[dict]) -> str:
        """The prompt text the model reads: the chat template applied, ready for the assistant's turn."""
        require_template(self.tokenizer)
        return self.tokenizer.apply_chat_template(check_messages(messages), tokenize=False,
                                                  add_generation_prompt=True)

    def encode(self, messages: list[dict]) -> list[int]:
        return G.encode_prompts(self.tokenizer, [check_messages(messages)])[0]

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None, totals: dict | None = None) -> Iterator[str]:
        """Text pieces as they are generated; joined they are the answer (decoded, outer spaces trimmed).

        After the last piece `self.last` (and `totals`, when given: a caller's own dict, safe when several
        threads share the model) holds {answer, new_tokens, seconds}. Closing the iterator early stops the
        generation at the next token.
        """
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 8192:
            raise ConfigError(f"max_new_tokens: {max_new_tokens!r}; expected a whole number from 1 to 8192")
        sampling = _sampling(temperature, top_p)
        encoded = [self.encode(messages)]
        with self._lock:
            if self.model is None:
                raise ConfigError(f"{self.name} was unloaded; load it again to ask it something")
            yield from self._stream(encoded, max_new_tokens, sampling, seed)
            if totals is not None:
                totals.update(self.last)

    def _stream(self, encoded: list[list[int]], max_new_tokens: int, sampling: dict | None,
                seed: int | None) -> Iterator[str]:
        out: queue.Queue = queue.Queue()
        stop = _Stop()
        view = _StreamingView(self.model, _Streamer(out), stop)
        failure: list[BaseException] = []
        started = time.monotonic()

        def run() -> None:
            try:
                if seed is not None:
                    torch.manual_seed(int(seed))
                if G.decode_mode(self.model, max_new_tokens, sampling=sampling) == "graphs" and \
                        graphdecode.fits(self.model, len(encoded[0]) + max_new_tokens):
                    self._graph_answer(encoded[0], max_new_tokens, out, stop)
                    return
                for _ in G.generate_ids(view, encoded, pad_id=self.tokenizer.pad_token_id, eos=self.eos,
                                        max_new_tokens=max_new_tokens, rows=1, sampling=sampling):
                    pass
            except BaseException as exc:  # handed to the reader, raised there
                failure.append(exc)
                out.put(_DONE)

        worker = threading.Thread(target=run, name="chat-generate", daemon=True)
        worker.start()
        ids: list[int] = []
        shown = ""
        try:
            while (item := out.get()) is not _DONE:
                ids.extend(item)
                text = self._decode(ids).lstrip()
                # hold back a half-decoded character and trailing spaces until the next token shows them
                ready = text.rstrip()
                if ready.endswith("\ufffd"):
                    ready = ready[:-1]
                if len(ready) > len(shown) and ready.startswith(shown):
                    yield ready[len(shown):]
                    shown = ready
        finally:
            stop.event.set()
            worker.join()
        if failure:
            raise failure[0]
        answer = self._decode(ids).strip()
        if answer != shown and answer.startswith(shown):
            yield answer[len(shown):]
        self.last = {"answer": answer, "new_tokens": G.new_token_count(ids, self.eos),
                     "seconds": round(time.monotonic() - started, 3)}

    def _graph_answer(self, prompt: list[int], max_new_tokens: int, out: queue.Queue, stop: _Stop) -> None:
        """A greedy answer on a GPU through trainers.graphdecode (the step replayed as a CUDA graph, as an
        evaluation decodes), each token handed to the reader as it comes; stops when the reader has gone."""
        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt], dtype=torch.long, device=device)

        def hand_over(tokens: list[int]) -> bool:
            out.put(tokens)
            return not stop.event.is_set()

        try:
            graphdecode.greedy(self.model, ids, torch.ones_like(ids), max_new_tokens=max_new_tokens,
                               pad_id=self.tokenizer.pad_token_id, eos=self.eos, on_token=hand_over)
        finally:
            out.put(_DONE)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def answer(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None) -> dict:
        """The whole answer at once: {answer, new_tokens, seconds}."""
        for _ in self.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             seed=seed):
            pass
        return dict(self.last)

    def memory_bytes(self) -> int:
        """Bytes held by the weights and buffers (the KV cache of a generation comes on top)."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)

    def close(self) -> None:
        """Drop the weights (the page's unload button); the object answers nothing afterwards."""
        with self._lock:
            self.model = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
