"""Exact and near duplicates (workbench.inspect.dedup, and its MinHash kernel workbench.inspect.minhash)
against plain-Python brute force and datasketch."""

import itertools
import re

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from tests.conftest import write_jsonl
from workbench.core.errors import WorkbenchError
from workbench.core.versions import get_version, iter_version
from workbench.data.importer import import_file
from workbench.inspect import dedup, minhash

# ---------------------------------------------------------------- plain-Python references

def ref_norm(text) -> str:
    return re.sub(r"[\t\n\v\f\r ]+", " ", (text or "").lower()).strip(" ")


def ref_shingles(text: str) -> set:
    """The documented rule: >= 16 words -> word 3-grams; fewer -> character 4-grams."""
    words = text.split(" ")
    if len(words) >= 16:
        return {("w",) + tuple(words[i:i + 3]) for i in range(len(words) - 2)}
    return {("c", text[i:i + 4]) for i in range(max(len(text) - 3, 1))}


def ref_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def ref_clusters(edges, rows):
    """Union-find over edges: {row: smallest row of its component}, only components of >= 2."""
    parent = {r: r for r in rows}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comp = {}
    for r in rows:
        comp.setdefault(find(r), []).append(r)
    return {r: min(c) for c in comp.values() if len(c) > 1 for r in c}


def as_dict(groups: pa.Table) -> dict:
    return dict(zip(groups.column("_row").to_pylist(), groups.column("group").to_pylist()))


def make_version(store, tmp_path, records, name="d"):
    path = write_jsonl(tmp_path / f"{name}.jsonl", records)
    return import_file(store, path, name).version


WORDS = [f"word{i}" for i in range(2000)]


def doc(start: int, n: int = 40) -> list[str]:
    return WORDS[start:start + n]


# ---------------------------------------------------------------- the interface Balance uses

def test_duplicate_groups_contract_on_constructed_records(store, tmp_path):
    base = " ".join(doc(0))
    records = [
        {"prompt": "Where is my parcel?", "completion": "It ships today."},          # 0
        {"prompt": "  WHERE is my   parcel?\n", "completion": "It ships\ttoday. "},  # 1: exact after normalising
        {"prompt": "Something else entirely", "completion": "ok"},                   # 2: singleton
        {"prompt": base, "completion": "fine"},                                       # 3
        {"prompt": " ".join(doc(0)[:-2] + ["zzz1", "zzz2"]), "completion": "fine"},   # 4: near 3 (J = 36/40)
        {"prompt": "Where is my parcel?", "completion": "It ships today."},           # 5: exact of 0
        {"prompt": " ".join(doc(500)), "completion": "x"},                            # 6: singleton
    ]
    v = make_version(store, tmp_path, records)
    g = dedup.duplicate_groups(store, v)
    assert g.schema == pa.schema([("_row", pa.int64()), ("group", pa.int64())])
    assert as_dict(g) == {0: 0, 1: 0, 5: 0, 3: 3, 4: 3}
    assert g.column("_row").to_pylist() == sorted(g.column("_row").to_pylist())
    exact_only = dedup.duplicate_groups(store, v, near=False)
    assert as_dict(exact_only) == {0: 0, 1: 0, 5: 0}


def test_normalisation_matches_python_reference(store):
    samples = ["Hello  World", "\tTabs\tand\nnew\r\nlines ", "many          spaces here", "A\x0bvertical\x0cfeed",
               "ÜBER Straße", "", "   ", "x\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\ny", "no-change"]
    cur = store.cursor()
    got = [cur.execute(f"SELECT {minhash.norm_sql('$1')}", [s]).fetchall()[0][0] for s in samples]
    assert got == [ref_norm(s) for s in samples]


# ---------------------------------------------------------------- known Jaccard

def test_near_pairs_at_known_jaccard_found_and_below_threshold_not(store, tmp_path):
    # B = A with its last k of 40 words replaced: word 3-grams give J = (38 - k) / (38 + k).
    records, expected = [], {}
    for case, k in enumerate([1, 2, 3, 4, 5, 6, 8, 12]):
        a = doc(case * 50)
        b = a[:-k] + [f"new{case}_{i}" for i in range(k)]
        j = (38 - k) / (38 + k)
        assert ref_jaccard(ref_shingles(" ".join(a)), ref_shingles(" ".join(b))) == pytest.approx(j)
        expected[(len(records), len(records) + 1)] = j
        records += [{"prompt": " ".join(a), "completion": None}, {"prompt": " ".join(b), "completion": None}]
    v = make_version(store, tmp_path, [{"text": r["prompt"], "label": "x"} for r in records])
    for threshold in (0.8, 0.7, 0.9):
        result = dedup.find_duplicates(store, v, threshold=threshold)
        cols = (result.near_pairs.column(c).to_pylist() for c in ("a", "b", "jaccard"))
        found = {(a, b): j for a, b, j in zip(*cols)}
        want = {p for p, j in expected.items() if j >= threshold}
        assert set(found) == want, threshold
        for p in found:
            assert found[p] == pytest.approx(expected[p], abs=1e-6)


