"""A model as judge: it answers a review's own questions for every item, and its verdicts are stored
beside the people's. This module owns `wb_judges` and `wb_judge_verdicts` (migration 10); how well the
judge agrees with the people, its biases and its win rates are in `judge_results`.

A judge run reads a blind review (`--review`: its items, pairs, sides and questions) or a whole
comparison of evaluation runs (`--evals A,B`: every test item both answered, items no person has seen).
The judge is a model the project can load (`tiny`, a finished run, a local folder; trainers.chat, the
same generation code as evaluation, greedy) or any OpenAI-compatible endpoint (`/v1/chat/completions`;
the API key is read from an environment variable at call time and never stored).

- **pairwise**: each item is judged twice, the answers in one order and then swapped. A verdict is A,
  B or tie (the side shown first or second). An item whose two verdicts point at different runs is a
  tie and counts as position-inconsistent.
- **rating**: each answer is rated 1-5 per question, with the question's help and the anchors as rubric.

The default prompt asks for a short reason and then `Verdict: X` on its own line; the answer is parsed
strictly: exactly one verdict line with an allowed value, else it is stored as unparseable (counted,
never guessed). The template is shown and editable: `{name}` fields are filled in, other text is kept.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.core.auth import User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import ROW_COLUMN
from workbench.models import evaluation
from workbench.models import review as R
from workbench.models.eval_items import records

PAIRWISE_VERDICTS = ("A", "B", "tie")
RATING_VERDICTS = tuple(str(s) for s in R.SCALE)
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_MAX_NEW_TOKENS = 128
MAX_TEMPLATE_CHARS = 20_000
FIELDS = ("instructions", "prompt", "reference", "answer_a", "answer_b", "answer", "question", "rubric")

DEFAULT_PAIRWISE_TEMPLATE = """You are judging two answers to the same customer conversation.
{instructions}
Conversation:
{prompt}

Reference answer (may be empty):
{reference}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is better? Give one short reason, then your verdict, in exactly this format:
Reason: <one sentence>
Verdict: <A, B or tie>"""

DEFAULT_RATING_TEMPLATE = """You are rating one answer to a customer conversation on: {question}.
{rubric}
{instructions}
Conversation:
{prompt}

Reference answer (may be empty):
{reference}

Answer:
{answer}

Rate the answer from 1 to 5. Give one short reason, then your verdict, in exactly this format:
Reason: <one sentence>
Verdict: <1, 2, 3, 4 or 5>"""

_VERDICT_LINE = re.compile(r"^\s*\**\s*verdict\s*\**\s*:\s*\**\s*(.*?)\s*\**\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
_REASON_LINE = re.compile(r"^\s*\**\s*reason\s*\**\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_FIELD = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")


def default_template(kind: str) -> str:
    return DEFAULT_PAIRWISE_TEMPLATE if kind == "pairwise" else DEFAULT_RATING_TEMPLATE


def render(template: str, fields: dict) -> str:
    """The template with its known `{field}`s filled in; any other text (braces included) is kept."""
    return _FIELD.sub(lambda m: str(fields.get(m.group(1), "") or ""), template)


def check_template(template: str | None, kind: str) -> str:
    text = default_template(kind) if template is None or not str(template).strip() else str(template)
    if len(text) > MAX_TEMPLATE_CHARS:
        raise WorkbenchError(f"the template is {len(text):,} characters; keep it under {MAX_TEMPLATE_CHARS:,}")
    needed = ("answer_a", "answer_b") if kind == "pairwise" else ("answer",)
    missing = [f"{{{f}}}" for f in needed if f"{{{f}}}" not in text]
    if missing:
        raise WorkbenchError(f"the template has no {' and no '.join(missing)}; a {kind} judge must see "
                             f"{'both answers' if kind == 'pairwise' else 'the answer'}")
    return text


def parse_verdict(text: str, allowed: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(verdict, reason) from a judge's answer, strictly: exactly one `Verdict:` line whose value is one of
    `allowed` (case aside). Anything else gives (None, reason): unparseable, never guessed."""
    lines = _VERDICT_LINE.findall(text or "")
    reason = next(iter(_REASON_LINE.findall(text or "")), None)
    if len(lines) != 1:
        return None, reason
    by_lower = {a.lower(): a for a in allowed}
    return by_lower.get(lines[0].strip().lower()), reason


# ---------------------------------------------------------------- the judge model

@dataclass(frozen=True)
class JudgeModel:
    """Who judges: a model the project loads (base_model, adapter) or an OpenAI-compatible endpoint."""

    label: str
    base_model: str | None = None
    adapter: str | None = None
    run_id: str | None = None
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV

    def to_json(self) -> dict:
        """What is stored: never the API key, only where it is read from."""
        return {"label": self.label, "base_model": self.base_model, "adapter": self.adapter, "run_id": self.run_id,
                "endpoint": self.endpoint, "model": self.model,
                "api_key_env": self.api_key_env if self.endpoint else None}


