"""Exact and near duplicates of a dataset version, conflicting labels, and resolving duplicates.

Exact duplicates: records whose text fields are equal after normalisation (lower case, runs of
ASCII whitespace collapsed to one space, trimmed), compared field by field over system, prompt,
completion and messages. The normalised fields are hashed (64-bit) and grouped on the hash; at a
million distinct records the chance of any false match is about 3e-8.

Near duplicates: MinHash LSH over shingles of the normalised text, every candidate verified by
its true Jaccard similarity (the kernel and its parameters are in `workbench.inspect.minhash`).
Clusters are connected components of exact groups and near pairs. Only one record of each exact
group enters the near stage.

Results are cached per version in the project's cache folder (file names carry version id,
content hash and parameters).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workbench.core.auth import require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident, quote_literal
from workbench.core.versions import ROW_COLUMN, Version, iter_version, scan_strings, version_columns, write_version
from workbench.data.browse import category_column
from workbench.inspect.minhash import (
    CHAR_SHINGLE,
    DEFAULT_THRESHOLD,
    NUM_PERM,
    PAIR_SCHEMA,
    SHINGLE_WORDS,
    SHORT_WORDS,
    jaccard_pairs,
    merge_groups,
    near_pairs,
    near_text_sql,
    norm_sql,
    norm_stage1,
    norm_stage2,
    shingle_csr,
    shingles_of_rows,
    sorted_groups,
    text_columns,
)

ALGO = 1  # bump when results of the same parameters would change; old cache files are then ignored


def _noop(fraction: float, message: str) -> None:
    pass


def _exact_key_sql(store: Store, version: Version, where: str = "") -> str:
    """SQL selecting _row and h, the hash of the record's normalised text fields."""
    cols = text_columns(store, version)
    if not cols:
        raise WorkbenchError(f"{version.ref} has no text columns (prompt, completion, system, messages) to compare")
    first = ", ".join(f"{norm_stage1(f'coalesce(CAST({quote_ident(c)} AS VARCHAR), {quote_literal(chr(32))})')} AS f{i}"
                      for i, c in enumerate(cols))
    key = "hash(" + ", ".join(norm_stage2(f"f{i}") for i in range(len(cols))) + ")"
    return (f"SELECT {ROW_COLUMN}, {key} AS h FROM (SELECT {ROW_COLUMN}, {first} FROM {version.table_name} {where})")


# ---------------------------------------------------------------- results and cache

@dataclass
class DedupResult:
    """What find_duplicates found in one version."""

    version: Version
    near: bool
    threshold: float
    exact: pa.Table  # _row, group: records in exact groups of >= 2 (group = smallest _row)
    groups: pa.Table  # _row, group: exact and near merged (equals exact when near is False)
    near_pairs: pa.Table  # a, b, jaccard: verified near pairs between exact-group representatives
    seconds: float = 0.0
    groups_path: Path | None = None
    exact_path: Path | None = None
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        exact_sizes = _sizes(self.exact)
        all_sizes = _sizes(self.groups)
        exact_dups = int((exact_sizes - 1).sum()) if len(exact_sizes) else 0
        all_dups = int((all_sizes - 1).sum()) if len(all_sizes) else 0
        out = {
            "dataset": self.version.dataset, "version": self.version.number, "records": self.version.row_count,
            "exact_clusters": int(len(exact_sizes)), "exact_duplicates": exact_dups,
            "near": self.near,
        }
        if self.near:
            out.update({
                "threshold": self.threshold,
                "near_clusters": int(self.stats.get("near_clusters", 0)),
                "near_duplicates": all_dups - exact_dups,
                "near_pairs": self.near_pairs.num_rows,
                "candidate_pairs": int(self.stats.get("candidate_pairs", 0)),
            })
        else:  # not looked for
            out.update({"threshold": None, "near_clusters": None, "near_duplicates": None, "near_pairs": None})
        out.update({"clusters": int(len(all_sizes)), "duplicates": all_dups,
                    "records_in_clusters": int(all_sizes.sum()) if len(all_sizes) else 0,
                    "seconds": round(self.seconds, 3)})
        return out


def _sizes(groups: pa.Table) -> np.ndarray:
    if groups.num_rows == 0:
        return np.zeros(0, np.int64)
    return np.unique(groups.column("group").to_numpy(), return_counts=True)[1]


