"""Balance: apportionment (largest remainder), targets, strategies and exactness on banking77.

Counts of results are taken from an exported CSV read with Python's csv module, not from our own code."""

import csv
import json
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as hs

from tests.conftest import BANKING
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.curation import balance, targets
from workbench.data.export import export_version
from workbench.data.importer import import_file

# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    if not BANKING.exists():
        pytest.skip(f"banking77 data not found at {BANKING}")
    store = Store.open(tmp_path_factory.mktemp("balance") / "project")
    version = import_file(store, BANKING / "train.csv", "banking").version
    import_file(store, BANKING / "test.csv", "banking-test")
    yield store, version
    store.close()


@pytest.fixture(scope="module")
def source_rows():
    if not BANKING.exists():
        pytest.skip(f"banking77 data not found at {BANKING}")
    with open(BANKING / "train.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def exported(store, version, tmp_path, split=None) -> list[dict]:
    path = tmp_path / f"{version.dataset}-{version.number}-{split}.csv"
    export_version(store, version, "csv", path, split=split)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def hamilton(weights: dict, seats: int) -> dict:
    """Textbook largest remainder with exact fractions (ties: larger weight, then name)."""
    total = sum(Fraction(w) for w in weights.values())
    quotas = {k: Fraction(w) * seats / total for k, w in weights.items()}
    out = {k: math.floor(q) for k, q in quotas.items()}
    left = seats - sum(out.values())
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - out[k]), -Fraction(weights[k]), k))[:left]:
        out[k] += 1
    return out


# ---------------------------------------------------------------- apportionment

def test_largest_remainder_matches_the_textbook_example():
    # Wikipedia, "Largest remainder method": 100,000 votes, 10 seats, Hare quota.
    votes = {"Yellows": 47_000, "Whites": 16_000, "Reds": 15_800, "Greens": 12_000, "Blues": 6_100, "Pinks": 3_100}
    shares = {k: v / 100_000 for k, v in votes.items()}
    assert targets.apportion(shares, 10) == {"Yellows": 5, "Whites": 2, "Reds": 1, "Greens": 1, "Blues": 1,
                                             "Pinks": 0}


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.integers(1, 1000), min_size=1, max_size=12), hs.integers(0, 5000))
@example(weights=[1, 91, 91, 91, 91, 707, 776], total=75)  # equal remainders that float error had split
def test_apportion_equals_exact_fraction_hamilton(weights, total):
    names = [f"c{i:02d}" for i in range(len(weights))]
    w = dict(zip(names, weights))
    s = sum(weights)
    assert targets.apportion({k: v / s for k, v in w.items()}, total) == hamilton(w, total)


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(0, 100), hs.integers(0, 40), hs.integers(0, 60)), min_size=1, max_size=8),
       hs.integers(0, 400))
def test_apportion_with_bounds_respects_them_and_the_total(cats, total):
    shares = {f"c{i}": float(w) for i, (w, _, _) in enumerate(cats)}
    lo = {f"c{i}": a for i, (_, a, _) in enumerate(cats)}
    hi = {f"c{i}": a + b for i, (_, a, b) in enumerate(cats)}
    s = sum(shares.values())
    feasible = sum(lo.values()) <= total <= sum(hi[c] if shares[c] > 0 else lo[c] for c in shares)
    shares = {k: v / s if s else 0.0 for k, v in shares.items()}
    if not feasible:
        with pytest.raises(WorkbenchError):
            targets.apportion(shares, total, minimum=lo, maximum=hi)
        return
    out = targets.apportion(shares, total, minimum=lo, maximum=hi)
    assert sum(out.values()) == total
    assert all(lo[c] <= out[c] <= hi[c] for c in shares)
    # Categories strictly inside their bounds get shares proportional to their weights within one record.
    free = [c for c in shares if lo[c] < out[c] < hi[c] and shares[c] > 0]
    if len(free) >= 2:
        scale = sum(out[c] for c in free) / sum(shares[c] for c in free)
        assert all(abs(out[c] - shares[c] * scale) < 1 + 1e-9 for c in free)


