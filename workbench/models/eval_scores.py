"""Scoring an evaluation whose answers are all in.

Generation: per-item statistics from `metrics.corpus` (sacreBLEU BLEU/chrF statistics, rouge-score
ROUGE, exact match), kept in the run folder (`item_stats.npz`) for slices and the bootstrap; corpus
scores with the keys of `workbench score`. Classification: the label parsed from each answer and
scikit-learn scores (`metrics.classification`). Per-example scores and corpus scores are stored by
`workbench.models.evaluation.save_scores`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.core import files
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.models import evaluation
from workbench.models.eval_items import label_set as version_labels
from workbench.models.evaluation import EvalRun, Progress

STATS_FILE = "item_stats.npz"  # per-item metric statistics: rebuildable from the stored texts


def _save_stats(path: Path, stats) -> None:
    arrays = {"n": np.array([stats.n])}
    if stats.bleu is not None:
        arrays["bleu"] = stats.bleu
    if stats.chrf is not None:
        arrays["chrf"] = stats.chrf
    if stats.exact_match is not None:
        arrays["exact_match"] = stats.exact_match
    for t, arr in stats.rouge.items():
        arrays[f"rouge:{t}"] = arr
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no ".npz" to it
        np.savez_compressed(f, **arrays)


def _load_stats(path: Path):
    from metrics.corpus import ItemStats

    with np.load(path) as z:
        return ItemStats(n=int(z["n"][0]), bleu=z["bleu"] if "bleu" in z else None,
                         chrf=z["chrf"] if "chrf" in z else None,
                         exact_match=z["exact_match"] if "exact_match" in z else None,
                         rouge={k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("rouge:")})


def item_stats(store: Store, eval_id: int):
    """The run's per-item metric statistics (metrics.corpus.ItemStats), from the run folder or recomputed."""
    from metrics.corpus import item_stats as compute

    run = evaluation.get_eval(store, eval_id)
    path = run.path / STATS_FILE
    if path.exists():
        stats = _load_stats(path)
        if stats.n == run.generated:
            return stats
    _, outputs, refs = evaluation.texts(store, eval_id)
    stats = compute(outputs, refs)
    if run.path.exists():
        _save_stats(path, stats)
    return stats


def score(store: Store, eval_id: int, *, progress: Progress | None = None, ahead=None) -> EvalRun:
    """Score a run whose answers are all in: corpus metrics into the run's metrics, per-example scores
    (and predicted labels for classification) stored with the run. `ahead` (metrics.corpus.ItemStatsAhead,
    from `answers_ahead`) holds statistics computed while the answers arrived; only the rest are computed."""
    run = evaluation.get_eval(store, eval_id)
    items, outputs, refs = evaluation.texts(store, eval_id)
    if len(items) < run.items:
        raise WorkbenchError(f"evaluation {eval_id} has {len(items):,} of {run.items:,} answers; resume it with "
                             f"`workbench eval --resume {eval_id}` before scoring")
    labels = None
    if run.task == "classification":
        summary, per_item, labels = _score_classification(store, run, outputs, refs)
    else:
        summary, per_item = _score_generation(run, items, outputs, refs, progress, ahead)
    summary["n_items"] = len(items)
    scored = evaluation.save_scores(store, run, items, per_item, summary, labels)
    _track(store, run, summary)
    return scored


class AnswersAhead:
    """Scores an evaluation's answers as they arrive (the CLI, while the generator works), so that `score`
    is left with the last batch only: `add(items, outputs)` with the references read up front."""

    def __init__(self, store: Store, run: EvalRun):
        from metrics.corpus import ItemStatsAhead

        self.references = evaluation.references(store, run.eval_id)
        self.stats = ItemStatsAhead()

    def add(self, items: list[int], outputs: list[str]) -> None:
        known = [(i, o) for i, o in zip(items, outputs) if i in self.references]
        self.stats.add([i for i, _ in known], [o for _, o in known], [self.references[i] for i, _ in known])


def answers_ahead(store: Store, run: EvalRun) -> AnswersAhead | None:
    """What the CLI feeds answers to while it follows a generation run (None for classification: its
    scoring is a label lookup)."""
    return None if run.task == "classification" else AnswersAhead(store, run)


