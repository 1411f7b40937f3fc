"""Drift between two datasets or versions: did the category mix or the text lengths move?

* The category mix: per-category share change, and Pearson's chi-square test of homogeneity on the
  2 x K table of counts (`scipy.stats.chi2_contingency`, no continuity correction), with Cramér's V
  as the size of the shift, since on large data any shift is "significant".
* Lengths: the two-sample Kolmogorov-Smirnov test (`scipy.stats.ks_2samp`) on the character length
  of a text column, with the KS statistic D (the largest gap between the two distributions) as the size.

A plain-language summary names what shifted. Effect sizes are worded with Cohen's conventions
(V: 0.1 small, 0.3 medium, 0.5 large for one degree of freedom; D read alike).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import Version, version_columns
from workbench.curation.balance import mix
from workbench.data.browse import category_column

ALPHA = 0.05
LENGTH_BINS = (0, 25, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)


def _size_word(x: float) -> str:
    return "negligible" if x < 0.1 else "small" if x < 0.3 else "medium" if x < 0.5 else "large"


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def lengths(store: Store, version: Version, column: str = "prompt") -> np.ndarray:
    """Character length of every non-null value of a text column (one narrow column)."""
    names = [c for c, _ in version_columns(store, version)]
    if column not in names:
        raise WorkbenchError(f"{version.ref} has no column {column!r} to compare lengths of")
    table = store.cursor().sql(f"SELECT length({quote_ident(column)}) AS n FROM {version.table_name} "
                               f"WHERE {quote_ident(column)} IS NOT NULL").to_arrow_table()
    return table.column("n").to_numpy().astype(np.int64)


def category_shift(before: dict[str, int], after: dict[str, int]) -> dict:
    """Shares, their change and the chi-square test of homogeneity of two count tables."""
    from scipy.stats import chi2_contingency

    cats = sorted(set(before) | set(after), key=lambda c: (-(before.get(c, 0) + after.get(c, 0)), str(c)))
    n_a, n_b = sum(before.values()), sum(after.values())
    rows = []
    for c in cats:
        a, b = before.get(c, 0), after.get(c, 0)
        sa, sb = (a / n_a if n_a else 0.0), (b / n_b if n_b else 0.0)
        rows.append({"category": c, "count_a": a, "count_b": b, "share_a": sa, "share_b": sb,
                     "change": sb - sa})
    out = {"categories": rows, "chi2": None, "dof": None, "p_value": None, "cramers_v": None}
    if len(cats) >= 2 and n_a and n_b:
        table = np.array([[before.get(c, 0) for c in cats], [after.get(c, 0) for c in cats]])
        res = chi2_contingency(table, correction=False)
        n = table.sum()
        out.update(chi2=float(res.statistic), dof=int(res.dof), p_value=float(res.pvalue),
                   cramers_v=math.sqrt(float(res.statistic) / n))  # 2 rows: min(r, c) - 1 = 1
    return out


def length_shift(a: np.ndarray, b: np.ndarray) -> dict:
    """KS test and summary figures of two samples of lengths, plus a shared histogram."""
    from scipy.stats import ks_2samp

    out = {"n_a": int(len(a)), "n_b": int(len(b)), "ks_statistic": None, "p_value": None}
    for name, x in (("a", a), ("b", b)):
        out[f"mean_{name}"] = float(x.mean()) if len(x) else None
        out[f"median_{name}"] = float(np.median(x)) if len(x) else None
        out[f"p90_{name}"] = float(np.percentile(x, 90)) if len(x) else None
    if len(a) and len(b):
        res = ks_2samp(a, b)
        out.update(ks_statistic=float(res.statistic), p_value=float(res.pvalue))
    top = max(int(a.max()) if len(a) else 0, int(b.max()) if len(b) else 0)
    bounds = [*LENGTH_BINS, math.inf]
    hist = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo > top:
            break
        label = f"{lo}-{hi - 1}" if hi != math.inf else f"{lo}+"
        ca = int(((a >= lo) & (a < hi)).sum())
        cb = int(((b >= lo) & (b < hi)).sum())
        hist.append({"bucket": label, "low": lo, "share_a": ca / len(a) if len(a) else 0.0,
                     "share_b": cb / len(b) if len(b) else 0.0, "count_a": ca, "count_b": cb})
    out["histogram"] = hist
    return out


def drift(store: Store, a: Version, b: Version, *, by: str | None = None, text: str = "prompt") -> dict:
    """Compare version b (say, a fresh batch of tickets) against version a (say, the training data)."""
    column = by or category_column(store, a) or category_column(store, b)
    out = {"a": a.ref, "b": b.ref, "records_a": a.row_count, "records_b": b.row_count, "by": column,
           "text": text}
    if column:
        counts_a = {v: n for v, n in mix(store, a, column) if v is not None}
        counts_b = {v: n for v, n in mix(store, b, column) if v is not None}
        out["mix"] = category_shift(counts_a, counts_b)
    else:
        out["mix"] = None
    out["lengths"] = length_shift(lengths(store, a, text), lengths(store, b, text))
    out["summary"] = summary(out)
    return out


def summary(result: dict, *, top: int = 3) -> list[str]:
    """Sentences a person can read: what shifted, how much, how sure."""
    a, b = result["a"], result["b"]
    lines = []
    m = result.get("mix")
    if m is None:
        lines.append("Neither version has a category column, so only lengths are compared.")
    elif m["p_value"] is None:
        lines.append(f"The {result['by']} mix cannot be tested: it needs at least two values and records on "
                     "both sides.")
    else:
        v = m["cramers_v"]
        if m["p_value"] < ALPHA:
            lines.append(f"The {result['by']} mix of {b} differs from {a} (chi-square {m['chi2']:.1f}, "
                         f"{m['dof']} df, {_p_text(m['p_value'])}); the shift is {_size_word(v)} "
                         f"(Cramér's V = {v:.3f}).")
        else:
            lines.append(f"No significant change in the {result['by']} mix of {b} against {a} "
                         f"(chi-square {m['chi2']:.1f}, {m['dof']} df, {_p_text(m['p_value'])}).")
        moved = sorted((r for r in m["categories"] if abs(r["change"]) >= 0.0005), key=lambda r: -abs(r["change"]))
        if moved and m["p_value"] < ALPHA:
            parts = [f"{r['category']} {'rose' if r['change'] > 0 else 'fell'} from {r['share_a']:.1%} to "
                     f"{r['share_b']:.1%} ({r['change'] * 100:+.1f} points)" for r in moved[:top]]
            lines.append("Largest changes: " + "; ".join(parts) + ".")
        new = [r["category"] for r in m["categories"] if r["count_a"] == 0 and r["count_b"] > 0]
        gone = [r["category"] for r in m["categories"] if r["count_b"] == 0 and r["count_a"] > 0]
        if new:
            lines.append(f"New in {b} (absent from {a}): {', '.join(map(str, new[:10]))}"
                         f"{' ...' if len(new) > 10 else ''}.")
        if gone:
            lines.append(f"Absent from {b}: {', '.join(map(str, gone[:10]))}{' ...' if len(gone) > 10 else ''}.")
    ln = result["lengths"]
    if ln["ks_statistic"] is not None:
        d = ln["ks_statistic"]
        what = f"{result['text']} lengths"
        direction = ("longer" if ln["median_b"] > ln["median_a"] else "shorter"
                     if ln["median_b"] < ln["median_a"] else "about as long at the median")
        if ln["p_value"] < ALPHA:
            lines.append(f"The {what} differ ({_p_text(ln['p_value'])}, KS D = {d:.3f}, {_size_word(d)}): "
                         f"{b} is {direction} (median {ln['median_a']:.0f} to {ln['median_b']:.0f} characters, "
                         f"90th percentile {ln['p90_a']:.0f} to {ln['p90_b']:.0f}).")
        else:
            lines.append(f"No significant change in {what} (KS D = {d:.3f}, {_p_text(ln['p_value'])}; median "
                         f"{ln['median_a']:.0f} and {ln['median_b']:.0f} characters).")
    return lines
