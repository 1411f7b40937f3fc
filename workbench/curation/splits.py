"""Train/validation/test splits that keep duplicates together, stratified by a column.

`split_version` writes a new version: the parent's records in the parent's order with a `split`
column (replacing one the parent had). How records are assigned:

1. Units. Records whose input is identical (`input_groups`, always, unless group='none')
   and, with group='near-dup', duplicate clusters (`workbench.inspect.dedup.duplicate_groups`) are
   merged into connected clusters (scipy.sparse.csgraph); every cluster goes to one split whole,
   so no record has a copy or a near-copy in another split.
2. Targets. For each value of the stratify column (or for all records), the record count of each
   split is its ratio of the value's records, rounded by the largest-remainder method, so every
   value is within one record of its requested share when there are no clusters.
3. Clusters first. A cluster whose records all share one stratum value: in seeded order, the
   clustered records of the value are shared among the splits in proportion to the room left
   (a cluster goes where its middle falls), vectorised, so 300,000 clusters take well under a
   second. A cluster over several values (rare): one by one, to the split where most of its
   records still fit. Then the single records fill what is left of every target exactly, in
   seeded order (splitmix64 of seed and position); only where clusters alone overfill a target
   (a value with few single records) can a count miss its quota by more than one record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, version_columns, write_version
from workbench.curation.balance import Progress, child_info, near_duplicate_groups, value_codes
from workbench.curation.targets import largest_remainder, seeded_keys, seeded_uniform

SPLIT_COLUMN = "split"
GROUPINGS = ("exact", "near-dup", "none")
DEFAULT_NAMES = {1: ("train",), 2: ("train", "test"), 3: ("train", "val", "test")}


def parse_ratios(spec: str | list | tuple | dict) -> dict[str, float]:
    """`0.8,0.1,0.1` (train, val, test), `0.9,0.1` (train, test) or named `train=0.7,dev=0.3`."""
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else [str(x) for x in spec])
                 if p.strip()]
        named = ["=" in p for p in parts]
        if any(named) and not all(named):
            raise WorkbenchError("--ratios: name every split (train=0.8,val=0.2) or none (0.8,0.2)")
        if all(named) and parts:
            pairs = [tuple(x.strip() for x in p.split("=", 1)) for p in parts]
        else:
            if len(parts) not in DEFAULT_NAMES:
                raise WorkbenchError(f"--ratios has {len(parts)} numbers; give 2 (train,test) or 3 "
                                     "(train,val,test), or name them: train=0.8,val=0.1,test=0.1")
            pairs = list(zip(DEFAULT_NAMES[len(parts)], parts))
    ratios = {}
    for name, value in pairs:
        try:
            r = float(value)
        except ValueError:
            raise WorkbenchError(f"--ratios: {value!r} is not a number (for split {name!r})") from None
        if not (r >= 0) or r > 1:
            raise WorkbenchError(f"--ratios: {name}={value} must be between 0 and 1")
        if not name or name in ratios:
            raise WorkbenchError(f"--ratios: split name {name!r} is empty or repeated")
        ratios[str(name)] = r
    total = sum(ratios.values())
    if abs(total - 1) > 1e-6:
        raise WorkbenchError(f"--ratios add up to {total:g}; make them add up to 1, e.g. 0.8,0.1,0.1")
    return ratios


# ---------------------------------------------------------------- clusters

def _input_key_sql(store: Store, version: Version) -> str:
    """SQL for a 64-bit hash of a record's input: system, prompt and (chats) messages, as stored. The
    completion is left out on purpose: the same question with another answer in the test set still
    leaks the question. Case and spacing variants are near duplicates (group='near-dup'); normalising
    here would cost ten times the hash. A collision can only put two records together, never apart."""
    names = {c for c, _ in version_columns(store, version)}
    parts = [f"coalesce({quote_ident(c)}, '')" for c in ("system", "prompt", "messages") if c in names]
    if not parts:
        raise WorkbenchError(f"{version.ref} has no prompt, system or messages column to find duplicates in")
    return f"hash({', '.join(parts)})"


def input_groups(store: Store, version: Version) -> pa.Table:
    """Records whose input equals another record's (see `_input_key_sql`): `_row`, `group` (smallest `_row`)."""
    key = _input_key_sql(store, version)
    sql = (f"WITH k AS (SELECT {ROW_COLUMN}, {key} AS h FROM {version.table_name}), "
           f"d AS (SELECT h FROM k GROUP BY h HAVING count(*) > 1) "
           f"SELECT {ROW_COLUMN}, min({ROW_COLUMN}) OVER (PARTITION BY h) AS \"group\" FROM k SEMI JOIN d USING (h)")
    return store.cursor().sql(sql).to_arrow_table()


