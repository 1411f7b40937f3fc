"""One source record -> the canonical fields (prompt, completion, system, messages), with the exact field and
reason when it is wrong; and back from the canonical fields to an OpenAI message list."""

from __future__ import annotations

import json
from typing import Any, Literal, overload

from workbench.core.formats import PREFERENCE_FORMATS, ROLES, Mapping, RowError
from workbench.core.nesting import MAX_NESTING, json_depth, nesting_reason, value_depth


@overload
def _text(obj: dict, col: str, name: str, max_bytes: int, *, required: Literal[True] = ...) -> str: ...
@overload
def _text(obj: dict, col: str, name: str, max_bytes: int, *, required: bool) -> str | None: ...
def _text(obj: dict, col: str, name: str, max_bytes: int, *, required: bool = True) -> str | None:
    if col not in obj or obj[col] is None:
        if not required:
            return None
        raise RowError(name, f"`{name}` is missing" + (f" (column `{col}`)" if col != name else ""))
    value = obj[col]
    if not isinstance(value, str):
        raise RowError(name, f"`{name}` is {_kind(value)}; expected text")
    if required and not value.strip():
        raise RowError(name, f"`{name}` is empty")
    check_size(name, value, max_bytes)
    return value


def check_size(name: str, value: str, max_bytes: int) -> None:
    if len(value) * 4 > max_bytes and len(value.encode("utf-8")) > max_bytes:
        raise RowError(
            name,
            f"`{name}` is {len(value.encode('utf-8')) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB per field "
            "(raise [import] max_field_mb in workbench.toml)",
        )


def _kind(value) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object", str: "text"}.get(
        type(value), type(value).__name__
    )


def convert_row(obj, mapping: Mapping, max_bytes: int) -> dict:
    """One source record -> canonical dict (extras kept). Raises RowError."""
    if not isinstance(obj, dict):
        raise RowError(None, f"expected an object with fields, got {_kind(obj)}")
    fmt, col = mapping.format, mapping.columns
    row: dict[str, Any] = {"prompt": None, "completion": None, "system": None, "messages": None}
    if fmt == "prompt-completion":
        row["prompt"] = _text(obj, col["prompt"], "prompt", max_bytes)
        row["completion"] = _text(obj, col["completion"], "completion", max_bytes)
        if "system" in col:
            row["system"] = _text(obj, "system", "system", max_bytes, required=False)
        if "messages" in col and obj.get("messages") is not None:
            row.update(_messages_json(obj["messages"], max_bytes))
    elif fmt == "alpaca":
        instruction = _text(obj, col["instruction"], "instruction", max_bytes)
        extra = _text(obj, col["input"], "input", max_bytes, required=False) if "input" in col else None
        row["prompt"] = join_instruction(instruction, extra)
        row["completion"] = _text(obj, col["output"], "output", max_bytes)
    elif fmt == "classification":
        row["prompt"] = _text(obj, col["text"], "text", max_bytes)
        label = obj.get(col["label"])
        if label is None or (isinstance(label, str) and not label.strip()):
            raise RowError("label", f"`{col['label']}` (the label) is missing or empty")
        if isinstance(label, (list, dict)):
            raise RowError("label", f"`{col['label']}` is {_kind(label)}; expected one label")
    elif fmt in PREFERENCE_FORMATS:
        row.update(_preference_row(obj, mapping, max_bytes))
    else:
        row.update(chat_to_canonical(obj.get(col["messages"]), max_bytes, col["messages"]))
    consumed = mapping.consumed()
    for key, value in obj.items():
        if key not in consumed:
            if isinstance(value, (list, dict)) and value_depth(value) > MAX_NESTING:
                raise RowError(key, nesting_reason(key))
            row[key] = value
    return row


