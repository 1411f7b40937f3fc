"""The record formats: detection, column mapping, validation and the canonical form.

Every imported record is stored in one canonical shape, whatever file it came from:

    prompt      the user's text (classification: the text to label)
    completion  the response to learn (NULL for classification)
    system      the system message, when the record has one
    messages    the whole conversation as JSON, only for multi-turn chats

plus every other column of the source (`category`, `intent`, `id`, ...) under its own
name. The two preference formats (TRL's, for DPO and KTO) keep the same shape: `prompt` (and
`system`, `messages` for a multi-turn prompt) is the conversation so far and `completion` the
answer; a pair adds `rejected` (so `completion` holds the chosen answer), an unpaired example adds
`label` (true: a desirable answer). Exports rebuild each format from this shape, so any export re-imports to the
same records and the same content hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.core.errors import WorkbenchError

FORMATS = ("chat", "prompt-completion", "alpaca", "classification", "preference", "kto")
PREFERENCE_FORMATS = ("preference", "kto")
CANONICAL = ("prompt", "completion", "system", "messages")
ROLES = ("system", "user", "assistant")
# (row index, field or None when the record as a whole is wrong, reason)
BatchErrors = list[tuple[int, str | None, str]]

# The fields each format reads, in the order they are checked; optional ones may be missing.
FORMAT_FIELDS = {
    "chat": ("messages",),
    "prompt-completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
    "classification": ("text", "label"),
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}
# Columns a preference format stores beside the canonical ones, with their types.
FORMAT_COLUMNS = {"preference": {"rejected": pa.string()}, "kto": {"label": pa.bool_()}}
OPTIONAL_FIELDS = {"input"}

# Column-name families: the names people give each role, strongest tier first (the canonical name alone).
# Names match ignoring case, spaces and hyphens; two columns of the same tier for one role are an ambiguity.
Family = tuple[tuple[str, ...], ...]
PROMPT_FAMILY: Family = (("prompt",), ("instruction", "question", "query", "input", "request", "utterance"),
                         ("user", "customer", "ticket", "customer_message", "user_message"))
COMPLETION_FAMILY: Family = (("completion",), ("response", "answer", "output", "reply"),
                             ("assistant", "agent_response", "resolution", "assistant_message"))
TEXT_FAMILY: Family = (("text",), ("sentence", "utterance", "query", "content", "body", "message"))
LABEL_FAMILY: Family = (("label",), ("category", "intent", "class", "topic", "sentiment"))
# Which family each column flag of the importer maps (the formats the app's column mapping offers).
ROLE_FAMILIES = {"prompt_col": PROMPT_FAMILY, "completion_col": COMPLETION_FAMILY,
                 "text_col": TEXT_FAMILY, "label_col": LABEL_FAMILY}
MAPPED_FORMATS = {"prompt-completion": ("prompt_col", "completion_col"), "classification": ("text_col", "label_col")}


class FormatUnclear(WorkbenchError):
    """The columns do not say which format the file is or which column plays a role: the user must choose.

    reason: the problem in a line for any reader; the message adds detail (what would be detected) and how to
    choose on the command line."""

    def __init__(self, reason: str, cli_hint: str, columns: list[str], detail: str = ""):
        super().__init__(f"{reason}{detail}. {cli_hint}")
        self.reason = reason
        self.columns = list(columns)


class RowError(Exception):
    """One bad record: which field and why."""

    def __init__(self, field_name: str | None, reason: str):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


@dataclass
class Mapping:
    """Which source column plays which part of a format."""

    format: str
    columns: dict[str, str] = field(default_factory=dict)  # format field -> source column

    def source(self, name: str) -> str | None:
        return self.columns.get(name)

    def consumed(self) -> set[str]:
        """Source columns that become canonical fields (a classification label column stays as it is)."""
        return {col for name, col in self.columns.items() if name != "label" or self.format == "kto"}

    @property
    def label_column(self) -> str | None:
        return self.columns.get("label")

    def to_dict(self) -> dict:
        return asdict(self)


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def family_columns(columns: list[str], family: Family) -> list[str]:
    """The columns of the strongest tier of family that the file has (several: an ambiguity)."""
    for tier in family:
        found = [c for c in columns if _key(c) in tier]
        if found:
            return found
    return []


def resolve_mapping(columns: list[str], fmt: str = "auto", **overrides: str | None) -> Mapping:
    """Pick the format and the column for each of its fields.

    overrides: prompt_col, completion_col, text_col, label_col (CLI flags), which
    also imply the format when fmt is auto. Raises FormatUnclear when the user must choose.
    """
    cols = list(columns)
    given = {k: v for k, v in overrides.items() if v}
    if fmt not in ("auto", *FORMATS):
        raise WorkbenchError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = _detect(cols, given)

    @overload
    def pick(flag: str, family: Family, what: str, required: Literal[True] = ...) -> str: ...
    @overload
    def pick(flag: str, family: Family, what: str, required: bool) -> str | None: ...
    def pick(flag: str, family: Family, what: str, required: bool = True) -> str | None:
        option = f"--{flag.replace('_', '-')}"
        if flag in given:
            if given[flag] not in cols:
                raise WorkbenchError(
                    f"column {given[flag]!r} (from {option}) is not in the file; columns are: {', '.join(cols)}"
                )
            return given[flag]
        found = family_columns(cols, family)
        if len(found) > 1:
            raise FormatUnclear(f"{len(found)} columns could be the {what} of the {fmt} format: "
                                f"{', '.join(found)}; choose one", f"Name it with {option}", cols)
        if found:
            return found[0]
        if required:
            names = [n for tier in family for n in tier]
            raise FormatUnclear(f"{fmt} format needs a {what} column ({' or '.join(names)}); columns are: "
                                f"{', '.join(cols) or 'none'}", f"Name it with {option}", cols)
        return None

    mapping = Mapping(fmt)
    if fmt == "chat":
        mapping.columns["messages"] = pick("messages_col", (("messages",),), "messages")
    elif fmt == "prompt-completion":
        mapping.columns["prompt"] = pick("prompt_col", PROMPT_FAMILY, "prompt")
        mapping.columns["completion"] = pick("completion_col", COMPLETION_FAMILY, "completion")
        for extra in ("system", "messages"):  # our own CSV/Parquet exports carry these
            if extra in cols:
                mapping.columns[extra] = extra
    elif fmt in PREFERENCE_FORMATS:
        mapping.columns["prompt"] = pick("prompt_col", (("prompt",),), "prompt")
        if fmt == "preference":
            mapping.columns["chosen"] = pick("chosen_col", (("chosen",),), "chosen")
            mapping.columns["rejected"] = pick("rejected_col", (("rejected",),), "rejected")
        else:
            mapping.columns["completion"] = pick("completion_col", COMPLETION_FAMILY, "completion")
            mapping.columns["label"] = pick("label_col", (("label",),), "label (true/false)")
        for extra in ("system", "messages"):  # our own CSV/Parquet exports carry these
            if extra in cols:
                mapping.columns[extra] = extra
    elif fmt == "alpaca":
        mapping.columns["instruction"] = pick("prompt_col", (("instruction",),), "instruction")
        inp = pick("input_col", (("input",),), "input", required=False)
        if inp:
            mapping.columns["input"] = inp
        mapping.columns["output"] = pick("completion_col", (("output",), *COMPLETION_FAMILY), "output")
    else:
        mapping.columns["text"] = pick("text_col", TEXT_FAMILY, "text")
        mapping.columns["label"] = pick("label_col", LABEL_FAMILY, "label")
    if len(set(mapping.columns.values())) < len(mapping.columns):
        raise WorkbenchError(f"one column plays two parts of the {fmt} format ({_roles(mapping)}); "
                             "choose a different column for each")
    clash = [c for c in CANONICAL if c in cols and c not in mapping.consumed()]
    if clash:
        raise WorkbenchError(
            f"column {clash[0]!r} would clash with the canonical field of the same name; rename it in the file"
        )
    return mapping


def _roles(mapping: Mapping) -> str:
    return ", ".join(f"{role}: {col}" for role, col in mapping.columns.items())


def _detect(cols: list[str], given: dict) -> str:
    if "prompt" in cols and "chosen" in cols and "rejected" in cols:
        return "preference"
    if "prompt" in cols and "completion" in cols and "label" in cols and "completion_col" not in given:
        return "kto"
    if "prompt_col" in given or "completion_col" in given:
        return "prompt-completion"
    if "text_col" in given or "label_col" in given:
        return "classification"
    answers = family_columns(cols, COMPLETION_FAMILY)
    if "prompt" in cols and answers:
        return "prompt-completion"  # checked first: our CSV/Parquet exports carry `messages` beside them
    if "messages" in cols:
        return "chat"
    keys = {_key(c) for c in cols}
    if "instruction" in keys and ("output" in keys or ("input" in keys and answers)):
        return "alpaca"
    if family_columns(cols, PROMPT_FAMILY) and answers:
        return "prompt-completion"
    if family_columns(cols, TEXT_FAMILY) and family_columns(cols, LABEL_FAMILY):
        return "classification"
    raise FormatUnclear(
        f"cannot tell the format from the columns ({', '.join(cols) or 'none'})",
        "Pass --format and the column flags (--prompt-col, --completion-col, --text-col, --label-col)", cols,
        detail="; expected messages, a prompt and a response column (prompt, instruction, question, ... and "
               "completion, response, answer, ...), instruction+output, prompt+chosen+rejected, "
               "prompt+completion+label (true/false), or a text and a label column (text, utterance, ... and "
               "label, category, intent, ...)")


_ID_WORDS = {"id", "uuid", "key", "no", "number", "date", "time", "timestamp", "created", "updated", "count"}


def _words(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", _key(name)))


def guess_mapping(columns: list[str]) -> dict[str, str | None]:
    """Best guesses for a column mapping the user confirms: the format (prompt-completion or classification)
    and a column for each of prompt_col, completion_col, text_col, label_col. A column whose name holds a
    family's word (`ticket_body`, `agent_reply`) counts when no name matches whole; then the first columns."""
    cols = list(columns)
    # An id, date or count column is no text to learn from: such names are guessed last.
    plain = [c for c in cols if not _ID_WORDS & _words(c)] + [c for c in cols if _ID_WORDS & _words(c)]

    def by_name(flag: str) -> str | None:
        found = family_columns(cols, ROLE_FAMILIES[flag])
        if found:
            return found[0]
        names = {n for tier in ROLE_FAMILIES[flag] for n in tier}
        return next((c for c in cols if names & _words(c) and not _ID_WORDS & _words(c)), None)

    guess: dict[str, str | None] = {flag: by_name(flag) for flag in ROLE_FAMILIES}
    for first, second in MAPPED_FORMATS.values():  # two parts, two different columns, the first ones by default
        if guess[first] is not None and guess[first] == guess[second]:
            guess[second] = None
        for flag in (first, second):
            if guess[flag] is None:
                taken = {guess[first], guess[second]}
                guess[flag] = next((c for c in plain if c not in taken), None)
    try:
        fmt = _detect(cols, {})
    except FormatUnclear:
        fmt = None
    if fmt not in MAPPED_FORMATS:
        named = {flag for flag in ROLE_FAMILIES if by_name(flag) is not None}
        fmt = "classification" if {"text_col", "label_col"} <= named and "completion_col" not in named \
            else "prompt-completion"
    return {"format": fmt, **guess}


