"""Agreement between annotators: load answers (stored annotations or a long-format file), compute every
coefficient with its interval and reading, find where annotators disagree, judge each annotator, and
write a consensus as a new dataset version.

The maths lives in `metrics.agreement`; this module turns answers into a `Ratings` table and the
results into one JSON-ready report dict (the CLI prints it, the Agreement page draws it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from metrics import agreement as ag
from metrics.interpret import reading
from workbench.core.errors import WorkbenchError
from workbench.labels.annotator_accuracy import annotator_accuracy

LEVELS = ag.LEVELS
CONSENSUS_METHODS = ("majority", "dawid-skene")
DEFAULT_RESAMPLES = 1000
ANSWER_COLUMNS = ["item", "annotator", "value"]
# Kinds of question whose answers have an order: agreement defaults to the ordinal level.
ORDERED_KINDS = ("rating",)

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------- answers from a file

def answer_text(value) -> str | None:
    """One answer as text, or None when empty: 3 and 3.0 -> '3', a list of tags -> its sorted JSON list."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return json.dumps(sorted({str(v).strip() for v in value}), ensure_ascii=False)
    text = str(value).strip()
    if not text:
        return None
    if text.startswith("[") and text.endswith("]"):
        try:
            tags = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(tags, list):
            return json.dumps(sorted({str(v).strip() for v in tags}), ensure_ascii=False)
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    # One spelling per number, as for numbers read as numbers: "2.0" -> "2", "1.50" -> "1.5".
    return str(int(number)) if number.is_integer() else repr(number)