def test_bounds_raise_and_cap():
    out = targets.apportion({"a": 0.9, "b": 0.05, "c": 0.05}, 100, minimum={"b": 20, "c": 20})
    assert out == {"a": 60, "b": 20, "c": 20}
    out = targets.apportion({"a": 0.5, "b": 0.3, "c": 0.2}, 100, maximum={"a": 30})
    assert out == {"a": 30, "b": 42, "c": 28}  # 70 shared 3:2
    with pytest.raises(WorkbenchError, match="minimums add up to 300"):
        targets.apportion({"a": 0.5, "b": 0.5}, 100, minimum={"a": 150, "b": 150})


# ---------------------------------------------------------------- the seeded order

def test_seeded_keys_are_splitmix64():
    # Vigna's reference splitmix64.c seeded with 1234567 starts with this output.
    assert int(targets._mix64(np.array([(1234567 + 0x9E3779B97F4A7C15) % 2**64], dtype=np.uint64))[0]) \
        == 6457827717110365317
    mask = 2**64 - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    keys = targets.seeded_keys(np.arange(1000), 42)
    assert [int(k) for k in keys[:50]] == [mix(mix((42 + 0x9E3779B97F4A7C15) & mask) ^ r) for r in range(50)]
    assert len(set(keys.tolist())) == 1000


# ---------------------------------------------------------------- targets

def test_parse_target_forms(tmp_path):
    assert balance.parse_target("uniform").kind == "uniform"
    assert balance.parse_target("proportional", reference="x@1").reference == "x@1"
    assert balance.parse_target("A=0.5,B=0.3,C=0.2").shares == {"A": 0.5, "B": 0.3, "C": 0.2}
    assert balance.parse_target("A=50,B=50").shares == {"A": 0.5, "B": 0.5}  # percent
    (tmp_path / "t.csv").write_text("category,share\nA,0.25\nB,0.75\n")
    (tmp_path / "t.json").write_text(json.dumps([{"category": "A", "share": 0.4}, {"category": "B", "share": 0.6}]))
    (tmp_path / "o.json").write_text(json.dumps({"A": 0.1, "B": 0.9}))
    assert balance.parse_target(str(tmp_path / "t.csv")).shares == {"A": 0.25, "B": 0.75}
    assert balance.parse_target(str(tmp_path / "t.json")).shares == {"A": 0.4, "B": 0.6}
    assert balance.parse_target(str(tmp_path / "o.json")).shares == {"A": 0.1, "B": 0.9}


@pytest.mark.parametrize("spec, message", [
    ("A=0.5,B=0.3", "add up to 0.8"),
    ("A=0.5,A=0.5", "appears twice"),
    ("A=half,B=0.5", "expected a number"),
    ("A=-0.5,B=1.5", "0 or more"),
    ("balanced", "not understood"),
    ("/no/such/target.csv", "does not exist"),
])
def test_bad_targets_say_what_to_do(spec, message):
    with pytest.raises(WorkbenchError, match=message):
        balance.parse_target(spec)


def test_unknown_category_names_the_closest(bank):
    store, version = bank
    with pytest.raises(WorkbenchError, match="did you mean 'card_arrival'"):
        balance.plan_balance(store, version, target="card_arival=0.5,age_limit=0.5", size=100)


# ---------------------------------------------------------------- banking77

def test_uniform_50_per_category_is_exactly_50_x_77(bank, tmp_path, source_rows):
    store, version = bank
    plan = balance.plan_balance(store, version, target="uniform", size=50 * 77, strategy="hybrid", seed=1)
    assert plan.exact and plan.records == 3850
    new, report = balance.apply_balance(store, plan, "uniform50")
    rows = exported(store, new, tmp_path)
    assert Counter(r["category"] for r in rows) == {c: 50 for c in {r["category"] for r in source_rows}}
    assert len(rows) == 3850 and report["records"] == 3850
    # Every record comes from the parent; the two small categories (35 and 41 records) were repeated.
    parent = Counter((r["text"], r["category"]) for r in source_rows)
    got = Counter((r["text"], r["category"]) for r in rows)
    assert all(k in parent for k in got)
    repeated = {k[1] for k, n in got.items() if n > parent[k]}
    assert repeated == {"contactless_not_working", "virtual_card_not_working"}
    assert max(got.values()) == 2 and report["max_copies_used"] == 2
    assert report["added_copies"] == (50 - 35) + (50 - 41)
    # Downsampled categories keep distinct records.
    assert all(n == 1 for k, n in got.items() if k[1] not in repeated)
    assert new.recipe["strategy"] == "hybrid" and new.recipe["seed"] == 1
    assert new.recipe["counts"] == {c: 50 for c in new.recipe["counts"]} and new.parent_id == version.version_id