# ---------------------------------------------------------------- row by row (exact errors)

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
    _check_size(name, value, max_bytes)
    return value


def _check_size(name: str, value: str, max_bytes: int) -> None:
    if len(value) * 4 > max_bytes and len(value.encode("utf-8")) > max_bytes:
        raise RowError(
            name,
            f"`{name}` is {len(value.encode('utf-8')) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB per field "
            "(raise [import] max_field_mb in workbench.toml)",
        )


def _kind(value) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
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
        row.update(chat_to_canonical(obj.get(col["messages"]), max_bytes))
    consumed = mapping.consumed()
    for key, value in obj.items():
        if key not in consumed:
            if isinstance(value, (list, dict)) and _value_depth(value) > MAX_NESTING:
                raise RowError(key, _nesting_reason(key))
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


def _check_messages(messages: list, name: str, max_bytes: int) -> None:
    for i, msg in enumerate(messages):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, f"`{where}` is {_kind(msg)}; expected an object with role and content")
        role = msg.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"`{where}.role` is {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            raise RowError(f"{where}.role", f"`{where}` is a system message; only the first message may be one")
        content = msg.get("content")
        if not isinstance(content, str):
            what = "missing" if content is None else _kind(content)
            raise RowError(f"{where}.content", f"`{where}.content` is {what}; expected text")
        if not content.strip() and role != "system":
            raise RowError(f"{where}.content", f"`{where}.content` is empty")
        _check_size(f"{where}.content", content, max_bytes)


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


