"""Score predictions against references: read the texts, choose the metrics, assemble one result.

The glue between files (or any aligned lists of texts) and `metrics/`: `workbench score` and the
evaluation of a run both come through `score_texts`, so they report the same keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from metrics import bleu as bleu_metric
from metrics import corpus
from metrics.rouge import ROUGE_TYPES
from workbench.core.errors import WorkbenchError

DEFAULT_METRICS = corpus.METRICS
ROUGE_NOTE = "mean over items of rouge-score's F-measure (RougeScorer, use_stemmer=True; Lsum splits on newlines)"


def read_items(path, what: str = "file") -> list[str]:
    """One item per line of a UTF-8 text file (a final newline ends the last item; "\\r\\n" is accepted).
    A .jsonl file holds one JSON string per line instead, so items may contain newlines (which ROUGE-Lsum
    uses as sentence breaks)."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{what} {path} not found; give a text file with one item per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise WorkbenchError(f"{what} {path}, line {line}: not valid UTF-8; save the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [x[:-1] if x.endswith("\r") else x for x in lines]
    if path.suffix.lower() != ".jsonl":
        return lines
    items = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{what} {path}, line {number}: not JSON ({exc.msg}); a .jsonl file needs one "
                                 "JSON string per line") from None
        if not isinstance(value, str):
            raise WorkbenchError(f"{what} {path}, line {number}: a {type(value).__name__}, expected a JSON string")
        items.append(value)
    return items


def choose_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    try:
        return corpus.parse_metrics(text)
    except ValueError as exc:
        raise WorkbenchError(f"--metrics: {exc}") from None


def score_texts(predictions: Sequence[str], references: Sequence[str], *, metrics=None, progress=None) -> dict:
    """Corpus scores of aligned predictions and references: {n, metrics, bleu, signature, length_ratio,
    rouge1, rouge2, rougeL, rougeLsum, rouge (precision/recall/F means), chrf, chrf_signature,
    exact_match}, only the keys of the chosen metrics. BLEU and chrF are on sacreBLEU's 0-100 scale,
    ROUGE F-measures and exact match in [0, 1]."""
    chosen = choose_metrics(metrics)
    if len(predictions) != len(references):
        raise WorkbenchError(f"{len(predictions)} predictions but {len(references)} references; "
                             "they must be aligned, one prediction per reference")
    if not predictions:
        raise WorkbenchError("nothing to score: there are no items")
    stats = corpus.item_stats(predictions, references, metrics=chosen, progress=progress)
    scores = corpus.corpus_scores(stats)
    out: dict = {"n": len(predictions), "metrics": list(chosen)}
    if "bleu" in chosen:
        out["bleu"] = scores["bleu"]
        out["signature"] = bleu_metric.BLEU_SIGNATURE
    if "length_ratio" in chosen:
        out["length_ratio"] = scores["length_ratio"]
        out["length_tokenization"] = bleu_metric.LENGTH_RATIO_TOKENIZATION
    if "rouge" in chosen:
        for t in ROUGE_TYPES:
            out[t] = scores[t]
        out["rouge"] = {t: dict(zip(("precision", "recall", "fmeasure"), map(float, stats.rouge[t].mean(axis=0))))
                        for t in ROUGE_TYPES}
        out["rouge_aggregate"] = ROUGE_NOTE
    if "chrf" in chosen:
        out["chrf"] = scores["chrf"]
        out["chrf_signature"] = bleu_metric.CHRF_SIGNATURE
    if "exact_match" in chosen:
        out["exact_match"] = scores["exact_match"]
    return out


def score_files(predictions_path, references_path, *, metrics=None, progress=None) -> dict:
    """`score_texts` on two files of one item per line (see `read_items`); the line counts must match."""
    chosen = choose_metrics(metrics)
    predictions = read_items(predictions_path, "predictions file")
    references = read_items(references_path, "references file")
    if len(predictions) != len(references):
        raise WorkbenchError(f"the predictions file {predictions_path} has {len(predictions):,} lines but the "
                             f"references file {references_path} has {len(references):,}; they must have one "
                             "item per line, in the same order")
    out = score_texts(predictions, references, metrics=chosen, progress=progress)
    return {"predictions": str(predictions_path), "references": str(references_path), **out}


def format_scores(result: dict) -> str:
    """The scores as a few aligned lines of text."""
    lines = [f"{result['n']:,} items"]
    if "bleu" in result:
        lines.append(f"{'BLEU':<13}{result['bleu']:7.2f}   {result['signature']}")
    if "chrf" in result:
        lines.append(f"{'chrF':<13}{result['chrf']:7.2f}   {result['chrf_signature']}")
    if "rouge" in result:
        names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
        for t in ROUGE_TYPES:
            lines.append(f"{names[t]:<13}{result[t]:7.4f}")
        lines.append(f"{'':<13}(ROUGE: mean over items of the F-measure, as rouge-score with stemming)")
    if "length_ratio" in result:
        lines.append(f"{'length ratio':<13}{result['length_ratio']:7.3f}   (prediction tokens / reference tokens, "
                     "sacreBLEU 13a)")
    if "exact_match" in result:
        lines.append(f"{'exact match':<13}{result['exact_match']:7.1%}   (after whitespace normalisation)")
    return "\n".join(lines)