def read_answers_file(path, *, item_col: str, annotator_col: str, value_col: str, question: str | None = None,
                      question_col: str | None = None) -> pd.DataFrame:
    """Long-format answers (one row per item and annotator) from CSV, TSV, JSONL, JSON or Parquet.

    With `question`, only rows whose question column (`question_col`, default `question`) has that value
    are kept; a file that holds several questions needs one. Empty answers are dropped. When an annotator
    answered an item twice, the later row counts (as with stored annotations).
    Returns columns item, annotator, value (text) and `duplicates` in `df.attrs`.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no such file: {path}")
    df = read_answers_table(path)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if question_col is None and question is not None and "question" in columns:
        question_col = "question"
    for flag, col in (("--item-col", item_col), ("--annotator-col", annotator_col), ("--value-col", value_col),
                      ("--question-col", question_col)):
        if col and col not in columns:
            raise WorkbenchError(f"{path.name} has no column {col!r} ({flag}); its columns: {', '.join(columns)}")
    if question is not None and question_col:
        df = df[df[question_col].astype(str).str.strip() == question]
        if df.empty:
            raise WorkbenchError(f"no row of {path.name} has {question_col} = {question!r}")
    elif question is not None:
        raise WorkbenchError(f"{path.name} has no `question` column to pick {question!r} from; name it with "
                             "--question-col or leave --question out")
    elif "question" in columns and "question" not in (item_col, annotator_col, value_col):
        asked = sorted(df["question"].astype(str).str.strip().unique())
        if len(asked) > 1:
            raise WorkbenchError(f"{path.name} holds answers to {len(asked)} questions ({', '.join(asked[:10])}); "
                                 f"pick one with --question, for example --question {asked[0]}")
    return answers_frame(df[item_col], df[annotator_col], df[value_col])


def answers_frame(items, annotators, values) -> pd.DataFrame:
    """Clean long-format answers: text item/annotator/value, empty answers dropped, the last answer of an
    annotator for an item kept (`df.attrs['duplicates']` counts the earlier ones dropped)."""
    df = pd.DataFrame({"item": _each_distinct(items, _item_text), "annotator": _each_distinct(annotators, _name_text),
                       "value": _each_distinct(values, answer_text)})
    df = df[df["item"].notna() & (df["item"] != "") & df["annotator"].notna() & (df["annotator"] != "")
            & df["value"].notna()]
    before = len(df)
    df = df.drop_duplicates(["item", "annotator"], keep="last").reset_index(drop=True)
    df.attrs["duplicates"] = before - len(df)
    return df


def _each_distinct(values, fn) -> np.ndarray:
    """fn applied to each distinct value once (answers repeat the same few values 100,000s of times)."""
    values = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values.astype(object)
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable cells, such as lists of tags in JSON
        return np.array([fn(x) for x in values], dtype=object)
    mapped = np.array([fn(u) for u in uniques] + [None], dtype=object)
    return mapped[codes]  # code -1 (missing) picks the trailing None


def _item_text(x) -> str | None:
    return None if _empty(x) else (x.strip() if isinstance(x, str) else answer_text(x))


def _name_text(x) -> str | None:
    return None if _empty(x) else str(x).strip()


def _empty(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


# ---------------------------------------------------------------- answers from the store

def stored_answers(store, dataset: str, question: str) -> tuple[pd.DataFrame, dict]:
    """The latest answer per (item, annotator) of a stored question, and what the question says:
    {dataset, question, kind, labels (its choices, in order), gold (adjudicated item -> value)}."""
    from workbench.labels import adjudication, annotations, questions

    q = questions.get_question(store, dataset, question)
    if q.kind == "text":
        raise WorkbenchError(f"{question!r} asks for free text (corrected responses); agreement needs choices, "
                             "tags or ratings. Pick a single-choice, multi-label, rating or accept-reject question")
    df = annotations.answers(store, q)
    status = adjudication.item_status(store, q)
    final = {"agreed", "majority", "disputed", "open"}
    adjudicated = status[~status["status"].isin(final) & status["final"].notna()]
    gold = dict(zip(adjudicated["item"].astype(str), adjudicated["final"].astype(str)))
    labels = list(q.choices) if q.kind != "multi-label" else None
    info = {"dataset": dataset, "question": question, "kind": q.kind, "labels": labels, "gold": gold,
            "version": q.version(store).ref}
    out = answers_frame(df["item"], df["annotator"], df["value"])
    out["row"] = df.set_index(["item", "annotator"])["row"].reindex(
        pd.MultiIndex.from_frame(out[["item", "annotator"]])).to_numpy()
    return out, info


def default_level(kind: str | None) -> str:
    return "ordinal" if kind in ORDERED_KINDS else "nominal"


# ---------------------------------------------------------------- the report

def to_ratings(answers: pd.DataFrame, *, level: str, labels=None) -> ag.Ratings:
    """The item x annotator table of one question's answers, with the labels in order for this level."""
    if level not in LEVELS:
        raise WorkbenchError(f"level {level!r} is not known; expected one of {', '.join(LEVELS)}")
    if answers.empty:
        raise WorkbenchError("there are no answers to compare yet; import annotations or label some records")
    seen = list(pd.unique(answers["value"]))
    given = bool(labels)
    if labels:
        labels = [str(x) for x in labels]
        extra = [v for v in seen if v not in set(labels)]
        if extra:  # answers the question no longer offers still count, after the known ones
            labels = labels + ag.ordered_labels(extra)
    else:
        labels = ag.ordered_labels(seen)
    if level in ("interval", "ratio"):
        try:
            ag.numeric_values(labels, level)
        except ValueError as exc:
            raise WorkbenchError(f"{exc}; use --level nominal (or ordinal with the order given)") from None
        labels = ag.ordered_labels(labels)
    elif level == "ordinal" and not given and not all(ag.as_number(x) is not None for x in labels):
        raise WorkbenchError("the ordinal level needs the order of the answers, which are not numbers: give it "
                             f"lowest first, for example --labels {','.join(map(str, labels[:3]))}")
    # pandas' factorize does in C what Ratings.from_long does in Python: it matters at 100,000s of answers
    item_idx, items = pd.factorize(answers["item"], sort=False)
    ann_idx, people = pd.factorize(answers["annotator"].astype(str), sort=True)
    value_idx = pd.Categorical(answers["value"], categories=labels).codes
    flat = item_idx.astype(np.int64) * len(people) + ann_idx
    if len(pd.unique(flat)) != len(flat):
        raise WorkbenchError("an annotator answered an item twice; keep the latest answer of each (item, annotator)")
    codes = np.full((len(items), len(people)), ag.MISSING, dtype=np.int32)
    codes.reshape(-1)[flat] = value_idx
    return ag.Ratings(codes, tuple(labels), tuple(items), tuple(people))