def chat_to_canonical(messages, max_bytes: int) -> dict:
    """Validate an OpenAI-style message list and split it into the canonical fields."""
    if messages is None:
        raise RowError("messages", "`messages` is missing")
    if not isinstance(messages, list):
        raise RowError("messages", f"`messages` is {_kind(messages)}; expected a list of {{role, content}}")
    if not messages:
        raise RowError("messages", "`messages` is an empty list")
    _check_messages(messages, "messages", max_bytes)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    if not turns or turns[-1]["role"] != "assistant":
        raise RowError("messages", "the conversation does not end with an assistant message")
    if turns[0]["role"] != "user":
        raise RowError("messages", "the conversation does not start with a user message")
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


def canonical_to_messages(prompt: str, completion: str | None, system: str | None, messages: str | None) -> list:
    """Rebuild the OpenAI message list from the canonical fields."""
    if messages:
        return json.loads(messages)
    out = [{"role": "system", "content": system}] if system is not None else []
    out.append({"role": "user", "content": prompt})
    if completion is not None:
        out.append({"role": "assistant", "content": completion})
    return out


# ---------------------------------------------------------------- whole batches (fast path)

def is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _as_string(arr: pa.ChunkedArray | pa.Array):
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def check_batch(table: pa.Table, mapping: Mapping,
                max_bytes: int) -> tuple[BatchErrors, pa.Table | None]:
    """(errors, canonical table) for a batch: errors as (row index, field, reason); the table only if none.

    Chats (nested lists) and our own exports with system/messages columns are converted row by
    row, once; the other formats are checked and converted a column at a time with Arrow kernels.
    """
    deep = _too_deep_extras(table, mapping)
    if deep:
        return deep, None
    if _row_wise(mapping):
        return _check_rows(table, mapping, max_bytes)
    errors = _column_errors(table, mapping, max_bytes)
    return errors, None if errors else _canonical_columns(table, mapping)


