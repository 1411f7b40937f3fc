"""Exact match: a prediction equals its reference after whitespace normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize_whitespace(text: str) -> str:
    """Leading/trailing whitespace removed and every run of whitespace made one space."""
    return " ".join(text.split())


def exact_match_items(predictions: Sequence[str], references: Sequence[str], *,
                      ignore_case: bool = False) -> np.ndarray:
    """Per item 1.0 when the prediction equals the reference after `normalize_whitespace` (and, with
    ignore_case, `str.casefold`), else 0.0. The corpus value is the mean."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")

    def norm(text: str) -> str:
        text = normalize_whitespace(text)
        return text.casefold() if ignore_case else text

    return np.array([norm(p) == norm(r) for p, r in zip(predictions, references)], dtype=np.float64)