def build_report(answers: pd.DataFrame, *, level: str = "nominal", labels=None, gold: dict | None = None,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = 0.95, top: int = 50,
                 source: dict | None = None, progress: Progress | None = None) -> dict:
    """Everything the Agreement page and `workbench agreement --json` show, as plain JSON types.

    Top-level keys: krippendorff_alpha, fleiss_kappa, cohen_kappa_mean, percent_agreement (None when
    undefined; `reasons` says why), n_items, n_annotators, n_answers, level, labels; then `coefficients`
    (each with ci_low/ci_high, n_items, n_annotators, reason, reading), `alpha_by_level`, `pairwise`
    (Cohen's kappa per pair, plain and, for ordered levels, linear/quadratic weighted), `per_label`,
    `disputed` (most disputed items first), `annotators` (quality), `annotator_accuracy` (each annotator against
    the adjudicated and the high-confidence labels, with Wilson intervals), `dawid_skene`, `bootstrap`, `notes`.
    """
    progress = progress or _no_progress
    if not 0 < confidence < 1:
        raise WorkbenchError(f"confidence is {confidence}; expected a number between 0 and 1 such as 0.95")
    if resamples < 0:
        raise WorkbenchError(f"resamples is {resamples}; expected 0 (no intervals) or more, such as 1000")
    ratings = to_ratings(answers, level=level, labels=labels)
    boot = {"resamples": int(resamples), "seed": seed, "confidence": confidence}
    notes = _notes(answers, ratings)

    steps = 6.0
    progress(0 / steps, "Krippendorff's alpha")
    coefficients = {}
    alpha = ag.krippendorff_alpha(ratings, level=level, resamples=resamples, seed=seed, confidence=confidence)
    coefficients["krippendorff_alpha"] = alpha
    progress(1 / steps, "percent agreement and Fleiss' kappa")
    coefficients["percent_agreement"] = ag.percent_agreement(ratings, resamples=resamples, seed=seed,
                                                             confidence=confidence)
    coefficients["fleiss_kappa"] = ag.fleiss_kappa(ratings, resamples=resamples, seed=seed, confidence=confidence)
    progress(2 / steps, "Cohen's kappa for every pair")
    weightings = [None] + (["linear", "quadratic"] if level != "nominal" else [])
    pairwise = {}
    table = ag.cohen_kappa_table(ratings, weightings=weightings, resamples=resamples, seed=seed, confidence=confidence)
    for w, res in table.items():
        key = "cohen_kappa" if w is None else f"cohen_kappa_{w}"
        coefficients[f"{key}_mean"] = res["mean"]
        pairwise[w or "none"] = res
    progress(3 / steps, "alpha at every level")
    by_level = {}
    for other in _levels_for(ratings.labels, level):
        c = alpha if other == level else ag.krippendorff_alpha(ratings, level=other)
        by_level[other] = {"value": c.value, "reason": c.reason}
    progress(4 / steps, "where annotators disagree")
    gold_codes = _gold_codes(ratings, gold or {})
    ds = ag.dawid_skene(ratings) if ratings.n_labels >= 2 else None
    report_coefs = {name: _coef_json(c) for name, c in coefficients.items()}
    answered_by = (ratings.codes >= 0).any(axis=0)
    report = {
        "source": source or {},
        "level": level,
        "labels": [str(x) for x in ratings.labels],
        "n_items": int(((ratings.codes >= 0).sum(axis=1) >= 1).sum()),
        "n_annotators": int(answered_by.sum()),
        "n_answers": int((ratings.codes >= 0).sum()),
        "n_items_compared": alpha.n_items,
        **{name: report_coefs[name]["value"] for name in ("krippendorff_alpha", "fleiss_kappa", "cohen_kappa_mean",
                                                           "percent_agreement")},
        "reasons": {name: c["reason"] for name, c in report_coefs.items() if c["value"] is None},
        "coefficients": report_coefs,
        "alpha_by_level": by_level,
        "pairwise": _pairwise_json(ratings, pairwise),
        "per_label": _per_label_json(ratings),
        "bootstrap": boot,
        "notes": notes,
    }
    progress(5 / steps, "annotators and Dawid-Skene")
    report["disputed"] = _disputed(ratings, answers, level=level, ds=ds, gold=gold or {}, top=top)
    report["annotators"] = _annotator_rows(ratings, gold_codes, pairwise["none"], ds)
    report["dawid_skene"] = _dawid_skene_json(ratings, ds)
    report["gold_items"] = int((gold_codes >= 0).sum())
    report["annotator_accuracy"] = annotator_accuracy(ratings, gold or {}, confidence=confidence)
    progress(1.0, "done")
    return report