def _cache_stem(version: Version) -> str:
    return f"dedup{ALGO}_v{version.version_id}_{version.content_hash[:16]}"


def _near_tag(threshold: float) -> str:
    return f"near_t{threshold:.3f}_p{NUM_PERM}_w{SHINGLE_WORDS}_s{SHORT_WORDS}_c{CHAR_SHINGLE}"


def is_cached(store: Store, version: Version, *, near: bool = True, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Whether find_duplicates with these parameters would read its result from the cache."""
    stem = store.project.cache_dir / _cache_stem(version)
    files = [Path(f"{stem}_exact.parquet")]
    if near:
        tag = _near_tag(_check_threshold(threshold))
        files += [Path(f"{stem}_{tag}_{x}") for x in ("pairs.parquet", "groups.parquet", "stats.json")]
    return all(f.exists() for f in files)


def cluster_sizes(result: DedupResult) -> list[tuple[int, int]]:
    """(cluster size, number of clusters of that size), smallest size first."""
    sizes, counts = np.unique(_sizes(result.groups), return_counts=True)
    return [(int(s), int(c)) for s, c in zip(sizes, counts)]


def _check_threshold(threshold: float) -> float:
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise WorkbenchError(f"threshold {threshold!r} is not a number; give a Jaccard similarity like 0.8") from None
    if not 0.3 <= threshold <= 1.0:
        raise WorkbenchError(f"threshold {threshold} is outside 0.3..1.0; give a Jaccard similarity like 0.8 "
                             "(lower finds looser matches)")
    return round(threshold, 3)


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------- the public entry points

def duplicate_groups(store: Store, version: Version, *, near: bool = True, threshold: float = DEFAULT_THRESHOLD,
                     progress=None) -> pa.Table:
    """Records that belong to a duplicate cluster of >= 2 records, as a table of `_row`, `group`.

    Clusters are exact duplicates after normalisation, merged with near duplicates (Jaccard of
    shingles >= threshold) when near is True; `group` is the smallest `_row` of the cluster.
    Records not listed have no duplicate. Sorted by `_row`."""
    return find_duplicates(store, version, near=near, threshold=threshold, progress=progress).groups


def find_duplicates(store: Store, version: Version, *, near: bool = True, threshold: float = DEFAULT_THRESHOLD,
                    progress=None, use_cache: bool = True) -> DedupResult:
    """Exact (and near) duplicate clusters of a version; read from the cache when computed before."""
    progress = progress or _noop
    threshold = _check_threshold(threshold)
    t0 = time.perf_counter()
    cache = store.project.cache_dir
    stem = _cache_stem(version)
    exact_path = cache / f"{stem}_exact.parquet"
    if use_cache and exact_path.exists():
        exact = pq.read_table(exact_path)
    else:
        progress(0.0, "finding exact duplicates")
        exact = exact_groups(store, version)
        _write(exact, exact_path)
    if not near:
        progress(1.0, "done")
        return DedupResult(version, False, threshold, exact, exact, pa.table({"a": pa.array([], pa.int64()),
                           "b": pa.array([], pa.int64()), "jaccard": pa.array([], pa.float32())}, schema=PAIR_SCHEMA),
                           time.perf_counter() - t0, exact_path, exact_path)
    tag = _near_tag(threshold)
    pairs_path = cache / f"{stem}_{tag}_pairs.parquet"
    groups_path = cache / f"{stem}_{tag}_groups.parquet"
    stats_path = cache / f"{stem}_{tag}_stats.json"
    if use_cache and pairs_path.exists() and groups_path.exists() and stats_path.exists():
        result = DedupResult(version, True, threshold, exact, pq.read_table(groups_path), pq.read_table(pairs_path),
                             0.0, groups_path, exact_path, json.loads(stats_path.read_text()))
    else:
        pairs, stats = near_pairs(store, version, exact, threshold=threshold,
                                  progress=lambda f, m: progress(0.05 + 0.9 * f, m))
        groups = merge_groups(exact, pairs)
        stats["near_clusters"] = _near_cluster_count(exact, groups)
        _write(pairs, pairs_path)
        _write(groups, groups_path)
        stats_path.write_text(json.dumps(stats))
        result = DedupResult(version, True, threshold, exact, groups, pairs, 0.0, groups_path, exact_path, stats)
    result.seconds = time.perf_counter() - t0
    progress(1.0, "done")
    return result


# ---------------------------------------------------------------- exact

def exact_groups(store: Store, version: Version) -> pa.Table:
    """_row, group of every record whose normalised text fields equal another record's.

    The normalised texts are hashed in one compiled pass over the bytes (`textkernels`), about 4x
    faster than DuckDB's lower/replace chain (`exact_groups_sql`, which gives the same groups)."""
    from workbench.core import textkernels

    cols = text_columns(store, version)
    if not cols:
        raise WorkbenchError(f"{version.ref} has no text columns (prompt, completion, system, messages) to compare")
    fields = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR) AS {quote_ident(c)}" for c in cols)
    cur = store.con.cursor()
    rows, keys = [], []
    try:
        batches = scan_strings(store, version, cols)  # plain string columns: straight from Parquet
        if batches is None:  # messages (a list) and odd types: DuckDB's text of them, as norm_sql sees it
            batches = cur.sql(f"SELECT {ROW_COLUMN}, {fields} FROM {version.table_name}").to_arrow_reader(65_536)
        for batch in batches:
            h = np.full(batch.num_rows, textkernels.SEED, dtype=np.uint64)
            for c in cols:  # a missing field counts as ' ', as in _exact_key_sql
                h = textkernels.combine(h, textkernels.normalized_hashes(pc.fill_null(batch.column(c), " ")))
            rows.append(batch.column(ROW_COLUMN).to_numpy())
            keys.append(h)
    finally:
        cur.close()
    if not rows:
        return sorted_groups(np.zeros(0, np.int64), np.zeros(0, np.int64))
    rows, keys = np.concatenate(rows), np.concatenate(keys)
    order = np.lexsort((rows, keys))  # by key, then row: a group's first row is its smallest
    keys, rows = keys[order], rows[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    start = np.flatnonzero(first)
    size = np.diff(np.append(start, len(keys)))
    member = np.repeat(size > 1, size)
    return sorted_groups(rows[member], np.repeat(rows[start], size)[member])


def exact_groups_sql(store: Store, version: Version) -> pa.Table:
    """The same groups as `exact_groups`, computed by DuckDB's string functions (`norm_sql`)."""
    sql = (f"WITH k AS ({_exact_key_sql(store, version)}), "
           f"g AS (SELECT min({ROW_COLUMN}) AS grp, list({ROW_COLUMN}) AS rows FROM k GROUP BY h HAVING count(*) > 1) "
           f"SELECT unnest(rows) AS {ROW_COLUMN}, grp AS \"group\" FROM g")
    cur = store.con.cursor()
    try:
        table = cur.sql(sql).to_arrow_table()
    finally:
        cur.close()
    return sorted_groups(table.column(ROW_COLUMN).to_numpy(), table.column("group").to_numpy())


def exact_group_of(exact: pa.Table, rows: np.ndarray) -> np.ndarray:
    """The exact group of each row (the row itself when it has no exact duplicate)."""
    exact_rows = exact.column(ROW_COLUMN).to_numpy()
    out = np.asarray(rows, np.int64).copy()
    if len(exact_rows):
        pos = np.minimum(np.searchsorted(exact_rows, out), len(exact_rows) - 1)
        hit = exact_rows[pos] == out
        out[hit] = exact.column("group").to_numpy()[pos[hit]]
    return out


def _near_cluster_count(exact: pa.Table, groups: pa.Table) -> int:
    """Merged clusters that hold more than one distinct normalised text (i.e. a near pair)."""
    if groups.num_rows == 0:
        return 0
    rows = groups.column(ROW_COLUMN).to_numpy()
    distinct = np.unique(np.stack([groups.column("group").to_numpy(), exact_group_of(exact, rows)], 1), axis=0)
    _, counts = np.unique(distinct[:, 0], return_counts=True)
    return int((counts > 1).sum())


# ---------------------------------------------------------------- clusters for people to look at

def _with_tables(store: Store, tables: dict, fn):
    """Run fn(cursor) on a fresh cursor that sees the given Arrow tables by name."""
    cur = store.con.cursor()
    try:
        for name, table in tables.items():
            cur.register(name, table)
        return fn(cur)
    finally:
        cur.close()


def clusters(store: Store, result: DedupResult, *, offset: int = 0, limit: int = 50) -> pa.Table:
    """One row per cluster, largest first: group, size, texts (distinct normalised texts; 1 = all
    exact copies), kind ('exact' or 'near') and a preview of the first record's prompt."""
    v = result.version
    sql = (f"WITH g AS (SELECT d.\"group\", count(*) AS size, count(DISTINCT coalesce(e.\"group\", d.{ROW_COLUMN})) "
           f"AS texts FROM wb_dedup_g d LEFT JOIN wb_dedup_e e USING ({ROW_COLUMN}) GROUP BY d.\"group\" "
           f"ORDER BY size DESC, d.\"group\" LIMIT {int(limit)} OFFSET {int(offset)}) "
           f"SELECT g.\"group\", g.size, g.texts, CASE WHEN g.texts > 1 THEN 'near' ELSE 'exact' END AS kind, "
           f"left(regexp_replace(coalesce(v.prompt, ''), '\\s+', ' ', 'g'), 160) AS preview "
           f"FROM g JOIN {v.table_name} v ON v.{ROW_COLUMN} = g.\"group\" ORDER BY g.size DESC, g.\"group\"")
    return _with_tables(store, {"wb_dedup_g": result.groups, "wb_dedup_e": result.exact},
                        lambda cur: cur.sql(sql).to_arrow_table())


def cluster_count(result: DedupResult) -> int:
    return int(len(_sizes(result.groups)))


def cluster_records(store: Store, result: DedupResult, group: int) -> pa.Table:
    """The records of one cluster in row order, with `similarity`: Jaccard of each record's shingles
    with the first record's (1.0 for exact copies)."""
    v = result.version
    rows = result.groups.column(ROW_COLUMN).to_numpy()[result.groups.column("group").to_numpy() == int(group)]
    if len(rows) == 0:
        raise WorkbenchError(f"{v.ref} has no duplicate cluster {group}; pick one from the cluster list")
    rows = rows[:200]
    in_list = ", ".join(str(int(r)) for r in rows)
    cur = store.con.cursor()
    try:
        table = cur.sql(f"SELECT * FROM {v.table_name} WHERE {ROW_COLUMN} IN ({in_list}) ORDER BY {ROW_COLUMN}"
                        ).to_arrow_table()
        row, h = shingles_of_rows(cur, v, near_text_sql(store, v), f"{ROW_COLUMN} IN ({in_list})")
    finally:
        cur.close()
    docs, starts, vals = shingle_csr(row, h)
    indptr = np.r_[starts, len(vals)]
    sim = jaccard_pairs(indptr, vals, np.zeros(len(docs), np.int64), np.arange(len(docs)))
    by_row = dict(zip(docs.tolist(), sim.tolist()))
    similarity = pa.array([by_row.get(r) for r in table.column(ROW_COLUMN).to_pylist()], pa.float64())
    return table.append_column("similarity", similarity)


# ---------------------------------------------------------------- conflicts: same prompt, different answer

def conflicts(store: Store, version: Version, *, limit: int = 200, use_cache: bool = True) -> dict:
    """Records with the same normalised prompt (and system) but a different label or completion:
    likely label errors. Returns counts and the first `limit` groups."""
    path = store.project.cache_dir / f"{_cache_stem(version)}_conflicts_{int(limit)}.json"
    if use_cache and path.exists():
        return json.loads(path.read_text())
    out = _conflicts(store, version, limit)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=str))
    tmp.replace(path)
    return out


