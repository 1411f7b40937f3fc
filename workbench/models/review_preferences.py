"""From a blind review to preference training data: what people judged becomes DPO pairs or KTO examples.

Three rules, each a pure function of the review's current judgements (`review.judgements`: one row per item,
reviewer and question, a reviewer's latest answer being the one that counts, so a changed mind is its final
value):

    majority   pairwise reviews: one pair per item where more than half of the item's judgements prefer the
               same answer (chosen) over the other (rejected); ties and split votes are left out and counted.
    gap        rating reviews: for each test item, every two runs whose mean rating (of one question) differs
               by at least `min_gap` give a pair, the better rated answer chosen.
    kto        rating reviews: each judged answer with a mean rating above `threshold` is a desirable example,
               below it an undesirable one; an answer rated exactly at the threshold is left out.

The result is a new dataset version (`versions.write_version`) in the preference or kto format, its recipe
naming the review, the rule, its settings and the counts, so `review_actions.loop` finds it.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import pandas as pd
import pyarrow as pa

from workbench.core.auth import User, require_role
from workbench.core.canonical import prompt_to_canonical
from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL, FORMAT_COLUMNS
from workbench.core.store import Store
from workbench.core.versions import Version, check_name
from workbench.models import evaluation
from workbench.models.eval_items import records
from workbench.models.review import Review, as_review, judgements, prompt_messages

RULES = ("majority", "gap", "kto")
FIELD_BYTES = 1 << 30  # answers were already stored; no per-field limit applies to them again


def majority_votes(df: pd.DataFrame) -> dict[str, dict]:
    """Per pairwise item: {eval_item, left, right, votes {eval or 'tie': n}, n}."""
    out: dict[str, dict] = {}
    for item, g in df.groupby("item", sort=False):
        votes: dict = defaultdict(int)
        for w in g["winner_eval"]:
            votes["tie" if pd.isna(w) else int(w)] += 1
        first = g.iloc[0]
        out[str(item)] = {"eval_item": int(first["eval_item"]), "left": int(first["left_eval"]),
                          "right": int(first["right_eval"]), "votes": dict(votes), "n": len(g)}
    return out


def _majority(df: pd.DataFrame) -> tuple[list[dict], dict]:
    pairs, counts = [], {"items": 0, "pairs": 0, "ties": 0, "disagreements": 0}
    for item, v in majority_votes(df).items():
        counts["items"] += 1
        a, b = v["left"], v["right"]
        winner = next((e for e in (a, b, "tie") if v["votes"].get(e, 0) * 2 > v["n"]), None)
        if winner is None:
            counts["disagreements"] += 1
        elif winner == "tie":
            counts["ties"] += 1
        else:
            counts["pairs"] += 1
            pairs.append({"review_item": item, "eval_item": v["eval_item"], "chosen_eval": winner,
                          "rejected_eval": b if winner == a else a, "votes": v["votes"].get(winner, 0),
                          "judgements": v["n"]})
    return pairs, counts


def mean_ratings(df: pd.DataFrame, question: str) -> dict[tuple[int, int], float]:
    """{(test item, eval): mean rating of `question` over its reviewers}."""
    mine = df[df["question"] == question]
    means = mine.assign(v=mine["value"].astype(float)).groupby(["eval_item", "left_eval"])["v"].mean()
    return {(int(i), int(e)): float(m) for (i, e), m in means.items()}


def _gap(df: pd.DataFrame, question: str, min_gap: float) -> tuple[list[dict], dict]:
    means = mean_ratings(df, question)
    by_item: dict[int, dict[int, float]] = defaultdict(dict)
    for (i, e), m in means.items():
        by_item[i][e] = m
    pairs, counts = [], {"items": len(by_item), "pairs": 0, "below_gap": 0}
    for i in sorted(by_item):
        for a, b in combinations(sorted(by_item[i]), 2):
            ma, mb = by_item[i][a], by_item[i][b]
            if abs(ma - mb) < min_gap:
                counts["below_gap"] += 1
                continue
            hi, lo = (a, b) if ma > mb else (b, a)
            counts["pairs"] += 1
            pairs.append({"eval_item": i, "chosen_eval": hi, "rejected_eval": lo, "chosen_rating": by_item[i][hi],
                          "rejected_rating": by_item[i][lo]})
    return pairs, counts


def _kto(df: pd.DataFrame, question: str, threshold: float) -> tuple[list[dict], dict]:
    examples, counts = [], {"answers": 0, "desirable": 0, "undesirable": 0, "at_threshold": 0}
    for (i, e), m in sorted(mean_ratings(df, question).items()):
        counts["answers"] += 1
        if m == threshold:
            counts["at_threshold"] += 1
            continue
        counts["desirable" if m > threshold else "undesirable"] += 1
        examples.append({"eval_item": i, "eval": e, "label": m > threshold, "rating": m})
    return examples, counts


def build(store: Store, review: Review | int, *, rule: str, min_gap: float = 2.0, threshold: float = 3.0,
          question: str | None = None) -> tuple[list[dict], dict, dict]:
    """(records in canonical fields, counts, settings) for one rule; nothing is written."""
    review = as_review(store, review)
    if rule not in RULES:
        raise WorkbenchError(f"rule {rule!r} is not known; expected one of {', '.join(RULES)}")
    want = "pairwise" if rule == "majority" else "rating"
    if review.kind != want:
        raise WorkbenchError(f"review {review.review_id} is a {review.kind} review; rule {rule} needs a {want} review"
                             f" (use {'--rule majority' if review.kind == 'pairwise' else '--rule gap or kto'})")
    df = judgements(store, review)
    settings: dict = {}
    if rule == "majority":
        found, counts = _majority(df)
    else:
        question = question or review.question_names[0]
        if question not in review.question_names:
            raise WorkbenchError(f"{question!r} is not a question of review {review.review_id}; its questions: "
                                 f"{', '.join(review.question_names)}")
        settings["question"] = question
        if rule == "gap":
            if min_gap <= 0:
                raise WorkbenchError(f"--min-gap {min_gap}: expected a rating difference above 0, for example 2")
            settings["min_gap"] = min_gap
            found, counts = _gap(df, question, min_gap)
        else:
            settings["threshold"] = threshold
            found, counts = _kto(df, question, threshold)
    return _with_text(store, review, found, rule), counts, settings


def _with_text(store: Store, review: Review, found: list[dict], rule: str) -> list[dict]:
    """The prompt (the test record's conversation) and the runs' answers for each pair or example."""
    if not found:
        return []
    first = evaluation.get_eval(store, review.evals[0])
    version = evaluation.version_of(store, first)
    item_rows = evaluation.item_rows(store, first.eval_id, sorted({f["eval_item"] for f in found}))
    recs = {r["_row"]: r for r in records(store, version, sorted(set(item_rows.values())))}
    out = []
    for f in found:
        record = recs[item_rows[f["eval_item"]]]
        prompt = prompt_to_canonical(prompt_messages(version, record), FIELD_BYTES)
        shown = [f["eval"]] if rule == "kto" else [f["chosen_eval"], f["rejected_eval"]]
        answers = evaluation.outputs(store, f["eval_item"], shown)
        row = {**prompt, "completion": answers[shown[0]]}
        if rule != "kto":
            row["rejected"] = answers[shown[1]]
        row.update({k: v for k, v in f.items()})
        row["category"] = record.get("category")
        out.append(row)
    return out


def write_preferences(store: Store, review: Review | int, *, rule: str, out: str, min_gap: float = 2.0,
                      threshold: float = 3.0, question: str | None = None, user: User | None = None) -> dict:
    """Build the pairs (or KTO examples) and write them as a new version of dataset `out`; returns the counts,
    the settings and the version (ref, id, records, content hash)."""
    user = require_role(user, "write_version")
    review = as_review(store, review)
    check_name(out)
    rows, counts, settings = build(store, review, rule=rule, min_gap=min_gap, threshold=threshold,
                                   question=question)
    if not rows:
        raise WorkbenchError(f"review {review.review_id} gives no {'examples' if rule == 'kto' else 'pairs'} with "
                             f"rule {rule} ({_counts_text(counts)}); collect more judgements or loosen the rule")
    fmt = "kto" if rule == "kto" else "preference"
    version = _write(store, out, rows, fmt, recipe={"op": "review-preferences", "review_id": review.review_id,
                                                      "rule": rule, **settings, "counts": counts},
                     created_by=user.name)
    return {"review_id": review.review_id, "rule": rule, **settings, "counts": counts, "records": version.row_count,
            "dataset": version.dataset, "version": version.ref, "version_id": version.version_id,
            "format": fmt, "content_hash": version.content_hash}


def _write(store: Store, name: str, rows: list[dict], fmt: str, *, recipe: dict, created_by: str) -> Version:
    from workbench.core.versions import write_version

    own = FORMAT_COLUMNS[fmt]
    cols = {k: pa.array([r.get(k) for r in rows], pa.string()) for k in CANONICAL}
    cols.update({k: pa.array([r[k] for r in rows], t) for k, t in own.items()})
    extras = [k for k in rows[0] if k not in cols]
    cols.update({k: pa.array([r.get(k) for r in rows]) for k in extras})
    parent = store.cursor().execute("SELECT max(version_id) FROM wb_versions WHERE dataset = ?", [name]).fetchall()
    return write_version(store, name, [pa.table(cols)], kind="review-preferences", fmt=fmt, recipe=recipe,
                         info={"label_column": "label" if fmt == "kto" else None}, parent_id=parent[0][0],
                         created_by=created_by)


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items())


def describe(result: dict) -> str:
    what = "examples" if result["rule"] == "kto" else "pairs"
    return (f"{result['version']}: {result['records']:,} {what} from review {result['review_id']} "
            f"(rule {result['rule']}; {_counts_text(result['counts'])})")