def _notes(answers: pd.DataFrame, ratings: ag.Ratings) -> list[str]:
    """What a reader of the figures should know about the answers they come from."""
    notes = []
    if answers.attrs.get("duplicates"):
        notes.append(f"{answers.attrs['duplicates']:,} repeated answers (same item and annotator) were replaced "
                     "by the later one")
    if any(str(v).startswith("[") for v in ratings.labels):
        notes.append("multi-label answers are compared as whole sets of tags: two answers agree only when they "
                     "chose exactly the same tags")
    return notes


def _per_label_json(ratings: ag.Ratings) -> list[dict]:
    """ag.per_label with its labels as text."""
    rows = ag.per_label(ratings)
    for row in rows or []:
        row["label"] = str(row["label"])
        row["confused_with"] = None if row["confused_with"] is None else str(row["confused_with"])
    return rows


def _levels_for(labels, level: str) -> list[str]:
    """The levels the labels support: all four for numbers (ratio needs none negative), else nominal (and the
    level asked for, when the labels' order was given for ordinal)."""
    numbers = [ag.as_number(x) for x in labels]
    if all(x is not None for x in numbers):
        return ["nominal", "ordinal", "interval"] + (["ratio"] if min(numbers) >= 0 else [])
    return list(dict.fromkeys(["nominal", level]))


def _coef_json(c: ag.Coefficient) -> dict:
    out = c.to_dict()
    out["reading"] = reading(c.name, c.value, ci_low=c.ci_low, ci_high=c.ci_high, reason=c.reason)
    return out


def _matrix_json(m: np.ndarray) -> list:
    return [[None if not np.isfinite(x) else float(x) for x in row] for row in m]


def _pairwise_json(ratings: ag.Ratings, pairwise: dict) -> dict:
    out = {"annotators": [str(a) for a in ratings.annotators]}
    for weights, res in pairwise.items():
        out[weights] = {"kappa": _matrix_json(res["matrix"]), "n_items": res["n_items"].tolist(),
                        "pairs": [{"a": str(c.extra["a"]), "b": str(c.extra["b"]), "kappa": c.value,
                                   "ci_low": c.ci_low, "ci_high": c.ci_high, "n_items": c.n_items, "reason": c.reason,
                                   "reading": reading("kappa", c.value, ci_low=c.ci_low, ci_high=c.ci_high,
                                                      reason=c.reason)}
                                  for c in res["pairs"]]}
    return out


def _gold_codes(ratings: ag.Ratings, gold: dict) -> np.ndarray:
    index = {str(x): k for k, x in enumerate(ratings.labels)}
    codes = np.full(len(ratings.items), -1, dtype=np.int64)
    for k, item in enumerate(ratings.items):
        value = gold.get(str(item))
        if value is not None:
            codes[k] = index.get(answer_text(value), -1)
    return codes


def _disputed(ratings: ag.Ratings, answers: pd.DataFrame, *, level: str, ds, gold: dict, top: int) -> list[dict]:
    info = ag.item_disagreement(ratings, level=level)
    order = np.lexsort((-info["answers"], -np.nan_to_num(info["pairs_disagreeing"], nan=-1),
                        -np.nan_to_num(info["disagreement"], nan=-1)))
    order = [k for k in order if info["answers"][k] >= 2 and info["pairs_disagreeing"][k] > 0][:top]
    rows = answers.groupby("item")["row"].first().to_dict() if "row" in answers.columns else {}
    out = []
    for k in order:
        item = ratings.items[k]
        given = {str(ratings.annotators[j]): str(ratings.labels[c]) for j, c in enumerate(ratings.codes[k]) if c >= 0}
        row = rows.get(item)
        out.append({
            "item": str(item),
            "row": None if row is None or pd.isna(row) else int(row),
            "answers": int(info["answers"][k]),
            "distinct": int(info["distinct"][k]),
            "majority": str(ratings.labels[info["majority"][k]]),
            "majority_share": float(info["majority_share"][k]),
            "tied": bool(info["tied"][k]),
            "pairs_disagreeing": float(info["pairs_disagreeing"][k]),
            "disagreement": _num(info["disagreement"][k]),
            "dawid_skene": None if ds is None else str(ratings.labels[ds.label[k]]),
            "dawid_skene_confidence": None if ds is None else float(ds.confidence[k]),
            "gold": gold.get(str(item)),
            "given": given,
        })
    return out


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _annotator_rows(ratings: ag.Ratings, gold_codes: np.ndarray, pairwise: dict, ds) -> list[dict]:
    rows = ag.annotator_agreement(ratings, gold=gold_codes if (gold_codes >= 0).any() else None)
    matrix = pairwise["matrix"]
    for j, row in enumerate(rows):
        row["annotator"] = str(row["annotator"])
        others = np.delete(matrix[j], j)
        others = others[np.isfinite(others)]
        row["mean_kappa"] = float(others.mean()) if len(others) else None
        row["dawid_skene_accuracy"] = None if ds is None else float(ds.accuracy[j])
    return rows