# Parquet and DuckDB refuse schemas nested hundreds of levels deep; real metadata never is.
MAX_NESTING = 32


def _type_depth(t: pa.DataType) -> int:
    depth, stack = 0, [(t, 0)]
    while stack:
        t, d = stack.pop()
        depth = max(depth, d)
        stack.extend((t.field(i).type, d + 1) for i in range(t.num_fields))
    return depth


def _value_depth(value) -> int:
    depth, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if d > MAX_NESTING:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return depth


def _nesting_reason(name: str) -> str:
    return f"`{name}` is nested more than {MAX_NESTING} levels deep; flatten it or leave the column out"


# JSON text nested deeper than this is refused before any parser sees it: pyarrow's JSON reader
# overflows its stack (a segfault) and Python's json recurses (RecursionError) on 10,000s of levels.
# Depths between MAX_NESTING and this are parsed and named by the column checks.
MAX_JSON_DEPTH = 200
_JSON_TOKEN = re.compile(rb'"(?:[^"\\\n]++|\\.)*+"|[\[\]{}]')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_OPENS_OR_NEWLINE = bytes(b for b in range(256) if b not in b"[{\n")
_SCAN_CHUNK = 1 << 22


def _outside_strings(data: bytes) -> bytes:
    """The brackets of data that lie outside JSON strings, in order (escaped quotes and backslashes
    are blanked first, then every other piece between quotes is a string)."""
    plain = data.replace(b"\\\\", b"..").replace(b'\\"', b"..")
    return b"".join(plain.split(b'"')[0::2]).translate(None, _NOT_BRACKETS)


