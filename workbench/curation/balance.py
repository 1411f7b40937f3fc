"""Balance a dataset's mix of categories (or of any column) against a target, as a new version.

The target and its whole record counts per category come from workbench.curation.targets
(uniform, proportional or explicit shares; largest-remainder counts within --min/--max bounds).

A *strategy* turns the target counts into a selection of records:

    downsample  keep target records of each category, chosen in a seeded order (optionally
                dropping duplicates and flagged records first); never repeats a record
    upsample    keep every record and repeat records of small categories up to the target,
                at most `max_copies` appearances per record; never drops a record
    hybrid      downsample the categories above their target, upsample those below

Where the data does not allow the target (too few records, the copy cap), the plan says so per
category in plain words; committing then needs `allow_short=True`.

The selection is deterministic: records are ordered inside each category by splitmix64 of
(seed, record position), a fixed published mixing function, so the same parent, recipe and seed
give the same records in the same order and therefore the same content hash, on any machine
and any library version. The result keeps the parent's record order; a repeated record's copies
sit next to each other.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version, version_columns, write_version
from workbench.curation.targets import Target, apportion, parse_bounds, parse_target, seeded_keys
from workbench.data.browse import category_column
from workbench.inspect import dedup, quality

STRATEGIES = ("downsample", "upsample", "hybrid")
DROP_FIRST = ("flagged", "duplicates", "near-duplicates")
DEFAULT_MAX_COPIES = 10
DEFAULT_SEED = 0
# Columns that are not stored but derived: the character length of a text, in buckets.
LENGTH_BUCKETS = (50, 100, 200, 500, 1000, 2000)
VIRTUAL_COLUMNS = {"prompt length": "prompt", "completion length": "completion"}

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------- the mix of a column

def column_choices(store: Store, version: Version) -> list[str]:
    """Columns a mix can be taken over: the category column first, then the other short columns,
    then the length buckets of the texts."""
    cols = version_columns(store, version)
    first = category_column(store, version)
    names = [c for c, t in cols if c not in ("prompt", "completion", "system", "messages")
             and not t.upper().startswith(("STRUCT", "MAP")) and not t.upper().endswith("[]")]
    names.sort(key=lambda c: (c != first, c))
    present = {c for c, _ in cols}
    return names + [v for v, source in VIRTUAL_COLUMNS.items() if source in present]


def column_expression(store: Store, version: Version, column: str) -> str:
    """SQL for a column's values as text: a stored column, or a length bucket such as 'prompt length'."""
    names = [c for c, _ in version_columns(store, version)]
    if column in names:
        return f"CAST({quote_ident(column)} AS VARCHAR)"
    if column in VIRTUAL_COLUMNS and VIRTUAL_COLUMNS[column] in names:
        text = quote_ident(VIRTUAL_COLUMNS[column])
        cases, low = [], 0
        for high in LENGTH_BUCKETS:
            cases.append(f"WHEN length({text}) < {high} THEN '{low}-{high - 1} chars'")
            low = high
        return f"CASE WHEN {text} IS NULL THEN NULL {' '.join(cases)} ELSE '{low}+ chars' END"
    choices = ", ".join(column_choices(store, version)) or "none"
    raise WorkbenchError(f"{version.ref} has no column {column!r}; columns to balance by: {choices}")


def mix(store: Store, version: Version, column: str) -> list[tuple[str | None, int]]:
    """(value, records) for every value of the column (None: records without a value), most common first."""
    expr = column_expression(store, version, column)
    sql = f"SELECT {expr} AS value, count(*) AS n FROM {version.table_name} GROUP BY ALL ORDER BY n DESC, value"
    return [(v, n) for v, n in store.cursor().execute(sql).fetchall()]


def value_codes(store: Store, version: Version, column: str) -> tuple[np.ndarray, list[str | None]]:
    """(code per record position, values): codes index `values`; one pass over a narrow column."""
    expr = column_expression(store, version, column)
    table = store.cursor().sql(f"SELECT {ROW_COLUMN}, {expr} AS v FROM {version.table_name}").to_arrow_table()
    rows = table.column(ROW_COLUMN).to_numpy()
    encoded = pc.dictionary_encode(table.column("v")).combine_chunks()
    values = encoded.dictionary.to_pylist()
    idx = encoded.indices
    has_null = idx.null_count > 0
    codes = np.empty(version.row_count, dtype=np.int32)
    codes[rows] = pc.fill_null(idx, len(values)).to_numpy(zero_copy_only=False).astype(np.int32)
    if has_null:
        values.append(None)
    return codes, values


# ---------------------------------------------------------------- duplicates and flags (priorities)

