"""How far to trust a judge run (workbench.models.judge): its verdicts per item, its biases, and its
agreement with the people who reviewed the same items, all through the project's agreement suite
(metrics.agreement, workbench.labels.agreement, metrics.ratings) — no maths of its own.

- **Per item**: pairwise items were judged in both orders; when both verdicts are parsed and point at
  the same run (or both say tie) that is the item's verdict, when they differ it is a tie and the item is
  position-inconsistent, when either is unparseable the item is unparseable (counted, left out).
- **Bias**: position bias = the share of decided verdicts (each order apart) that went to the answer shown
  first (0.5 is fair, 1.0 always the first); the inconsistent share; length bias = how often the judge's
  winner is the longer answer, beside how often the people's is.
- **Agreement** on the items both judged: Cohen's kappa and Krippendorff's alpha between the judge and
  the people's majority (items whose majority is tied are left out and counted) and between the judge and
  each person, next to the people's own agreement; Spearman for ratings; the confusion matrix; a
  per-category breakdown with bootstrap intervals; and a plain reading.
- **Win rates** of the judge beside the people's, flagged where the judge agrees with people less well
  than people agree with each other.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from workbench.core.store import Store
from workbench.models import evaluation
from workbench.models import review as R
from workbench.models.judge import JudgeRun, get_judge, verdicts

JUDGE = "(judge)"
PEOPLE = "(people)"
TIE = "tie"
SAME_KAPPA = 0.05  # a judge within this much of the people's own mean kappa agrees "about as well" as they do


def unit_key(eval_item, first, second=None) -> str:
    """Items judged alike by a judge and by people: the test item and the runs shown (in any order)."""
    shown = sorted(int(x) for x in (first, second) if x is not None and not pd.isna(x))
    return f"{int(eval_item)}/" + "-".join(map(str, shown))


def letters(evals) -> dict[int, str]:
    return {int(e): chr(ord("A") + k) for k, e in enumerate(evals)}


def item_verdicts(store: Store, judge: JudgeRun | int) -> pd.DataFrame:
    """One row per (item, question): key, item, eval_item, category, first_eval, second_eval, value (a run's
    letter or 'tie'; a rating '1'-'5'; None when unparseable), status (ok, inconsistent, unparseable)."""
    judge = judge if isinstance(judge, JudgeRun) else get_judge(store, judge)
    df = verdicts(store, judge)
    names = letters(judge.evals)
    rows = []
    for (item, question), g in df.groupby(["item", "question"], sort=False):
        g = g.sort_values("order_no")
        first = g.iloc[0]
        row = {"key": unit_key(first.eval_item, first.first_eval, first.second_eval), "item": item,
               "eval_item": int(first.eval_item), "category": first.category, "question": question,
               "first_eval": int(first.first_eval),
               "second_eval": None if pd.isna(first.second_eval) else int(first.second_eval)}
        if g["verdict"].isna().any():
            rows.append({**row, "value": None, "status": "unparseable"})
        elif judge.kind != "pairwise":
            rows.append({**row, "value": str(first.verdict), "status": "ok"})
        else:
            picks = {TIE if pd.isna(w) else names[int(w)] for w in g["winner_eval"]}
            rows.append({**row, "value": picks.pop() if len(picks) == 1 else TIE,
                         "status": "ok" if len(picks) == 0 else "inconsistent"})
    cols = ["key", "item", "eval_item", "category", "question", "first_eval", "second_eval", "value", "status"]
    return pd.DataFrame(rows, columns=cols)


def human_answers(store: Store, review: R.Review, names: dict[int, str] | None = None) -> pd.DataFrame:
    """The people's current judgements keyed like the judge's: key, reviewer, question, value (a run's letter
    or 'tie'; a rating), category, eval_item, left_eval, right_eval."""
    df = R.judgements(store, review)
    if not len(df):
        return pd.DataFrame(columns=["key", "reviewer", "question", "value", "category", "eval_item", "left_eval",
                                     "right_eval"])
    names = names or letters(review.evals)
    out = df.copy()
    out["key"] = [unit_key(i, a, b) for i, a, b in zip(df["eval_item"], df["left_eval"], df["right_eval"])]
    if review.kind == "pairwise":
        out["value"] = [TIE if pd.isna(w) else names.get(int(w), f"run {int(w)}") for w in df["winner_eval"]]
    return out[["key", "reviewer", "question", "value", "category", "eval_item", "left_eval", "right_eval"]]


def matching_review(store: Store, judge: JudgeRun) -> R.Review | None:
    """The review whose people the judge is held to: its own, else the newest review of the same kind over
    the same runs."""
    if judge.review_id is not None:
        return R.get_review(store, judge.review_id)
    for review in R.list_reviews(store):
        if review.kind == judge.kind and set(judge.evals) <= set(review.evals):
            return review
    return None


# ---------------------------------------------------------------- bias

def bias(store: Store, judge: JudgeRun, items: pd.DataFrame, people: pd.DataFrame) -> dict:
    """Position bias, the inconsistent share, and length bias beside the people's (pairwise only)."""
    from metrics import ratings as mr

    df = verdicts(store, judge)
    parsed = df[df["verdict"].notna()]
    judged = [(int(f), int(s), int(w) if not pd.isna(w) else mr.TIE)
              for f, s, w in zip(parsed["first_eval"], parsed["second_eval"], parsed["winner_eval"])]
    position = mr.position_bias(judged) if judged else None
    both = items[items["status"] != "unparseable"]
    n_inconsistent = int((items["status"] == "inconsistent").sum())
    return {"position_bias": position["left_win_rate"] if position and (position["left_wins"] + position["right_wins"])
            else None,
            "position": position,
            "inconsistent": n_inconsistent, "judged_both_orders": int(len(both)),
            "inconsistent_share": n_inconsistent / len(both) if len(both) else None,
            "length_bias": _length_bias(store, judge, items, people)}


