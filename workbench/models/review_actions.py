"""Back to the data from a blind review (for its owner): the training records most like a judged
item, flags for relabelling (workbench.labels.flags), corrected responses and the dataset version
written from them, and `loop`, which follows a review to the versions, training runs, evaluations
and later reviews that came from it. What is done from a review is logged with it (`review.log_action`)."""

from __future__ import annotations

from workbench.core.auth import LOCAL_USER, User, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import Version, get_version
from workbench.labels import flags
from workbench.models import evaluation, runs
from workbench.models.eval_items import records
from workbench.models.neighbours import neighbours_of_prompt
from workbench.models.review import MAX_EDIT_CHARS, Review, actions, as_review, edits, list_reviews, log_action, review_items


def training_version(store: Store, eval_id: int) -> Version:
    """The dataset version the judged run's model was trained on (its training run's version when the
    evaluation names one that is recorded), else the evaluation's own version (its training split)."""
    run = evaluation.get_eval(store, eval_id)
    ref = runs.trained_on(store, run.run_id) if run.run_id else None
    if ref:
        try:
            return get_version(store, ref)
        except WorkbenchError:
            pass
    return evaluation.version_of(store, run)


def neighbours(store: Store, review: Review | int, item: str, *, eval_id: int | None = None, k: int = 5,
               only_category: bool = False, progress=None) -> dict:
    """The training records most like a judged item's prompt (TF-IDF cosine,
    `workbench.models.neighbours`)
    in the version the judged run was trained on. Returns {version (ref), eval_id, records: [...]}."""
    review = as_review(store, review)
    eval_id = int(eval_id) if eval_id is not None else review.evals[-1]
    if eval_id not in review.evals:
        raise WorkbenchError(f"evaluation {eval_id} is not part of review {review.review_id}")
    plan = review_items(store, review)
    hit = plan[plan["item"] == str(item)]
    if hit.empty:
        raise WorkbenchError(f"review {review.review_id} has no item {item!r}")
    run = evaluation.get_eval(store, review.evals[0])
    (record,) = records(store, evaluation.version_of(store, run), [int(hit["_row"].iloc[0])]) or [{}]
    version = training_version(store, eval_id)
    found = neighbours_of_prompt(store, version, record, k=k, only_category=only_category, progress=progress)
    recs = [{**n, "completion": n.get("completion")} for n in found]
    return {"version": version.ref, "eval_id": eval_id, "records": recs}


def flag(store: Store, review: Review | int, item: str, rows, reason: str, *, eval_id: int | None = None,
         version: Version | str | None = None, user: User | None = None) -> int:
    """Flag training records (found from a judged item) for relabelling: `workbench.labels.flags`
    (the relabelling queue), and a note that this review led there. Returns how many rows were flagged."""
    review = as_review(store, review)
    require_role(user, "read_all")  # the owner works from unblinded results
    eval_id = int(eval_id) if eval_id is not None else review.evals[-1]
    version = get_version(store, version) if isinstance(version, str) else version or training_version(store, eval_id)
    reason = (reason or "").strip()
    n = flags.flag_records(store, version, rows, f"review {review.review_id}, item {item}: {reason}"
                              if reason else "", user, eval_id=eval_id)
    log_action(store, review, item, "flag", version, sorted({int(r) for r in rows}), eval_id, reason,
                (user or LOCAL_USER).name)
    return n


def edit_response(store: Store, review: Review | int, item: str | None, row: int, text: str, *,
                  version: Version | str | None = None, user: User | None = None) -> dict:
    """Record a corrected response for one record (a training neighbour, or the test reference of a judged
    item: row = the item's `_row` in the test version). Append-only; `write_edits_version` applies them."""
    review = as_review(store, review)
    user = require_role(user, "write_version")
    if version is None:
        version = evaluation.version_of(store, evaluation.get_eval(store, review.evals[0]))
    elif isinstance(version, str):
        version = get_version(store, version)
    text = (text or "").strip()
    if not text:
        raise WorkbenchError("the corrected response is empty; write the response as it should be")
    if len(text) > MAX_EDIT_CHARS:
        raise WorkbenchError(f"the response is {len(text):,} characters; keep it under {MAX_EDIT_CHARS:,}")
    if version.format == "classification":
        raise WorkbenchError(f"{version.ref} is classification data (text and label); relabel it on the Label page "
                             "instead of editing a response")
    if not 0 <= int(row) < version.row_count:
        raise WorkbenchError(f"{version.ref} has rows 0-{version.row_count - 1}; row {row} is not one of them")
    log_action(store, review, item, "edit", version, [int(row)], None, text, user.name)
    return {"version": version.ref, "row": int(row), "completion": text}