def _conflicts(store: Store, version: Version, limit: int) -> dict:
    names = {c for c, _ in version_columns(store, version)}
    label = category_column(store, version)
    label_sql = f"CAST({quote_ident(label)} AS VARCHAR)" if label else "NULL"
    text = lambda c: f"coalesce(CAST({quote_ident(c)} AS VARCHAR), ' ')" if c in names else "' '"  # noqa: E731
    sql = (f"WITH k AS (SELECT {ROW_COLUMN}, hash({norm_sql(text('system'))}, {norm_sql(text('prompt'))}) AS h, "
           f"{label_sql} AS label, hash({norm_sql(text('completion'))}) AS c FROM {version.table_name}), "
           f"g AS (SELECT min({ROW_COLUMN}) AS \"group\", count(*) AS size, "
           f"list({ROW_COLUMN} ORDER BY {ROW_COLUMN})[1:20] AS rows, "
           f"list(DISTINCT label ORDER BY label) FILTER (WHERE label IS NOT NULL) AS labels, "
           f"count(DISTINCT label) AS n_labels, count(DISTINCT c) AS n_completions "
           f"FROM k GROUP BY h HAVING count(DISTINCT label) > 1 OR count(DISTINCT c) > 1) "
           f"SELECT g.*, left(v.prompt, 200) AS prompt FROM g JOIN {version.table_name} v "
           f"ON v.{ROW_COLUMN} = g.\"group\" ORDER BY g.\"group\"")
    cur = store.con.cursor()
    try:
        table = cur.sql(sql).to_arrow_table()
    finally:
        cur.close()
    n_labels = table.column("n_labels").to_numpy()
    n_comp = table.column("n_completions").to_numpy()
    return {
        "label_column": label,
        "groups": table.num_rows,
        "records": int(table.column("size").to_numpy().sum()) if table.num_rows else 0,
        "different_labels": int((n_labels > 1).sum()),
        "different_completions": int((n_comp > 1).sum()),
        "items": table.slice(0, limit).to_pylist(),
    }