def _dawid_skene_json(ratings: ag.Ratings, ds) -> dict:
    if ds is None:
        return {"reason": "only one label was used, so there is nothing to estimate"}
    labels = [str(x) for x in ratings.labels]
    return {"iterations": ds.iterations, "converged": ds.converged, "log_likelihood": ds.log_likelihood,
            "priors": dict(zip(labels, map(float, ds.priors))),
            "accuracy": {str(a): float(x) for a, x in zip(ratings.annotators, ds.accuracy)},
            "confusion": {str(a): _matrix_json(ds.confusion[j]) for j, a in enumerate(ratings.annotators)}}


# ---------------------------------------------------------------- entry points

def file_report(path, *, item_col: str, annotator_col: str, value_col: str, question: str | None = None,
                question_col: str | None = None, level: str = "nominal", labels=None,
                gold_annotator: str | None = None, **options) -> dict:
    """build_report on a long-format file. `gold_annotator` names an 'annotator' whose answers are gold
    labels (compared with, not counted as, an annotator)."""
    answers = read_answers_file(path, item_col=item_col, annotator_col=annotator_col, value_col=value_col,
                                question=question, question_col=question_col)
    answers, gold = split_gold(answers, gold_annotator)
    source = {"file": str(path), "question": question}
    return build_report(answers, level=level, labels=labels, gold=gold, source=source, **options)


def split_gold(answers: pd.DataFrame, gold_annotator: str | None) -> tuple[pd.DataFrame, dict]:
    if not gold_annotator:
        return answers, {}
    is_gold = answers["annotator"] == gold_annotator
    if not is_gold.any():
        names = ", ".join(sorted(answers["annotator"].unique())[:20])
        raise WorkbenchError(f"no answers by {gold_annotator!r} (the gold annotator); annotators are: {names}")
    gold = dict(zip(answers.loc[is_gold, "item"], answers.loc[is_gold, "value"]))
    kept = answers[~is_gold].reset_index(drop=True)
    kept.attrs.update(answers.attrs)
    return kept, gold


def question_report(store, dataset: str, question: str, *, level: str | None = None, labels=None,
                    **options) -> dict:
    """build_report on a stored question's latest answers; gold = the admin's adjudicated values.
    The level defaults to ordinal for rating questions, else nominal; the labels to the question's choices."""
    answers, info = stored_answers(store, dataset, question)
    level = level or default_level(info["kind"])
    source = {"dataset": dataset, "question": question, "kind": info["kind"], "version": info["version"]}
    return build_report(answers, level=level, labels=labels or info["labels"], gold=info["gold"], source=source,
                        **options)


def consensus(answers: pd.DataFrame, *, method: str = "majority", labels=None, gold: dict | None = None) -> dict:
    """One label per item: {"labels": item -> label, "from_gold", "from_votes", "tied" (items left out: a
    majority tie), "method"}. Gold (adjudicated) values win over votes. Dawid-Skene takes each item's most
    likely label under the estimated annotator confusion matrices."""
    if method not in CONSENSUS_METHODS:
        raise WorkbenchError(f"consensus method {method!r} is not known; expected {' or '.join(CONSENSUS_METHODS)}")
    ratings = to_ratings(answers, level="nominal", labels=labels)
    tied: list[str] = []
    if method == "majority":
        mv = ag.majority_vote(ratings)
        chosen, skip = mv["label"], mv["tied"]
        tied = [str(ratings.items[k]) for k in np.nonzero(skip)[0]]
    else:
        ds = ag.dawid_skene(ratings)
        chosen, skip = ds.label, np.zeros(len(ratings.items), dtype=bool)
    out = {str(ratings.items[k]): str(ratings.labels[c]) for k, c in enumerate(chosen) if c >= 0 and not skip[k]}
    votes = len(out)
    gold = {str(k): str(v) for k, v in (gold or {}).items()}
    for item, value in gold.items():
        out[item] = value
    return {"labels": out, "method": method, "from_gold": len(gold), "from_votes": votes - len(set(gold) & set(out)),
            "tied": tied}


