"""Reading finished evaluations: every metric per value of a column (slices), the leaderboard of runs
on the same test items, a classification run's confusion matrix and ROUGE table."""

from __future__ import annotations

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import version_columns
from workbench.models import evaluation
from workbench.models.eval_scores import item_stats
from workbench.models.evaluation import EvalRun

TEXT_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "exact_match", "length_ratio")
CLASS_METRICS = ("accuracy", "macro_f1", "micro_f1", "macro_precision", "macro_recall", "micro_precision",
                 "micro_recall")


def primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "bleu"


def slice_columns(store: Store, eval_id: int) -> list[str]:
    """Columns of the run's dataset version that slices can group by (every column but the texts)."""
    from workbench.core.formats import CANONICAL
    from workbench.data.browse import category_column

    run = evaluation.get_eval(store, eval_id)
    version = evaluation.version_of(store, run)
    names = [c for c, _ in version_columns(store, version) if c not in CANONICAL]
    first = category_column(store, version)
    return sorted(names, key=lambda c: (c != first, c == "split", c))


def _group_values(store: Store, run: EvalRun, column: str) -> list:
    version = evaluation.version_of(store, run)
    if column not in [c for c, _ in version_columns(store, version)]:
        raise WorkbenchError(f"{version.ref} has no column {column!r}; slice by one of "
                             f"{', '.join(slice_columns(store, run.eval_id))}")
    return evaluation.column_values(store, run, version, column)


def slices(store: Store, eval_id: int, column: str) -> list[dict]:
    """Every metric per value of a column (a category, a channel, the split...): [{value, n, metric...}],
    largest groups first. Corpus metrics are recomputed on each group's own items."""
    run = evaluation.finished_eval(store, eval_id)
    groups = _group_values(store, run, column)
    if run.task == "classification":
        per_group = _classification_by_group(store, run, groups)
    else:
        from metrics.corpus import scores_by_group

        per_group = scores_by_group(item_stats(store, eval_id), groups)
    out = [{"value": value, **scores} for value, scores in per_group.items()]
    return sorted(out, key=lambda r: (-r["n"], str(r["value"])))


def _classification_by_group(store: Store, run: EvalRun, groups: list) -> dict:
    """Classification scores per group; macro averages run over the labels present in the group."""
    from metrics.classification import classification_scores

    refs, predicted = evaluation.predicted_labels(store, run.eval_id)
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    out = {}
    for value, idx in index.items():
        scores = classification_scores([refs[i] for i in idx], [predicted[i] for i in idx])
        out[value] = {"n": len(idx), **{m: scores[m] for m in CLASS_METRICS}, "unparsed": scores["unparsed"]}
    return out


def leaderboard(store: Store, eval_id: int | None = None, *, items_hash: str | None = None) -> list[dict]:
    """Finished runs on the same test items (same content, whatever version it came from), best first."""
    if eval_id is not None:
        items_hash = evaluation.get_eval(store, eval_id).items_hash
    runs = [r for r in evaluation.list_evals(store)
            if r.status == "finished" and (items_hash is None or r.items_hash == items_hash)]
    out = []
    for r in runs:
        key = primary_metric(r.task)
        row = {"eval_id": r.eval_id, "model": r.model_label, "run_id": r.run_id, "dataset": r.ref, "split": r.split,
               "items": r.items, "decoding": "greedy" if not r.settings.get("temperature") else
               f"T={r.settings['temperature']}, top-p={r.settings.get('top_p', 1.0)}",
               "max_new_tokens": r.settings.get("max_new_tokens"), "created_at": r.created_at}
        shown = CLASS_METRICS if r.task == "classification" else TEXT_METRICS
        row.update({m: (r.metrics or {}).get(m) for m in shown})
        out.append(((r.metrics or {}).get(key) or 0.0, row))
    out.sort(key=lambda kr: (-kr[0], kr[1]["eval_id"]))
    return [row for _, row in out]


def confusion(store: Store, eval_id: int) -> list[dict]:
    """The confusion matrix of a classification run as cells {reference, predicted, count} (non-zero only)."""
    run = evaluation.get_eval(store, eval_id)
    matrix = (run.metrics or {}).get("confusion_matrix")
    if not matrix:
        return []
    return [{"reference": ref, "predicted": col, "count": n}
            for ref, counts in zip(matrix["rows"], matrix["counts"])
            for col, n in zip(matrix["columns"], counts) if n]


def rouge_table(run: EvalRun) -> list[dict]:
    """ROUGE precision, recall and F of a finished generation run, one row per ROUGE type."""
    rouge = (run.metrics or {}).get("rouge") or {}
    return [{"rouge": t, **values} for t, values in rouge.items()]