def write_edits_version(store: Store, review: Review | int, version: Version | str | None = None, *,
                        user: User | None = None) -> Version:
    """A new version of the dataset with this review's corrected responses (latest per record) in
    `completion` (and the last assistant turn of multi-turn chats). Its recipe names the review."""
    from workbench.labels import adjudication, questions

    review = as_review(store, review)
    user = require_role(user, "write_version")
    found = edits(store, review)
    if version is None:
        ids = sorted(set(found["version_id"]))
        if len(ids) != 1:
            raise WorkbenchError("this review has no corrected responses yet" if not ids else
                                 "this review edited records of several versions; say which one to write")
        version = questions.version_by_id(store, int(ids[0]))
    elif isinstance(version, str):
        version = get_version(store, version)
    mine = found[found["version_id"] == version.version_id]
    if mine.empty:
        raise WorkbenchError(f"this review has no corrected responses for {version.ref}")
    # A transient corrected-response question over the version: the Label page's code writes the version.
    question = questions.Question(question_id=-1, dataset=version.dataset, name=f"review {review.review_id}",
                                    version_id=version.version_id, kind="text", choices=(), column="completion")
    labels = {str(int(r) + 1): t for r, t in zip(mine["row"], mine["completion"])}
    return adjudication.write_labels_version(
        store, question, None, labels, column="completion", user=user, created_by=user.name,
        recipe={"op": "review-edits", "review_id": review.review_id, "edits": len(labels),
                "rows": sorted(int(r) for r in mine["row"])})


def loop(store: Store, review: Review | int) -> dict:
    """Where this review led: the runs it judged (and the versions they were trained on), the flags and
    edits made from it, the versions written from it, training runs on those versions, their evaluations,
    and the later reviews of those evaluations (with their headline numbers)."""
    review = as_review(store, review)
    judged = []
    for e in review.evals:
        run = evaluation.get_eval(store, e)
        judged.append({"eval_id": e, "model": run.model_label, "run_id": run.run_id, "test_version": run.ref,
                       "trained_on": training_version(store, e).ref if run.run_id else None})
    versions_rows = store.cursor().execute(
        "SELECT version_id, dataset, number, row_count, created_at FROM wb_versions "
        "WHERE json_extract_string(recipe, '$.review_id') = ? ORDER BY version_id", [str(review.review_id)]).fetchall()
    versions = [{"version_id": v, "version": f"{d}@{n}", "records": c, "created_at": t}
                for v, d, n, c, t in versions_rows]
    retrains = runs.runs_on_versions(store, [v["version_id"] for v in versions])
    later_evals = [r for r in evaluation.list_evals(store) if r.run_id in {t["run_id"] for t in retrains}]
    evals = [{"eval_id": r.eval_id, "run_id": r.run_id, "model": r.model_label, "status": r.status}
             for r in sorted(later_evals, key=lambda r: r.eval_id)]
    ids = {r["eval_id"] for r in evals}
    later = [{"review_id": r.review_id, "name": r.name, "kind": r.kind, "evals": list(r.evals)}
             for r in reversed(list_reviews(store)) if r.review_id != review.review_id and ids & set(r.evals)]
    acts = actions(store, review)
    return {"review_id": review.review_id, "judged": judged,
            "flags": int((acts["action"] == "flag").sum()), "edits": int((acts["action"] == "edit").sum()),
            "versions": versions, "retrains": retrains, "evals": evals, "reviews": later}