def write_consensus(store, dataset: str, question: str, *, method: str = "majority", column: str | None = None,
                    created_by: str | None = None, user=None) -> dict:
    """Write the consensus labels of a stored question as a new version of its dataset."""
    from workbench.labels import adjudication

    answers, info = stored_answers(store, dataset, question)
    result = consensus(answers, method=method, labels=info["labels"], gold=info["gold"])
    recipe = {"source": "consensus", "method": method, "annotators": int(answers["annotator"].nunique()),
              "answers": len(answers), "from_gold": result["from_gold"], "tied_left_out": len(result["tied"])}
    version = adjudication.write_labels_version(store, dataset, question, result["labels"], column=column,
                                                recipe=recipe, created_by=created_by, user=user)
    return {"version": version.ref, "records": version.row_count, "labels": len(result["labels"]),
            "method": method, "from_gold": result["from_gold"], "tied_left_out": len(result["tied"])}


def confusion_table(answers: pd.DataFrame, a: str, b: str, *, labels=None) -> pd.DataFrame:
    """Counts over the items both answered: rows annotator a's label, columns annotator b's."""
    ratings = to_ratings(answers, level="nominal", labels=labels)
    for name in (a, b):
        if name not in ratings.annotators:
            raise WorkbenchError(f"no answers by {name!r}; annotators are: {', '.join(map(str, ratings.annotators))}")
    m = ag.confusion(ratings, a, b)
    names = [str(x) for x in ratings.labels]
    return pd.DataFrame(m, index=pd.Index(names, name=a), columns=pd.Index(names, name=b))


# ---------------------------------------------------------------- helpers for the page

_GUESSES = {"item_col": ("item_id", "item", "record", "record_id", "id", "key"),
            "annotator_col": ("annotator", "rater", "coder", "user", "worker", "labeler", "annotator_id"),
            "value_col": ("value", "label", "answer", "rating", "category")}


def peek_file(path) -> dict:
    """A long-format file's columns, a guess at which column is which, and the questions it holds."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no such file: {path}")
    head = read_answers_table(path)
    columns = [str(c) for c in head.columns]
    lower = {c.lower(): c for c in columns}
    guess = {}
    for key, names in _GUESSES.items():
        guess[key] = next((lower[n] for n in names if n in lower and lower[n] not in guess.values()), None)
    questions = sorted(head["question"].astype(str).str.strip().unique().tolist()) if "question" in columns else []
    return {"columns": columns, "guess": guess, "questions": questions, "rows": len(head)}


def read_answers_table(path) -> pd.DataFrame:
    """The whole file as a table (text cells for CSV/TSV)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                               encoding="utf-8-sig")
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".json":
            return pd.read_json(path, dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise WorkbenchError(f"{path.name} could not be read: {str(exc).splitlines()[0]}") from None
    raise WorkbenchError(f"{path.name}: cannot read {suffix or 'a file without extension'}; "
                         "give a CSV, TSV, JSONL, JSON or Parquet file")


def fingerprint(answers: pd.DataFrame) -> str:
    """A short hash of a set of answers: a cached report is reused only for exactly these answers."""
    digest = pd.util.hash_pandas_object(answers[ANSWER_COLUMNS], index=False).to_numpy()
    return f"{len(answers)}:{int(digest.sum(dtype=np.uint64))}:{int(np.bitwise_xor.reduce(digest)) if len(digest) else 0}"


def consensus_csv(answers: pd.DataFrame, *, method: str = "majority", labels=None, gold=None) -> bytes:
    """The consensus as CSV bytes (item,label) for a download; cells a spreadsheet would run as a formula
    get a leading ' as in `workbench export`."""
    from workbench.data.export import FORMULA_START

    result = consensus(answers, method=method, labels=labels, gold=gold)

    def safe(text: str) -> str:
        return "'" + text if text and text[0] in FORMULA_START else text

    frame = pd.DataFrame({"item": [safe(k) for k in result["labels"]],
                          "label": [safe(v) for v in result["labels"].values()]})
    return frame.to_csv(index=False).encode("utf-8")
