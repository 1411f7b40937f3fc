"""Splits: stratified within one record per category, duplicate clusters never cross splits, seeded.

Split counts are read back from exports (Python csv) and checked against brute-force Python."""

import csv
import json
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from tests.conftest import BANKING
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.curation import splits
from workbench.data.export import export_version
from workbench.data.importer import import_file

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    if not BANKING.exists():
        pytest.skip(f"banking77 data not found at {BANKING}")
    store = Store.open(tmp_path_factory.mktemp("splits") / "project")
    yield store, import_file(store, BANKING / "train.csv", "banking").version
    store.close()


def exported(store, version, path) -> list[dict]:
    export_version(store, version, "csv", path)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def union_find(n, pairs):
    """Plain-Python connected components: label = smallest member."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


# ---------------------------------------------------------------- ratios

@pytest.mark.parametrize("spec, expected", [
    ("0.8,0.1,0.1", {"train": 0.8, "val": 0.1, "test": 0.1}),
    ("0.9,0.1", {"train": 0.9, "test": 0.1}),
    ("train=0.7,dev=0.3", {"train": 0.7, "dev": 0.3}),
])
def test_parse_ratios(spec, expected):
    assert splits.parse_ratios(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("0.8,0.1", "add up to 0.9"), ("0.5,0.2,0.2,0.1", "has 4 numbers"), ("train=0.8,0.2", "name every split"),
    ("0.8,x,0.1", "not a number"), ("a=0.5,a=0.5", "repeated"),
])
def test_bad_ratios(spec, message):
    with pytest.raises(WorkbenchError, match=message):
        splits.parse_ratios(spec)


# ---------------------------------------------------------------- clusters

@settings(max_examples=100, deadline=None)
@given(hs.integers(2, 60).flatmap(lambda n: hs.tuples(
    hs.just(n), hs.lists(hs.lists(hs.tuples(hs.integers(0, n - 1), hs.integers(0, n - 1)), max_size=20),
                         min_size=1, max_size=3))))
def test_merge_groups_equals_union_find(case):
    n, edge_sets = case
    tables = []
    for edges in edge_sets:  # each table is a partition: (row, smallest row of its group)
        labels = union_find(n, edges)
        members = Counter(labels)
        rows = [i for i in range(n) if members[labels[i]] > 1]
        tables.append(pa.table({"_row": pa.array(rows, pa.int64()), "group": pa.array([labels[i] for i in rows],
                                                                                        pa.int64())}))
    expected = union_find(n, [e for edges in edge_sets for e in edges])
    size = Counter(expected)
    got = splits.merge_groups(n, tables)
    assert got.tolist() == [lab if size[lab] > 1 else -1 for lab in expected]


@settings(max_examples=150, deadline=None)
@given(hs.integers(1, 300), hs.integers(1, 6), hs.integers(0, 40), hs.integers(0, 2**31),
       hs.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.5), (0.7, 0.3, 0.0), (1 / 3, 1 / 3, 1 / 3)]))
def test_assign_splits_keeps_clusters_whole_and_hits_targets(n, k, n_clusters, seed, ratios):
    rng = np.random.default_rng(seed)
    strata = rng.integers(0, k, n)
    pairs = [tuple(rng.integers(0, n, 2)) for _ in range(n_clusters)]
    labels = union_find(n, pairs)
    size = Counter(labels)
    clusters = np.array([lab if size[lab] > 1 else -1 for lab in labels])
    names = ["train", "val", "test"][:len(ratios)]
    ratio = dict(zip(names, ratios))
    out = splits.assign_splits(strata, clusters, ratio, seed)
    assert ((out >= 0) & (out < len(names))).all()
    by_cluster = defaultdict(set)
    for i, lab in enumerate(clusters):
        if lab >= 0:
            by_cluster[lab].add(out[i])
    assert all(len(s) == 1 for s in by_cluster.values())
    if n_clusters == 0:  # no clusters: every value within one record of its quota
        for value in range(k):
            members = out[strata == value]
            for j, r in enumerate(ratios):
                assert abs((members == j).sum() - len(members) * r) < 1
    assert (splits.assign_splits(strata, clusters, ratio, seed) == out).all()


# ---------------------------------------------------------------- banking77

def test_banking_stratified_within_one_record_and_reproducible(bank, tmp_path):
    store, version = bank
    result = splits.split_version(store, version, "0.8,0.1,0.1", stratify="category", seed=4)
    rows = exported(store, result.version, tmp_path / "split.csv")
    assert len(rows) == 10003 and {r["split"] for r in rows} == {"train", "val", "test"}
    per = Counter((r["category"], r["split"]) for r in rows)
    sizes = Counter(r["category"] for r in rows)
    for cat, n in sizes.items():
        for name, ratio in RATIOS.items():
            assert abs(per[cat, name] - n * ratio) <= 1, (cat, name, per[cat, name], n * ratio)
    totals = Counter(r["split"] for r in rows)
    assert all(abs(totals[s] - 10003 * r) <= 10 for s, r in RATIOS.items())
    assert result.report["counts"] == dict(totals)
    assert result.report["leakage"]["clean"] and result.report["leakage"]["exact_groups_across_splits"] == 0
    # Same records and order as the parent, with a split column.
    with open(BANKING / "train.csv", encoding="utf-8", newline="") as f:
        assert [r["text"] for r in rows] == [r["text"] for r in csv.DictReader(f)]
    again = splits.split_version(store, version, "0.8,0.1,0.1", stratify="category", seed=4)
    other = splits.split_version(store, version, "0.8,0.1,0.1", stratify="category", seed=5)
    assert again.version.content_hash == result.version.content_hash != other.version.content_hash
    assert result.version.recipe["seed"] == 4 and result.version.kind == "split"
    # export --split takes one split
    test_path = tmp_path / "test.csv"
    export_version(store, result.version, "csv", test_path, split="test")
    with open(test_path, encoding="utf-8", newline="") as f:
        assert sum(1 for _ in csv.DictReader(f)) == totals["test"]


def test_near_duplicate_clusters_never_cross_splits(bank, tmp_path):
    """A group table like workbench.inspect.dedup.duplicate_groups returns, made here by brute force:
    records sharing their first three words form a cluster."""
    store, version = bank
    with open(BANKING / "train.csv", encoding="utf-8", newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    first = defaultdict(list)
    for i, t in enumerate(texts):
        first[" ".join(t.lower().split()[:3])].append(i)
    rows, groups = [], []
    for members in first.values():
        if len(members) > 1:
            rows += members
            groups += [min(members)] * len(members)
    near = pa.table({"_row": pa.array(rows, pa.int64()), "group": pa.array(groups, pa.int64())})
    assert len(rows) > 3000  # plenty of clusters, some over several categories
    result = splits.split_version(store, version, "0.8,0.1,0.1", stratify="category", group="near-dup",
                                  near_groups=near, seed=9)
    out = exported(store, result.version, tmp_path / "near.csv")
    by_cluster = defaultdict(set)
    for r, g in zip(rows, groups):
        by_cluster[g].add(out[r]["split"])
    assert all(len(s) == 1 for s in by_cluster.values())
    leak = result.report["leakage"]
    assert leak["near_groups_across_splits"] == 0 and leak["clean"]
    assert result.report["clusters"] == sum(1 for m in first.values() if len(m) > 1)
    totals = Counter(r["split"] for r in out)
    assert all(abs(totals[s] - 10003 * r) <= 0.01 * 10003 for s, r in RATIOS.items())


def test_exact_duplicates_and_upsampled_copies_stay_together(tmp_path):
    rows = [{"text": f"where is my parcel {i % 40}", "label": "shipping" if i % 3 else "refund"} for i in range(200)]
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Store.open(tmp_path / "p") as store:
        version = import_file(store, path, "dups").version
        result = splits.split_version(store, version, "0.5,0.5", seed=1)
        out = exported(store, result.version, tmp_path / "o.csv")
        where = defaultdict(set)
        for r in out:
            where[r["text"]].add(r["split"])
        assert len(where) == 40 and all(len(s) == 1 for s in where.values())
        assert result.report["leakage"]["exact_groups_across_splits"] == 0
        assert sum(result.report["counts"].values()) == 200
        # With grouping off the same data leaks, and the leakage report sees it.
        loose = splits.split_version(store, version, "0.5,0.5", group="none", seed=1)
        leak = loose.report["leakage"]
        assert leak["exact_groups_across_splits"] > 0 and not leak["clean"]
        assert leak["exact_groups_across_splits"] == sum(
            1 for t in where if len({r["split"] for r in exported(store, loose.version, tmp_path / "l.csv")
                                     if r["text"] == t}) > 1)


def test_split_replaces_an_existing_split_column(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}", "split": "old"}) + "\n"
                            for i in range(20)))
    with Store.open(tmp_path / "p") as store:
        version = import_file(store, path, "s").version
        result = splits.split_version(store, version, "0.5,0.5", out="s-split")
        out = exported(store, result.version, tmp_path / "o.csv")
        assert Counter(r["split"] for r in out) == {"train": 10, "test": 10}
        assert result.report["replaced_split_column"] and result.version.ref == "s-split@1"


def test_leakage_report_needs_a_split_column(bank):
    store, version = bank
    with pytest.raises(WorkbenchError, match="has no split column"):
        splits.leakage_report(store, version)


def test_near_dup_uses_workbench_dedup_when_present(tmp_path):
    pytest.importorskip("workbench.inspect.dedup")
    from workbench.data.demo_project import make_demo_project

    info = make_demo_project(tmp_path / "demo", records=300)
    with Store.open(info["project"]) as store:
        from workbench.core.versions import get_version

        version = get_version(store, info["dataset"])
        result = splits.split_version(store, version, "0.8,0.1,0.1", stratify="category", group="near-dup")
        assert result.report["leakage"]["near_groups_across_splits"] == 0 and result.report["leakage"]["clean"]
