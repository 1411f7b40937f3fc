"""Balance a dataset's mix of categories (or of any column) against a target, as a new version.

A *target* is a share per category: uniform, proportional to this dataset or to another one
(`reference`), or explicit shares typed in or read from a CSV/JSON file. With a total size it
becomes whole record counts by the largest-remainder method (Hamilton's method):

    every category first gets floor(share * size) records (after the shares are clamped into the
    --min/--max bounds, see `apportion`); the records left over go one each to the categories
    with the largest fractional parts; ties go to the larger share, then to the category name
    in alphabetical order.

So the counts always add up to `size` exactly, and never miss the exact quota by a record or more.

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

import csv
import difflib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.data.browse import category_column
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version, version_columns, write_version

STRATEGIES = ("downsample", "upsample", "hybrid")
DROP_FIRST = ("flagged", "duplicates", "near-duplicates")
DEFAULT_MAX_COPIES = 10
DEFAULT_SEED = 0
# Columns that are not stored but derived: the character length of a text, in buckets.
LENGTH_BUCKETS = (50, 100, 200, 500, 1000, 2000)
VIRTUAL_COLUMNS = {"prompt length": "prompt", "completion length": "completion"}

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------- seeded order

_MASK = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014), on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def seeded_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random uint64 per record position: splitmix64(splitmix64(seed + golden) xor row).

    A bijection of the row for a given seed, so no two records of a version tie."""
    seed_key = _mix64(np.array([(int(seed) + 0x9E3779B97F4A7C15) & _MASK], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _mix64(np.asarray(rows, dtype=np.uint64) ^ seed_key)


def seeded_uniform(rows: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per record position, from `seeded_keys` (53 bits)."""
    return (seeded_keys(rows, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ---------------------------------------------------------------- counts

def apportion(shares: dict[str, float], total: int, *, minimum: dict[str, int] | None = None,
              maximum: dict[str, int] | None = None) -> dict[str, int]:
    """Whole counts adding up to `total`, as close to share * total as the bounds allow.

    Bounds first: each category's quota is clamp(lambda * share, min, max), with the one lambda
    that makes the quotas add up to `total` (a category with share 0 gets its minimum). Then the
    largest-remainder method rounds the unclamped quotas (see the module docstring); rounding
    never crosses a whole-number bound.
    """
    total = int(total)
    if total < 0:
        raise WorkbenchError(f"the total size must be 0 or more, not {total}")
    cats = list(shares)
    for c, s in shares.items():
        if not (s >= 0 and math.isfinite(s)):
            raise WorkbenchError(f"the share of {c!r} is {s}; shares must be 0 or more")
    lo = {c: int((minimum or {}).get(c, 0)) for c in cats}
    hi = {c: (int((maximum or {})[c]) if c in (maximum or {}) else math.inf) for c in cats}
    for c in cats:
        if lo[c] > hi[c]:
            raise WorkbenchError(f"{c!r}: the minimum {lo[c]} is above the maximum {hi[c]}")
    if sum(lo.values()) > total:
        raise WorkbenchError(f"the minimums add up to {sum(lo.values()):,}, more than the total size {total:,}; "
                             "lower them or raise the size")
    reachable = sum(hi[c] if shares[c] > 0 else lo[c] for c in cats)
    if reachable < total:
        raise WorkbenchError(f"the maximums (and categories with share 0) allow at most {reachable:,} records, "
                             f"fewer than the total size {total:,}; raise them or lower the size")

    def quotas(lam: float) -> dict[str, float]:
        return {c: min(max(lam * shares[c], lo[c]), hi[c]) for c in cats}

    if not minimum and not maximum:
        weight = sum(shares.values())
        if total and not weight:
            raise WorkbenchError("every share is 0; give at least one category a share")
        return largest_remainder({c: total * s / weight if weight else 0.0 for c, s in shares.items()}, total)
    low, high = 0.0, 1.0
    while sum(quotas(high).values()) < total:
        high *= 2
    for _ in range(200):  # bisection: the sum of clamped quotas grows with lambda
        mid = (low + high) / 2
        if sum(quotas(mid).values()) < total:
            low = mid
        else:
            high = mid
    q = quotas(high)
    fixed = {c: int(q[c]) for c in cats if shares[c] == 0 or q[c] <= lo[c] or q[c] >= hi[c]}
    free = [c for c in cats if c not in fixed]
    rest = total - sum(fixed.values())
    weight = sum(shares[c] for c in free)
    exact = {c: rest * shares[c] / weight for c in free} if free else {}
    counts = dict(fixed)
    counts.update(largest_remainder(exact, rest, shares=shares) if free else {})
    return {c: counts[c] for c in cats}


def largest_remainder(quotas: dict[str, float], total: int, *, shares: dict[str, float] | None = None
                      ) -> dict[str, int]:
    """Hamilton's method: floor each quota, then hand the leftover units to the largest fractional parts.

    The quotas must add up to `total` (up to rounding). Ties: the larger share, then the name."""
    quotas = {c: round(q, 9) for c, q in quotas.items()}  # 2.9999999999999996 is 3
    floors = {c: int(math.floor(q)) for c, q in quotas.items()}
    # rounded again: q - floor(q) brings float error back, and equal remainders must tie
    rems = {c: round(quotas[c] - floors[c], 9) for c in quotas}
    left = int(total) - sum(floors.values())
    shares = shares or quotas
    order = sorted(quotas, key=lambda c: (-rems[c], -shares.get(c, 0), str(c)))
    for c in order[:max(left, 0)]:
        floors[c] += 1
    for c in [c for c in reversed(order) if floors[c] > 0][:max(-left, 0)]:  # quotas a hair over the total
        floors[c] -= 1
    return floors


# ---------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """What mix to aim at: kind is uniform, proportional (to this dataset or `reference`) or shares."""

    kind: str
    shares: dict[str, float] = field(default_factory=dict)
    reference: str | None = None
    source: str | None = None  # the file the shares came from

    def describe(self) -> str:
        if self.kind == "uniform":
            return "uniform"
        if self.kind == "proportional":
            return f"proportional to {self.reference}" if self.reference else "proportional (the current mix)"
        return f"shares from {self.source}" if self.source else "explicit shares"


def parse_target(spec: str, *, reference: str | None = None) -> Target:
    """`uniform`, `proportional`, `A=0.5,B=0.3,C=0.2` (or percentages adding up to 100), or a file path."""
    spec = (spec or "").strip()
    if spec == "uniform":
        if reference:
            raise WorkbenchError("--reference goes with --target proportional, not uniform")
        return Target("uniform")
    if spec == "proportional":
        return Target("proportional", reference=reference)
    if reference:
        raise WorkbenchError("--reference goes with --target proportional")
    path = Path(spec).expanduser()
    if spec.lower().endswith((".csv", ".tsv", ".json")) or (path.exists() and path.is_file()):
        return Target("shares", _check_shares(read_shares_file(path), str(path)), source=str(path))
    if "=" not in spec:
        raise WorkbenchError(f"target {spec!r} is not understood; use uniform, proportional, shares like "
                             "\"A=0.5,B=0.3,C=0.2\", or a CSV/JSON file of category,share")
    shares: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, eq, value = part.rpartition("=")
        name = name.strip()
        if not eq or not name:
            raise WorkbenchError(f"target part {part.strip()!r} should look like CATEGORY=SHARE")
        if name in shares:
            raise WorkbenchError(f"category {name!r} appears twice in the target")
        shares[name] = _number(value, f"the share of {name!r}")
    return Target("shares", _check_shares(shares, "the target"))


def _number(text, what: str) -> float:
    try:
        value = float(str(text).strip().rstrip("%"))
    except ValueError:
        raise WorkbenchError(f"{what} is {str(text).strip()!r}; expected a number such as 0.25") from None
    if not math.isfinite(value) or value < 0:
        raise WorkbenchError(f"{what} is {value}; expected a number of 0 or more")
    return value


def _check_shares(shares: dict[str, float], where: str) -> dict[str, float]:
    """Shares add up to 1 (or 100, read as percentages)."""
    if not shares:
        raise WorkbenchError(f"{where} names no categories")
    total = sum(shares.values())
    if abs(total - 1) <= 1e-6:
        return shares
    if abs(total - 100) <= 1e-4:
        return {c: s / 100 for c, s in shares.items()}
    raise WorkbenchError(f"the shares in {where} add up to {total:g}; make them add up to 1 (or to 100 as percent)")


def read_shares_file(path: Path) -> dict[str, float]:
    """category,share rows from a CSV/TSV (header optional) or a JSON object / list of {category, share}."""
    if not path.is_file():
        raise WorkbenchError(f"target file {path} does not exist")
    return shares_from_text(path.read_text(encoding="utf-8-sig"), path.name)


def shares_from_text(text: str, name: str) -> dict[str, float]:
    """The shares of a target file's text; `name` (the file name) tells JSON, TSV or CSV apart."""
    path = Path(name)
    text = text.lstrip("\ufeff")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):
            return {str(k): _number(v, f"{path}: the share of {k!r}") for k, v in data.items()}
        if isinstance(data, list):
            out = {}
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "category" not in item or "share" not in item:
                    raise WorkbenchError(f"{path}: item {i} should be an object with 'category' and 'share'")
                out[str(item["category"])] = _number(item["share"], f"{path}: item {i} share")
            return out
        raise WorkbenchError(f"{path}: expected an object {{category: share}} or a list of {{category, share}}")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if any(x.strip() for x in r)]
    out = {}
    for line, row in enumerate(rows, 1):
        if len(row) < 2:
            raise WorkbenchError(f"{path} line {line}: expected two columns, category and share")
        if line == 1 and not _is_number(row[1]):
            continue  # a header
        if row[0] in out:
            raise WorkbenchError(f"{path} line {line}: category {row[0]!r} appears twice")
        out[row[0]] = _number(row[1], f"{path} line {line}: the share of {row[0]!r}")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text.strip().rstrip("%"))
        return True
    except ValueError:
        return False