def _preference_row(obj: dict, mapping: Mapping, max_bytes: int) -> dict:
    """A preference pair or an unpaired (KTO) example: the prompt side, then the answer(s)."""
    col = mapping.columns
    if "messages" in col and obj.get("messages") is not None:  # our own text exports of multi-turn prompts
        row = prompt_to_canonical(_parsed_messages(obj["messages"]), max_bytes, "messages")
    else:
        row = prompt_to_canonical(obj.get(col["prompt"]), max_bytes)
        if "system" in col and row["system"] is None:
            row["system"] = _text(obj, "system", "system", max_bytes, required=False)
    if mapping.format == "preference":
        row["completion"] = _answer(obj.get(col["chosen"]), "chosen", max_bytes)
        row["rejected"] = _answer(obj.get(col["rejected"]), "rejected", max_bytes)
    else:
        row["completion"] = _answer(obj.get(col["completion"]), "completion", max_bytes)
        row["label"] = _kto_label(obj.get(col["label"]), col["label"])
    return row


def prompt_to_canonical(value, max_bytes: int, name: str = "prompt") -> dict:
    """A prompt as text or as a list of {role, content} ending with a user message (TRL's conversational
    form) -> prompt (the last user text), system, messages (JSON, only for a multi-turn prompt)."""
    if isinstance(value, str) or value is None:
        return {"prompt": _text({name: value}, name, name, max_bytes), "system": None, "messages": None}
    if not isinstance(value, list) or not value:
        what = "an empty list" if isinstance(value, list) else _kind(value)
        raise RowError(name, f"`{name}` is {what}; expected text or a list of {{role, content}}")
    _check_messages(value, name, max_bytes)
    system = value[0]["content"] if value[0]["role"] == "system" else None
    turns = value[1:] if system is not None else value
    if not turns or turns[-1]["role"] != "user":
        raise RowError(name, f"`{name}` does not end with a user message")
    plain = [{"role": m["role"], "content": m["content"]} for m in value]
    return {"prompt": turns[-1]["content"], "system": system,
            "messages": json.dumps(plain, ensure_ascii=False) if len(turns) > 1 else None}


def _answer(value, name: str, max_bytes: int) -> str:
    """An answer as text, or as TRL's conversational form: a list holding one assistant message."""
    if isinstance(value, list):
        if len(value) != 1:
            raise RowError(name, f"`{name}` has {len(value)} messages; expected one assistant message")
        _check_messages(value, name, max_bytes)
        if value[0]["role"] != "assistant":
            raise RowError(f"{name}[0].role", f"`{name}[0].role` is {value[0]['role']!r}; expected assistant")
        value = value[0]["content"]
    return _text({name: value}, name, name, max_bytes)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _kto_label(value, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    what = "missing" if value is None else repr(value)
    raise RowError("label", f"`{column}` is {what}; expected true or false (is the answer desirable?); "
                            "for a category column import with --format prompt-completion")


def _check_messages(messages: list, name: str, max_bytes: int, keys: tuple[str, str] = ("role", "content")) -> None:
    """Each message an object with a known role and text; keys: what the file calls the two (for the errors)."""
    role_key, text_key = keys
    for i, msg in enumerate(messages):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, f"`{where}` is {_kind(msg)}; expected an object with {role_key} and {text_key}")
        role = msg.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.{role_key}", f"`{where}.{role_key}` is {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            raise RowError(f"{where}.{role_key}", f"`{where}` is a system message; only the first message may be one")
        content = msg.get("content")
        if not isinstance(content, str):
            what = "missing" if content is None else _kind(content)
            raise RowError(f"{where}.{text_key}", f"`{where}.{text_key}` is {what}; expected text")
        if not content.strip() and role != "system":
            raise RowError(f"{where}.{text_key}", f"`{where}.{text_key}` is empty")
        check_size(f"{where}.{text_key}", content, max_bytes)


# ShareGPT's speakers: many Hugging Face datasets hold a conversation as `conversations`, a list of {from, value}.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant"}


def _role_content(messages: list, name: str) -> tuple[list, tuple[str, str]]:
    """(the messages as {role, content}, what the file calls role and content): ShareGPT's {from, value} turned
    into OpenAI's; a list in OpenAI's form comes back as it is."""
    if not any(isinstance(m, dict) and "from" in m and "role" not in m for m in messages):
        return messages, ("role", "content")
    out = []
    for i, msg in enumerate(messages):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, f"`{where}` is {_kind(msg)}; expected an object with from and value")
        speaker = msg.get("from")
        role = SHAREGPT_ROLES.get(speaker.strip().lower()) if isinstance(speaker, str) else None
        if role is None:
            raise RowError(f"{where}.from", f"`{where}.from` is {speaker!r}; expected human, gpt or system")
        out.append({"role": role, "content": msg.get("value")})
    return out, ("from", "value")


