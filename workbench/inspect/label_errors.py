"""Suspected label errors of a text/label dataset version, ranked most likely wrong first.

Every labelled record gets out-of-fold predicted probabilities: the records are split into k
stratified folds (seeded) and each fold is scored by models trained on the other folds only, so
no record is scored by a model that saw it (`oof_probabilities` returns each record's fold to
prove it). The default models are cheap and strong on short texts: TF-IDF of word 1-2-grams and
character 3-4-grams (within words), a linear SVM whose scores become probabilities by a softmax
at a fixed temperature, and multinomial naive Bayes; the two are averaged in log space. cleanlab
does the confident-learning step: `get_label_quality_scores` (self-confidence) ranks the records and
`find_label_issues` with filter 'low_self_confidence' marks the suspects (confident learning
estimates how many labels are wrong; that many lowest-quality records are flagged, so the flagged
set is the head of the ranking). Measured on banking77 with flipped labels in
bench/label_errors_bench.py.

Cheaper signals join the same ranking, each with its reason: duplicates (exact, and near when
asked) that carry different labels, annotators of a question on this version whose majority
answer differs from the given label, and the records a finished training run on this version could
not fit (the top 5% of its per-record losses, `workbench.models.record_losses`). Each signal halves a
record's score (the classifier's quality), so a record with a signal ranks above an equally doubtful one without.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from workbench.core.auth import require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, iter_version, version_columns, write_version

DEFAULT_FOLDS = 5
DEFAULT_SEED = 0
TEMPERATURE = 0.15  # softmax temperature of the SVM's margins (hinge margins sit near +-1 whatever the data)
SVM_C = 0.5
CHAR_NGRAMS = (3, 4)
NB_ALPHA = 0.1
SIGNAL_WEIGHT = 0.5  # each extra signal multiplies the score by this
FILTER_BY = "low_self_confidence"  # cleanlab: as many as the confident joint estimates, lowest quality first

FitPredict = Callable[[object, np.ndarray, object, int], np.ndarray]


def _noop(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------- the classifier: out-of-fold probabilities

def text_features(texts: list[str]):
    """TF-IDF of word 1-2-grams and character 3-4-grams within words, side by side (sparse). On banking77
    3-4-grams found as many flipped labels as 2-5-grams at 55% of the CPU (bench/RESULTS.md)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True,
                            min_df=2 if len(texts) >= 50 else 1).fit_transform(texts)
    return sp.hstack([words, chars]).tocsr()