def duplicate_groups(store: Store, version: Version, *, near: bool, threshold: float = 0.8,
                     progress: Progress | None = None) -> pa.Table:
    """Duplicate clusters (`_row`, `group`) from the Inspect area's `workbench.inspect.dedup.duplicate_groups`:
    whole records equal after normalisation, merged with near duplicates when `near`."""
    return dedup.duplicate_groups(store, version, near=near, threshold=threshold, progress=progress)


def near_duplicate_groups(store: Store, version: Version, *, threshold: float = 0.8,
                          progress: Progress | None = None) -> pa.Table:
    return duplicate_groups(store, version, near=True, threshold=threshold, progress=progress)


def flagged_rows(store: Store, version: Version) -> np.ndarray:
    """Record positions carrying any quality flag (`workbench.inspect.quality`: empty, junk, language, ...).

    The flags are computed once per version and cached by the quality area."""
    sql = " UNION ".join(f"({quality.flag_rows_sql(store, version, flag)})" for flag in quality.flag_names())
    table = store.cursor().sql(sql).to_arrow_table()
    return np.asarray(table.column(0).to_numpy(), dtype=np.int64)


def drop_priority(store: Store, version: Version, drop_first: Iterable[str], *, threshold: float = 0.8,
                  groups: dict[str, pa.Table] | None = None) -> np.ndarray | None:
    """0 for records to keep first, higher for records to drop first (flagged: +2, a duplicate that
    is not the first record of its cluster: +1). None when nothing is preferred."""
    drop_first = list(drop_first or ())
    for d in drop_first:
        if d not in DROP_FIRST:
            raise WorkbenchError(f"unknown --drop-first {d!r}; expected some of {', '.join(DROP_FIRST)}")
    if not drop_first:
        return None
    groups = groups or {}
    prio = np.zeros(version.row_count, dtype=np.int8)
    for name in ("duplicates", "near-duplicates"):
        if name in drop_first:
            table = groups.get(name)
            if table is None:
                table = duplicate_groups(store, version, near=name == "near-duplicates", threshold=threshold)
            rows = table.column(ROW_COLUMN).to_numpy()
            group = table.column("group").to_numpy()
            prio[rows[rows != group]] = 1
    if "flagged" in drop_first:
        prio[flagged_rows(store, version)] += 2
    return prio


# ---------------------------------------------------------------- the plan

@dataclass
class CategoryPlan:
    category: str
    available: int
    target: int
    result: int
    base_copies: int   # every record of the category appears at least this often (0: some are dropped)
    extra: int         # how many records (in seeded order) get one appearance more
    problem: str | None = None


@dataclass
class BalancePlan:
    version: Version
    column: str
    target: Target
    size: int
    strategy: str
    seed: int
    minimum: int | dict | None
    maximum: int | dict | None
    max_copies: int | None
    drop_first: tuple[str, ...]
    categories: list[CategoryPlan]
    without_value: int
    threshold: float = 0.8

    @property
    def records(self) -> int:
        return sum(c.result for c in self.categories)

    @property
    def shortfalls(self) -> list[CategoryPlan]:
        return [c for c in self.categories if c.problem]

    @property
    def exact(self) -> bool:
        return not self.shortfalls

    def counts(self) -> dict[str, int]:
        return {c.category: c.result for c in self.categories if c.result}

    def to_json(self) -> dict:
        repeated = [c for c in self.categories if c.base_copies > 1 or (c.base_copies == 1 and c.extra)]
        return {
            "dataset": self.version.dataset, "version": self.version.number, "by": self.column,
            "target_kind": self.target.kind, "reference": self.target.reference,
            "strategy": self.strategy, "seed": self.seed, "size": self.size, "records": self.records,
            "exact": self.exact,
            "counts": self.counts(),
            "before": {c.category: c.available for c in self.categories},
            "target": {c.category: c.target for c in self.categories},
            "shortfalls": [{"category": c.category, "available": c.available, "target": c.target,
                            "result": c.result, "message": c.problem} for c in self.shortfalls],
            "max_copies": self.max_copies,
            "max_copies_used": max((c.base_copies + (1 if c.extra else 0) for c in self.categories if c.result),
                                   default=0),
            "upsampled_categories": [c.category for c in repeated],
            "added_copies": sum(max(c.result - c.available, 0) for c in self.categories),
            "dropped": sum(max(c.available - c.result, 0) for c in self.categories) + self.without_value,
            "without_value": self.without_value,
        }

    def recipe(self) -> dict:
        return {
            "op": "balance", "parent": self.version.ref, "parent_hash": self.version.content_hash,
            "by": self.column, "target": {"kind": self.target.kind, "shares": self.target.shares or None,
                                          "reference": self.target.reference, "file": self.target.source},
            "size": self.size, "strategy": self.strategy, "seed": self.seed, "min": self.minimum,
            "max": self.maximum, "max_copies": self.max_copies, "drop_first": list(self.drop_first),
            "near_threshold": self.threshold if "near-duplicates" in self.drop_first else None,
            "order": "splitmix64(seed, _row) within each category; parent order kept; copies adjacent",
            "rounding": "largest remainder (Hamilton); ties: larger share, then name",
            "counts": self.counts(),
            "shortfalls": {c.category: c.problem for c in self.shortfalls},
        }