def resolve_judge(store: Store, judge: str | None = None, *, endpoint: str | None = None, model: str | None = None,
                  api_key_env: str | None = None) -> JudgeModel:
    """`tiny`, a finished run id, a local model or adapter folder; or --endpoint URL with --model NAME."""
    from workbench.models import eval_setup, playground

    if endpoint:
        if judge:
            raise WorkbenchError("give either --judge MODEL or --endpoint URL --model NAME, not both")
        if not model:
            raise WorkbenchError("--endpoint needs --model NAME: the model the endpoint should answer with")
        url = endpoint.rstrip("/")
        if not re.match(r"^https?://", url):
            raise WorkbenchError(f"endpoint {endpoint!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
        return JudgeModel(f"{model} @ {url}", endpoint=url, model=model,
                          api_key_env=api_key_env or DEFAULT_API_KEY_ENV)
    if not judge:
        raise WorkbenchError("say who judges: --judge tiny|RUN_ID|FOLDER, or --endpoint URL --model NAME")
    if judge != "tiny" and Path(judge).expanduser().is_dir():
        spec = playground.resolve_folder(store, judge)
    elif judge == "tiny":
        spec = eval_setup.resolve_model(store, base_model="tiny")
    else:
        spec = eval_setup.resolve_model(store, run_id=judge)
    return JudgeModel(playground.model_label(spec), base_model=spec.base_model, adapter=spec.adapter,
                      run_id=spec.run_id)


def endpoint_answer(judge: JudgeModel, prompt: str, *, max_new_tokens: int, timeout: float = 600.0) -> str:
    """One greedy answer from an OpenAI-compatible /chat/completions endpoint."""
    body = json.dumps({"model": judge.model, "messages": [{"role": "user", "content": prompt}],
                       "temperature": 0, "max_tokens": int(max_new_tokens), "stream": False}).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(judge.api_key_env or DEFAULT_API_KEY_ENV)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{judge.endpoint}/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the user's own URL)
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise WorkbenchError(f"the endpoint {judge.endpoint} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WorkbenchError(f"could not reach the endpoint {judge.endpoint}: {exc}") from None
    try:
        return str(payload["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        raise WorkbenchError(f"the endpoint {judge.endpoint} gave no choices[0].message.content") from None


def answerer(store: Store, judge: JudgeModel, *, max_new_tokens: int) -> Callable[[str], str]:
    """A function prompt -> the judge's whole answer (greedy)."""
    if judge.endpoint:
        return lambda prompt: endpoint_answer(judge, prompt, max_new_tokens=max_new_tokens)
    from trainers.config import ConfigError
    from workbench.models import eval_setup, playground

    spec = eval_setup.ModelSpec(judge.base_model or "", judge.adapter, judge.run_id, judge.label)
    model = playground.loaded_models(store).get(spec)

    def ask(prompt: str) -> str:
        try:
            return model.answer([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                                temperature=0.0)["answer"]
        except ConfigError as exc:
            raise WorkbenchError(str(exc)) from None
    return ask


# ---------------------------------------------------------------- what is judged

def review_units(store: Store, review: R.Review) -> list[dict]:
    """The review's items as judge units: {item, eval_item, _row, category, shown: [evals as shown]}."""
    plan = R.review_items(store, review)
    return [{"item": str(p["item"]), "eval_item": int(p["eval_item"]), "_row": int(p["_row"]),
             "category": None if pd.isna(p["category"]) else p["category"],
             "shown": [int(p["left_eval"])] + ([] if pd.isna(p["right_eval"]) else [int(p["right_eval"])])}
            for p in plan.to_dict("records")]


def eval_units(store: Store, evals: list[int], kind: str, sample_size: int | None = None) -> list[dict]:
    """Every test item all runs answered (or the first `sample_size` of them), as judge units."""
    from workbench.data.browse import category_column

    items = evaluation.answered_by_all(store, evals)
    if not items:
        raise WorkbenchError("these runs have no test item that all of them answered; wait for their answers")
    items = items[: int(sample_size)] if sample_size else items
    first = evaluation.get_eval(store, evals[0])
    version = evaluation.version_of(store, first)
    rows = evaluation.item_rows(store, first.eval_id, items)
    cat = category_column(store, version)
    cat_of = {r[ROW_COLUMN]: r.get(cat) for r in records(store, version, sorted(set(rows.values())))} if cat else {}
    units = []
    for i in items:
        category = cat_of.get(rows[i])
        base = {"item": str(i), "eval_item": int(i), "_row": int(rows[i]),
                "category": None if category is None else str(category)}
        shown = [[evals[0], evals[1]]] if kind == "pairwise" else [[e] for e in evals]
        units += [{**base, "item": base["item"] if len(shown) == 1 else f"{i}:{s[0]}", "shown": s} for s in shown]
    return units


def _conversation_text(messages: list[dict]) -> str:
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages)


def _rubric(question: dict) -> str:
    anchors = "; ".join(f"{k} = {v}" for k, v in R.DEFAULT_ANCHORS.items())
    help_text = (question.get("help") or "").strip()
    return (f"{help_text}\n" if help_text else "") + f"Scale: {anchors}."


def _prompts(kind: str, template: str, unit: dict, texts: dict, questions: list[dict], instructions: str) -> list:
    """[(question, order, first_eval, second_eval, prompt)] for one unit."""
    base = {"instructions": instructions or "", "prompt": texts["prompt"], "reference": texts["reference"] or ""}
    if kind == "pairwise":
        a, b = unit["shown"]
        out = []
        for order, (x, y) in enumerate(((a, b), (b, a))):
            fields = {**base, "answer_a": texts[x], "answer_b": texts[y], "question": R.PREFERENCE}
            out.append((R.PREFERENCE, order, x, y, render(template, fields)))
        return out
    (e,) = unit["shown"]
    return [(q["name"], 0, e, None, render(template, {**base, "answer": texts[e], "question": q["name"],
                                                         "rubric": _rubric(q)})) for q in questions]


def _texts(store: Store, evals: list[int], unit: dict, version) -> dict:
    (record,) = records(store, version, [unit["_row"]]) or [{}]
    outs = evaluation.outputs(store, unit["eval_item"], unit["shown"])
    return {"prompt": _conversation_text(R.prompt_messages(version, record)),
            "reference": evaluation.reference(store, evals[0], unit["eval_item"]),
            **{e: outs.get(e, "") for e in unit["shown"]}}


# ---------------------------------------------------------------- judge runs

@dataclass(frozen=True)
class JudgeRun:
    judge_id: int
    review_id: int | None
    evals: tuple[int, ...]
    kind: str
    questions: tuple[dict, ...]
    judge: dict
    template: str
    settings: dict
    status: str
    n_units: int
    created_at: object = None
    created_by: str | None = None
    finished_at: object = None
    error: str | None = None

    @property
    def label(self) -> str:
        return self.judge.get("label") or "?"

    @property
    def question_names(self) -> list[str]:
        return [R.PREFERENCE] if self.kind == "pairwise" else [q["name"] for q in self.questions]

    def to_json(self) -> dict:
        return {"judge_id": self.judge_id, "review_id": self.review_id, "evals": list(self.evals), "kind": self.kind,
                "questions": list(self.questions), "judge": self.judge, "template": self.template,
                "settings": self.settings, "status": self.status, "n_units": self.n_units,
                "created_at": self.created_at, "created_by": self.created_by, "finished_at": self.finished_at,
                "error": self.error}


_COLS = ("judge_id, review_id, evals, kind, questions, judge, template, settings, status, n_units, created_at, "
         "created_by, finished_at, error")


def _judge_run(row) -> JudgeRun:
    (jid, rid, evals, kind, qs, judge, template, settings, status, n, created, by, finished, error) = row
    return JudgeRun(jid, rid, tuple(json.loads(evals)), kind, tuple(json.loads(qs)), json.loads(judge), template,
                    json.loads(settings), status, n, created, by, finished, error)


def get_judge(store: Store, judge_id: int) -> JudgeRun:
    rows = store.cursor().execute(f"SELECT {_COLS} FROM wb_judges WHERE judge_id = ?", [int(judge_id)]).fetchall()
    if not rows:
        raise WorkbenchError(f"no judge run {judge_id}; see `workbench judge list`")
    return _judge_run(rows[0])


def list_judges(store: Store, review_id: int | None = None) -> list[JudgeRun]:
    """Judge runs, newest first (only those of one review when review_id is given)."""
    where, params = ("WHERE review_id = ?", [int(review_id)]) if review_id is not None else ("", [])
    return [_judge_run(r) for r in store.cursor().execute(
        f"SELECT {_COLS} FROM wb_judges {where} ORDER BY judge_id DESC", params).fetchall()]


def verdicts(store: Store, judge: JudgeRun | int) -> pd.DataFrame:
    """Every stored verdict: item, eval_item, category, question, order_no, first_eval, second_eval, raw,
    reason, verdict (None: unparseable), winner_eval (pairwise; None for a tie or unparseable)."""
    judge_id = judge.judge_id if isinstance(judge, JudgeRun) else int(judge)
    return store.cursor().execute(
        "SELECT item, eval_item, category, question, order_no, first_eval, second_eval, raw, reason, verdict, "
        "CASE WHEN verdict = 'A' THEN first_eval WHEN verdict = 'B' THEN second_eval END AS winner_eval, seconds "
        "FROM wb_judge_verdicts WHERE judge_id = ? ORDER BY pos, question, order_no", [judge_id]).df()


def create_judge(store: Store, *, review_id: int | None = None, evals: list[int] | None = None,
                 kind: str = "pairwise", questions=None, judge: str | None = None, endpoint: str | None = None,
                 model: str | None = None, api_key_env: str | None = None, template: str | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, sample_size: int | None = None,
                 user: User | None = None, progress: Callable[[float, str], None] | None = None) -> JudgeRun:
    """Judge every item of a review (its questions, its pairs) or of a comparison of evaluation runs, and
    store the verdicts; returns the finished run (status 'done', or 'failed' with the error, re-raised)."""
    user = require_role(user, "evaluate")
    if (review_id is None) == (not evals):
        raise WorkbenchError("judge either a review (--review REVIEW_ID) or evaluation runs (--evals A,B), "
                             "one of the two")
    if not isinstance(max_new_tokens, int) or not 8 <= max_new_tokens <= 4096:
        raise WorkbenchError(f"max_new_tokens: {max_new_tokens!r}; expected a whole number from 8 to 4096")
    if review_id is not None:
        review = R.get_review(store, review_id)
        kind, evals, qs, instructions = review.kind, list(review.evals), review.questions, review.instructions
        units = review_units(store, review)
    else:
        evals = [int(e) for e in evals]
        if kind not in R.KINDS:
            raise WorkbenchError(f"kind {kind!r}; expected one of {', '.join(R.KINDS)}")
        if len(set(evals)) != len(evals) or (kind == "pairwise" and len(evals) != 2):
            raise WorkbenchError("a pairwise judge compares two different evaluation runs: --evals A,B")
        qs = R.check_questions(questions if questions else R.DEFAULT_QUESTIONS) if kind == "rating" else ()
        instructions = ""
        units = eval_units(store, evals, kind, sample_size)
    text = check_template(template, kind)
    who = resolve_judge(store, judge, endpoint=endpoint, model=model, api_key_env=api_key_env)
    judge_id = store.cursor().execute("SELECT nextval('wb_judge_seq')").fetchall()[0][0]
    settings = {"max_new_tokens": max_new_tokens, "temperature": 0.0, "sample_size": sample_size}
    store.retry(lambda cur: cur.execute(
        f"INSERT INTO wb_judges ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, NULL, NULL)",
        [judge_id, review_id, json.dumps(evals), kind, json.dumps(list(qs)), json.dumps(who.to_json()), text,
         json.dumps(settings), len(units), now_utc(), user.name]))
    try:
        ask = answerer(store, who, max_new_tokens=max_new_tokens)
        _judge_units(store, judge_id, kind, text, units, evals, list(qs), instructions, ask, progress)
    except BaseException as exc:
        _finish(store, judge_id, "failed", str(exc)[:1000] or type(exc).__name__)
        raise
    _finish(store, judge_id, "done", None)
    return get_judge(store, judge_id)


def _finish(store: Store, judge_id: int, status: str, error: str | None) -> None:
    store.retry(lambda cur: cur.execute("UPDATE wb_judges SET status = ?, finished_at = ?, error = ? "
                                        "WHERE judge_id = ?", [status, now_utc(), error, judge_id]))


def _judge_units(store, judge_id, kind, template, units, evals, questions, instructions, ask, progress) -> None:
    import time

    version = evaluation.version_of(store, evaluation.get_eval(store, evals[0]))
    allowed = PAIRWISE_VERDICTS if kind == "pairwise" else RATING_VERDICTS
    for pos, unit in enumerate(units):
        texts = _texts(store, evals, unit, version)
        rows = []
        for question, order, first, second, prompt in _prompts(kind, template, unit, texts, questions, instructions):
            start = time.monotonic()
            raw = ask(prompt)
            verdict, reason = parse_verdict(raw, allowed)
            rows.append([judge_id, unit["item"], pos, unit["eval_item"], unit["category"], question, order, first,
                         second, prompt, raw, reason, verdict, round(time.monotonic() - start, 3)])
        store.retry(lambda cur, rows=rows: cur.executemany(
            "INSERT INTO wb_judge_verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows))
        if progress is not None:
            progress((pos + 1) / len(units), f"judged {pos + 1:,} of {len(units):,}")
