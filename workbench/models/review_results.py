"""Results of a blind review, for its owner (unblinded): win rates with Wilson intervals, Bradley-Terry,
position bias, mean ratings with t intervals, Krippendorff's alpha between reviewers, the most
disliked items, and one headline row per review (metrics.ratings, metrics.agreement)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from workbench.core.auth import User, require_role
from workbench.core.store import Store
from workbench.core.versions import ROW_COLUMN
from workbench.labels import assignment
from workbench.models import evaluation
from workbench.models.eval_items import records
from workbench.models.review import SCALE, Review, as_review, judgements, list_reviews, prompt_messages, review_items
from workbench.models.review_actions import training_version


def run_label(run) -> str:
    return f"eval {run.eval_id} · {run.model_label}"


def _agreement(items, reviewers, values, *, level: str, labels, resamples: int, seed: int) -> dict:
    """Krippendorff's alpha (workbench.labels.agreement / metrics.agreement) with its interval and reading."""
    from metrics import agreement as ag
    from metrics.interpret import reading
    from workbench.labels import agreement

    answers = agreement.answers_frame(items, reviewers, values)
    if answers.empty:
        return {"krippendorff_alpha": None, "level": level, "reason": "no judgements yet", "reading": "Not computed."}
    ratings = agreement.to_ratings(answers, level=level, labels=labels)
    alpha = ag.krippendorff_alpha(ratings, level=level, resamples=resamples, seed=seed)
    pct = ag.percent_agreement(ratings)
    return {"krippendorff_alpha": alpha.value, "ci_low": alpha.ci_low, "ci_high": alpha.ci_high, "level": level,
            "n_items": alpha.n_items, "n_reviewers": int(answers["annotator"].nunique()),
            "percent_agreement": pct.value, "reason": alpha.reason,
            "reading": reading("krippendorff_alpha", alpha.value, ci_low=alpha.ci_low, ci_high=alpha.ci_high,
                               reason=alpha.reason)}


def results(store: Store, review: Review | int, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0,
            user: User | None = None) -> dict:
    """Everything the Results view and `workbench review results --json` show (plain JSON types).

    Pairwise: `win_rates` (every pair: B's wins over A with a Wilson interval over decided judgements,
    ties apart), `win_rate` (the first pair: B over A), `bradley_terry` (more than two runs),
    `position_bias` (overall and `by_reviewer`), `by_category`. Rating: `ratings` (mean per question
    per run with a t interval), `by_category`. Both: `agreement` (Krippendorff's alpha: nominal over
    A/B/tie, ordinal per rating question), `progress`, `runs`, `seed`."""
    from metrics import ratings as mr

    require_role(user, "read_all")  # results name the runs: never for reviewers
    review = as_review(store, review)
    runs = {e: evaluation.get_eval(store, e) for e in review.evals}
    labels = {e: run_label(r) for e, r in runs.items()}
    df = judgements(store, review)
    prog = assignment.progress(store, review.task, "")
    out = {"review_id": review.review_id, "name": review.name, "kind": review.kind, "seed": review.seed,
           "sample_size": review.sample_size, "overlap": review.overlap, "show_reference": review.show_reference,
           "runs": [{"eval_id": e, "letter": chr(ord("A") + k), "model": runs[e].model_label, "run_id": runs[e].run_id,
                     "dataset": runs[e].ref, "split": runs[e].split, "label": labels[e]}
                    for k, e in enumerate(review.evals)],
           "progress": {"complete": prog["complete"], "total": prog["total"]},
           "n_items": int(df["item"].nunique()) if len(df) else 0,
           "n_judgements": int(len(df[["item", "reviewer"]].drop_duplicates())) if len(df) else 0,
           "n_reviewers": int(df["reviewer"].nunique()) if len(df) else 0,
           "confidence": confidence}
    if review.kind == "pairwise":
        out.update(_pairwise_results(review, df, labels, mr, confidence))
        letters = {e: chr(ord("A") + k) for k, e in enumerate(review.evals)}
        # agreement over which run won (A, B, ... or tie), so a reviewer's side does not matter
        values = [letters[int(w)] if not pd.isna(w) else "tie" for w in df["winner_eval"]] if len(df) else []
        labels_order = [letters[e] for e in review.evals] + ["tie"]
        out["agreement"] = _agreement(list(df["item"]), list(df["reviewer"]), values, level="nominal",
                                      labels=labels_order, resamples=resamples, seed=seed)
    else:
        out.update(_rating_results(review, df, labels, mr, confidence))
        out["agreement"] = {q: _agreement(list(g["item"]), list(g["reviewer"]), list(g["value"]), level="ordinal",
                                          labels=[str(s) for s in SCALE], resamples=resamples, seed=seed)
                            for q, g in ((q, df[df["question"] == q]) for q in review.question_names)}
    out["krippendorff_alpha"] = (out["agreement"]["krippendorff_alpha"] if review.kind == "pairwise" else
                                 {q: a["krippendorff_alpha"] for q, a in out["agreement"].items()})
    return out