def target_shares(store: Store, version: Version, column: str, target: Target,
                  available: dict[str, int]) -> dict[str, float]:
    """The share per category the target asks for (categories of the data and, for a reference, its own)."""
    if target.kind == "uniform":
        return {c: 1 / len(available) for c in available} if available else {}
    if target.kind == "proportional":
        if target.reference:
            ref = get_version(store, target.reference)
            counts = {v: n for v, n in mix(store, ref, column) if v is not None}
            if not counts:
                raise WorkbenchError(f"the reference {ref.ref} has no values in column {column!r}")
        else:
            counts = available
        total = sum(counts.values())
        return {c: n / total for c, n in counts.items()} if total else {}
    unknown = [c for c in target.shares if c not in available]
    if unknown:
        c = unknown[0]
        close = difflib.get_close_matches(c, list(available), n=3)
        hint = f"; did you mean {', '.join(repr(x) for x in close)}?" if close else \
            f"; values are: {', '.join(sorted(available)[:20])}{' ...' if len(available) > 20 else ''}"
        raise WorkbenchError(f"the target names {c!r}, which is not a value of {column!r} in "
                             f"{version.ref}{hint}")
    return dict(target.shares)


def _bounds_for(bounds, cats) -> dict[str, int] | None:
    if bounds is None:
        return None
    if isinstance(bounds, int):
        return {c: bounds for c in cats}
    unknown = [c for c in bounds if c not in cats]
    if unknown:
        raise WorkbenchError(f"--min/--max name {unknown[0]!r}, which is not a category of the target")
    return dict(bounds)


def plan_balance(store: Store, version: Version, *, by: str | None = None, target: Target | str = "uniform",
                 size: int | None = None, strategy: str = "downsample", seed: int = DEFAULT_SEED,
                 minimum=None, maximum=None, max_copies: int | None = DEFAULT_MAX_COPIES,
                 drop_first: Iterable[str] = (), reference: str | None = None,
                 threshold: float = 0.8) -> BalancePlan:
    """What a balance would do, from the category counts alone (fast; reads no record)."""
    if strategy not in STRATEGIES:
        raise WorkbenchError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if isinstance(target, str):
        target = parse_target(target, reference=reference)
    column = by or category_column(store, version)
    if not column:
        raise WorkbenchError(f"{version.ref} has no category column; name the column to balance by with --by")
    seed = int(seed)
    if seed < 0:
        raise WorkbenchError(f"the seed must be 0 or more, not {seed}")
    if max_copies is not None and int(max_copies) < 1:
        raise WorkbenchError("--max-copies must be 1 or more (1 means no record is repeated)")
    counts = mix(store, version, column)
    available = {v: n for v, n in counts if v is not None}
    without_value = sum(n for v, n in counts if v is None)
    if not available:
        raise WorkbenchError(f"column {column!r} of {version.ref} has no values to balance")
    shares = target_shares(store, version, column, target, available)
    if size is None:
        raise WorkbenchError("give the total size of the result with --size N")
    minimum, maximum = parse_bounds(minimum, "--min"), parse_bounds(maximum, "--max")
    targets = apportion(shares, int(size), minimum=_bounds_for(minimum, shares),
                        maximum=_bounds_for(maximum, shares))
    cats = list(targets) + [c for c in available if c not in targets]
    plans = [_category_plan(c, available.get(c, 0), targets.get(c, 0), strategy, max_copies) for c in cats]
    plans.sort(key=lambda p: (-p.target, -p.available, p.category))
    return BalancePlan(version, column, target, int(size), strategy, seed, minimum, maximum,
                       None if max_copies is None else int(max_copies), tuple(drop_first or ()), plans,
                       without_value, threshold)