def merge_groups(n: int, tables: list[pa.Table]) -> np.ndarray:
    """Cluster label per record position (-1: a record alone), merging overlapping group tables
    (each: `_row`, `group`) into connected components; a label is the cluster's smallest position."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    label = np.full(n, -1, dtype=np.int64)
    pairs = [(t.column(ROW_COLUMN).to_numpy().astype(np.int64), t.column("group").to_numpy().astype(np.int64))
             for t in tables if t is not None and t.num_rows]
    if not pairs:
        return label
    rows = np.concatenate([r for r, _ in pairs])
    groups = np.concatenate([g for _, g in pairs])
    if len(rows) and (rows.min() < 0 or max(rows.max(), groups.max()) >= n):
        raise WorkbenchError("a duplicate group names a record outside the version; recompute the duplicates")
    nodes, inverse = np.unique(np.concatenate([rows, groups]), return_inverse=True)
    a, b = inverse[:len(rows)], inverse[len(rows):]
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, comp, nodes)
    label[nodes] = smallest[comp]
    return label


def duplicate_clusters(store: Store, version: Version, group: str = "exact", *, threshold: float = 0.8,
                       progress: Progress | None = None,
                       near_groups: pa.Table | None = None) -> tuple[np.ndarray, list[pa.Table]]:
    """(cluster label per record, the group tables used) for group = exact | near-dup | none."""
    if group not in GROUPINGS:
        raise WorkbenchError(f"unknown --group {group!r}; expected one of {', '.join(GROUPINGS)}")
    tables = []
    if group != "none":
        tables.append(input_groups(store, version))
    if group == "near-dup":
        tables.append(near_groups if near_groups is not None else
                      near_duplicate_groups(store, version, threshold=threshold, progress=progress))
    return merge_groups(version.row_count, tables), tables


# ---------------------------------------------------------------- assignment

def stratum_targets(sizes: np.ndarray, ratios: dict[str, float]) -> np.ndarray:
    """Records per (stratum, split): largest remainder within each stratum, so every count is within one
    record of its exact quota. Equal remainders (equal ratios) go to the split furthest behind its
    overall quota so far, which keeps the split totals within a record or so of the ratios too."""
    r = np.array(list(ratios.values()), dtype=float)
    out = np.zeros((len(sizes), len(r)), dtype=np.int64)
    behind = np.zeros(len(r))
    for k, n_k in enumerate(sizes):
        quota = np.round(n_k * r, 9)
        floors = np.floor(quota).astype(np.int64)
        rem = quota - floors
        left = int(n_k - floors.sum())
        order = sorted(range(len(r)), key=lambda j: (-rem[j], -behind[j], j))
        floors[order[:left]] += 1
        out[k] = floors
        behind += quota - floors
    return out


def assign_splits(strata: np.ndarray, clusters: np.ndarray, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Split index (into `ratios`) per record; see the module docstring for the rules.

    strata: int code per record (0..K-1); clusters: label per record, -1 for a record alone."""
    n = len(strata)
    n_splits = len(ratios)
    n_strata = int(strata.max()) + 1 if n else 0
    deficit = stratum_targets(np.bincount(strata, minlength=n_strata), ratios)
    out = np.full(n, -1, dtype=np.int8)

    grouped = np.flatnonzero(clusters >= 0)
    if len(grouped):
        labels, g_strata = clusters[grouped], strata[grouped]
        order = np.lexsort((grouped, g_strata, labels))  # by cluster, then stratum
        g_rows, g_labels, g_strata = grouped[order], labels[order], g_strata[order]
        starts = np.flatnonzero(np.r_[True, g_labels[1:] != g_labels[:-1]])
        ends = np.r_[starts[1:], len(g_labels)]
        mixed = g_strata[starts] != g_strata[ends - 1]  # sorted by stratum inside a cluster
        for i in np.flatnonzero(mixed):  # rare: a cluster over several values, placed one by one
            _place_mixed(g_rows[starts[i]:ends[i]], g_strata[starts[i]:ends[i]], int(g_labels[starts[i]]),
                         deficit, out, ratios, seed)
        _place_clusters(g_rows, g_strata, g_labels, starts[~mixed], ends[~mixed], deficit, out, seed)

    alone = np.flatnonzero(clusters < 0)
    if len(alone):
        k_alone = strata[alone]
        left = np.bincount(k_alone, minlength=n_strata)
        cuts = np.zeros((n_strata, n_splits), dtype=np.int64)
        for k in np.flatnonzero(left):
            room = np.maximum(deficit[k], 0)
            if room.sum() == left[k]:
                cuts[k] = room
            else:  # a cluster overflowed somewhere: share the remaining records by the room left
                alloc = largest_remainder({j: left[k] * room[j] / room.sum() for j in range(n_splits)},
                                          int(left[k]), shares={j: float(room[j]) for j in range(n_splits)})
                cuts[k] = [alloc[j] for j in range(n_splits)]
        order, split = _seeded_fill(alone, k_alone, cuts, seed)
        out[alone[order]] = split
    return out