def _pair_rows(df: pd.DataFrame, a: int, b: int) -> pd.DataFrame:
    return df[((df["left_eval"] == a) & (df["right_eval"] == b)) | ((df["left_eval"] == b) & (df["right_eval"] == a))]


def _winners(rows: pd.DataFrame, a: int, b: int, labels: dict) -> list[str]:
    return [labels[a] if w == a else labels[b] if w == b else "tie" for w in rows["winner_eval"]]


def _win_json(mr, rows, a, b, labels, confidence) -> dict:
    w = mr.win_rate(_winners(rows, a, b, labels), a=labels[a], b=labels[b], confidence=confidence)
    return {**w.to_json(), "eval_a": a, "eval_b": b}


def _pairwise_results(review: Review, df: pd.DataFrame, labels: dict, mr, confidence: float) -> dict:
    pairs = list(combinations(review.evals, 2))
    win_rates = [_win_json(mr, _pair_rows(df, a, b), a, b, labels, confidence) for a, b in pairs]
    out = {"win_rates": win_rates, "win_rate": win_rates[0]["win_rate"], "ci_low": win_rates[0]["ci_low"],
           "ci_high": win_rates[0]["ci_high"], "ties": win_rates[0]["ties"]}
    judged = [(labels[int(left)], labels[int(right)], labels[int(w)] if not pd.isna(w) else mr.TIE)
              for left, right, w in zip(df["left_eval"], df["right_eval"], df["winner_eval"])] if len(df) else []
    out["position_bias"] = mr.position_bias(judged, confidence=confidence) if judged else None
    by_rev = []
    for who, g in df.groupby("reviewer", sort=True) if len(df) else ():
        mine = [(labels[int(left)], labels[int(right)], labels[int(w)] if not pd.isna(w) else mr.TIE)
                for left, right, w in zip(g["left_eval"], g["right_eval"], g["winner_eval"])]
        bias = mr.position_bias(mine, confidence=confidence)
        by_rev.append({"reviewer": who, **{k: bias[k] for k in ("left_wins", "right_wins", "ties", "n",
                                                                 "left_win_rate", "ci_low", "ci_high", "biased")}})
    out["position_bias_by_reviewer"] = by_rev
    out["bradley_terry"] = None
    if len(review.evals) > 2 and judged:
        try:
            bt = mr.bradley_terry(judged)
        except ValueError:  # someone never lost or never won: a small prior keeps the strengths finite
            bt = mr.bradley_terry(judged, prior=0.5)
            bt["prior"] = 0.5
        out["bradley_terry"] = bt
    by_cat = []
    if len(df):
        for cat, g in df.groupby(df["category"].fillna("(none)"), sort=True):
            for a, b in pairs:
                rows = _pair_rows(g, a, b)
                if len(rows):
                    w = mr.win_rate(_winners(rows, a, b, labels), a=labels[a], b=labels[b], confidence=confidence)
                    by_cat.append({"category": cat, "eval_a": a, "eval_b": b, "wins_a": w.wins_a,
                                   "wins_b": w.wins_b, "ties": w.ties, "n": w.n, "win_rate": w.win_rate,
                                   "ci_low": w.ci_low, "ci_high": w.ci_high})
    out["by_category"] = by_cat
    reasons = df[df["reason"].notna()] if len(df) else df
    out["reasons"] = [{"item": r.item, "reviewer": r.reviewer, "winner": labels[int(r.winner_eval)]
                       if not pd.isna(r.winner_eval) else "tie", "reason": r.reason} for r in reasons.itertuples()]
    return out


