"""The near-duplicate kernel: normalised text in SQL, shingles, MinHash signatures, LSH bands and
verified pairs, merged into clusters. `workbench.inspect.dedup` runs it over a version and caches it.

Normalised text: lower case, runs of ASCII whitespace collapsed to one space, trimmed.

Near duplicates: MinHash LSH over shingles of the normalised text (system, prompt and completion;
the message contents for multi-turn chats):

- a text of at least `SHORT_WORDS` words is cut into word 3-grams; a shorter one into character
  4-grams (a one-word change in a 10-word ticket leaves too few word 3-grams in common to say
  anything). Shingles of the two kinds never match each other.
- DuckDB hashes each shingle (64-bit, kept as 32 bits); per record the set of shingle hashes is kept
  sorted for the exact Jaccard check below.
- `NUM_PERM` MinHash values per record come from the multiply-add-shift family
  h(x) = ((a x + b) mod 2^64) >> 32 (a, b random 64-bit; strongly universal for 32-bit x), computed
  in numpy a permutation at a time over all shingles of a chunk of records.
- Banded LSH: b bands of r rows, with r the largest that still makes a pair exactly at the
  threshold a candidate with probability >= `MIN_CANDIDATE_P` (0.8 -> 18 bands of 7 rows).
- Candidates whose MinHash estimate (64 permutations) is more than 0.25 below the threshold are
  dropped (5 standard deviations at J = 0.8); every other candidate is verified by its true
  Jaccard similarity of the shingle sets (not the estimate), so the result holds no false
  positives and misses a pair at the threshold with probability < 2%. Buckets larger than
  `MAX_BUCKET` yield star pairs (each member with the first), not all pairs.
- Clusters are connected components (exact groups and verified near pairs merged), so A~B and
  B~C put A and C together even when A and C are further apart.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from workbench.core.store import Store, quote_ident, quote_literal
from workbench.core.versions import ROW_COLUMN, Version, version_columns

SHINGLE_WORDS = 3
SHORT_WORDS = 16
CHAR_SHINGLE = 4
NUM_PERM = 128
MIN_CANDIDATE_P = 0.98
MAX_BUCKET = 64
SEED = 1
CHUNK_RECORDS = 20_000
VERIFY_PAIRS = 100_000
PREFILTER_PERM = 64  # candidates whose estimate on 64 permutations is below threshold - margin skip the exact check
PREFILTER_MARGIN = 0.25  # 0.25 is 5 standard deviations of that estimate at J = 0.8: a miss is < 1e-6
DEFAULT_THRESHOLD = 0.8


def _noop(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------- normalised text and shingles in SQL

def norm_sql(expr: str) -> str:
    """SQL for the normalised text of expr: lower case, ASCII whitespace runs -> ' ', trimmed.

    `regexp_replace` is ~20x slower than `replace` in DuckDB, so newlines and double spaces go by
    `replace` and the regex only runs on the few texts that still hold a tab, CR, VT, FF or a run
    of more than four blanks. Use it in a SELECT over a sub-query that names the
    first stage (`norm_stage1`), so the first stage is computed once: see `_normalised`."""
    return norm_stage2(norm_stage1(expr))


def norm_stage1(expr: str) -> str:
    return f"replace(replace(replace(lower({expr}), chr(10), ' '), '  ', ' '), '  ', ' ')"


def norm_stage2(col: str) -> str:
    rare = " OR ".join(f"contains({col}, chr({c}))" for c in (9, 13, 11, 12))  # memchr, unlike a regex search
    return (f"trim(CASE WHEN contains({col}, '  ') OR {rare} "
            f"THEN regexp_replace({col}, '[\\t\\n\\r\\v\\f ]+', ' ', 'g') ELSE {col} END)")


def text_columns(store: Store, version: Version) -> list[str]:
    names = {c for c, _ in version_columns(store, version)}
    return [c for c in ("system", "prompt", "completion", "messages") if c in names]


def near_text_sql(store: Store, version: Version) -> str:
    cols = text_columns(store, version)
    plain = "concat_ws(' ', " + ", ".join(quote_ident(c) for c in cols if c != "messages") + ")" \
        if any(c != "messages" for c in cols) else "''"
    if "messages" in cols:
        return (f"CASE WHEN messages IS NOT NULL THEN "
                f"array_to_string(json_extract_string(messages, '$[*].content'), ' ') ELSE {plain} END")
    return plain


def _shingle_sql(text: str, words: str) -> str:
    """SQL for the list of 64-bit shingle hashes of a normalised text column `text` whose words
    (split on ' ') are the list column `words`."""
    parts = ", ".join(f"{words}[i + {k}]" for k in range(SHINGLE_WORDS))
    return (f"CASE WHEN len({words}) >= {SHORT_WORDS} THEN "
            f"list_transform(range(1, len({words}) - {SHINGLE_WORDS - 2}), lambda i: hash({parts})) "
            f"ELSE list_transform(range(1, greatest(length({text}) - {CHAR_SHINGLE - 2}, 2)), "
            f"lambda i: hash('c', substr({text}, i, {CHAR_SHINGLE}))) END")


GROUP_SCHEMA = pa.schema([(ROW_COLUMN, pa.int64()), ("group", pa.int64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("jaccard", pa.float32())])


def sorted_groups(rows: np.ndarray, groups: np.ndarray) -> pa.Table:
    order = np.argsort(rows, kind="stable")
    return pa.table({ROW_COLUMN: pa.array(rows[order].astype(np.int64)),
                     "group": pa.array(groups[order].astype(np.int64))}, schema=GROUP_SCHEMA)


# ---------------------------------------------------------------- MinHash LSH

def lsh_bands(threshold: float, num_perm: int = NUM_PERM, min_p: float = MIN_CANDIDATE_P) -> tuple[int, int]:
    """(bands, rows): the most rows per band for which a pair at `threshold` is a candidate with
    probability >= min_p (fewer rows = more candidates to verify, fewer misses)."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - threshold ** r) ** b >= min_p:
            return b, r
    return num_perm, 1