def _longer_share(store: Store, rows, winner_of) -> dict:
    """How often the winner is the longer of the two answers, over decided rows whose answers differ in length."""
    from metrics import ratings as mr

    longer = n = 0
    for r in rows:
        winner = winner_of(r)
        if winner is None:
            continue
        a, b = int(r.first), int(r.second)
        outs = evaluation.outputs(store, int(r.eval_item), [a, b])
        la, lb = len(outs.get(a) or ""), len(outs.get(b) or "")
        if la == lb:
            continue
        n += 1
        longer += int(winner == (a if la > lb else b))
    low, high = mr.wilson_interval(longer, n)
    return {"longer_wins": longer, "n": n, "share": longer / n if n else None, "ci_low": low if n else None,
            "ci_high": high if n else None}


def _length_bias(store: Store, judge: JudgeRun, items: pd.DataFrame, people: pd.DataFrame) -> dict | None:
    if judge.kind != "pairwise":
        return None
    runs = {v: k for k, v in letters(judge.evals).items()}
    mine = items[items["status"] != "unparseable"].rename(columns={"first_eval": "first", "second_eval": "second"})
    judge_share = _longer_share(store, mine.itertuples(), lambda r: runs.get(r.value))
    people_share = None
    if len(people):
        theirs = people[people["key"].isin(set(items["key"]))].rename(columns={"left_eval": "first",
                                                                                "right_eval": "second"})
        people_share = _longer_share(store, theirs.itertuples(), lambda r: runs.get(r.value))
    diff = (judge_share["share"] - people_share["share"]
            if people_share and judge_share["share"] is not None and people_share["share"] is not None else None)
    text = ("no decided verdict between answers of different length" if judge_share["share"] is None else
            f"the judge picks the longer answer {judge_share['share']:.0%} of the time"
            + (f", people {people_share['share']:.0%}" if people_share and people_share["share"] is not None else ""))
    return {"judge": judge_share, "people": people_share, "difference": diff, "statement": text}


# ---------------------------------------------------------------- agreement