# ---------------------------------------------------------------- leakage across splits

def split_column(store: Store, version: Version) -> str | None:
    names = [c for c, _ in version_columns(store, version)]
    return next((c for c in ("split", "fold", "partition") if c in names), None)


def leakage(store: Store, result: DedupResult, *, limit: int = 200) -> dict | None:
    """Duplicates that straddle splits (None when the version has no `split` column): clusters and
    records involved, pairs per split pair (exact vs near), and the first `limit` pairs."""
    col = split_column(store, result.version)
    if col is None:
        return None
    return _with_tables(store, {"wb_dedup_g": result.groups, "wb_dedup_e": result.exact},
                        lambda cur: _leakage(cur, result.version, col, limit))


def _leakage(cur, v: Version, col: str, limit: int) -> dict:
    """leakage() on a cursor that sees the clusters as wb_dedup_g (merged) and wb_dedup_e (exact)."""
    s = f"CAST(v.{quote_ident(col)} AS VARCHAR)"
    splits = dict(cur.sql(f"SELECT {s} AS s, count(*) FROM {v.table_name} v GROUP BY ALL ORDER BY 1").fetchall())
    cur.execute(f"CREATE TEMP TABLE wb_dedup_ls AS SELECT d.{ROW_COLUMN}, d.\"group\", "
                f"coalesce(e.\"group\", d.{ROW_COLUMN}) AS ex, {s} AS s FROM wb_dedup_g d "
                f"LEFT JOIN wb_dedup_e e USING ({ROW_COLUMN}) JOIN {v.table_name} v USING ({ROW_COLUMN})")
    try:  # wb_dedup_lx: the records of clusters that lie in more than one split
        cur.execute("CREATE TEMP TABLE wb_dedup_lx AS SELECT * FROM wb_dedup_ls WHERE \"group\" IN "
                    "(SELECT \"group\" FROM wb_dedup_ls GROUP BY 1 HAVING count(DISTINCT s) > 1)")
        n_clusters, n_records = cur.sql("SELECT count(DISTINCT \"group\"), count(*) FROM wb_dedup_lx").fetchall()[0]
        merged, exact = _split_pair_counts(cur, '"group"'), _split_pair_counts(cur, "ex")
        by_pair = [{"splits": [x, y], "pairs": n, "exact_pairs": exact.get((x, y), 0),
                    "near_pairs": n - exact.get((x, y), 0)} for (x, y), n in sorted(merged.items())]
        leaked = dict(cur.sql("SELECT s, count(*) FROM wb_dedup_lx GROUP BY 1 ORDER BY 1").fetchall())
        pairs = cur.sql(f"SELECT a.{ROW_COLUMN} AS a, a.s AS split_a, b.{ROW_COLUMN} AS b, b.s AS split_b, "
                        "CASE WHEN a.ex = b.ex THEN 'exact' ELSE 'near' END AS kind, a.\"group\" "
                        f"FROM wb_dedup_lx a JOIN wb_dedup_lx b ON a.\"group\" = b.\"group\" AND a.s < b.s "
                        f"ORDER BY a.\"group\", a.{ROW_COLUMN}, b.{ROW_COLUMN} LIMIT {int(limit)}").to_arrow_table()
    finally:
        cur.execute("DROP TABLE IF EXISTS wb_dedup_ls; DROP TABLE IF EXISTS wb_dedup_lx")
    return {"split_column": col, "splits": splits, "clusters": int(n_clusters), "records": int(n_records),
            "records_by_split": leaked, "pairs": sum(p["pairs"] for p in by_pair),
            "exact_pairs": sum(p["exact_pairs"] for p in by_pair),
            "near_pairs": sum(p["near_pairs"] for p in by_pair), "by_pair": by_pair,
            "examples": pairs.to_pylist()}