def parse_bounds(spec: str | int | dict | None, what: str) -> int | dict[str, int] | None:
    """--min / --max: one number for every category, or `A=10,B=5` per category."""
    if spec is None or spec == "" or spec == {}:
        return None
    if isinstance(spec, dict):
        return {str(k): _count(v, f"{what} of {k!r}") for k, v in spec.items()}
    if isinstance(spec, int):
        return _count(spec, what)
    if "=" not in str(spec):
        return _count(spec, what)
    out = {}
    for part in str(spec).split(","):
        if part.strip():
            name, _, value = part.rpartition("=")
            out[name.strip()] = _count(value, f"{what} of {name.strip()!r}")
    return out


def _count(value, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise WorkbenchError(f"{what} is {str(value).strip()!r}; expected a whole number of records") from None
    if n < 0:
        raise WorkbenchError(f"{what} is {n}; expected 0 or more")
    return n


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
    try:
        from workbench.inspect import dedup
    except ImportError:
        raise WorkbenchError("duplicate detection is not available in this installation (workbench.inspect.dedup)") from None
    return dedup.duplicate_groups(store, version, near=near, threshold=threshold, progress=progress)


def near_duplicate_groups(store: Store, version: Version, *, threshold: float = 0.8,
                          progress: Progress | None = None) -> pa.Table:
    return duplicate_groups(store, version, near=True, threshold=threshold, progress=progress)


def flagged_rows(store: Store, version: Version) -> np.ndarray:
    """Record positions carrying any quality flag (`workbench.inspect.quality`: empty, junk, language, ...).

    The flags are computed once per version and cached by the quality area."""
    try:
        from workbench.inspect import quality
    except ImportError:
        raise WorkbenchError("quality flags are not available in this installation (workbench.inspect.quality); "
                             "leave out 'flagged'") from None
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