def _columns(model, scores: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores of the classes a model knows placed in the columns of all classes (absent ones: -inf)."""
    scores = scores if scores.ndim == 2 else np.c_[-scores, scores]  # binary: one margin
    out = np.full((scores.shape[0], n_classes), -np.inf)
    out[:, model.classes_] = scores
    return out


def fit_predict(x_train, y_train: np.ndarray, x_test, n_classes: int) -> np.ndarray:
    """The default model: a linear SVM (softmax of margins) and naive Bayes, averaged in log space."""
    from scipy.special import log_softmax, softmax
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=SVM_C).fit(x_train, y_train)
    nb = MultinomialNB(alpha=NB_ALPHA).fit(x_train, y_train)
    log_svm = log_softmax(_columns(svm, svm.decision_function(x_test), n_classes) / TEMPERATURE, axis=1)
    log_nb = _columns(nb, nb.predict_log_proba(x_test), n_classes)
    return softmax(0.5 * log_svm + 0.5 * log_nb, axis=1)


def oof_probabilities(x, labels: np.ndarray, n_classes: int, *, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                      model: FitPredict = fit_predict, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities (records x classes) and each record's fold.

    Folds are stratified by label and shuffled with `seed`; fold f is scored by `model` trained on
    the records of the other folds only."""
    from sklearn.model_selection import StratifiedKFold

    progress = progress or _noop
    labels = np.asarray(labels)
    probs = np.zeros((len(labels), n_classes))
    fold_of = np.full(len(labels), -1, np.int64)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    for f, (train, test) in enumerate(splits):
        progress(f / folds, f"training fold {f + 1} of {folds}")
        probs[test] = model(x[train], labels[train], x[test], n_classes)
        fold_of[test] = f
    progress(1.0, "scored every record")
    return probs, fold_of


def confident_learning(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label quality (self-confidence, 0 = surely wrong) and its issue mask (FILTER_BY)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    issues = find_label_issues(labels, probs, filter_by=FILTER_BY, n_jobs=1)
    return np.asarray(quality, float), np.asarray(issues, bool)


# ---------------------------------------------------------------- the result

def _sig(value: float) -> float:
    """Four significant digits: qualities near 0 still tell records apart."""
    return float(f"{float(value):.4g}")


@dataclass
class LabelErrors:
    """What find_label_errors found in one version (arrays over every record, in row order)."""

    version: Version
    label_col: str
    classes: list[str]
    given: list[str | None]  # None: the record has no label and was not scored
    suggested: list[str | None]
    quality: np.ndarray  # cleanlab's label quality in [0, 1]; NaN for unlabelled records
    score: np.ndarray  # quality after the other signals (lower = more likely wrong)
    suspect: np.ndarray  # bool
    fold: np.ndarray  # the fold that scored each record (-1: not scored)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    ids: list | None = None
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def records(self) -> int:
        return len(self.given)

    def ranked_rows(self) -> np.ndarray:
        """The suspects' rows, most likely wrong first (ties in row order)."""
        rows = np.flatnonzero(self.suspect)
        return rows[np.lexsort((rows, self.score[rows]))]

    def suspects(self, limit: int | None = None, *, pair: tuple[str, str] | None = None) -> list[dict]:
        """Ranked suspects: row, id (when the data has one), given, suggested, quality, score, reasons.
        `pair` keeps those of one confusion (given, suggested)."""
        out = []
        for r in self.ranked_rows():
            if pair and (self.given[r], self.suggested[r]) != tuple(pair):
                continue
            item = {"row": int(r)}
            if self.ids is not None:
                item["id"] = self.ids[r]
            item.update(given=self.given[r], suggested=self.suggested[r], quality=_sig(self.quality[r]),
                        score=_sig(self.score[r]), reasons=self.reasons.get(int(r), []))
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
        return out

    def confusions(self) -> list[dict]:
        """Pairs (given, suggested) among the suspects, most frequent first."""
        pairs = Counter((self.given[r], self.suggested[r]) for r in np.flatnonzero(self.suspect)
                        if self.given[r] != self.suggested[r])
        return [{"given": g, "suggested": s, "records": n}
                for (g, s), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_json(self, limit: int | None = None) -> dict:
        return {"dataset": self.version.dataset, "version": self.version.number, "label_column": self.label_col,
                "records": self.records, "scored": int((self.fold >= 0).sum()), "classes": len(self.classes),
                "suspected": int(self.suspect.sum()), "suspects": self.suspects(limit),
                "confusions": self.confusions()[:50], "settings": self.settings, "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------- reading the version

def _read(store: Store, version: Version, label_col: str) -> tuple[list[str], list[str | None], list | None]:
    """Each record's text (system, prompt, completion: the fields that are not the label) and label."""
    from workbench.labels.questions import record_key_column

    names = [c for c, _ in version_columns(store, version)]
    if label_col not in names:
        raise WorkbenchError(f"{version.ref} has no column {label_col!r} to check; columns: "
                             f"{', '.join(n for n in names if n != ROW_COLUMN)}")
    parts = [c for c in ("system", "prompt", "completion") if c in names and c != label_col]
    if not parts:
        raise WorkbenchError(f"{version.ref} has no text to learn the labels from (prompt, completion or system)")
    text = " || ' ' || ".join(f"coalesce(CAST({quote_ident(c)} AS VARCHAR), '')" for c in parts)
    key = record_key_column(store, version)
    key_sql = f", CAST({quote_ident(key)} AS VARCHAR) AS k" if key else ""
    cur = store.con.cursor()
    try:
        table = cur.sql(f"SELECT {text} AS t, nullif(trim(CAST({quote_ident(label_col)} AS VARCHAR)), '') AS y"
                        f"{key_sql} FROM {version.table_name} ORDER BY {ROW_COLUMN}").to_arrow_table()
    finally:
        cur.close()
    ids = table.column("k").to_pylist() if key else None
    return table.column("t").to_pylist(), table.column("y").to_pylist(), ids


def _check_classes(version: Version, label_col: str, given: list, folds: int) -> tuple[list[str], np.ndarray]:
    counts = Counter(g for g in given if g is not None)
    if len(counts) < 2:
        raise WorkbenchError(f"{version.ref}: column {label_col!r} has {len(counts)} distinct label(s); label-error "
                             "detection needs at least two (is it the label column?)")
    rare = sorted((n, c) for c, n in counts.items() if n < folds)
    if rare:
        shown = ", ".join(f"{c!r} ({n})" for n, c in rare[:5]) + (f" and {len(rare) - 5} more" if len(rare) > 5 else "")
        raise WorkbenchError(f"{version.ref}: every label needs at least {folds} records (one per fold) to be "
                             f"checked; too few: {shown}. Merge or drop those labels, or use fewer folds")
    classes = sorted(counts)
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index.get(g, -1) if g is not None else -1 for g in given])


# ---------------------------------------------------------------- the other signals

def _duplicate_signal(store: Store, version: Version, given: list, suggested: list, near: bool) -> dict[int, str]:
    """Records in a duplicate cluster whose labels differ, and whose own label is not the cluster's
    most common one (on a tie: not the classifier's suggestion)."""
    from workbench.inspect import dedup

    result = dedup.find_duplicates(store, version, near=near)
    if result.groups.num_rows == 0:
        return {}
    exact = dedup.exact_group_of(result.exact, result.groups.column(ROW_COLUMN).to_numpy())
    members: dict[int, list[int]] = {}
    for row, group in zip(result.groups.column(ROW_COLUMN).to_pylist(), result.groups.column("group").to_pylist()):
        members.setdefault(group, []).append(row)
    exact_of = dict(zip(result.groups.column(ROW_COLUMN).to_pylist(), exact.tolist()))
    hits = {}
    for rows in members.values():
        counts = Counter(given[r] for r in rows if given[r] is not None)
        if len(counts) < 2:
            continue
        top = max(counts.values())
        for r in rows:
            g = given[r]
            if g is None or (counts[g] == top and (list(counts.values()).count(top) == 1 or g == suggested[r])):
                continue
            other = next(o for o in rows if given[o] is not None and given[o] != g)
            kind = "exact" if exact_of[other] == exact_of[r] else "near"
            hits[r] = f"{kind} duplicate of row {other + 1}, which is labelled {given[other]!r}"
    return hits


def _annotator_signal(store: Store, version: Version, label_col: str, given: list) -> dict[int, str]:
    """Records whose annotators (two or more, on a question of this version about the label) mostly
    answered something other than the given label."""
    from workbench.labels import annotations, questions

    hits: dict[int, str] = {}
    for q in questions.list_questions(store, version.dataset):
        if q.version_id != version.version_id or label_col not in (q.column, q.name):
            continue
        frame = annotations.answers(store, q)
        frame = frame[frame["row"].notna()]
        for row, answers in frame.groupby("row"):
            values = Counter(answers["value"])
            if sum(values.values()) < 2 or given[int(row)] is None:
                continue
            value, n = values.most_common(1)[0]
            if value != given[int(row)] and n * 2 > sum(values.values()):
                hits[int(row)] = (f"annotators answered {value!r} ({n} of {sum(values.values())}) on question "
                                  f"{q.name!r}")
    return hits


# ---------------------------------------------------------------- the finder

def find_label_errors(store: Store, version: Version, label_col: str | None = None, *, folds: int = DEFAULT_FOLDS,
                      seed: int = DEFAULT_SEED, near: bool = True, model: FitPredict = fit_predict,
                      progress=None) -> LabelErrors:
    """Suspected label errors of `label_col`, from out-of-fold probabilities and cleanlab, merged with
    duplicates that disagree and annotators who disagree. Records without a label are not scored."""
    from workbench.data.browse import category_column

    progress = progress or _noop
    t0 = time.perf_counter()
    if int(folds) < 2:
        raise WorkbenchError(f"folds {folds}: give at least 2 (5 is the default)")
    label_col = label_col or version.label_column or category_column(store, version)
    if not label_col:
        raise WorkbenchError(f"{version.ref} has no label column; name one with --label-col (a column of categories)")
    progress(0.0, "reading records")
    texts, given, ids = _read(store, version, label_col)
    classes, y = _check_classes(version, label_col, given, int(folds))
    scored = np.flatnonzero(y >= 0)
    progress(0.02, "building text features")
    x = text_features([texts[i] for i in scored])
    probs, fold_part = oof_probabilities(x, y[scored], len(classes), folds=int(folds), seed=seed, model=model,
                                         progress=lambda f, m: progress(0.05 + 0.8 * f, m))
    progress(0.86, "finding label issues (cleanlab)")
    quality_part, issues = confident_learning(y[scored], probs)
    n = len(given)
    quality, fold, suspect = np.full(n, np.nan), np.full(n, -1, np.int64), np.zeros(n, bool)
    quality[scored], fold[scored], suspect[scored] = quality_part, fold_part, issues
    suggested: list[str | None] = [None] * n
    best = probs.argmax(1)
    reasons: dict[int, list[str]] = {}
    for i, r in enumerate(scored):
        suggested[r] = classes[best[i]]
        if issues[i]:
            reasons[int(r)] = [f"the classifier gives {given[r]!r} {probs[i, y[r]]:.2f} and suggests "
                               f"{suggested[r]!r} ({probs[i, best[i]]:.2f})"]
    score = np.where(np.isnan(quality), np.inf, quality)
    _keep_certainty(store, version, label_col, scored, probs)
    progress(0.9, "looking for duplicates with different labels")
    from workbench.models.record_losses import loss_signal

    signals = [_duplicate_signal(store, version, given, suggested, near),
               _annotator_signal(store, version, label_col, given), loss_signal(store, version)]
    for hits in signals:
        for r, why in hits.items():
            reasons.setdefault(r, []).append(why)
            suspect[r] = True
            score[r] *= SIGNAL_WEIGHT
    progress(1.0, "done")
    settings = {"folds": int(folds), "seed": seed, "near_duplicates": near, "filter_by": FILTER_BY,
                "model": "tfidf word 1-2 + char 3-4; LinearSVC + MultinomialNB" if model is fit_predict else
                getattr(model, "__name__", "custom")}
    return LabelErrors(version, label_col, classes, given, suggested, quality, score, suspect, fold, reasons, ids,
                       time.perf_counter() - t0, settings)


def _keep_certainty(store: Store, version: Version, label_col: str, scored: np.ndarray, probs: np.ndarray) -> None:
    """Each record's largest out-of-fold probability, kept for the labelling queue's 'uncertain' order."""
    from workbench.labels import queue_order

    certainty = np.full(version.row_count, np.nan)
    certainty[scored] = probs.max(axis=1)
    queue_order.save_certainty(store, version, label_col, certainty)


# ---------------------------------------------------------------- what happens next

def texts_of(store: Store, version: Version, rows: list[int], *, chars: int = 300) -> dict[int, str]:
    """The start of the prompt (the text to label) of some records, by row, for people to read."""
    rows = [int(r) for r in rows]
    if not rows:
        return {}
    cur = store.con.cursor()
    try:
        found = cur.execute(f"SELECT {ROW_COLUMN}, left(CAST(prompt AS VARCHAR), {int(chars)}) FROM "
                            f"{version.table_name} WHERE {ROW_COLUMN} IN (SELECT unnest(?::BIGINT[]))",
                            [rows]).fetchall()
    finally:
        cur.close()
    return {int(r): t for r, t in found}


def flag_suspects(store: Store, result: LabelErrors, top: int, *, pair: tuple[str, str] | None = None,
                  user=None) -> int:
    """Send the `top` first suspects (of one confusion `pair` when given) into the labelling queue as
    flags, each with its reason."""
    from workbench.labels import flags

    if top < 1:
        raise WorkbenchError(f"flag the top {top}? give a number of suspects, at least 1")
    done = 0
    for s in result.suspects(top, pair=pair):
        why = "; ".join(s["reasons"]) or "low label quality"
        reason = (f"suspected label error: {result.label_col} is {s['given']!r}, suggested {s['suggested']!r} "
                  f"(quality {s['quality']:.2g}): {why}")
        done += flags.flag_records(store, result.version, [s["row"]], reason, user)
    return done


def relabel_suspects(store: Store, result: LabelErrors, top: int, *, out: str | None = None,
                     pair: tuple[str, str] | None = None, user=None, progress=None) -> tuple[Version, dict]:
    """Write a new version where the `top` first suspects (of one confusion `pair` when given) carry
    the suggested label (admins only).
    Suspects whose suggestion is their given label are left alone. The recipe lists every change."""
    user = require_role(user, "write_version")
    progress = progress or _noop
    if top < 1:
        raise WorkbenchError(f"relabel the top {top}? give a number of suspects, at least 1")
    changes = [s for s in result.suspects(top, pair=pair) if s["suggested"] not in (None, s["given"])]
    if not changes:
        raise WorkbenchError("none of these suspects has a suggested label different from its own; nothing to change")
    version = result.version
    new_label = {s["row"]: s["suggested"] for s in changes}
    recipe = {"op": "relabel", "method": "label-errors", "source": version.ref, "source_version_id": version.version_id,
              "source_content_hash": version.content_hash, "label_column": result.label_col, "top": int(top),
              "pair": list(pair) if pair else None,
              "settings": result.settings, "changed": len(changes),
              "changes": [{"row": s["row"], "from": s["given"], "to": s["suggested"], "quality": s["quality"]}
                          for s in changes]}
    new = write_version(store, out or version.dataset, _relabelled(store, version, result.label_col, new_label, progress),
                        kind="relabel", fmt=version.format, recipe=recipe, info=version.info,
                        parent_id=version.version_id, created_by=user.name)
    progress(1.0, "done")
    return new, {"version": new.ref, "records": new.row_count, "changed": len(changes), "source": version.ref}


def _relabelled(store: Store, version: Version, column: str, new_label: dict[int, str], progress):
    offset = 0
    for batch in iter_version(store, version):
        n = batch.num_rows
        hits = {r - offset: v for r, v in new_label.items() if offset <= r < offset + n}
        if hits:
            i = batch.column_names.index(column)
            col = batch.column(i)
            values = [None if v is None else str(v) for v in col.to_pylist()]
            for pos, value in hits.items():
                values[pos] = value
            batch = batch.set_column(i, column, pa.array(values, pa.string()).cast(col.type))
        yield batch
        offset += n
        progress(offset / max(version.row_count, 1), f"writing {offset:,} of {version.row_count:,}")