def _permutations(num_perm: int = NUM_PERM, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2)
    return a, b


def minhash_signatures(values: np.ndarray, starts: np.ndarray, num_perm: int = NUM_PERM,
                       seed: int = SEED) -> np.ndarray:
    """MinHash signatures (len(starts) x num_perm, uint32) of sets given as one array of 32-bit
    hashes `values` cut at `starts` (each set non-empty, values of a set contiguous)."""
    a, b = _permutations(num_perm, seed)
    x = values.astype(np.uint64)
    out = np.empty((len(starts), num_perm), np.uint32)
    with np.errstate(over="ignore"):
        for p in range(num_perm):
            h = (x * a[p] + b[p]) >> np.uint64(32)
            out[:, p] = np.minimum.reduceat(h, starts).astype(np.uint32)
    return out


def shingle_sets(texts: list[str]) -> list[set[str]]:
    """The shingles of already normalised texts, as Python strings (for tests and small inputs)."""
    out = []
    for t in texts:
        words = t.split(" ")
        if len(words) >= SHORT_WORDS:
            out.append({" ".join(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)})
        else:
            out.append({t[i:i + CHAR_SHINGLE] for i in range(max(len(t) - CHAR_SHINGLE + 1, 1))})
    return out


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per record and band (a random linear hash of the band's r values)."""
    rng = np.random.default_rng(SEED + 1)
    mult = rng.integers(1, 2**63, size=sig.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    keys = np.zeros((sig.shape[0], bands), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(bands):
            for j in range(k * rows, (k + 1) * rows):
                keys[:, k] += sig[:, j].astype(np.uint64) * mult[j]
    return keys


def _bucket_pairs(keys: np.ndarray) -> np.ndarray:
    """Candidate pairs (i < j, as i << 32 | j) of records that share a key: all pairs within
    buckets of up to MAX_BUCKET records, star pairs (each with the first) in larger ones."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    if len(k) < 2:
        return np.zeros(0, np.uint64)
    new = np.r_[True, k[1:] != k[:-1]]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, len(k)])
    run_start = np.repeat(starts, sizes)
    offset = np.arange(len(k)) - run_start  # position within its bucket
    size_of = np.repeat(sizes, sizes)
    small = (size_of <= MAX_BUCKET) & (offset > 0)
    # all pairs: element at offset o pairs with the o elements before it
    e = np.flatnonzero(small)
    cnt = offset[e]
    left = np.repeat(e, cnt) - (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)) - 1
    right = np.repeat(e, cnt)
    big = np.flatnonzero((size_of > MAX_BUCKET) & (offset > 0))
    left = np.r_[left, run_start[big]]
    right = np.r_[right, big]
    i, j = order[left].astype(np.uint64), order[right].astype(np.uint64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return (lo << np.uint64(32)) | hi


def jaccard_pairs(indptr: np.ndarray, values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True Jaccard similarity of sets a[k] and b[k], sets given in CSR form (sorted unique values)."""
    out = np.empty(len(a), np.float64)
    for lo in range(0, len(a), VERIFY_PAIRS):
        pa_, pb = a[lo:lo + VERIFY_PAIRS], b[lo:lo + VERIFY_PAIRS]
        la, lb = indptr[pa_ + 1] - indptr[pa_], indptr[pb + 1] - indptr[pb]
        idx = np.arange(len(pa_), dtype=np.uint64)

        def gather(docs, lens, idx=idx):
            pos = np.repeat(indptr[docs] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
            return (np.repeat(idx, lens) << np.uint64(32)) | values[pos].astype(np.uint64)

        keys = np.sort(np.concatenate([gather(pa_, la), gather(pb, lb)]))
        same = keys[1:] == keys[:-1]
        inter = np.bincount((keys[1:][same] >> np.uint64(32)).astype(np.int64), minlength=len(pa_))
        out[lo:lo + len(pa_)] = inter / (la + lb - inter)
    return out


def shingles_of_rows(cur, version: Version, text_sql: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(_row, 64-bit shingle hash) of the records matching `where`."""
    sql = (f"WITH t1 AS (SELECT {ROW_COLUMN}, {norm_stage1(f'coalesce({text_sql}, {quote_literal(chr(32))})')} AS x1 "
           f"FROM {version.table_name} WHERE {where}), "
           f"t2 AS (SELECT {ROW_COLUMN}, {norm_stage2('x1')} AS x FROM t1), "
           f"t3 AS (SELECT {ROW_COLUMN}, x, string_split(x, ' ') AS w FROM t2) "
           f"SELECT {ROW_COLUMN}, unnest({_shingle_sql('x', 'w')}) AS h FROM t3")
    table = cur.sql(sql).to_arrow_table()
    return table.column(ROW_COLUMN).to_numpy(), table.column("h").to_numpy().astype(np.uint64)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is several times slower on 64-bit keys)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def shingle_csr(row: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique 32-bit shingle hashes per record: (record rows, starts, values)."""
    key = _sorted_unique((row.astype(np.uint64) << np.uint64(32)) | (h >> np.uint64(32)))
    r = (key >> np.uint64(32)).astype(np.int64)
    vals = (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    return r[starts], starts, vals


def near_pairs(store: Store, version: Version, exact: pa.Table, *, threshold: float = DEFAULT_THRESHOLD,
               progress=None) -> tuple[pa.Table, dict]:
    """Verified near-duplicate pairs (a, b, jaccard) between exact-group representatives, a < b."""
    progress = progress or _noop
    bands, rows = lsh_bands(threshold)
    rows_e = exact.column(ROW_COLUMN).to_numpy()
    skip = rows_e[rows_e != exact.column("group").to_numpy()]  # non-first members of exact groups
    text_sql = near_text_sql(store, version)
    n = version.row_count
    cur = store.con.cursor()
    doc_rows, indptr_parts, value_parts, key_parts, sig_parts = [], [0], [], [], []
    total_values = 0
    try:
        cur.register("wb_dedup_skip", pa.table({ROW_COLUMN: pa.array(skip, pa.int64())}))
        for lo in range(0, n, CHUNK_RECORDS):
            progress(0.8 * lo / max(n, 1), f"hashing records {lo:,}-{min(lo + CHUNK_RECORDS, n):,} of {n:,}")
            row, h = shingles_of_rows(cur, version, text_sql,
                                       f"{ROW_COLUMN} >= {lo} AND {ROW_COLUMN} < {lo + CHUNK_RECORDS} AND "
                                       f"{ROW_COLUMN} NOT IN (SELECT {ROW_COLUMN} FROM wb_dedup_skip)")
            if len(row) == 0:
                continue
            docs, starts, vals = shingle_csr(row, h)
            sig = minhash_signatures(vals, starts)
            key_parts.append(_band_keys(sig, bands, rows))
            sig_parts.append(sig[:, :PREFILTER_PERM].copy())
            doc_rows.append(docs)
            value_parts.append(vals)
            indptr_parts.append(total_values + np.r_[starts[1:], len(vals)])
            total_values += len(vals)
    finally:
        cur.close()
    if not doc_rows:
        return pa.table({"a": [], "b": [], "jaccard": []}, schema=PAIR_SCHEMA), {"candidate_pairs": 0}
    doc_row = np.concatenate(doc_rows)
    values = np.concatenate(value_parts)
    indptr = np.concatenate([np.asarray(p, np.int64).ravel() for p in indptr_parts])
    keys = np.concatenate(key_parts)
    sigs = np.concatenate(sig_parts)
    del key_parts, value_parts, sig_parts
    progress(0.8, f"finding candidate pairs in {bands} bands")
    cand = _sorted_unique(np.concatenate([_bucket_pairs(keys[:, k]) for k in range(bands)]))
    del keys
    i = (cand >> np.uint64(32)).astype(np.int64)
    j = (cand & np.uint64(0xFFFFFFFF)).astype(np.int64)
    likely = _estimate(sigs, i, j) >= threshold - PREFILTER_MARGIN
    i, j = i[likely], j[likely]
    del sigs
    progress(0.9, f"verifying {len(i):,} of {len(cand):,} candidate pairs")
    sim = jaccard_pairs(indptr, values, i, j)
    ok = sim >= threshold - 1e-9
    a, b = doc_row[i[ok]], doc_row[j[ok]]
    pairs = pa.table({"a": pa.array(np.minimum(a, b)), "b": pa.array(np.maximum(a, b)),
                      "jaccard": pa.array(sim[ok].astype(np.float32))}, schema=PAIR_SCHEMA)
    return pairs, {"candidate_pairs": int(len(cand)), "verified_pairs": int(len(i)), "bands": bands,
                   "rows_per_band": rows, "representatives": int(len(doc_row))}


def _estimate(sigs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """MinHash estimate of Jaccard for pairs (share of equal signature values)."""
    out = np.empty(len(i), np.float32)
    for lo in range(0, len(i), VERIFY_PAIRS):
        a, b = sigs[i[lo:lo + VERIFY_PAIRS]], sigs[j[lo:lo + VERIFY_PAIRS]]
        out[lo:lo + len(a)] = (a == b).mean(1)
    return out


def merge_groups(exact: pa.Table, pairs: pa.Table) -> pa.Table:
    """Connected components of exact groups and near pairs, as _row, group (= smallest _row)."""
    src = np.r_[exact.column(ROW_COLUMN).to_numpy(), pairs.column("a").to_numpy()].astype(np.int64)
    dst = np.r_[exact.column("group").to_numpy(), pairs.column("b").to_numpy()].astype(np.int64)
    if len(src) == 0:
        return pa.table({ROW_COLUMN: pa.array([], pa.int64()), "group": pa.array([], pa.int64())}, schema=GROUP_SCHEMA)
    nodes, inv = np.unique(np.r_[src, dst], return_inverse=True)
    m = len(nodes)
    graph = coo_matrix((np.ones(len(src), np.int8), (inv[:len(src)], inv[len(src):])), shape=(m, m))
    _, label = connected_components(graph, directed=False)
    smallest = np.full(label.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, label, nodes)
    return sorted_groups(nodes, smallest[label])