def test_short_texts_use_character_shingles(store, tmp_path):
    records = [{"text": t, "label": "a"} for t in
               ["reset my password please", "reset my pasword please", "cancel my order", "where is my card"]]
    v = make_version(store, tmp_path, records)
    sets = [ref_shingles(ref_norm(r["text"])) for r in records]
    j01 = ref_jaccard(sets[0], sets[1])
    assert 0.6 < j01 < 0.8
    assert as_dict(dedup.duplicate_groups(store, v, threshold=0.6)) == {0: 0, 1: 0}
    assert as_dict(dedup.duplicate_groups(store, v, threshold=0.8)) == {}


def test_minhash_estimates_agree_with_datasketch_and_true_jaccard():
    rng = np.random.default_rng(3)
    errors_ours, errors_ds = [], []
    for target in (0.3, 0.5, 0.8, 0.95):
        n = 400
        shared = int(round(2 * n * target / (1 + target)))  # |A|=|B|=n, |A∩B|=shared -> J=shared/(2n-shared)
        universe = rng.choice(2**32, size=2 * n, replace=False).astype(np.uint32)
        a = universe[:n]
        b = np.r_[universe[:shared], universe[n:2 * n - shared]]
        true = len(set(a) & set(b)) / len(set(a) | set(b))
        values = np.r_[np.sort(a), np.sort(b)]
        sig = minhash.minhash_signatures(values, np.array([0, n]))
        ours = float((sig[0] == sig[1]).mean())
        ma, mb = MinHash(num_perm=minhash.NUM_PERM, seed=1), MinHash(num_perm=minhash.NUM_PERM, seed=1)
        ma.update_batch([int(x).to_bytes(4, "little") for x in a])
        mb.update_batch([int(x).to_bytes(4, "little") for x in b])
        theirs = ma.jaccard(mb)
        errors_ours.append(abs(ours - true))
        errors_ds.append(abs(theirs - true))
        assert abs(ours - true) < 0.15 and abs(ours - theirs) < 0.2  # 128 permutations: sd <= 0.045
    assert np.mean(errors_ours) < 0.06 and np.mean(errors_ds) < 0.06


def test_bands_give_high_recall_at_the_threshold():
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        b, r = minhash.lsh_bands(t)
        assert b * r <= minhash.NUM_PERM
        assert 1 - (1 - t ** r) ** b >= 0.98
    assert minhash.lsh_bands(0.8) == (18, 7)


def test_jaccard_pairs_matches_sets():
    rng = np.random.default_rng(0)
    sets = [np.unique(rng.integers(0, 60, rng.integers(1, 40))).astype(np.uint32) for _ in range(30)]
    indptr = np.r_[0, np.cumsum([len(s) for s in sets])]
    values = np.concatenate(sets)
    pairs = np.array(list(itertools.combinations(range(30), 2)))
    got = minhash.jaccard_pairs(indptr, values, pairs[:, 0], pairs[:, 1])
    want = [ref_jaccard(set(sets[i].tolist()), set(sets[j].tolist())) for i, j in pairs]
    assert np.allclose(got, want)


# ---------------------------------------------------------------- real data: banking77

@pytest.mark.slow
def test_banking77_against_brute_force(store, banking_dir):
    from scipy.sparse import csr_matrix

    v = import_file(store, banking_dir / "train.csv", "banking").version
    texts = [r for t in iter_version(store, v) for r in t.column("prompt").to_pylist()]
    sample = 4000  # brute force over all pairs of the first 4,000 texts (the file is grouped by category)
    norm = [ref_norm(t) for t in texts[:sample]]
    # exact: identical normalised text
    by_text = {}
    for i, t in enumerate(norm):
        by_text.setdefault(t, []).append(i)
    exact_edges = [(g[0], r) for g in by_text.values() for r in g[1:]]
    # near: all pairs by sparse matrix product over the plain-Python shingle sets
    vocab, rows, cols = {}, [], []
    for i, t in enumerate(norm):
        for s in ref_shingles(t):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    m = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(norm), len(vocab)))
    sizes = np.asarray(m.sum(1)).ravel()
    inter = (m @ m.T).tocoo()
    keep = inter.row < inter.col
    i, j, x = inter.row[keep], inter.col[keep], inter.data[keep]
    jac = x / (sizes[i] + sizes[j] - x)
    true_pairs = {(a, b) for a, b, s in zip(i, j, jac) if s >= 0.8 and norm[a] != norm[b]}
    assert len(true_pairs) > 20  # banking77 holds near-repeats

    result = dedup.find_duplicates(store, v, threshold=0.8)
    exact = {r: g for r, g in as_dict(result.exact).items() if r < sample}
    assert exact == ref_clusters(exact_edges, range(len(norm)))
    reps = {min(g) for g in by_text.values()}
    found = {(a, b) for a, b in zip(result.near_pairs.column("a").to_pylist(), result.near_pairs.column("b").to_pylist())
             if b < sample}
    true_rep_pairs = {(a, b) for a, b in true_pairs if a in reps and b in reps}
    assert found <= true_rep_pairs  # verified by true Jaccard: no false positives
    recall = len(found) / len(true_rep_pairs)
    assert recall >= 0.97, recall
    groups = as_dict(result.groups)  # every record, not only representatives: pairs in one cluster
    together = sum(1 for a, b in true_pairs if a in groups and groups.get(b) == groups[a])
    assert together / len(true_pairs) >= 0.97


