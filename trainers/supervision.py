"""Which tokens carry a loss: the one definition, used by training (trainers.data) and by token counting
(workbench.inspect.tokens, the pre-flight and the Inspect page).

A record is rendered with the tokenizer's chat template. An assistant turn is the character span from
the end of the prompt that asks for it (`add_generation_prompt=True`) to the end of the text that
includes the turn, so the end-of-turn marker is supervised too and the model learns to stop
(`render_spans`; `ChatRenderer` gives the same result fast over many records). A token is supervised
when its first character lies in an assistant span (`token_spans`), except a record's first token,
which nothing predicts. Pure functions of a tokenizer: no store, no model.
"""

from __future__ import annotations

import secrets
from bisect import bisect_left

from trainers.config import ConfigError

IGNORE = -100
VERIFY_RECORDS = 8  # records of each conversation shape rendered both ways before trusting the fast path
SUGGESTED_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


class TemplateError(ConfigError):
    """The tokenizer has no chat template, or its template does not render a conversation turn by turn."""


def require_template(tokenizer) -> None:
    """A clear message, with a template to start from, when the tokenizer has no chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise TemplateError(
            "the model's tokenizer has no chat template, so prompts and answers cannot be told apart; use an "
            "instruction-tuned model, the 'tiny' base, or add a template to the folder's tokenizer_config.json "
            f"(\"chat_template\"), for example ChatML: {SUGGESTED_TEMPLATE} (its markers should be special tokens "
            "of the tokenizer, and <|im_end|> its end-of-sequence token)")


def render_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(text, assistant character spans) of a conversation: the chat template called for every prefix."""
    require_template(tokenizer)
    apply = tokenizer.apply_chat_template
    full = apply(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = apply(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = full if i + 1 == len(messages) else apply(messages[: i + 1], tokenize=False)
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise TemplateError("the chat template does not render a conversation turn by turn (it rewrites earlier "
                                "turns), so assistant tokens cannot be located; train on single-turn records")
        spans.append((len(prefix), len(upto)))
    return full, spans


def token_spans(starts: list[int], char_spans: list[tuple[int, int]], text_len: int) -> list[tuple[int, int]]:
    """Supervised token ranges [start, stop): the tokens whose first character (`starts`, in order) lies in an
    assistant character span; the first token never counts."""
    out = []
    for a, b in char_spans:
        start = max(_first_at(starts, a, text_len), 1)
        stop = _first_at(starts, b, text_len)
        if stop > start:
            out.append((start, stop))
    return out


def _first_at(starts: list[int], pos: int, text_len: int) -> int:
    return len(starts) if pos >= text_len else bisect_left(starts, pos)


def labels_for(ids: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """Training labels: the token where supervised, IGNORE elsewhere."""
    labels = [IGNORE] * len(ids)
    for a, b in spans:
        labels[a:b] = ids[a:b]
    return labels


class ChatRenderer:
    """(text, assistant character spans) of a conversation: `render_spans`, fast on many records.

    Calling the chat template costs about 0.1 ms; three calls a record would dominate counting a
    million records. So each conversation shape (its sequence of roles) is rendered once with
    marker contents, and the template's text between the contents is kept; a record is then filled
    in by string joins. A shape takes this fast path only when the markers come out verbatim (the
    template neither trims nor escapes contents) and every prefix the spans need is a prefix of the
    whole; otherwise, and for contents a trimming template would change, the template itself is
    called. tests/inspect/test_tokens.py checks both paths against the template on random conversations.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.template = getattr(tokenizer, "chat_template", None)
        self._shapes: dict[tuple[str, ...], tuple | None] = {}
        self._checked: dict[tuple[str, ...], int] = {}
        self._nonce = secrets.token_hex(4)

    def render(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        if not self.template:
            require_template(self.tokenizer)
        roles = tuple(m["role"] for m in messages)
        if roles not in self._shapes:
            self._shapes[roles] = self._compile(roles)
        shape = self._shapes[roles]
        contents = [m["content"] for m in messages]
        if shape is None or (shape[0] == "stripped" and any(c != c.strip() for c in contents)):
            return self.slow(messages)
        _, pieces, spans = shape
        text = pieces[0] + "".join(c + p for c, p in zip(contents, pieces[1:]))
        ends = [0]
        for c in contents:
            ends.append(ends[-1] + len(c))
        fast = text, [(ends[k0] + o0, ends[k1] + o1) for (k0, o0), (k1, o1) in spans]
        checked = self._checked.get(roles, 0)
        if checked < VERIFY_RECORDS:  # the first records of each shape are rendered both ways
            slow = self.slow(messages)
            if slow != fast:
                self._shapes[roles] = None
                return slow
            self._checked[roles] = checked + 1
        return fast

    def slow(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The chat template called per prefix (`render_spans`): the reference the fast path must equal."""
        return render_spans(self.tokenizer, messages)

    def _compile(self, roles: tuple[str, ...]):
        for kind, pad in (("any", " \n"), ("stripped", "")):
            shape = self._compile_with(roles, pad)
            if shape is not None:
                return (kind, *shape)
        return None

    def _compile_with(self, roles: tuple[str, ...], pad: str):
        # Quotes, backslash, markup and control characters inside the marker: a template that escapes
        # contents (tojson, e) cannot render it verbatim, so such a template never takes the fast path.
        marks = [f"{pad}\u27e6wb{self._nonce}:{i} \"'\\<&>\n\t\x08\u27e7{pad[::-1]}" for i in range(len(roles))]
        msgs = [{"role": r, "content": m} for r, m in zip(roles, marks)]
        try:
            full, char_spans = self.slow(msgs)
        except Exception:  # a template that rejects this shape: the slow path will say so per record
            return None
        pieces, pos = [], 0
        starts = []
        for mark in marks:
            at = full.find(mark, pos)
            if at < 0 or full.find(mark, at + 1) >= 0:
                return None
            pieces.append(full[pos:at])
            starts.append(at)
            pos = at + len(mark)
        pieces.append(full[pos:])
        if any(m in p for p in pieces for m in marks):
            return None

        def locate(char: int) -> tuple[int, int]:
            """(k, offset): a position after k contents; in a record it is at ends[k] + offset."""
            k = sum(1 for s, m in zip(starts, marks) if s + len(m) <= char)
            if k < len(marks) and starts[k] < char:
                raise ValueError("a span boundary inside a content")
            return k, char - sum(len(m) for m in marks[:k])

        try:
            spans = [(locate(start), locate(stop)) for start, stop in char_spans]
        except ValueError:
            return None
        return pieces, spans