def _coef(c) -> dict:
    return {"value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high, "n_items": c.n_items, "reason": c.reason}


def _frame(keys, who, values) -> pd.DataFrame:
    from workbench.labels import agreement as la

    return la.answers_frame(list(keys), list(who), list(values))


def agreement(judged: dict, people: pd.DataFrame, *, level: str, labels: list[str], resamples: int = 1000,
              seed: int = 0) -> dict:
    """Judge against people on the items both judged. judged: {key: value}; people: key, reviewer, value."""
    from metrics import agreement as ag
    from metrics.interpret import reading
    from workbench.labels import agreement as la

    people = people[people["key"].isin(set(judged))]
    if people.empty:
        return {"n_items": 0, "reason": "no item was judged by both the judge and a person",
                "reading": "Not computed: no item was judged by both the judge and a person."}
    hum = _frame(people["key"], people["reviewer"], people["value"])
    hr = la.to_ratings(hum, level=level, labels=labels)
    vote = ag.majority_vote(hr)
    majority = {k: hr.labels[lab] for k, lab, tied in zip(hr.items, vote["label"], vote["tied"]) if lab >= 0 and not tied}
    common = [k for k in hr.items if k in majority]
    out = {"n_items": len(hr.items), "n_majority": len(common), "tied_majority_left_out": len(hr.items) - len(common),
           "n_reviewers": len(hr.annotators), "level": level, "labels": list(labels)}
    weightings = (None,) if level == "nominal" else (None, "quadratic")
    if common:
        pair = _frame(common * 2, [JUDGE] * len(common) + [PEOPLE] * len(common),
                      [judged[k] for k in common] + [majority[k] for k in common])
        pr = la.to_ratings(pair, level=level, labels=labels)
        table = ag.cohen_kappa_table(pr, weightings=weightings, resamples=resamples, seed=seed,
                                     pairs=[(JUDGE, PEOPLE)])
        out["cohen_kappa"] = _coef(table[None]["pairs"][0])
        if level != "nominal":
            out["cohen_kappa_quadratic"] = _coef(table["quadratic"]["pairs"][0])
        out["krippendorff_alpha"] = _coef(ag.krippendorff_alpha(pr, level=level, resamples=resamples, seed=seed))
        out["percent_agreement"] = float(np.mean([judged[k] == majority[k] for k in common]))
        conf = la.confusion_table(pair, JUDGE, PEOPLE, labels=labels)
        out["confusion"] = {"rows": "judge", "columns": "people's majority", "labels": list(conf.index),
                            "matrix": conf.to_numpy().tolist()}
    else:
        out["cohen_kappa"] = out["krippendorff_alpha"] = None
        out["reason"] = "every item's people are split evenly, so there is no majority to compare with"
    out.update(_per_person(judged, hum, hr, level=level, labels=labels, resamples=resamples, seed=seed))
    if level != "nominal":
        out["spearman"] = _spearman(judged, hum)
    k = out["cohen_kappa"]
    out["kappa_reading"] = reading("cohen_kappa", k["value"] if k else None, ci_low=k and k["ci_low"],
                                   ci_high=k and k["ci_high"], reason=(k or {}).get("reason") or out.get("reason"))
    out["reading"], out["below_people"] = plain_reading(out)
    return out


def _per_person(judged: dict, hum: pd.DataFrame, hr, *, level: str, labels, resamples: int, seed: int) -> dict:
    """The judge against each person, and the people against each other (the yardstick)."""
    from metrics import agreement as ag
    from workbench.labels import agreement as la

    keys = [k for k in hr.items if k in judged]
    both = pd.concat([hum, _frame(keys, [JUDGE] * len(keys), [judged[k] for k in keys])], ignore_index=True)
    ar = la.to_ratings(both, level=level, labels=labels)
    persons = [p for p in hr.annotators]
    kappas = ag.cohen_kappa_pairs(ar, resamples=resamples, seed=seed, pairs=[(JUDGE, p) for p in persons])
    rows = []
    for p, kappa in zip(persons, kappas["pairs"]):
        two = both[both["annotator"].isin([JUDGE, p])]
        alpha = ag.krippendorff_alpha(la.to_ratings(two, level=level, labels=labels), level=level)
        rows.append({"reviewer": p, "cohen_kappa": kappa.value, "ci_low": kappa.ci_low, "ci_high": kappa.ci_high,
                     "n_items": kappa.n_items, "krippendorff_alpha": alpha.value, "reason": kappa.reason})
    people_kappa = ag.cohen_kappa_pairs(hr, resamples=resamples, seed=seed)["mean"] if len(persons) > 1 else None
    people_alpha = ag.krippendorff_alpha(hr, level=level, resamples=resamples, seed=seed) if len(persons) > 1 else None
    return {"by_reviewer": rows, "judge_kappa_mean": kappas["mean"].value,
            "judge_kappa_mean_ci": [kappas["mean"].ci_low, kappas["mean"].ci_high],
            "people_kappa_mean": _coef(people_kappa) if people_kappa else None,
            "people_alpha": _coef(people_alpha) if people_alpha else None}


def _spearman(judged: dict, hum: pd.DataFrame) -> dict:
    """Spearman's rho between the judge's rating and the people's mean rating per item (scipy)."""
    from scipy import stats

    mean = hum.assign(v=hum["value"].astype(float)).groupby("item")["v"].mean()
    keys = [k for k in mean.index if k in judged]
    if len(keys) < 3:
        return {"rho": None, "p_value": None, "n_items": len(keys), "reason": "fewer than 3 items both rated"}
    x = [float(judged[k]) for k in keys]
    y = [float(mean[k]) for k in keys]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return {"rho": None, "p_value": None, "n_items": len(keys),
                "reason": "the judge or the people gave every item the same rating"}
    rho, p = stats.spearmanr(x, y)
    return {"rho": float(rho), "p_value": float(p), "n_items": len(keys), "reason": None}


def plain_reading(out: dict) -> tuple[str, bool | None]:
    """'The judge agrees with your reviewers about as well as they agree with each other' (or not, or better),
    from the judge's mean kappa against each person and the people's mean kappa between themselves: within
    SAME_KAPPA of it is "about as well"; returns (reading, below_people)."""
    judge = out.get("judge_kappa_mean")
    people = out.get("people_kappa_mean")
    if judge is None:
        return "Not enough items judged by both the judge and people to say how far to trust the judge.", None
    if not people or people.get("value") is None:
        return (f"The judge's kappa with your reviewers is {judge:.2f}; with one reviewer per item there is no "
                "agreement between people to compare it with."), None
    theirs = people["value"]
    note = (f" The people's own kappa is uncertain (95% CI {people['ci_low']:.2f} to {people['ci_high']:.2f})."
            if people.get("ci_low") is not None and people["ci_high"] - people["ci_low"] > 0.3 else "")
    if judge > theirs + SAME_KAPPA and people.get("ci_high") is not None and judge > people["ci_high"]:
        return (f"The judge agrees with your reviewers better than they agree with each other (kappa {judge:.2f} "
                f"against {theirs:.2f} between people).{note}"), False
    if judge >= theirs - SAME_KAPPA:
        return (f"The judge agrees with your reviewers about as well as they agree with each other (kappa {judge:.2f} "
                f"against {theirs:.2f} between people).{note}"), False
    return (f"The judge agrees with your reviewers less well than they agree with each other (kappa {judge:.2f} "
            f"against {theirs:.2f} between people): check its verdicts before relying on them.{note}"), True


# ---------------------------------------------------------------- the whole report

def results(store: Store, judge: JudgeRun | int, *, resamples: int = 1000, seed: int = 0) -> dict:
    """Everything `workbench judge show --json` and the Review page show, as plain JSON types."""
    judge = judge if isinstance(judge, JudgeRun) else get_judge(store, judge)
    items = item_verdicts(store, judge)
    review = matching_review(store, judge)
    people = human_answers(store, review, letters(judge.evals)) if review is not None else human_answers_empty()
    out = {**judge.to_json(), "compared_with_review": review.review_id if review else None,
           "n_items": int(items["key"].nunique()), "n_verdicts": int(len(verdicts(store, judge))),
           "unparseable": int((items["status"] == "unparseable").sum()),
           "counts": {str(k): int(v) for k, v in items["value"].fillna("(unparseable)").value_counts().items()}}
    if judge.kind == "pairwise":
        out.update(bias(store, judge, items, people))
    level, labels = (("nominal", [*letters(judge.evals).values(), TIE]) if judge.kind == "pairwise"
                     else ("ordinal", [str(s) for s in R.SCALE]))
    out["agreement"] = {}
    out["by_category"] = []
    for q in judge.question_names:
        mine = items[(items["question"] == q) & items["value"].notna()]
        theirs = people[people["question"] == q]
        judged = dict(zip(mine["key"], mine["value"]))
        out["agreement"][q] = agreement(judged, theirs, level=level, labels=labels, resamples=resamples, seed=seed)
        out["by_category"] += _by_category(mine, theirs, q, level=level, labels=labels, resamples=resamples,
                                           seed=seed)
    if judge.kind == "pairwise":
        out["win_rates"] = win_rates(judge, items, people, out["agreement"][R.PREFERENCE])
    first = out["agreement"][judge.question_names[0]]
    out["reading"] = first["reading"]
    out["cohen_kappa"] = (first.get("cohen_kappa") or {}).get("value")
    out["krippendorff_alpha"] = (first.get("krippendorff_alpha") or {}).get("value")
    return out


def human_answers_empty() -> pd.DataFrame:
    return pd.DataFrame(columns=["key", "reviewer", "question", "value", "category", "eval_item", "left_eval",
                                 "right_eval"])


def _by_category(mine: pd.DataFrame, theirs: pd.DataFrame, question: str, *, level: str, labels, resamples: int,
                 seed: int) -> list[dict]:
    """Judge-people agreement per category (kappa with its bootstrap interval, on the majority)."""
    rows = []
    for cat, g in mine.groupby(mine["category"].fillna("(none)"), sort=True):
        a = agreement(dict(zip(g["key"], g["value"])), theirs, level=level, labels=labels, resamples=resamples,
                      seed=seed)
        if not a["n_items"] and level != "nominal":
            continue
        k = a.get("cohen_kappa") or {}
        row = {"category": cat, "question": question, "n_items": int(len(g)), "n_both": a["n_items"],
               "n_majority": a.get("n_majority", 0),
               "cohen_kappa": k.get("value"), "ci_low": k.get("ci_low"), "ci_high": k.get("ci_high"),
               "percent_agreement": a.get("percent_agreement"), "reason": k.get("reason") or a.get("reason")}
        if level == "nominal":  # pairwise: B's win rate over A in this category, the judge's beside the people's
            row.update(_category_wins(g, theirs[theirs["key"].isin(set(g["key"]))], labels))
        rows.append(row)
    return rows


def _category_wins(mine: pd.DataFrame, theirs: pd.DataFrame, labels) -> dict:
    from metrics import ratings as mr

    a, b = labels[0], labels[1]
    jw = mr.win_rate([v for v in mine["value"] if v in (a, b, TIE)], a=a, b=b)
    pw = mr.win_rate([v for v in theirs["value"] if v in (a, b, TIE)], a=a, b=b)
    return {"judge_win_rate": jw.win_rate if jw.n else None, "judge_win_ci": [jw.ci_low, jw.ci_high] if jw.n else None,
            "people_win_rate": pw.win_rate if pw.n else None,
            "people_win_ci": [pw.ci_low, pw.ci_high] if pw.n else None}


def win_rates(judge: JudgeRun, items: pd.DataFrame, people: pd.DataFrame, agreement_out: dict) -> list[dict]:
    """Per pair of runs: the judge's win rate (B over A, Wilson interval, ties apart) over every item it judged,
    beside the people's over theirs; flagged when the judge agrees with people less than people do."""
    from metrics import ratings as mr

    names = letters(judge.evals)
    ok = items[items["status"] != "unparseable"]
    out = []
    for a, b in combinations(judge.evals, 2):
        pair = {unit_key(0, a, b).split("/")[1]}
        la_, lb_ = names[a], names[b]
        mine = [v for k, v in zip(ok["key"], ok["value"]) if k.split("/")[1] in pair]
        theirs = [v for k, v in zip(people["key"], people["value"]) if k.split("/")[1] in pair and v in (la_, lb_, TIE)]
        jw = mr.win_rate(mine, a=la_, b=lb_)
        pw = mr.win_rate(theirs, a=la_, b=lb_) if theirs else None
        out.append({"eval_a": a, "eval_b": b, "judge": jw.to_json(), "people": pw.to_json() if pw else None,
                    "flagged": bool(agreement_out.get("below_people")),
                    "flag": ("the judge agrees with people less well than people agree with each other"
                             if agreement_out.get("below_people") else None)})
    return out