def test_threshold_out_of_range_is_a_user_error(store, tmp_path):
    v = make_version(store, tmp_path, [{"text": "a", "label": "b"}])
    with pytest.raises(WorkbenchError, match="0.3..1.0"):
        dedup.duplicate_groups(store, v, threshold=1.5)


# ---------------------------------------------------------------- conflicts, leakage, clusters, resolve

def test_conflicts_same_prompt_different_label_or_completion(store, tmp_path):
    records = [
        {"prompt": "My card is lost", "completion": "We blocked it.", "category": "lost_card"},   # 0
        {"prompt": "my card is  LOST", "completion": "We blocked it.", "category": "stolen_card"},  # 1 label
        {"prompt": "Refund please", "completion": "Done.", "category": "refund"},                # 2
        {"prompt": "refund please", "completion": "No refunds.", "category": "refund"},          # 3 completion
        {"prompt": "Hello", "completion": "Hi", "category": "greeting"},                         # 4 copy: no conflict
        {"prompt": "Hello", "completion": "Hi", "category": "greeting"},                         # 5
    ]
    v = make_version(store, tmp_path, records)
    out = dedup.conflicts(store, v)
    # plain-Python reference: group by normalised prompt, flag differing labels / completions
    ref = {}
    for i, r in enumerate(records):
        ref.setdefault(ref_norm(r["prompt"]), []).append(i)
    flagged = [g for g in ref.values()
               if len({records[i]["category"] for i in g}) > 1
               or len({ref_norm(records[i]["completion"]) for i in g}) > 1]
    assert out["groups"] == len(flagged) == 2
    assert [item["rows"] for item in out["items"]] == sorted(flagged)
    assert out["different_labels"] == 1 and out["different_completions"] == 1
    assert out["items"][0]["labels"] == ["lost_card", "stolen_card"]
    assert out["label_column"] == "category"


def test_leakage_across_splits_counts_pairs(store, tmp_path):
    long = " ".join(doc(0))
    records = [
        {"prompt": "Where is my parcel?", "completion": "a", "split": "train"},   # 0
        {"prompt": "where is my parcel?", "completion": "a", "split": "test"},    # 1 exact leak 0-1
        {"prompt": "where is my parcel?", "completion": "a", "split": "test"},    # 2 exact leak 0-2 (1-2 same split)
        {"prompt": long, "completion": "b", "split": "train"},                    # 3
        {"prompt": " ".join(doc(0)[:-1] + ["other"]), "completion": "b", "split": "val"},  # 4 near leak 3-4
        {"prompt": "unique", "completion": "c", "split": "test"},                 # 5
        {"prompt": "twins", "completion": "d", "split": "train"},                 # 6 duplicates inside train only
        {"prompt": "twins", "completion": "d", "split": "train"},                 # 7
    ]
    v = make_version(store, tmp_path, records)
    result = dedup.find_duplicates(store, v)
    out = dedup.leakage(store, result)
    groups = as_dict(result.groups)
    ref_pairs = {(a, b) for a, b in itertools.combinations(range(len(records)), 2)
                 if a in groups and groups.get(b) == groups[a] and records[a]["split"] != records[b]["split"]}
    assert ref_pairs == {(0, 1), (0, 2), (3, 4)}
    assert out["pairs"] == 3 and out["exact_pairs"] == 2 and out["near_pairs"] == 1
    assert out["clusters"] == 2 and out["records"] == 5
    assert {tuple(sorted((e["a"], e["b"]))) for e in out["examples"]} == ref_pairs
    assert {tuple(p["splits"]): (p["exact_pairs"], p["near_pairs"]) for p in out["by_pair"]} == {
        ("test", "train"): (2, 0), ("train", "val"): (0, 1)}
    assert out["records_by_split"] == {"test": 2, "train": 2, "val": 1}
    no_split = make_version(store, tmp_path, [{"prompt": "a", "completion": "b"}], name="nosplit")
    assert dedup.leakage(store, dedup.find_duplicates(store, no_split)) is None


