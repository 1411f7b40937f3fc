"""Training records most like a text: TF-IDF cosine over the prompts of a version's training split,
to look for the training data behind a bad answer (from the Evaluate page and from reviews).

The TF-IDF index of a version is built once and kept with the store (`index_cache`): the store is
the object that lives as long as the process's connection to this project, so nothing is cached in
a module global and two projects in one process never share an index.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version
from workbench.models import evaluation
from workbench.models.eval_items import ALL_SPLITS, records, split_values, split_where
from workbench.models.evaluation import EvalRun, Progress

NEIGHBOUR_INDEX_CACHE = 2  # TF-IDF indexes kept per store (one per version and split)


def index_cache(store: Store) -> OrderedDict:
    """The store's TF-IDF indexes, oldest first (created with the store's first neighbour search)."""
    return store.state("neighbour_indexes", OrderedDict)


def _training_where(store: Store, version: Version, split: str | None) -> tuple[str, list, str]:
    """The training records of a version: split 'train' when it has one, else every record."""
    values = split_values(store, version)
    if split is None:
        split = "train" if values and "train" in values else ALL_SPLITS
    if split == ALL_SPLITS:
        return "", [], ALL_SPLITS
    where, params = split_where(store, version, split)
    return where, params, split


def _neighbour_index(store: Store, version: Version, split: str | None, progress: Progress | None = None):
    """(rows, categories, vectorizer, matrix, split) of the training records' prompts, built once per store."""
    where, params, split = _training_where(store, version, split)
    cache = index_cache(store)
    key = (version.version_id, version.content_hash, split)
    if key in cache:
        return cache[key]
    from sklearn.feature_extraction.text import TfidfVectorizer

    from workbench.data.browse import category_column

    cat = category_column(store, version)
    cat_sql = f"CAST({quote_ident(cat)} AS VARCHAR)" if cat else "NULL"
    if progress:
        progress(0.1, "reading the training records")
    table = store.cursor().sql(
        f"SELECT {ROW_COLUMN} AS row, coalesce(prompt, '') AS prompt, {cat_sql} AS category "
        f"FROM {version.table_name} {where} ORDER BY {ROW_COLUMN}", params=params).to_arrow_table()
    if table.num_rows == 0:
        raise WorkbenchError(f"{version.ref} has no training records in split {split!r}")
    if progress:
        progress(0.4, f"indexing {table.num_rows:,} training records")
    vectorizer = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    try:
        matrix = vectorizer.fit_transform(table.column("prompt").to_pylist())
    except ValueError:  # every text empty or made only of stop characters
        raise WorkbenchError(f"the training records of {version.ref} have no words to compare") from None
    index = (table.column("row").to_numpy(), table.column("category").to_pylist(), vectorizer, matrix, split)
    while len(cache) >= NEIGHBOUR_INDEX_CACHE:
        cache.popitem(last=False)
    cache[key] = index
    if progress:
        progress(1.0, "index ready")
    return index


def neighbours(store: Store, version: Version | str, text: str, *, k: int = 10, split: str | None = None,
               category: str | None = None, only_category: bool = False,
               progress: Progress | None = None) -> list[dict]:
    """The k training records whose prompt is most like `text`, most similar first.

    Similarity: cosine of TF-IDF vectors (scikit-learn `TfidfVectorizer`: lower-cased word 1- and
    2-grams, sublinear term frequency, l2-normalised rows) over the prompts of the version's training
    split ('train' when the version has a split column, else every record). `category` is the bad
    example's category: each result says whether it shares it, and with only_category=True only
    records of that category are ranked (its same-category neighbours).
    Each result: {row (0-based _row), similarity, category, same_category}."""
    if isinstance(version, str):
        version = get_version(store, version)
    rows, cats, vectorizer, matrix, _ = _neighbour_index(store, version, split, progress)
    sims = (matrix @ vectorizer.transform([text or ""]).T).toarray().ravel()
    if category is not None and only_category:
        sims = np.where(np.array([c == category for c in cats], dtype=bool), sims, -1.0)
    k = max(0, min(int(k), int((sims >= 0).sum())))
    if k == 0:
        return []
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.lexsort((rows[top], -sims[top]))]  # most similar first, ties by record order
    return [{"row": int(rows[i]), "similarity": float(sims[i]), "category": cats[i],
             "same_category": None if category is None else cats[i] == category} for i in top]


def neighbours_of_prompt(store: Store, version: Version, record: dict, *, k: int = 5, only_category: bool = False,
                         progress: Progress | None = None) -> list[dict]:
    """The training records of `version` most like a record's prompt, with their prompt (and completion)."""
    from workbench.data.browse import category_column

    cat = category_column(store, version)
    found = neighbours(store, version, record.get("prompt") or "", k=k, category=record.get(cat) if cat else None,
                       only_category=only_category, progress=progress)
    texts = {r[ROW_COLUMN]: r for r in records(store, version, [n["row"] for n in found])}
    answer = version.format != "classification"
    return [{**n, "prompt": texts[n["row"]].get("prompt"),
             **({"completion": texts[n["row"]].get("completion")} if answer else {})} for n in found]


def example_neighbours(store: Store, run: EvalRun, item: int, *, k: int = 5, only_category: bool = False,
                       progress: Progress | None = None) -> list[dict]:
    """The training records most like a test example's prompt (see `neighbours`), with their texts."""
    version = evaluation.version_of(store, run)
    (test,) = records(store, version, [evaluation.item_row(store, run.eval_id, item)]) or [None]
    if test is None:
        raise WorkbenchError(f"test item {item} of evaluation {run.eval_id} is no longer in {version.ref}")
    return neighbours_of_prompt(store, version, test, k=k, only_category=only_category, progress=progress)
