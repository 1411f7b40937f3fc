"""The kinds of question: what an annotator gives for each record, and how it is kept.

One class per kind says how its choices are checked, how an answer is turned into the stored text
(and what was expected when it cannot be), how a stored value reads, which widget answers it and
where its final labels go by default. Code that needs to treat kinds differently asks the kind
(`of(question.kind)`) rather than comparing its name.

Stored values are text: a rating is '1'..'5', accept/reject is 'accept' or 'reject', multi-label
tags are a JSON list of the chosen tags, sorted; a corrected response is kept as typed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from workbench.core.errors import WorkbenchError

ACCEPT, REJECT = "accept", "reject"
DEFAULT_SCALE = ("1", "2", "3", "4", "5")
MAX_CHOICES = 200
MAX_VALUE_CHARS = 200_000

_TRUE = {"accept", "accepted", "yes", "y", "true", "1", "ok", "good"}
_FALSE = {"reject", "rejected", "no", "n", "false", "0", "bad"}


def _scalar_text(value) -> str:
    """A single answer as text: booleans as true/false, whole floats without '.0'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _distinct(choices: Iterable) -> list[str]:
    out = []
    for c in choices:
        c = str(c).strip()
        if c and c not in out:
            out.append(c)
    return out


class Kind:
    """What every kind answers; the subclasses below change what differs."""

    name = ""
    help = ""
    """One line for people choosing a kind."""
    widget = "buttons"
    """How an annotator answers: 'buttons' (one click), 'tags' (several, then submit) or 'text'."""
    choices_input: str | None = "list"
    """How an owner gives the choices: 'list' (typed or from a column), 'scale' (numbers and anchors) or None."""
    buttons_per_row: int | None = None
    """Answer buttons in a row (None: by the length of the longest choice)."""
    choices_from_answers = False
    """A question created by an import takes its choices from the values in the file."""
    majority_default = False
    """Whether a strict majority of the answers settles a record unless the owner says otherwise."""

    def check_choices(self, choices: Iterable | None) -> tuple[str, ...]:
        """The choices as stored, or WorkbenchError saying what is wrong with them."""
        out = self._clean_choices(_distinct(choices or ()))
        if len(out) > MAX_CHOICES:
            raise WorkbenchError(f"{len(out)} choices is too many for buttons; use at most {MAX_CHOICES}")
        return tuple(out)

    def _clean_choices(self, choices: list[str]) -> list[str]:
        return choices

    def normalize(self, choices: tuple[str, ...], value) -> str:
        """The stored text of an answer: checks it against the choices and says what was expected."""
        if value is None or (isinstance(value, float) and value != value):
            raise WorkbenchError("the value is empty; expected an answer")
        return self._normalize(choices, value)

    def _normalize(self, choices: tuple[str, ...], value) -> str:
        text = _scalar_text(value).strip()
        if not text:
            raise WorkbenchError("the value is empty; expected one of the choices")
        if choices and text not in choices:
            shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
            raise WorkbenchError(f"{text!r} is not a choice of this question; expected one of {shown}")
        return text

    def display(self, value: str | None) -> str:
        """A stored value as a person reads it."""
        return "" if value is None else value

    def default_column(self, question_name: str) -> str:
        """Where final labels go by default: a column named after the question."""
        return question_name

    def button_options(self, choices: tuple[str, ...], anchors: dict) -> list[tuple[str, str, str | None]]:
        """(value, label, keyboard shortcut) of each answer button."""
        return [(c, f"{c} · {anchors[c]}" if c in anchors else c, self._shortcut(i, c))
                for i, c in enumerate(choices)]

    def _shortcut(self, index: int, choice: str) -> str | None:
        return choice if len(choice) == 1 and choice.isdigit() else None


# Keys for the 10th choice on: 0, then letters (not c or r, which Streamlit keeps for itself).
MORE_KEYS = "0abdefghijklmnopqstuvwxyz"


class SingleChoice(Kind):
    name = "single-choice"
    help = "one choice per record, for example its category"
    choices_from_answers = True
    majority_default = True

    def _shortcut(self, index: int, choice: str) -> str | None:
        if index < 9:
            return str(index + 1)
        return MORE_KEYS[index - 9] if index - 9 < len(MORE_KEYS) else None


class MultiLabel(Kind):
    name = "multi-label"
    help = "any number of tags per record"
    widget = "tags"

    def _clean_choices(self, choices: list[str]) -> list[str]:
        if not choices:
            raise WorkbenchError("a multi-label question needs its tags: type them, or take them from a column")
        return choices

    def _normalize(self, choices: tuple[str, ...], value) -> str:
        tags = _parse_tags(value) if isinstance(value, str) else value
        if not isinstance(tags, (list, tuple, set)):
            raise WorkbenchError(f"{value!r} is not a list of tags")
        tags = sorted({str(t).strip() for t in tags if str(t).strip()})
        unknown = [t for t in tags if t not in choices]
        if unknown:
            raise WorkbenchError(f"{', '.join(map(repr, unknown))} is not a tag of this question; expected tags "
                                 f"among {', '.join(choices)}")
        return json.dumps(tags, ensure_ascii=False)

    def display(self, value: str | None) -> str:
        return "" if value is None else ", ".join(tag_list(value)) or "(no tags)"