def json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep the brackets of one JSON text nest, counting only brackets outside strings. A scan of
    bytes, not a parse, so it cannot recurse; any answer above limit only means 'more than limit'."""
    if data.count(b"[") + data.count(b"{") <= limit:  # an upper bound, and the common case
        return limit
    brackets = _outside_strings(data)
    deepest, level = 0, 0
    for start in range(0, len(brackets), _SCAN_CHUNK):  # vectorised, in chunks to bound memory
        arr = np.frombuffer(brackets, np.uint8, count=min(_SCAN_CHUNK, len(brackets) - start), offset=start)
        levels = np.cumsum(np.where((arr == ord("[")) | (arr == ord("{")), 1, -1), dtype=np.int64) + level
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
        if deepest > limit:
            break
    return deepest


def lines_too_deep(buf: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if some line of JSON-lines text nests deeper than limit. Only lines with more than limit
    opening brackets (rare: a long chat) are scanned one by one."""
    marks = np.frombuffer(buf.translate(None, _NOT_OPENS_OR_NEWLINE), np.uint8)
    opens_per_line = np.diff(np.concatenate(([-1], np.flatnonzero(marks == ord("\n")), [len(marks)]))) - 1
    busy = np.flatnonzero(opens_per_line > limit)
    if not busy.size:
        return False
    newlines = np.flatnonzero(np.frombuffer(buf, np.uint8) == ord("\n"))
    starts, ends = np.concatenate(([0], newlines + 1)), np.concatenate((newlines, [len(buf)]))
    return any(json_depth(buf[starts[i]: ends[i]], limit) > limit for i in busy)


def jsonl_file_too_deep(path, block_bytes: int = 4 << 20) -> bool:
    """True if some line of a JSON-lines file nests deeper than MAX_JSON_DEPTH, read block by block."""
    with open(path, "rb") as f:
        pending: list[bytes] = []
        while block := f.read(block_bytes):
            cut = block.rfind(b"\n") + 1
            if not cut:  # a long line: keep its pieces until it ends
                pending.append(block)
                continue
            if lines_too_deep(b"".join(pending) + block[:cut]):
                return True
            pending = [block[cut:]]
        return lines_too_deep(b"".join(pending))


