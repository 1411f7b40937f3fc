"""The record formats: their names, the fields each reads, and which source column plays which part.

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

Beside this module: `canonical` turns one record into that shape (exact errors, row by row) and back into
messages, `batches` checks and converts whole Arrow batches (the fast path, and line endings), `nesting`
guards against values and JSON text nested too deep for the parsers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal, overload

import pyarrow as pa

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
CHAT_FAMILY: Family = (("messages",), ("conversations", "conversation"))  # OpenAI's; ShareGPT's {from, value} lists
# Which family each column flag of the importer maps (the formats the app's column mapping offers).
ROLE_FAMILIES = {"prompt_col": PROMPT_FAMILY, "completion_col": COMPLETION_FAMILY,
                 "text_col": TEXT_FAMILY, "label_col": LABEL_FAMILY, "messages_col": CHAT_FAMILY}
MAPPED_FORMATS = {"prompt-completion": ("prompt_col", "completion_col"), "classification": ("text_col", "label_col"),
                  "chat": ("messages_col",)}
# Every column a user can name (the CLI's --X-col flags, import_file's keywords), by the formats that use it.
COLUMN_FLAGS = ("prompt_col", "completion_col", "text_col", "label_col", "messages_col", "input_col", "chosen_col",
                "rejected_col")


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

    overrides: the COLUMN_FLAGS (CLI flags), which also imply the format when fmt is auto. Raises
    FormatUnclear when the user must choose.
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
        mapping.columns["messages"] = pick("messages_col", CHAT_FAMILY, "messages")
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
    if "messages_col" in given:
        return "chat"
    if "chosen_col" in given or "rejected_col" in given:
        return "preference"
    if "input_col" in given:
        return "alpaca"
    if "prompt_col" in given or "completion_col" in given:
        return "prompt-completion"
    if "text_col" in given or "label_col" in given:
        return "classification"
    answers = family_columns(cols, COMPLETION_FAMILY)
    if "prompt" in cols and answers:
        return "prompt-completion"  # checked first: our CSV/Parquet exports carry `messages` beside them
    if family_columns(cols, CHAT_FAMILY):
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
        "Pass --format and the column flags (--messages-col, --prompt-col, --completion-col, --text-col, "
        "--label-col)", cols,
        detail="; expected messages (or ShareGPT's conversations), a prompt and a response column (prompt, "
               "instruction, question, ... and completion, response, answer, ...), instruction+output, prompt+chosen+rejected, "
               "prompt+completion+label (true/false), or a text and a label column (text, utterance, ... and "
               "label, category, intent, ...)")


_ID_WORDS = {"id", "uuid", "key", "no", "number", "date", "time", "timestamp", "created", "updated", "count"}


def _words(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", _key(name)))


def guess_mapping(columns: list[str]) -> dict[str, str | None]:
    """Best guesses for a column mapping the user confirms: the format (prompt-completion, classification or
    chat) and a column for each of prompt_col, completion_col, text_col, label_col, messages_col. A column whose name holds a
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
    for flags in MAPPED_FORMATS.values():  # a format's parts, each a different column, the first ones by default
        if len(flags) == 2 and guess[flags[0]] is not None and guess[flags[0]] == guess[flags[1]]:
            guess[flags[1]] = None
        for flag in flags:
            if guess[flag] is None:
                taken = {guess[f] for f in flags}
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