def prepare(run: EvalRun) -> None:
    """Import and open, ahead of time, what scoring this run will use: the ROUGE stemmer (NLTK), sacreBLEU,
    the training run's MLflow stores. About 3 s on a CPU that a caller with idle time (the CLI while the
    generator runs) takes off the end of the command; scoring is the same with or without it. Never raises:
    whatever fails here fails again, with its message, where it is used."""
    try:
        if run.task != "classification":
            from metrics import corpus, rouge

            rouge.tokenizer()  # imports NLTK's Porter stemmer
            corpus.item_stats(["warm up"], ["warm up"])
        if run.run_id:
            from trainers import tracking

            tracking.prepare_evaluation_logging(run.path.parent / run.run_id)  # the runs folder holds both
    except Exception:  # noqa: BLE001 - only a head start; scoring reports its own errors
        pass


def _track(store: Store, run: EvalRun, summary: dict) -> None:
    """The scores into the training run's MLflow run (as eval/<split>/<metric>), when that run was tracked;
    tracking never fails an evaluation."""
    if not run.run_id:
        return
    from trainers import tracking

    run_dir = store.project.runs_dir / run.run_id
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        tracking.log_evaluation(run_dir, metrics, prefix=f"eval/{run.split}/")
    except Exception as exc:  # a broken or remote store: the scores are saved all the same
        import logging

        logging.getLogger(__name__).warning("evaluation %s: not logged to MLflow: %s", run.eval_id, exc)


def _score_generation(run: EvalRun, items: list[int], outputs: list[str], refs: list[str], progress,
                      ahead=None) -> tuple[dict, dict]:
    """Corpus scores with the keys and numbers of `workbench score` (workbench.models.scoring.score_texts; a test
    holds them equal), from per-item statistics computed once and kept in the run folder for slices,
    per-example scores and the bootstrap."""
    from metrics import bleu as mbleu
    from metrics.corpus import corpus_scores, item_scores
    from metrics.corpus import item_stats as compute
    from workbench.models.scoring import DEFAULT_METRICS, ROUGE_NOTE

    if ahead is not None:
        stats = ahead.stats_for(items, outputs, refs, progress=progress)
    else:
        stats = compute(outputs, refs, progress=progress)
    _save_stats(run.path / STATS_FILE, stats)
    summary: dict = {"metrics": list(DEFAULT_METRICS), **corpus_scores(stats),
                     "signature": mbleu.BLEU_SIGNATURE, "chrf_signature": mbleu.CHRF_SIGNATURE,
                     "length_tokenization": mbleu.LENGTH_RATIO_TOKENIZATION, "rouge_aggregate": ROUGE_NOTE,
                     "rouge": {t: dict(zip(("precision", "recall", "fmeasure"), map(float, arr.mean(axis=0))))
                               for t, arr in stats.rouge.items()}}
    parts = mbleu.bleu_from_stats(stats.bleu.sum(axis=0))
    summary.update(bleu_precisions=parts["precisions"], bleu_bp=parts["bp"], sys_len=parts["sys_len"],
                   ref_len=parts["ref_len"])
    return summary, item_scores(stats)


def label_set(store: Store, run: EvalRun) -> list[str]:
    """Every label of the run's dataset version (all splits): what a generated answer is parsed against."""
    return version_labels(store, evaluation.version_of(store, run))


def _score_classification(store: Store, run: EvalRun, outputs: list[str], refs: list[str]):
    """Labels parsed from the answers (metrics.classification), then accuracy, macro/micro P/R/F1 and
    the confusion matrix (scikit-learn); per example: 1.0 when the parsed label is the reference."""
    from metrics.classification import LabelParser, classification_scores

    labels = label_set(store, run)
    parse = LabelParser(labels)
    predicted = [parse(o) for o in outputs]
    summary = classification_scores(refs, predicted, labels=labels)
    summary.pop("n", None)
    correct = [1.0 if p == r else 0.0 for p, r in zip(predicted, refs)]
    return summary, {"correct": correct}, predicted