def test_downsample_says_precisely_where_it_falls_short(bank):
    store, version = bank
    plan = balance.plan_balance(store, version, target="uniform", size=50 * 77, strategy="downsample")
    short = {s.category: s.problem for s in plan.shortfalls}
    assert short == {
        "contactless_not_working": "contactless_not_working has 35 records; target 50 needs upsampling "
                                   "(strategy hybrid or upsample) or a lower total",
        "virtual_card_not_working": "virtual_card_not_working has 41 records; target 50 needs upsampling "
                                    "(strategy hybrid or upsample) or a lower total"}
    assert plan.records == 3850 - 15 - 9
    with pytest.raises(WorkbenchError, match="contactless_not_working has 35 records; target 50"):
        balance.apply_balance(store, plan, "never-written")
    with pytest.raises(WorkbenchError, match="no dataset named 'never-written'"):
        get_version(store, "never-written")


def test_explicit_shares_give_exact_largest_remainder_counts(bank, tmp_path, source_rows):
    store, version = bank
    weights = {"card_arrival": 1, "age_limit": 1, "exchange_rate": 1, "top_up_failed": 4}
    shares = {k: v / 7 for k, v in weights.items()}
    spec = ",".join(f"{k}={v!r}" for k, v in shares.items())
    size = 101
    new, _ = balance.apply_balance(store, balance.plan_balance(store, version, target=spec, size=size,
                                                               strategy="downsample", seed=5), "shares")
    counts = Counter(r["category"] for r in exported(store, new, tmp_path))
    assert counts == hamilton(weights, size) == {"card_arrival": 14, "age_limit": 15, "exchange_rate": 14,
                                                 "top_up_failed": 58}
    # A downsample never repeats a record.
    rows = exported(store, new, tmp_path)
    assert len({r["text"] for r in rows}) == size


def test_same_seed_same_hash_other_seed_other_records(bank):
    store, version = bank
    kwargs = dict(target="uniform", size=1000, strategy="hybrid")
    a, _ = balance.apply_balance(store, balance.plan_balance(store, version, seed=11, **kwargs), "seeded")
    b, _ = balance.apply_balance(store, balance.plan_balance(store, version, seed=11, **kwargs), "seeded")
    c, _ = balance.apply_balance(store, balance.plan_balance(store, version, seed=12, **kwargs), "seeded")
    assert (a.number, b.number, c.number) == (1, 2, 3)
    assert a.content_hash == b.content_hash != c.content_hash


def test_proportional_to_another_dataset(bank, tmp_path):
    store, version = bank
    with open(BANKING / "test.csv", encoding="utf-8", newline="") as f:
        ref = Counter(r["category"] for r in csv.DictReader(f))
    plan = balance.plan_balance(store, version, target="proportional", reference="banking-test", size=2000,
                                strategy="hybrid", seed=3)
    new, report = balance.apply_balance(store, plan, "like-test")
    assert Counter(r["category"] for r in exported(store, new, tmp_path)) == hamilton(ref, 2000)
    assert new.recipe["target"]["reference"] == "banking-test"


def test_upsample_cap_and_keep_all(bank):
    store, version = bank
    plan = balance.plan_balance(store, version, target="uniform", size=100 * 77, strategy="upsample", max_copies=2)
    by = {c.category: c for c in plan.categories}
    small = by["contactless_not_working"]
    assert (small.result, small.problem) == (70, "contactless_not_working has 35 records; target 100 needs up "
                                                  "to 3 copies of a record but the cap is 2 (raise --max-copies "
                                                  "or lower the total)")
    big = by["card_payment_fee_charged"]
    assert (big.available, big.result) == (187, 187) and big.problem == (
        "card_payment_fee_charged has 187 records; target 100 needs downsampling (strategy hybrid or downsample) "
        "or a larger total")
    ok = by["card_arrival"]  # 153 records: kept, none repeated
    assert (ok.available, ok.result, ok.problem) == (153, 153, "card_arrival has 153 records; target 100 needs "
                                                               "downsampling (strategy hybrid or downsample) or a "
                                                               "larger total")