def _seeded_fill(units: np.ndarray, strata: np.ndarray, cuts: np.ndarray, seed: int,
                 sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(order, split) for units (records, or clusters of `sizes` records named by their label) taken in
    seeded order within each stratum: the first cuts[k, 0] records go to split 0, the next cuts[k, 1] to
    split 1, ... ; a cluster goes where its middle falls. `split[i]` belongs to `units[order[i]]`."""
    order = np.lexsort((seeded_keys(units, seed), strata))
    sorted_k = strata[order]
    size = np.ones(len(units), dtype=np.int64) if sizes is None else sizes[order]
    end = np.cumsum(size)
    first = np.searchsorted(sorted_k, np.arange(cuts.shape[0]))
    offset = np.r_[0, end][first]  # records before each stratum's first unit
    middle = (end - offset[sorted_k]) - size / 2  # a single record: its position + 0.5
    bounds = np.cumsum(cuts, axis=1)[:, :-1]
    split = (middle[:, None] >= bounds[sorted_k]).sum(axis=1)
    return order, np.minimum(split, cuts.shape[1] - 1)


def _place_clusters(g_rows, g_strata, g_labels, starts, ends, deficit, out, seed) -> None:
    """Clusters inside one stratum, vectorised: in seeded order, the clustered records of each stratum are
    shared among the splits in proportion to the room left; singles then even out the rest exactly."""
    if not len(starts):
        return
    sizes = ends - starts
    k = g_strata[starts]
    n_strata, n_splits = deficit.shape
    clustered = np.bincount(k, weights=sizes, minlength=n_strata)
    room = np.maximum(deficit, 0).astype(float)
    total = room.sum(axis=1, keepdims=True)
    share = np.divide(room, total, out=np.full_like(room, 1 / n_splits), where=total > 0)
    quota = share * clustered[:, None]
    order, split = _seeded_fill(g_labels[starts], k, quota, seed, sizes=sizes)
    np.subtract.at(deficit, (k[order], split), sizes[order])
    rows = g_rows[np.repeat(starts[order], sizes[order]) + _ranges(sizes[order])]
    out[rows] = np.repeat(split, sizes[order])


def _ranges(sizes: np.ndarray) -> np.ndarray:
    """0..size-1 for every size, concatenated."""
    ends = np.cumsum(sizes)
    return np.arange(ends[-1]) - np.repeat(ends - sizes, sizes)


def _place_mixed(rows, strata, label, deficit, out, ratios, seed) -> None:
    """A cluster whose records have several stratum values: the split where most of its records still fit
    (ties drawn with the seed in proportion to the room left; nowhere: the split least over, by ratio)."""
    ks, m = np.unique(strata, return_counts=True)
    room = np.maximum(deficit[ks], 0)
    fits = np.minimum(room, m[:, None]).sum(axis=0)
    if fits.max() > 0:
        candidates = np.flatnonzero(fits == fits.max())
        w = room[:, candidates].sum(axis=0).astype(float)
    else:
        total = deficit[ks].sum(axis=0)
        candidates = np.flatnonzero(total == total.max())
        w = np.array(list(ratios.values()))[candidates]
    s = candidates[0]
    if len(candidates) > 1 and w.sum() > 0:
        u = seeded_uniform(np.array([label]), seed ^ 0x5EED)[0]
        s = candidates[min(int(np.searchsorted(np.cumsum(w) / w.sum(), u, side="right")), len(candidates) - 1)]
    np.subtract.at(deficit, (ks, s), m)
    out[rows] = s


# ---------------------------------------------------------------- the split version

@dataclass
class SplitResult:
    version: Version
    report: dict


def split_version(store: Store, version: Version, ratios, *, stratify: str | None = None, group: str = "exact",
                  seed: int = 0, threshold: float = 0.8, out: str | None = None, progress: Progress | None = None,
                  created_by: str | None = None, near_groups: pa.Table | None = None, user=None) -> SplitResult:
    """Write `version` with a `split` column as a new version (of `out`, default the same dataset).

    user: the signed-in `workbench.core.auth.User` (None: the local owner); only admins write versions."""
    from workbench.core.auth import require_role

    created_by = created_by or (user.name if user is not None else None)
    require_role(user, "write_version")
    ratios = parse_ratios(ratios)
    seed = int(seed)
    if seed < 0:
        raise WorkbenchError(f"the seed must be 0 or more, not {seed}")
    progress = progress or (lambda f, m: None)
    started = time.perf_counter()
    n = version.row_count
    progress(0.0, "reading the stratify column" if stratify else "finding duplicates")
    if stratify:
        strata, values = value_codes(store, version, stratify)
    else:
        strata, values = np.zeros(n, dtype=np.int32), [None]
    progress(0.05, "finding duplicates")
    clusters, tables = duplicate_clusters(store, version, group, threshold=threshold, near_groups=near_groups,
                                          progress=lambda f, m: progress(0.05 + 0.4 * f, m))
    progress(0.45, "assigning splits")
    assigned = assign_splits(strata, clusters, ratios, seed)
    names = list(ratios)
    had_split = SPLIT_COLUMN in {c for c, _ in version_columns(store, version)}
    counts = {s: int(c) for s, c in zip(names, np.bincount(assigned, minlength=len(names)))}
    n_clusters = int(len(np.unique(clusters[clusters >= 0])))
    clustered = int((clusters >= 0).sum())
    recipe = {"op": "split", "parent": version.ref, "parent_hash": version.content_hash, "ratios": ratios,
              "stratify": stratify, "group": group, "seed": seed,
              "near_threshold": threshold if group == "near-dup" else None, "replaced_split_column": had_split,
              "rounding": "largest remainder per stratum (Hamilton)", "counts": counts}
    batches = _with_split_column(store, version, assigned, names, progress)
    new = write_version(store, out or version.dataset, batches, kind="split", fmt=version.format, recipe=recipe,
                        info=child_info(version), parent_id=version.version_id, created_by=created_by)
    leakage = leakage_report(store, new, groups=tables[1] if group == "near-dup" else None)
    by_stratum = _counts_by_stratum(strata, values, assigned, names) if stratify else {}
    report = {"dataset": new.dataset, "version": new.number, "content_hash": new.content_hash, "parent": version.ref,
              "records": new.row_count, "counts": counts, "ratios": ratios, "stratify": stratify, "group": group,
              "seed": seed, "clusters": n_clusters, "clustered_records": clustered, "by_category": by_stratum,
              "leakage": leakage, "replaced_split_column": had_split,
              "seconds": round(time.perf_counter() - started, 2)}
    progress(1.0, "done")
    return SplitResult(new, report)


def _with_split_column(store: Store, version: Version, assigned: np.ndarray, names: list[str],
                       progress: Progress):
    """The version's records in order with `split` set to names[assigned[row]] (an old `split` replaced)."""
    name_array = pa.array(names, pa.string())
    n = version.row_count
    cur = store.con.cursor()
    done = 0
    try:
        for batch in cur.sql(f"SELECT * FROM {version.table_name}").to_arrow_reader(65_536):
            table = pa.Table.from_batches([batch])
            rows = table.column(ROW_COLUMN).to_numpy()
            drop = [ROW_COLUMN] + ([SPLIT_COLUMN] if SPLIT_COLUMN in table.column_names else [])
            yield table.drop_columns(drop).append_column(SPLIT_COLUMN, name_array.take(pa.array(assigned[rows])))
            done += len(rows)
            progress(0.5 + 0.5 * done / max(n, 1), f"writing {done:,} of {n:,} records")
    finally:
        cur.close()


def _counts_by_stratum(strata: np.ndarray, values: list, assigned: np.ndarray, names: list[str]) -> dict:
    """{stratum value: {split: records}}."""
    table = np.zeros((len(values), len(names)), dtype=np.int64)
    np.add.at(table, (strata, assigned), 1)
    return {str(v) if v is not None else None: {s: int(x) for s, x in zip(names, row)}
            for v, row in zip(values, table)}


def leakage_report(store: Store, version: Version, *, groups: pa.Table | None = None) -> dict:
    """Duplicates across splits in a stored version, checked afresh from its records.

    exact: inputs (system, prompt, messages) found in more than one split; near (when a near-duplicate
    group table of this version's record positions is given): clusters spread over several splits."""
    names = {c for c, _ in version_columns(store, version)}
    if SPLIT_COLUMN not in names:
        raise WorkbenchError(f"{version.ref} has no split column; make splits with `workbench split` first")
    cur = store.cursor()
    exact = cur.execute(
        f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {version.table_name} "
        f"GROUP BY {_input_key_sql(store, version)} HAVING min({SPLIT_COLUMN}) <> max({SPLIT_COLUMN}))").fetchall()[0]
    out = {"exact_groups_across_splits": int(exact[0]), "exact_records_across_splits": int(exact[1]),
           "near_groups_across_splits": None, "near_records_across_splits": None, "checked": ["exact"]}
    if groups is not None:
        cur.register("wb_leakage_groups", groups.select([ROW_COLUMN, "group"]))
        try:
            near = cur.execute(
                f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT g.\"group\", count(*) AS n "
                f"FROM wb_leakage_groups g JOIN {version.table_name} v USING ({ROW_COLUMN}) GROUP BY g.\"group\" "
                f"HAVING min(v.{SPLIT_COLUMN}) <> max(v.{SPLIT_COLUMN}))").fetchall()[0]
        finally:
            cur.unregister("wb_leakage_groups")
        out.update(near_groups_across_splits=int(near[0]), near_records_across_splits=int(near[1]),
                   checked=["exact", "near-dup"])
    out["clean"] = out["exact_groups_across_splits"] == 0 and not out["near_groups_across_splits"]
    return out