def _parse_tags(text: str) -> list:
    """Tags typed as a JSON list, or separated by commas or semicolons."""
    text = text.strip()
    if not text.startswith("["):
        return [t for t in (p.strip() for p in text.replace(";", ",").split(",")) if t]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise WorkbenchError(f"{text[:60]!r} is not a JSON list of tags") from None


class Rating(Kind):
    name = "rating"
    help = "a number on a scale (default 1-5), with words for some of the numbers"
    choices_input = "scale"

    def check_choices(self, choices: Iterable | None) -> tuple[str, ...]:
        return super().check_choices(choices or DEFAULT_SCALE)

    def _clean_choices(self, choices: list[str]) -> list[str]:
        try:
            nums = [int(c) for c in choices]
        except ValueError:
            raise WorkbenchError(f"a rating scale is whole numbers such as 1,2,3,4,5; got {', '.join(choices)}") \
                from None
        return [str(n) for n in sorted(nums)]

    def _normalize(self, choices: tuple[str, ...], value) -> str:
        text = _scalar_text(value).strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or not number.is_integer() or str(int(number)) not in choices:
            raise WorkbenchError(f"{text!r} is not on the rating scale; expected a whole number from {choices[0]} "
                                 f"to {choices[-1]}")
        return str(int(number))


class AcceptReject(Kind):
    name = "accept-reject"
    help = "accept or reject the response"
    choices_input = None
    buttons_per_row = 2

    def check_choices(self, choices: Iterable | None) -> tuple[str, ...]:
        return (ACCEPT, REJECT)

    def _normalize(self, choices: tuple[str, ...], value) -> str:
        text = _scalar_text(value).strip()
        if text.lower() in _TRUE:
            return ACCEPT
        if text.lower() in _FALSE:
            return REJECT
        raise WorkbenchError(f"{text!r} is neither accept nor reject; expected accept or reject")

    def button_options(self, choices: tuple[str, ...], anchors: dict) -> list[tuple[str, str, str | None]]:
        return [(ACCEPT, "Accept", "a"), (REJECT, "Reject", "x")]


class Text(Kind):
    name = "text"
    help = "the annotator rewrites the response; the final text replaces `completion`"
    widget = "text"
    choices_input = None

    def check_choices(self, choices: Iterable | None) -> tuple[str, ...]:
        return ()

    def _normalize(self, choices: tuple[str, ...], value) -> str:
        text = _scalar_text(value)  # kept as typed: spaces and newlines are part of a response
        if not text.strip():
            raise WorkbenchError("the corrected response is empty; write the response, or keep the original")
        if len(text) > MAX_VALUE_CHARS:
            raise WorkbenchError(f"the response has {len(text):,} characters; at most {MAX_VALUE_CHARS:,} are kept")
        return text

    def default_column(self, question_name: str) -> str:
        return "completion"  # a corrected response replaces the response

    def button_options(self, choices: tuple[str, ...], anchors: dict) -> list[tuple[str, str, str | None]]:
        return []


KINDS: dict[str, Kind] = {k.name: k for k in (SingleChoice(), MultiLabel(), Rating(), AcceptReject(), Text())}
NAMES = tuple(KINDS)


def of(name: str) -> Kind:
    """The kind called `name`, or WorkbenchError listing the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise WorkbenchError(f"question kind {name!r} is not known; expected one of {', '.join(NAMES)}") from None


def normalize_value(kind: str, choices: tuple[str, ...], value) -> str:
    """The stored text of an answer to a question of this kind and choices."""
    return of(kind).normalize(choices, value)


def display_value(kind: str, value: str | None) -> str:
    """A stored value as a person reads it (tags joined by commas)."""
    return of(kind).display(value)


def tag_list(value: str | None) -> list[str]:
    """The tags of a stored multi-label value ('["a", "b"]')."""
    if not value:
        return []
    try:
        tags = json.loads(value)
    except json.JSONDecodeError:
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def guess(values: list[str]) -> str:
    """The kind of a new question from its answers: small whole numbers are a rating, else single-choice."""
    nums = []
    for v in values:
        try:
            f = float(v)
        except ValueError:
            return SingleChoice.name
        if not f.is_integer():
            return SingleChoice.name
        nums.append(int(f))
    return Rating.name if nums and min(nums) >= 0 and max(nums) <= 10 else SingleChoice.name