def too_deep_reason(line: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """For a JSON line nested deeper than limit, the column check's message naming the top-level key
    that holds the deep value (a token scan, no parse); None if the line is not that deep."""
    if json_depth(line, limit) <= limit:
        return None
    level, key = 0, None
    for token in _JSON_TOKEN.finditer(line):
        t = token.group()
        if t[:1] == b'"':
            if level == 1:
                key = t
        else:
            level += 1 if t in (b"[", b"{") else -1
            if level > limit:
                break
    try:
        name = json.loads(key) if key is not None else None
    except ValueError:
        name = None
    return _nesting_reason(name) if isinstance(name, str) else \
        f"nested more than {MAX_NESTING} levels deep; flatten the deep values or leave them out"


def _too_deep_extras(table: pa.Table, mapping: Mapping) -> BatchErrors:
    errors: BatchErrors = []
    for name in table.column_names:
        if name not in mapping.consumed() and _type_depth(table.schema.field(name).type) > MAX_NESTING:
            valid = pc.is_valid(table.column(name)).to_pylist()
            errors.extend((i, name, _nesting_reason(name)) for i, ok in enumerate(valid) if ok)
    return errors


def _row_wise(mapping: Mapping) -> bool:
    return mapping.format in ("chat", *PREFERENCE_FORMATS) or (
        mapping.format == "prompt-completion" and ("system" in mapping.columns or "messages" in mapping.columns))


def _check_rows(table: pa.Table, mapping: Mapping, max_bytes: int) -> tuple[BatchErrors, pa.Table | None]:
    errors: BatchErrors = []
    rows: list[dict] = []
    if mapping.format == "chat":
        col = mapping.columns["messages"]
        values = table.column(col).to_pylist() if col in table.column_names else [None] * table.num_rows
        convert = lambda value: chat_to_canonical(value, max_bytes)  # noqa: E731
    else:
        values = table.select([c for c in mapping.columns.values() if c in table.column_names]).to_pylist()
        convert = lambda value: convert_row(value, mapping, max_bytes)  # noqa: E731
    for i, value in enumerate(values):
        try:
            rows.append(convert(value))
        except RowError as exc:
            errors.append((i, exc.field, exc.reason))
    if errors:
        return errors, None
    canon = {k: pa.array([r[k] for r in rows], pa.string()) for k in CANONICAL}
    for k, typ in FORMAT_COLUMNS.get(mapping.format, {}).items():
        canon[k] = pa.array([r[k] for r in rows], typ)
    return errors, _with_extras(canon, table, mapping)


def _column_errors(table: pa.Table, mapping: Mapping, max_bytes: int) -> BatchErrors:
    errors: BatchErrors = []
    for name in FORMAT_FIELDS[mapping.format]:
        col = mapping.columns.get(name)
        if col is None:
            continue
        optional = name in OPTIONAL_FIELDS
        if col not in table.column_names:
            if not optional:
                errors.extend((i, name, f"`{name}` is missing") for i in range(table.num_rows))
            continue
        arr = table.column(col)
        if name == "label":
            if is_text_type(arr.type):
                bad = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(_as_string(arr))), 0), True)
            else:
                bad = pc.is_null(arr)
            errors.extend((i, "label", f"`{col}` (the label) is missing or empty") for i in _true_indices(bad))
            continue
        if pa.types.is_null(arr.type):
            if not optional:
                errors.extend((i, name, f"`{name}` is missing") for i in range(table.num_rows))
            continue
        if not is_text_type(arr.type):
            errors.extend((i, name, f"`{name}` is {arr.type}; expected text") for i in range(table.num_rows)
                          if arr[i].is_valid)
            if not optional:
                errors.extend((i, name, f"`{name}` is missing") for i in _true_indices(pc.is_null(arr)))
            continue
        arr = _as_string(arr)
        if not optional:
            errors.extend((i, name, f"`{name}` is missing") for i in _true_indices(pc.is_null(arr)))
            # utf8_is_space stops at the first visible character: far cheaper than trimming copies
            empty = pc.or_(pc.equal(pc.binary_length(arr), 0), pc.utf8_is_space(arr))
            errors.extend((i, name, f"`{name}` is empty") for i in _true_indices(empty))
        big = pc.greater(pc.binary_length(arr), max_bytes)
        for i in _true_indices(big):
            try:
                _check_size(name, arr[i].as_py(), max_bytes)
            except RowError as exc:
                errors.append((i, name, exc.reason))
    errors.sort()
    return errors


def _true_indices(mask) -> list[int]:
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask).to_pylist()