def _split_pair_counts(cur, key: str) -> dict[tuple[str, str], int]:
    """Pairs of records in the same cluster (key '"group"') or exact group (key 'ex') per pair of splits."""
    rows = cur.sql(f"WITH c AS (SELECT {key} AS k, s, count(*) AS n FROM wb_dedup_lx GROUP BY ALL) "
                   "SELECT a.s, b.s, sum(a.n * b.n) FROM c a JOIN c b ON a.k = b.k AND a.s < b.s "
                   "GROUP BY ALL").fetchall()
    return {(x, y): int(n) for x, y, n in rows}


# ---------------------------------------------------------------- resolving: a new version without the copies

def resolve(store: Store, version: Version, *, near: bool = True, threshold: float = DEFAULT_THRESHOLD,
            keep: dict | None = None, keep_all=(), out: str | None = None, created_by: str | None = None,
            progress=None, user=None) -> tuple[Version, dict]:
    """Write a new version that keeps one record per duplicate cluster (the first, or keep[group])
    and every record of the clusters in keep_all. The source version is untouched; the new one's
    parent is the source and its recipe lists the parameters and the dropped rows."""
    require_role(user, "write_version")
    progress = progress or _noop
    result = find_duplicates(store, version, near=near, threshold=threshold,
                             progress=lambda f, m: progress(0.5 * f, m))
    rows = result.groups.column(ROW_COLUMN).to_numpy()
    grp = result.groups.column("group").to_numpy()
    keep = {int(g): int(r) for g, r in (keep or {}).items()}
    keep_all = sorted({int(g) for g in keep_all})
    known = set(np.unique(grp).tolist())
    for g, r in keep.items():
        if g not in known:
            raise WorkbenchError(f"cluster {g} is not a duplicate cluster of {version.ref}; see `workbench dedup`")
        if r not in set(rows[grp == g].tolist()):
            raise WorkbenchError(f"row {r} is not in cluster {g}; pick one of its rows to keep")
    chosen = grp.copy()
    for g, r in keep.items():
        chosen[grp == g] = r
    drop = (rows != chosen) & ~np.isin(grp, keep_all)
    dropped = np.sort(rows[drop])
    if len(dropped) == 0:
        raise WorkbenchError(f"nothing to drop: {version.ref} has no duplicate left after these choices")
    mask = np.ones(version.row_count, bool)
    mask[dropped] = False

    recipe = {"op": "dedup", "source": version.ref, "source_version_id": version.version_id,
              "source_content_hash": version.content_hash, "near": near, "threshold": result.threshold,
              "shingles": {"words": SHINGLE_WORDS, "short_words": SHORT_WORDS, "chars": CHAR_SHINGLE},
              "num_perm": NUM_PERM, "keep": "chosen" if keep else "first",
              "chosen": {str(g): r for g, r in keep.items()},
              "kept_all_clusters": keep_all, "dropped": int(len(dropped)), "dropped_rows": dropped.tolist()}
    new = write_version(store, out or version.dataset, _kept_batches(store, version, mask, progress), kind="dedup",
                        fmt=version.format, recipe=recipe, info=version.info, parent_id=version.version_id,
                        created_by=created_by)
    progress(1.0, "done")
    return new, {"version": new.ref, "records": new.row_count, "dropped": int(len(dropped)),
                 "source": version.ref, "source_records": version.row_count}


def _kept_batches(store: Store, version: Version, keep: np.ndarray, progress):
    """The version's records where keep[row] is True, in order (the second half of resolve's progress)."""
    offset = 0
    for batch in iter_version(store, version):
        n = batch.num_rows
        yield batch.filter(pa.array(keep[offset:offset + n]))
        offset += n
        progress(0.5 + 0.5 * offset / max(version.row_count, 1), f"writing {offset:,} of {version.row_count:,}")