def _parsed_messages(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError("messages", f"`messages` is not valid JSON ({exc.msg})") from None
    return value


def _messages_json(value, max_bytes: int) -> dict:
    """A `messages` column holding a JSON list (our CSV/Parquet exports of multi-turn chats)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError("messages", f"`messages` is not valid JSON ({exc.msg})") from None
    return chat_to_canonical(value, max_bytes)


def join_instruction(instruction: str, extra: str | None) -> str:
    """Alpaca's instruction and optional input become one prompt, as the Alpaca template joins them."""
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


def chat_to_canonical(messages, max_bytes: int, name: str = "messages") -> dict:
    """Validate a message list (OpenAI's {role, content} or ShareGPT's {from, value}) and split it into the
    canonical fields. name: the column it came from, for the errors."""
    if messages is None:
        raise RowError(name, f"`{name}` is missing")
    if isinstance(messages, str) and messages.lstrip().startswith("["):
        messages = _json_list(messages, name)  # a CSV cell (or a JSON string) holding the list as JSON text
    if not isinstance(messages, list):
        raise RowError(name, f"`{name}` is {_kind(messages)}; expected a list of {{role, content}} or {{from, value}}")
    if not messages:
        raise RowError(name, f"`{name}` is an empty list")
    messages, keys = _role_content(messages, name)
    _check_messages(messages, name, max_bytes, keys)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    if not turns or turns[-1]["role"] != "assistant":
        raise RowError(name, "the conversation does not end with an assistant message")
    if turns[0]["role"] != "user":
        raise RowError(name, "the conversation does not start with a user message")
    last_user = next(m["content"] for m in reversed(turns) if m["role"] == "user")
    multi = len(turns) > 2
    return {
        "prompt": last_user,
        "completion": turns[-1]["content"],
        "system": system,
        "messages": json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)
        if multi
        else None,
    }


def _json_list(text: str, name: str) -> list:
    """A message list written as JSON text. Its brackets are counted before parsing (a scan, no recursion), so
    text nested thousands deep is refused with the field's name rather than parsed into a RecursionError."""
    if json_depth(text.encode("utf-8"), MAX_NESTING) > MAX_NESTING:
        raise RowError(name, f"`{name}` is JSON text nested more than {MAX_NESTING} levels deep; expected a list of "
                             "{role, content} or {from, value}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RowError(name, f"`{name}` is text that is not valid JSON ({exc}); expected a JSON list of "
                             "{role, content} or {from, value}") from None
    if not isinstance(value, list):
        raise RowError(name, f"`{name}` is JSON text holding {_kind(value)}; expected a list of {{role, content}} "
                             "or {from, value}")
    return value


def canonical_to_messages(prompt: str, completion: str | None, system: str | None, messages: str | None) -> list:
    """Rebuild the OpenAI message list from the canonical fields."""
    if messages:
        return json.loads(messages)
    out = [{"role": "system", "content": system}] if system is not None else []
    out.append({"role": "user", "content": prompt})
    if completion is not None:
        out.append({"role": "assistant", "content": completion})
    return out