def test_min_max_per_category(bank):
    store, version = bank
    plan = balance.plan_balance(store, version, target="proportional", size=1000, strategy="hybrid",
                                minimum=10, maximum="card_payment_fee_charged=12")
    target = {c.category: c.target for c in plan.categories}
    assert sum(target.values()) == 1000 and min(target.values()) >= 10
    assert target["card_payment_fee_charged"] == 12


def test_drop_duplicates_first(tmp_path):
    rows = [{"text": f"ticket number {i}", "label": "a"} for i in range(10)]
    rows += [{"text": "ticket number 0", "label": "a"}] * 5 + [{"text": "ticket number 1", "label": "a"}] * 3
    rows += [{"text": f"other {i}", "label": "b"} for i in range(4)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Store.open(tmp_path / "p") as store:
        version = import_file(store, path, "dups").version
        for seed in range(5):
            plan = balance.plan_balance(store, version, target="a=0.5,b=0.5", size=20, strategy="downsample",
                                        seed=seed, drop_first=["duplicates"], max_copies=1)
            new, _ = balance.apply_balance(store, plan, "dedup-first", allow_short=True)
            texts = [t for (t,) in store.cursor().execute(
                f"SELECT prompt FROM {new.table_name} WHERE label = 'a'").fetchall()]
            assert sorted(texts) == sorted(f"ticket number {i}" for i in range(10))  # one of each, no repeats


def test_balance_by_a_length_bucket(bank):
    store, version = bank
    assert "prompt length" in balance.column_choices(store, version)
    plan = balance.plan_balance(store, version, by="prompt length", target="uniform", size=400, strategy="hybrid")
    assert plan.exact and set(plan.counts().values()) == {100}
    with pytest.raises(WorkbenchError, match="no column 'nope'"):
        balance.plan_balance(store, version, by="nope", target="uniform", size=10)


def test_drop_first_prefers_keeping_cluster_representatives_and_unflagged(tmp_path):
    """Downsampled to the number of records that are neither flagged nor a second copy, exactly those stay."""
    from workbench.inspect import dedup, quality

    answer = "Thanks for writing; we have looked into this and sent the details by e-mail today."
    records = [{"prompt": f"My order {i} about topic {i * 7} has a problem, what now?", "completion": answer,
                "category": "a" if i % 3 else "b"} for i in range(30)]
    records += [dict(records[1]), dict(records[1]), dict(records[2])]  # second copies
    records += [{"prompt": f"Short answer wanted for case {i}", "completion": "ok", "category": "a" if i % 2 else "b"}
                for i in range(6)]  # flagged: response shorter than 15 characters
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with Store.open(tmp_path / "p") as store:
        version = import_file(store, path, "q").version
        groups = dedup.duplicate_groups(store, version, near=False)
        second = {r for r, g in zip(groups.column("_row").to_pylist(), groups.column("group").to_pylist())
                  if r != g}
        flagged = set()
        for flag in quality.flag_names():
            sql = quality.flag_rows_sql(store, version, flag)
            flagged |= {r for (r,) in store.cursor().execute(sql).fetchall()}
        assert second == {30, 31, 32} and flagged == set(range(33, 39))
        keep = Counter(r["category"] for i, r in enumerate(records) if i not in second and i not in flagged)
        target = ",".join(f"{c}={n / sum(keep.values())!r}" for c, n in keep.items())
        plan = balance.plan_balance(store, version, target=target, size=sum(keep.values()), strategy="downsample",
                                    seed=3, drop_first=["duplicates", "flagged"])
        assert plan.counts() == dict(keep)
        kept = {int(r) for r in np.flatnonzero(balance.selection(store, plan))}
        assert kept == set(range(30))
        plain = balance.plan_balance(store, version, target=target, size=sum(keep.values()), strategy="downsample",
                                     seed=3)
        assert {int(r) for r in np.flatnonzero(balance.selection(store, plain))} != set(range(30))