def _rating_results(review: Review, df: pd.DataFrame, labels: dict, mr, confidence: float) -> dict:
    rows, by_cat = [], []
    for q in review.question_names:
        for e in review.evals:
            g = df[(df["question"] == q) & (df["left_eval"] == e)] if len(df) else df
            m = mr.mean_with_ci([float(v) for v in g["value"]] if len(g) else [], confidence)
            rows.append({"question": q, "eval_id": e, "run": labels[e], **_finite(m)})
            if len(g):
                for cat, h in g.groupby(g["category"].fillna("(none)"), sort=True):
                    mc = mr.mean_with_ci([float(v) for v in h["value"]], confidence)
                    by_cat.append({"category": cat, "question": q, "eval_id": e, "run": labels[e], **_finite(mc)})
    return {"ratings": rows, "by_category": by_cat}


def _finite(d: dict) -> dict:
    """NaN -> None, so the JSON output stays valid."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def worst_items(store: Store, review: Review | int, *, limit: int = 50) -> list[dict]:
    """Judged items with the runs' answers (owner's view), the most disliked first: for pairwise reviews
    the items where B lost most often, for ratings the lowest mean rating. Each: item, eval_item, _row,
    category, prompt, reference, outputs {eval_id: text}, judgements (per reviewer), score."""
    review = as_review(store, review)
    df = judgements(store, review)
    if not len(df):
        return []
    if review.kind == "pairwise":
        base = review.evals[0]
        df["score"] = np.where(df["winner_eval"] == base, -1.0, np.where(df["winner_eval"].isna(), 0.0, 1.0))
    else:
        df["score"] = df["value"].astype(float)
    per_item = df.groupby("item").agg(score=("score", "mean")).reset_index().sort_values(["score", "item"])
    chosen = list(per_item["item"][: int(limit)])
    plan = review_items(store, review).set_index("item")
    run = evaluation.get_eval(store, review.evals[0])
    version = evaluation.version_of(store, run)
    recs = {r[ROW_COLUMN]: r for r in records(store, version, [int(plan.loc[i, "_row"]) for i in chosen])}
    out = []
    for item, score in zip(per_item["item"][: int(limit)], per_item["score"][: int(limit)]):
        p = plan.loc[item]
        shown = [int(p["left_eval"])] + ([int(p["right_eval"])] if not pd.isna(p["right_eval"]) else [])
        outs = evaluation.outputs(store, int(p["eval_item"]), shown)
        ref = evaluation.reference(store, run.eval_id, int(p["eval_item"]))
        mine = df[df["item"] == item]
        out.append({"item": item, "eval_item": int(p["eval_item"]), "row": int(p["_row"]),
                    "category": p["category"], "score": float(score), "shown": shown,
                    "prompt": prompt_messages(version, recs.get(int(p["_row"]), {})), "reference": ref,
                    "outputs": {e: outs.get(e) for e in shown},
                    "judgements": mine[["reviewer", "question", "value", "reason"]].to_dict("records")})
    return out


def history_table(store: Store, dataset: str | None = None) -> list[dict]:
    """One row per review (oldest first), with the versions its runs were trained on and its headline
    number: so a user can read that the runs trained on version 3 won where version 2 lost."""
    rows = []
    for r in reversed(list_reviews(store)):
        runs = [evaluation.get_eval(store, e) for e in r.evals]
        if dataset and all(x.dataset != dataset for x in runs):
            continue
        trained = [training_version(store, e).ref if x.run_id else x.ref for e, x in zip(r.evals, runs)]
        res = results(store, r, resamples=0)
        if r.kind == "pairwise" and res.get("bradley_terry"):
            head = "Bradley-Terry: " + " > ".join(x["system"].split(" · ")[0]
                                                  for x in res["bradley_terry"]["ranking"])
        elif r.kind == "pairwise":
            w = res["win_rates"][0]
            ties = f"{w['ties']} tie" + ("" if w["ties"] == 1 else "s")
            head = ("no judgements yet" if not w["n"] and not w["ties"] else
                    f"B wins {w['win_rate']:.0%} ({w['ci_low']:.0%}-{w['ci_high']:.0%}), {ties}, n={w['n']}")
        else:
            head = "; ".join(f"{x['question']} {x['run'].split(' · ')[0]}: "
                             + (f"{x['mean']:.2f}" if x["mean"] is not None else "-") for x in res["ratings"])
        rows.append({"review_id": r.review_id, "name": r.name, "kind": r.kind,
                     "runs": ", ".join(run_label(x) for x in runs), "trained_on": ", ".join(trained),
                     "judgements": res["n_judgements"], "result": head, "created_at": r.created_at})
    return rows
