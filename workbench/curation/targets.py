"""Balance targets as whole record counts, and the seeded record order that picks the records.

A *target* is a share per category: uniform, proportional to this dataset or to another one
(`reference`), or explicit shares typed in or read from a CSV/JSON file. With a total size it
becomes whole record counts by the largest-remainder method (Hamilton's method):

    every category first gets floor(share * size) records (after the shares are clamped into the
    --min/--max bounds, see `apportion`); the records left over go one each to the categories
    with the largest fractional parts; ties go to the larger share, then to the category name
    in alphabetical order.

So the counts always add up to `size` exactly, and never miss the exact quota by a record or more.

Seeded order: records are ordered by splitmix64 of (seed, record position), a fixed published
mixing function, so the same seed gives the same order on any machine and any library version
(workbench.curation.balance and workbench.curation.splits pick records in this order).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError

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