def _category_plan(c: str, a: int, t: int, strategy: str, cap: int | None) -> CategoryPlan:
    cap = cap or math.inf
    if a == 0:
        problem = f"{c} has no records; target {t:,} cannot be met (lower its share or leave it out)" if t else None
        return CategoryPlan(c, a, t, 0, 0, 0, problem)
    if a >= t or strategy == "downsample":
        if strategy == "upsample" and a > t:
            return CategoryPlan(c, a, t, a, 1, 0, f"{c} has {a:,} records; target {t:,} needs downsampling "
                                                  "(strategy hybrid or downsample) or a larger total")
        r = min(a, t)
        problem = None if r == t else (f"{c} has {a:,} records; target {t:,} needs upsampling "
                                       "(strategy hybrid or upsample) or a lower total")
        return CategoryPlan(c, a, t, r, 0, r, problem)
    if t <= a * cap:  # repeat: every record t // a times, the first t % a once more
        return CategoryPlan(c, a, t, t, t // a, t % a)
    need = -(-t // a)
    return CategoryPlan(c, a, t, int(a * cap), int(cap), 0,
                        f"{c} has {a:,} records; target {t:,} needs up to {need} copies of a record but the "
                        f"cap is {int(cap)} (raise --max-copies or lower the total)")


# ---------------------------------------------------------------- selection and commit

def selection(store: Store, plan: BalancePlan, *, groups: dict[str, pa.Table] | None = None) -> np.ndarray:
    """How many times each record of the parent appears in the result (per record position)."""
    version = plan.version
    codes, values = value_codes(store, version, plan.column)
    by_value = {c.category: c for c in plan.categories}
    n_codes = len(values)
    base = np.zeros(n_codes + 1, dtype=np.int64)
    extra = np.zeros(n_codes + 1, dtype=np.int64)
    for i, v in enumerate(values):
        p = by_value.get(v) if v is not None else None
        if p is not None:
            base[i], extra[i] = p.base_copies, p.extra
    rows = np.arange(version.row_count, dtype=np.int64)
    keys = seeded_keys(rows, plan.seed)
    prio = drop_priority(store, version, plan.drop_first, threshold=plan.threshold, groups=groups)
    order = np.lexsort((keys, codes) if prio is None else (keys, prio, codes))
    sorted_codes = codes[order]
    starts = np.searchsorted(sorted_codes, np.arange(n_codes + 1))
    rank = np.arange(len(order)) - starts[sorted_codes]
    copies = np.empty(version.row_count, dtype=np.uint32)
    copies[order] = base[sorted_codes] + (rank < extra[sorted_codes])
    return copies


def apply_balance(store: Store, plan: BalancePlan, out: str, *, allow_short: bool = False,
                  progress: Progress | None = None, created_by: str | None = None,
                  groups: dict[str, pa.Table] | None = None, user=None) -> tuple[Version, dict]:
    """Write the balanced records as a new version of dataset `out`; returns (version, report).

    user: the signed-in `workbench.core.auth.User` (None: the local owner); only admins write versions."""
    from workbench.core.auth import require_role

    created_by = created_by or (user.name if user is not None else None)
    require_role(user, "write_version")
    if plan.shortfalls and not allow_short:
        lines = "; ".join(c.problem for c in plan.shortfalls[:5])
        more = f" (and {len(plan.shortfalls) - 5} more)" if len(plan.shortfalls) > 5 else ""
        raise WorkbenchError(f"the target cannot be met exactly: {lines}{more}. Change the target, or accept the "
                             "shortfall (--allow-short)")
    progress = progress or (lambda f, m: None)
    started = time.perf_counter()
    progress(0.0, "choosing records")
    copies = selection(store, plan, groups=groups)
    total = int(copies.sum(dtype=np.int64))
    assert total == plan.records, (total, plan.records)
    version = plan.version
    batches = _repeated_batches(store, version, copies, total, progress)
    new = write_version(store, out, batches, kind="balance", fmt=version.format, recipe=plan.recipe(),
                        info=child_info(version), parent_id=version.version_id, created_by=created_by)
    progress(1.0, "done")
    report = plan.to_json()
    report.update(dataset=new.dataset, version=new.number, content_hash=new.content_hash,
                  records=new.row_count, parent=version.ref, seconds=round(time.perf_counter() - started, 2))
    return new, report


def child_info(version: Version) -> dict:
    """What a derived version inherits from its parent's info (label column, source columns)."""
    return {k: v for k, v in version.info.items() if k in ("label_column", "source_columns", "mapping")}


def _repeated_batches(store: Store, version: Version, copies: np.ndarray, total: int, progress: Progress,
                      batch_rows: int = 65_536):
    """The parent's records in order, each repeated copies[_row] times (0: left out)."""
    cur = store.con.cursor()
    done = 0
    try:
        reader = cur.sql(f"SELECT * FROM {version.table_name}").to_arrow_reader(batch_rows)
        for batch in reader:
            rows = batch.column(ROW_COLUMN).to_numpy()
            c = copies[rows]
            keep = np.repeat(np.arange(len(rows)), c)
            table = pa.Table.from_batches([batch]).drop_columns([ROW_COLUMN])
            if len(keep):
                yield table if len(keep) == len(rows) and (c == 1).all() else table.take(keep)
            done += len(keep)
            progress(min(done / max(total, 1), 0.99), f"writing {done:,} of {total:,} records")
    finally:
        cur.close()
