"""Comparing two finished evaluations on the same test items: the paired bootstrap of every metric
(metrics.significance), and the examples side by side with the largest losses or gains."""

from __future__ import annotations

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import version_columns
from workbench.models import evaluation
from workbench.models.eval_scores import item_stats, label_set
from workbench.models.evaluation import EvalRun, example_metrics
from workbench.models.slices import TEXT_METRICS


def _pair(store: Store, a: int, b: int) -> tuple[EvalRun, EvalRun]:
    run_a, run_b = evaluation.finished_eval(store, a), evaluation.finished_eval(store, b)
    if run_a.items_hash != run_b.items_hash:
        raise WorkbenchError(f"evaluations {a} ({run_a.ref} {run_a.split}, {run_a.items:,} items) and {b} "
                             f"({run_b.ref} {run_b.split}, {run_b.items:,} items) were not run on the same test "
                             "items; compare runs from the same leaderboard")
    return run_a, run_b


def pairs_for_runs(store: Store, run_ids: list[str]) -> list[dict]:
    """Finished evaluations of these training runs that ran on the same test items, as comparable pairs
    {a, b, run_a, run_b, split, items} (the newest evaluation of each run per set of items; runs in the order
    given, so the first run is the baseline)."""
    newest: dict[tuple[str, str], EvalRun] = {}
    for r in evaluation.list_evals(store):  # newest first
        if r.run_id in run_ids and r.status == "finished":
            newest.setdefault((r.run_id, r.items_hash), r)
    out = []
    for i, ra in enumerate(run_ids):
        for rb in run_ids[i + 1:]:
            for (run, items_hash), ea in newest.items():
                eb = newest.get((rb, items_hash))
                if run == ra and eb is not None:
                    out.append({"a": ea.eval_id, "b": eb.eval_id, "run_a": ra, "run_b": rb, "split": ea.split,
                                "dataset": ea.ref, "items": ea.items})
    return out


def compare(store: Store, a: int, b: int, *, n_resamples: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> list[dict]:
    """Run b against run a, metric by metric: both scores, the difference b - a, its paired-bootstrap
    confidence interval (metrics.significance, `n_resamples` resamples of the test items), p and a plain
    statement of whether the difference is significant."""
    from metrics import significance
    from metrics.corpus import SCALES

    run_a, run_b = _pair(store, a, b)
    names = (f"eval {a} ({run_a.model_label})", f"eval {b} ({run_b.model_label})")
    if run_a.task == "classification":
        results = _compare_classification(store, run_a, run_b, n_resamples=n_resamples, seed=seed,
                                          confidence=confidence, names=names)
    else:
        results = significance.paired_bootstrap(item_stats(store, a), item_stats(store, b), n_resamples=n_resamples,
                                                seed=seed, confidence=confidence, names=names)
        order = {m: i for i, m in enumerate(TEXT_METRICS)}
        results = dict(sorted(results.items(), key=lambda kv: order.get(kv[0], 99)))
    scale = {100.0: "0-100 scale", 1.0: "0-1 scale", None: "ratio"}
    return [{**r.to_json(), "scale": scale.get(SCALES.get(r.metric, 1.0), "0-1 scale")} for r in results.values()]


def _compare_classification(store: Store, run_a: EvalRun, run_b: EvalRun, *, n_resamples: int, seed: int,
                            confidence: float, names: tuple[str, str]) -> dict:
    """Paired bootstrap of accuracy (the mean of per-item correctness, metrics.significance).

    Macro F1 joins when metrics.classification offers resampled scores (`resampled_scores(y_true,
    y_pred, counts, labels)`): scikit-learn per resample takes minutes for 1,000 resamples of 3,000 items."""
    from metrics import classification, significance

    refs, pred_a = evaluation.predicted_labels(store, run_a.eval_id)
    _, pred_b = evaluation.predicted_labels(store, run_b.eval_id)
    correct_a = [1.0 if p == r else 0.0 for p, r in zip(pred_a, refs)]
    correct_b = [1.0 if p == r else 0.0 for p, r in zip(pred_b, refs)]
    out = {"accuracy": significance.paired_bootstrap_values(correct_a, correct_b, metric="accuracy",
                                                            n_resamples=n_resamples, seed=seed,
                                                            confidence=confidence, names=names)}
    resampled = getattr(classification, "resampled_scores", None)
    if resampled is not None:
        labels = label_set(store, run_a)
        diffs = significance.bootstrap_differences(lambda c: resampled(refs, pred_a, c, labels),
                                                   lambda c: resampled(refs, pred_b, c, labels), len(refs),
                                                   n_resamples=n_resamples, seed=seed)
        for metric in ("macro_f1",):
            if metric in diffs:
                out[metric] = significance.summarize(metric, run_a.metrics[metric], run_b.metrics[metric],
                                                     diffs[metric], n_items=len(refs), seed=seed,
                                                     confidence=confidence, names=names)
    return out


def example_diff(store: Store, a: int, b: int, *, metric: str | None = None, order: str = "losses",
                 limit: int = 50, offset: int = 0) -> list[dict]:
    """Per-example side by side: prompt, reference, both outputs and both per-example scores, sorted by
    the largest losses of b against a (order='losses') or the largest gains ('gains')."""
    run_a, run_b = _pair(store, a, b)
    metric = metric or ("correct" if run_a.task == "classification" else "bleu")
    if order not in ("losses", "gains"):
        raise WorkbenchError(f"order {order!r}; expected losses or gains")
    rows = evaluation.paired_examples(store, run_a, run_b, evaluation.version_of(store, run_a), metric,
                                      losses_first=order == "losses", limit=limit, offset=offset)
    if not rows and offset == 0:
        raise WorkbenchError(f"no per-example {metric!r} scores in these runs; choose one of "
                             f"{', '.join(example_metrics(store, a))}")
    return rows


def examples(store: Store, eval_id: int, *, metric: str | None = None, worst_first: bool = True,
             limit: int = 50, offset: int = 0, column: str | None = None, value: str | None = None) -> list[dict]:
    """One run's examples with their per-example score, worst first (optionally of one slice)."""
    run = evaluation.finished_eval(store, eval_id)
    metric = metric or ("correct" if run.task == "classification" else "bleu")
    version = evaluation.version_of(store, run)
    if column is not None and column not in [c for c, _ in version_columns(store, version)]:
        raise WorkbenchError(f"{version.ref} has no column {column!r}")
    return evaluation.scored_examples(store, run, version, metric, worst_first=worst_first, limit=limit,
                                      offset=offset, column=column, value=value)