def _canonical_columns(table: pa.Table, mapping: Mapping) -> pa.Table:
    """A column-wise batch with no bad rows -> canonical columns first, then the extras as they came."""
    n = table.num_rows
    nulls = pa.nulls(n, pa.string())
    col = mapping.columns
    if mapping.format == "prompt-completion":
        canon = {"prompt": _as_string(table.column(col["prompt"])),
                 "completion": _as_string(table.column(col["completion"])), "system": nulls, "messages": nulls}
    elif mapping.format == "alpaca":
        prompt = _as_string(table.column(col["instruction"]))
        if "input" in col and col["input"] in table.column_names:
            extra = table.column(col["input"])
            extra = _as_string(extra) if not pa.types.is_null(extra.type) else pa.nulls(n, pa.string())
            has = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(extra)), 0), False)
            prompt = pc.if_else(has, pc.binary_join_element_wise(prompt, extra, "\n\n"), prompt)
        canon = {"prompt": prompt, "completion": _as_string(table.column(col["output"])),
                 "system": nulls, "messages": nulls}
    else:
        canon = {"prompt": _as_string(table.column(col["text"])), "completion": nulls,
                 "system": nulls, "messages": nulls}
    return _with_extras(canon, table, mapping)


def _with_extras(canon: dict, table: pa.Table, mapping: Mapping) -> pa.Table:
    extras = [c for c in table.column_names if c not in mapping.consumed()]
    return pa.table(list(canon.values()) + [_plain(table.column(c)) for c in extras], names=list(canon) + extras)


def _plain(arr):
    """Large and view string types become plain strings so every batch has one schema."""
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        return pc.cast(arr, pa.string())
    if pa.types.is_null(arr.type):
        return pc.cast(arr, pa.string())
    return arr


# ---------------------------------------------------------------- line endings

def line_ending_fields(fmt: str) -> tuple[str, ...]:
    """The canonical text a model learns from, whose line endings the import normalises."""
    return (*CANONICAL, *(c for c, t in FORMAT_COLUMNS.get(fmt, {}).items() if pa.types.is_string(t)))


def normalise_line_endings(table: pa.Table, fields: tuple[str, ...]) -> tuple[pa.Table, dict[str, int], int]:
    """CRLF and lone CR become LF in the given text columns (in `messages`, in each message's content), so a
    model never learns to print a carriage return. Returns the table, the records changed per column, and
    the records changed in all. A table without a CR in those columns comes back as it was (the same hash)."""
    changed_any = None
    per_field: dict[str, int] = {}
    for name in fields:
        if name not in table.column_names or not is_text_type(table.column(name).type):
            continue
        column = table.column(name)
        # A JSON message list holds a CR escaped as backslash-r; the other columns hold it as it is.
        needle = "\\r" if name == "messages" else "\r"
        if not _may_hold(column, needle) or not pc.any(pc.fill_null(pc.match_substring(column, needle), False)).as_py():
            continue
        fixed = _lf_messages(column) if name == "messages" else pc.replace_substring_regex(column, "\r\n?", "\n")
        changed = pc.fill_null(pc.not_equal(column, fixed), False)
        if count := pc.sum(pc.cast(changed, pa.int64())).as_py():
            per_field[name] = count
            table = table.set_column(table.column_names.index(name), name, fixed)
            changed_any = changed if changed_any is None else pc.or_(changed_any, changed)
    total = pc.sum(pc.cast(changed_any, pa.int64())).as_py() if changed_any is not None else 0
    return table, per_field, total


def _may_hold(column: pa.ChunkedArray, needle: str) -> bool:
    """False when no value can hold needle: one scan of the raw text bytes, about ten times faster than Arrow's
    per-value search (True may come from bytes a sliced array leaves outside its values)."""
    pattern = re.compile(re.escape(needle.encode()))
    for chunk in column.chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return True
        data = chunk.buffers()[2]
        if data is not None and pattern.search(memoryview(data)):
            return True
    return False


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _lf_messages(column) -> pa.Array:
    """Each message's content with LF line endings, re-serialised as the import serialises message lists."""
    out = []
    for value in _as_string(column).to_pylist():
        if value is not None and "\\r" in value:
            messages = json.loads(value)
            fixed = [{**m, "content": _lf(m["content"])} if isinstance(m.get("content"), str) else m
                     for m in messages]
            if fixed != messages:
                value = json.dumps(fixed, ensure_ascii=False)
        out.append(value)
    return pa.array(out, pa.string())