def test_resolve_keeps_one_per_cluster_and_records_the_recipe(store, tmp_path):
    records = [{"prompt": p, "completion": "x", "category": "c"} for p in
               ["a b c", "A  B C", "other", "a b c", "different", "Other"]]
    v = make_version(store, tmp_path, records)
    clusters = dedup.clusters(store, dedup.find_duplicates(store, v))
    assert clusters.column("group").to_pylist() == [0, 2] and clusters.column("size").to_pylist() == [3, 2]
    assert clusters.column("kind").to_pylist() == ["exact", "exact"]

    new, info = dedup.resolve(store, v)
    assert new.parent_id == v.version_id and new.dataset == v.dataset and new.number == 2 and new.kind == "dedup"
    assert new.recipe["dropped_rows"] == [1, 3, 5] and info["dropped"] == 3
    kept = [r for t in iter_version(store, new) for r in t.column("prompt").to_pylist()]
    assert kept == ["a b c", "other", "different"]
    assert get_version(store, f"{v.dataset}@1").row_count == 6  # the source is untouched

    chosen, _ = dedup.resolve(store, v, keep={0: 3}, keep_all=[2], out="chosen")
    assert [r for t in iter_version(store, chosen) for r in t.column("prompt").to_pylist()] == \
        ["other", "a b c", "different", "Other"]
    assert chosen.recipe["kept_all_clusters"] == [2] and chosen.recipe["chosen"] == {"0": 3}
    with pytest.raises(WorkbenchError, match="not in cluster"):
        dedup.resolve(store, v, keep={0: 4})
    with pytest.raises(WorkbenchError, match="nothing to drop"):
        dedup.resolve(store, new)


def test_cluster_records_show_similarity_to_the_first(store, tmp_path):
    a = doc(0)
    texts = [" ".join(a), " ".join(a[:-2] + ["p", "q"]), " ".join(a).upper()]
    v = make_version(store, tmp_path, [{"text": t, "label": "l"} for t in texts])
    result = dedup.find_duplicates(store, v)
    table = dedup.cluster_records(store, result, 0)
    assert table.column("_row").to_pylist() == [0, 1, 2]
    assert table.column("similarity").to_pylist() == pytest.approx([1.0, 36 / 40, 1.0])
    assert dedup.clusters(store, result).column("kind").to_pylist() == ["near"]


def test_results_are_cached_per_version_and_parameters(store, tmp_path):
    v = make_version(store, tmp_path, [{"text": t, "label": "l"} for t in ["one two", "One two", "three"]])
    first = dedup.find_duplicates(store, v)
    names = sorted(p.name for p in store.project.cache_dir.iterdir())
    assert all(f"_v{v.version_id}_{v.content_hash[:16]}" in n for n in names)
    assert any("t0.800" in n for n in names)
    again = dedup.find_duplicates(store, v)
    assert again.groups.equals(first.groups)
    dedup.find_duplicates(store, v, threshold=0.7)
    assert len(list(store.project.cache_dir.iterdir())) == len(names) + 3


@pytest.mark.slow
def test_cli_dedup_json_and_resolve(tmp_path, capsys):
    import json

    from workbench.cli.main import main

    project = str(tmp_path / "p")
    rows = [{"prompt": "Where is my parcel?", "completion": "a", "category": "x", "split": "train"},
            {"prompt": "where is my  parcel?", "completion": "a", "category": "y", "split": "test"},
            {"prompt": "other", "completion": "b", "category": "x", "split": "train"}]
    assert main(["import", str(write_jsonl(tmp_path / "d.jsonl", rows)), "--dataset", "d", "--project", project,
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["dedup", "d", "--near", "--threshold", "0.9", "--json", "--project", project]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("records", "exact_clusters", "exact_duplicates", "near_clusters", "near_duplicates", "conflicts",
                "leakage", "seconds"):
        assert key in out, key
    assert (out["records"], out["exact_clusters"], out["exact_duplicates"], out["near_duplicates"]) == (3, 1, 1, 0)
    assert out["conflicts"]["groups"] == 1 and out["leakage"]["exact_pairs"] == 1
    assert main(["dedup", "d", "--resolve", "keep-one", "--out", "clean", "--json", "--project", project]) == 0
    assert json.loads(capsys.readouterr().out)["resolved"] == {"version": "clean@1", "records": 2, "dropped": 1,
                                                               "source": "d@1", "source_records": 3}
    assert main(["dedup", "d", "--threshold", "0.1", "--project", project]) == 1
    assert "0.3..1.0" in capsys.readouterr().err
